#!/usr/bin/env bash
# RIDE's Fig. 1a on this machine: K models per method, each trained on its own resampled
# CIFAR-10-LT (IF 100) set (train.py --longtail-seed s, training seed s, s = 1..K), on one short
# schedule shared by every method; then analyze.py bias-variance per method.
#   methods: each shipped baseline config as it is (ride: configs/ride_r32_3e_cifar10lt.yaml,
#   ldam_drw, ce), only the schedule scaled to EPOCHS: 1 warm-up epoch from lr/5, DRW from
#   epoch index 4E/5, lr x0.01 at index 4E/5 and again at 9E/10 (the recipes' 160/180 of 200).
#   Runs are interleaved by seed (s=1 for every method, then s=2, ...), so a stopped experiment
#   still has K-1 or K-2 models of every method; a run with final.json is skipped, one with
#   last.pth is resumed. Seed 0 (the standard long-tail construction) is not used: every set is
#   a random draw.
# Usage: scripts/bias_variance_cifar10lt.sh RUNS_DIR RESULTS_DIR
#   env: EPOCHS (8), K (5), METHODS ("ride ldam_drw ce"), DATA_DIR (../shared/data/cifar10),
#        PYTHON (.venv/bin/python), EXTRA (more train.py flags, e.g. smoke-run limits).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:?usage: $0 RUNS_DIR RESULTS_DIR}
RESULTS=${2:?usage: $0 RUNS_DIR RESULTS_DIR}
PY=${PYTHON:-.venv/bin/python}
EPOCHS=${EPOCHS:-8}
K=${K:-5}
METHODS=${METHODS:-ride ldam_drw ce}
DATA_DIR=${DATA_DIR:-../shared/data/cifar10}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
DECAY=$((EPOCHS * 4 / 5))
SECOND=$((EPOCHS * 9 / 10))
[ "$SECOND" -gt "$DECAY" ] || SECOND=$((DECAY + 1))
mkdir -p "$RUNS" "$RESULTS"

config_of() {
    case "$1" in
        ride) echo configs/ride_r32_3e_cifar10lt.yaml ;;
        ldam_drw) echo configs/ldam_drw_r32_cifar10lt.yaml ;;
        ce) echo configs/ce_r32_cifar10lt.yaml ;;
        *) echo "error: unknown method '$1' (ride, ldam_drw, ce)" >&2; return 2 ;;
    esac
}

for method in $METHODS; do config_of "$method" > /dev/null; done
for seed in $(seq 1 "$K"); do
    for method in $METHODS; do
        run="$RUNS/$method-s$seed"
        if [ -f "$run/final.json" ]; then
            echo "== $method seed $seed: done =="
            continue
        fi
        resume=()
        drw=(--drw-epoch "$DECAY")
        [ "$method" = ce ] && drw=()
        [ -f "$run/last.pth" ] && resume=(--resume "$run/last.pth")
        echo "== $method seed $seed: $EPOCHS epochs =="
        # timm multistep: milestone m decays from epoch index m-1
        "$PY" train.py -c "$(config_of "$method")" --data-dir "$DATA_DIR" --device cpu \
            --longtail-seed "$seed" --seed "$seed" --epochs "$EPOCHS" --warmup-epochs 1 \
            --decay-milestones $((DECAY + 1)) $((SECOND + 1)) "${drw[@]}" \
            --eval-modes ensemble --output "$RUNS" --experiment "$method-s$seed" "${resume[@]}" "${EXTRA_ARGS[@]}"
    done
done

for method in $METHODS; do
    checkpoints=()
    for seed in $(seq 1 "$K"); do
        [ -f "$RUNS/$method-s$seed/final.json" ] && checkpoints+=("$RUNS/$method-s$seed/last.pth")
    done
    echo "== bias-variance of $method over ${#checkpoints[@]} models =="
    "$PY" analyze.py bias-variance --checkpoints "${checkpoints[@]}" --data-dir "$DATA_DIR" --device cpu \
        --channels-last --no-progress --results-file "$RESULTS/$method.cifar10_lt_if100.bias_variance.json"
done
