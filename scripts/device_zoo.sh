#!/usr/bin/env bash
# The one-shot GPU run: on one lent GPU, in one call of at most ~12 minutes, a short benchmark, then
# the zoo manifest's entries that have no weights yet, each built by
# `python -m timm_longtail.zoo build` with its manifest recipe (no recipe flag added: the weights are
# the manifest's). Entries whose input runs on the device go first (device: gpu first among them),
# then those that need loader workers (recipes without a batched form, e.g. the ImageNet-style ones:
# input-bound, they would otherwise spend the budget on a run that a time-out throws away). Every finished entry is handed back at once as OUT/<entry>.tgz (its hub_cards/
# folder or results/zoo/ file, plus the published-weights table), so a time-out keeps what finished.
#
# Here, before the call (the device gets a copy of the tree without git and without ../shared):
#   mkdir -p .device_data && cp -r ../shared/data/cifar10 .device_data/     (18 MB; .device_data/ is ignored)
#   commit; then, through the device tool, with carry [".device_data"] and timeout_s 720:
#   SOURCE_COMMIT=<git rev-parse HEAD> bash scripts/device_zoo.sh "$OUT"
# Back here: for f in <files_at>/*.tgz; do tar -xzf "$f"; done; python -m timm_longtail.zoo table; commit.
#
# env: DEVICE (cuda), BUDGET_S (660: wall seconds for all of it, after start-up), BENCH_S (45),
#      SOURCE_COMMIT (required where the tree has no git), CIFAR10 (.device_data/cifar10),
#      ENTRIES (default: every unpublished entry, device: gpu first), MANIFEST (configs/zoo/manifest.yaml),
#      PUBLISH_TO (.), RUNS (a temporary folder), TRAIN_ARGS (more train.py flags, e.g. smoke limits),
#      WORKERS (8: loader workers where the device-side augmentation does not apply), PYTHON (python3).
# Speed path per entry: --device-augment where every stage's augmentation has a batched version on the
# device (ride_cifar, ldam_cifar, nclpp_cifar with its copies); loader workers for the rest. Neither flag is part
# of a recipe (they change where augmentation runs, not its distribution).
# At most 7 entries come back (the device tool returns 8 files: the 7 archives and device_zoo.json).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT_DIR}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-660}
BENCH_S=${BENCH_S:-45}
CIFAR10=${CIFAR10-.device_data/cifar10}  # set but empty: no CIFAR-10 (a demo manifest)
MANIFEST=${MANIFEST:-configs/zoo/manifest.yaml}
PUBLISH_TO=${PUBLISH_TO:-.}
RUNS=${RUNS:-$(mktemp -d -t device-zoo-runs.XXXXXX)}
WORKERS=${WORKERS:-8}
MAX_ARCHIVES=7
START=$(date +%s)
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
read -r -a TRAIN_ARGS_ARRAY <<< "${TRAIN_ARGS:-}"

elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[device_zoo $(elapsed)s] $*"; }

if ! "$PY" -c "import datasets, evaluate" 2>/dev/null; then
    if compgen -G ".whl/*.whl" > /dev/null; then  # wheels carried along (device tool README)
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/device-zoo-site .whl/*.whl \
            && export PYTHONPATH=/tmp/device-zoo-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    "$PY" -c "import datasets, evaluate" || { echo "error: datasets/evaluate are missing here: carry their wheels in .whl/" >&2; exit 2; }
fi
DATA_ARGS=()
if [ -n "$CIFAR10" ]; then  # empty: a manifest without CIFAR-10 (the tests' demo manifest)
    [ -d "$CIFAR10" ] || { echo "error: no CIFAR-10 at $CIFAR10: copy ../shared/data/cifar10 into .device_data/ and carry it" >&2; exit 2; }
    DATA_ARGS=(--data-dir "cifar10=$CIFAR10")
fi
COMMIT_ARGS=()
[ -n "${SOURCE_COMMIT:-}" ] && COMMIT_ARGS=(--source-commit "$SOURCE_COMMIT")

# 1. a short benchmark: compute-only step rates of each variant (the data path is measured by the builds)
say "benchmark (at most ${BENCH_S}s)"
if [ "$BENCH_S" -gt 0 ]; then
    timeout "$BENCH_S" "$PY" scripts/benchmark_train.py --device "$DEVICE" --settings fp32_channels_last \
        bf16_channels_last --steps 20 --warmup 5 --out "$OUT/benchmark.json" > /dev/null \
        || say "benchmark cut short or failed (exit $?): going on"
fi

# 2. the plan: unpublished entries, device-side input first, device: gpu first within each group
PLAN=$("$PY" - "$MANIFEST" "$PUBLISH_TO" "${ENTRIES:-}" <<'EOF'
import sys
from pathlib import Path

import yaml

import timm_longtail  # noqa: F401
from timm_longtail.data import canonical_dataset_name
from timm_longtail.data.batch_augment import BATCH_RECIPES
from timm_longtail.training.methods import METHODS
from timm_longtail.training.assembly import default_train_transform
from timm_longtail.zoo import load_manifest
from timm_longtail.zoo import BuildSettings, is_published

manifest = load_manifest(Path(sys.argv[1]))
settings = BuildSettings(runs_dir=Path("/nonexistent"), publish_to=Path(sys.argv[2]).absolute())
entries = manifest.select(sys.argv[3].split()) if sys.argv[3].strip() else manifest.entries
todo = [e for e in entries if not is_published(settings, e)]
def flag(args, name, default):
    """The value after ``name`` in a stage's train.py arguments."""
    return args[args.index(name) + 1] if name in args[:-1] else default


plan = []
for entry in todo:
    batched = True
    for stage in entry.stages:
        config = yaml.safe_load((manifest.root / stage.config).read_text(encoding="utf-8")) or {}
        recipe = flag(stage.args, "--train-transform", config.get("train_transform")) or default_train_transform(
            METHODS[config["method"]], canonical_dataset_name(config["dataset"]))
        batched &= recipe in BATCH_RECIPES  # train.py --device-augment's reach
    plan.append((not batched, entry.device != "gpu", entry.name))
for workers, _, name in sorted(plan, key=lambda p: p[:2]):  # stable: manifest order within each group
    print(name, "workers" if workers else "batched")
EOF
) || { echo "error: could not read the zoo manifest $MANIFEST" >&2; exit 2; }

# 3. the builds, one entry at a time, each stopped (SIGTERM: after its current step) when the budget ends
RESULTS=()
archives=0
while read -r entry path; do
    [ -n "$entry" ] || continue
    left=$(( BUDGET_S - $(elapsed) ))
    if [ "$archives" -ge "$MAX_ARCHIVES" ] || [ "$left" -lt 30 ]; then
        RESULTS+=("{\"entry\": \"$entry\", \"status\": \"not started\", \"seconds\": 0}")
        continue
    fi
    speed=(--train-arg=--device-augment)
    [ "$path" = workers ] && speed=(--train-arg=--workers="$WORKERS")
    extra=()
    for arg in "${TRAIN_ARGS_ARRAY[@]}"; do extra+=("--train-arg=$arg"); done
    say "$entry: building ($path path, ${left}s left)"
    started=$(date +%s)
    timeout --signal=TERM --kill-after=60 "$left" "$PY" -m timm_longtail.zoo build "$entry" --manifest "$MANIFEST" \
        --device "$DEVICE" --include-gpu --runs-dir "$RUNS" --publish-to "$PUBLISH_TO" \
        "${DATA_ARGS[@]}" "${COMMIT_ARGS[@]}" "${speed[@]}" "${extra[@]}"
    code=$?
    seconds=$(( $(date +%s) - started ))
    members=()
    if [ -f "$PUBLISH_TO/hub_cards/$entry/results.json" ]; then
        members=("hub_cards/$entry" timm_longtail/models/published_weights.json)
    elif [ -f "$PUBLISH_TO/results/zoo/$entry.json" ]; then
        members=("results/zoo/$entry.json")
    fi
    if [ "$code" -eq 0 ] && [ "${#members[@]}" -gt 0 ]; then
        tar -czf "$OUT/.$entry.tgz.tmp" -C "$PUBLISH_TO" "${members[@]}" && mv "$OUT/.$entry.tgz.tmp" "$OUT/$entry.tgz"
        archives=$((archives + 1))
        status=published
    elif [ "$code" -eq 124 ] || [ "$code" -eq 143 ]; then
        status="stopped at the budget"
    else
        status="failed (exit $code)"
    fi
    say "$entry: $status in ${seconds}s"
    RESULTS+=("{\"entry\": \"$entry\", \"path\": \"$path\", \"status\": \"$status\", \"seconds\": $seconds}")
done <<< "$PLAN"

summary=$(IFS=,; echo "{\"device\": \"$DEVICE\", \"source_commit\": \"${SOURCE_COMMIT:-}\", \"budget_s\": $BUDGET_S, \"elapsed_s\": $(elapsed), \"entries\": [${RESULTS[*]}]}")
echo "$summary" > "$OUT/.device_zoo.json.tmp" && mv "$OUT/.device_zoo.json.tmp" "$OUT/device_zoo.json"
say "done: $archives entries handed back in $OUT"
