#!/usr/bin/env bash
# The one-shot GPU run: on one lent GPU, in one call of at most 600 s, a preflight, a short benchmark,
# then the zoo manifest's entries that have no weights yet, each built by
# `python -m timm_longtail.zoo build` with its manifest recipe (no recipe flag added: the weights are
# the manifest's). Entries whose input runs on the device go first (device: gpu first among them),
# then those that need loader workers (recipes without a batched form, e.g. the ImageNet-style ones).
# A finished entry is handed back at once as OUT/<entry>.tgz (its hub_cards/ folder or results/zoo/
# file, plus the published-weights table). When the budget ends (or the script gets SIGTERM/SIGINT)
# the running build is stopped after its current step, the unfinished stages are parked
# (`zoo park`) and handed back as OUT/<entry>.parked.tgz (zoo_parked/<entry>/: the checkpoint,
# summary.csv with the GPU's training speed, the stage logs): unpacked into the checkout and
# committed, the next GPU run resumes from them. Every child process is stopped before it ends.
#
# Here, before the call (the device gets a copy of the tree without git, ../shared or an install):
#   mkdir -p .device_data && cp -r ../shared/data/cifar10 .device_data/     (18 MB; .device_data/ is ignored)
#   .venv/bin/python scripts/device_wheels.py     (.whl/, ~3.8 MB: what the GPU image lacks; ignored)
#   commit; then, through the device tool, with carry [".device_data", ".whl"] and timeout_s 600:
#   SOURCE_COMMIT=<git rev-parse HEAD> bash scripts/device_zoo.sh "$OUT"
# Back here: for f in <files_at>/*.tgz; do tar -xzf "$f"; done; python -m timm_longtail.zoo table; commit
# (hub_cards/, results/zoo/ and zoo_parked/).
#
# Time: builds stop at BUDGET_S (450) after the script's start; stopping a build waits at most
# STOP_GRACE_S (45) for its step, then kills it; parking and archiving take seconds: the script ends
# near 500 s, inside the call's 600 s (the tool kills at 600 s what is still running, parking nothing).
#
# env: DEVICE (cuda), BUDGET_S (450), STOP_GRACE_S (45), BENCH_S (45; 0: no benchmark),
#      BENCH_ARGS (benchmark_train.py flags), SOURCE_COMMIT (required where the tree has no git),
#      CIFAR10 (.device_data/cifar10), ENTRIES (default: every unpublished entry, device: gpu first),
#      MIN_START_S (30), MANIFEST (configs/zoo/manifest.yaml), PUBLISH_TO (.), RUNS (a temporary folder),
#      TRAIN_ARGS (more train.py flags, e.g. smoke limits), WORKERS (8: loader workers where the
#      device-side augmentation does not apply), PYTHON (python3), WHEELS (.whl), SITE (where they go).
# Speed path per entry: --device-augment where every stage's augmentation has a batched version on the
# device (ride_cifar, ldam_cifar, nclpp_cifar with its copies); loader workers for the rest. Neither flag is part
# of a recipe (they change where augmentation runs, not its distribution).
# At most 8 files come back (the device tool's limit): device_zoo.json, benchmark.json, 6 archives.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT_DIR}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-450}
STOP_GRACE_S=${STOP_GRACE_S:-45}
MIN_START_S=${MIN_START_S:-30}  # an entry is started only with at least this much budget left
BENCH_S=${BENCH_S:-45}
BENCH_ARGS=${BENCH_ARGS:---settings fp32_channels_last bf16_channels_last --steps 20 --warmup 5}
CIFAR10=${CIFAR10-.device_data/cifar10}  # set but empty: no CIFAR-10 (a demo manifest)
MANIFEST=${MANIFEST:-configs/zoo/manifest.yaml}
PUBLISH_TO=${PUBLISH_TO:-.}
RUNS=${RUNS:-$(mktemp -d -t device-zoo-runs.XXXXXX)}
WORKERS=${WORKERS:-8}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-$(mktemp -d -t device-zoo-site.XXXXXX)}
MAX_ARCHIVES=6  # + device_zoo.json + benchmark.json = the 8 files the device tool hands back
START=$(date +%s)
STOP=""  # set by SIGTERM/SIGINT: stop the running step, park, archive, write the summary
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# the tree is not installed there: it is found through PYTHONPATH, after the carried wheels
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
read -r -a TRAIN_ARGS_ARRAY <<< "${TRAIN_ARGS:-}"
read -r -a BENCH_ARGS_ARRAY <<< "$BENCH_ARGS"
trap 'STOP=${STOP:-signal}' TERM INT

elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[device_zoo $(elapsed)s] $*"; }

descendants() {  # every process below $1 (train.py runs in a session of its own: not in our group)
    local child
    for child in $(grep -l "^PPid:[[:space:]]*$1\$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3); do
        echo "$child"
        descendants "$child"
    done
}

stop_tree() {  # SIGTERM to $1 (the zoo build passes it to train.py: it stops after its step), then kill what is left
    local pid=$1 waited=0 tree
    tree=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$STOP_GRACE_S" ]; do sleep 1; waited=$((waited + 1)); done
    tree="$tree $(descendants "$pid")"
    kill -KILL "$pid" $tree 2>/dev/null
    wait "$pid" 2>/dev/null
}

run_until() {  # run_until SECONDS command...: the command's exit status; 124 when stopped at the time or by a signal
    local limit=$1 started pid
    shift
    started=$(date +%s)
    "$@" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [ -n "$STOP" ] || [ $(( $(date +%s) - started )) -ge "$limit" ]; then
            stop_tree "$pid"
            return 124
        fi
        sleep 1
    done
    wait "$pid"
}

DATA_ARGS=()
if [ -n "$CIFAR10" ]; then  # empty: a manifest without CIFAR-10 (the tests' demo manifest)
    [ -d "$CIFAR10" ] || { echo "error: no CIFAR-10 at $CIFAR10: copy ../shared/data/cifar10 into .device_data/ and carry it" >&2; exit 2; }
    DATA_ARGS=(--data-dir "cifar10=$CIFAR10")
fi
COMMIT_ARGS=()
[ -n "${SOURCE_COMMIT:-}" ] && COMMIT_ARGS=(--source-commit "$SOURCE_COMMIT")

# 1. preflight: the carried wheels installed, every package and the device there, or one error line now
PREFLIGHT="$SITE/preflight.json"
"$PY" scripts/device_preflight.py --wheels "$WHEELS" --site "$SITE" --device "$DEVICE" --out "$PREFLIGHT" || exit 2

# 2. a short benchmark: compute-only step rates of each variant (the data path is measured by the builds);
#    its JSON grows row by row, so a cut-short benchmark still hands back what it measured
if [ "$BENCH_S" -gt 0 ]; then
    say "benchmark (at most ${BENCH_S}s)"
    run_until "$BENCH_S" "$PY" scripts/benchmark_train.py --device "$DEVICE" "${BENCH_ARGS_ARRAY[@]}" \
        --out "$OUT/benchmark.json" > /dev/null || say "benchmark cut short or failed (exit $?): going on"
fi

# 3. the plan: unpublished entries, device-side input first, device: gpu first within each group
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

# 4. the builds, one entry at a time, each stopped after its current step when the budget ends
archive() {  # archive NAME MEMBER...: OUT/NAME from PUBLISH_TO's members, written whole or not at all
    local name=$1
    shift
    tar -czf "$OUT/.$name.tmp" -C "$PUBLISH_TO" "$@" && mv "$OUT/.$name.tmp" "$OUT/$name"
}

park_and_archive() {  # the stopped entry's unfinished stages into zoo_parked/, handed back with their logs
    local entry=$1 stage
    "$PY" -m timm_longtail.zoo park "$entry" --manifest "$MANIFEST" --runs-dir "$RUNS" --publish-to "$PUBLISH_TO" \
        || return 1
    [ -d "$PUBLISH_TO/zoo_parked/$entry" ] || return 1
    for stage in "$PUBLISH_TO/zoo_parked/$entry"/*/; do  # the stage's log beside its checkpoint (a record only)
        stage=$(basename "$stage")
        [ -f "$RUNS/$entry/$stage/log.txt" ] && cp "$RUNS/$entry/$stage/log.txt" "$PUBLISH_TO/zoo_parked/$entry/$stage/log.txt"
    done
    archive "$entry.parked.tgz" "zoo_parked/$entry"
}

RESULTS=()
archives=0
while read -r entry path; do
    [ -n "$entry" ] || continue
    left=$(( BUDGET_S - $(elapsed) ))
    if [ -n "$STOP" ] || [ "$archives" -ge "$MAX_ARCHIVES" ] || [ "$left" -lt "$MIN_START_S" ]; then
        RESULTS+=("{\"entry\": \"$entry\", \"status\": \"not started\", \"seconds\": 0}")
        continue
    fi
    speed=(--train-arg=--device-augment)
    [ "$path" = workers ] && speed=(--train-arg=--workers="$WORKERS")
    extra=()
    for arg in "${TRAIN_ARGS_ARRAY[@]}"; do extra+=("--train-arg=$arg"); done
    say "$entry: building ($path path, ${left}s left)"
    started=$(date +%s)
    run_until "$left" "$PY" -m timm_longtail.zoo build "$entry" --manifest "$MANIFEST" \
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
        archive "$entry.tgz" "${members[@]}"
        archives=$((archives + 1))
        status=published
    elif [ "$code" -eq 124 ]; then
        status="stopped at the budget"
        [ -n "$STOP" ] && status="stopped by a signal"
        if park_and_archive "$entry"; then
            archives=$((archives + 1))
            status="$status, parked"
        fi
    else
        status="failed (exit $code)"
    fi
    say "$entry: $status in ${seconds}s"
    RESULTS+=("{\"entry\": \"$entry\", \"path\": \"$path\", \"status\": \"$status\", \"seconds\": $seconds}")
done <<< "$PLAN"

left_over=$(descendants $$ | grep -vx "$BASHPID" || true)
[ -n "$left_over" ] && kill -KILL $left_over 2>/dev/null
summary=$(IFS=,; echo "{\"device\": \"$DEVICE\", \"source_commit\": \"${SOURCE_COMMIT:-}\", \"budget_s\": $BUDGET_S, \"elapsed_s\": $(elapsed), \"stopped_by\": \"${STOP}\", \"preflight\": $(cat "$PREFLIGHT"), \"entries\": [${RESULTS[*]}]}")
echo "$summary" > "$OUT/.device_zoo.json.tmp" && mv "$OUT/.device_zoo.json.tmp" "$OUT/device_zoo.json"
say "done: $archives archives handed back in $OUT"
