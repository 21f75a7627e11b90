#!/usr/bin/env bash
# The main job, on the embedded long-tailed CIFAR-10 demo set (no download needed):
#   0. the zoo first: the published ride_resnet32_3e weights (timm's pretrained=True; from
#      hub_cards/ in a source checkout, no network) validated on the demo test split in every
#      forward mode; while none are published yet it says so and goes on;
#   1. RIDE ResNet-32 with 3 experts, stage 1 (LDAM-DRW + diversity loss), a few epochs on CPU;
#   2. RIDE's router stage (experts frozen, class-balanced sampling);
#   3. validate.py on the demo test split in every forward mode, with many/medium/few-shot accuracy,
#      MACs per image and the experts-used histogram of routed mode.
# Results land in runs/main_job/<date-time>/ (checkpoints, summary.csv, final.json, results.json/csv,
# per-class plot): every invocation its own folder, as train.py never writes into another run's.
# EPOCHS=30 bash scripts/main_job.sh trains longer (and better); OUT=<folder> names the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/main_job/$(date +%Y%m%d-%H%M%S)}
EPOCHS=${EPOCHS:-4}  # under 2 minutes in all on a 2-core CPU: the demo shows the pipeline, not accuracy
ZOO_MODEL=${ZOO_MODEL:-ride_resnet32_3e}
mkdir -p "$OUT"

if "$PY" -c "import sys, timm_longtail, timm; sys.exit(0 if timm.list_pretrained('$ZOO_MODEL.*') else 1)"; then
    echo "== the zoo: $ZOO_MODEL with pretrained=True on the demo test split =="
    "$PY" validate.py --model "$ZOO_MODEL" --pretrained --dataset demo --split test --forward-mode all \
        --device cpu --results-file "$OUT/zoo_results.json"
else
    echo "== the zoo: no published weights for $ZOO_MODEL yet (python -m timm_longtail.zoo status) =="
fi

echo "== a short RIDE training run on the demo set =="
# --device-augment: the demo set augmented in batches in the training process (no loader workers to start)
COMMON=(--dataset demo --model ride_resnet32_3e --method ride --device cpu --device-augment --seed 0 --output "$OUT")

"$PY" train.py "${COMMON[@]}" --experiment experts --epochs "$EPOCHS" --batch-size 64 \
    --lr 0.1 --warmup-epochs 1 --decay-milestones $((EPOCHS * 3 / 4)) --drw-epoch $((EPOCHS * 3 / 4)) --no-final-eval
"$PY" train.py "${COMMON[@]}" --experiment router --stage router \
    --initial-checkpoint "$OUT/experts/last.pth" --epochs 2 --batch-size 128 --lr 0.01 --no-final-eval
"$PY" validate.py --checkpoint "$OUT/router/last.pth" --dataset demo --split test --forward-mode all \
    --device cpu --results-file "$OUT/results.json"
echo "== done: $OUT =="
