#!/usr/bin/env bash
# Mini R1-Zero: GRPO visibly raises held-out accuracy, offline on a CPU, in minutes (see recipes/MINI_R1.md).
#   stage A: SFT of a random mini Qwen2-VL on "Is the shape a triangle?" (recipes/configs/mini/sft_shape.yaml)
#   stage B: GRPO on "Is the shape red?" from stage A, held-out greedy accuracy logged (recipes/configs/mini/grpo_color.yaml)
# Usage: bash launch/mini_r1.sh [SEED] [stage B overrides...]   e.g. bash launch/mini_r1.sh 1 --heldout_eval_steps 10
# Environment: OUT (outputs/mini_r1/seed<SEED>), STAGE_A_STEPS (600), STAGE_B_STEPS (150), HELDOUT_ROWS (200),
#   HELDOUT_EVERY_A (100), HELDOUT_EVERY_B (25), REPORT_TO (none; wandb logs both stages offline), OMP_NUM_THREADS (1).
# Writes OUT/result.json (before, after, curve, timings), OUT/curve.png and prints a one-line summary.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

cd "$(dirname "$0")/.."
SEED=0
if [[ $# -gt 0 && "$1" != -* ]]; then
  SEED=$1
  shift
fi
OUT=${OUT:-outputs/mini_r1/seed$SEED}
STAGE_A_STEPS=${STAGE_A_STEPS:-600}
STAGE_B_STEPS=${STAGE_B_STEPS:-150}
HELDOUT_ROWS=${HELDOUT_ROWS:-200}
HELDOUT_EVERY_A=${HELDOUT_EVERY_A:-100}
HELDOUT_EVERY_B=${HELDOUT_EVERY_B:-25}
REPORT_TO=${REPORT_TO:-none}
PYTHON=${PYTHON:-python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_PROJECT=${WANDB_PROJECT:-visualthinker-mini}
mkdir -p "$OUT"
rm -f "$OUT/result.json"

load() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n== %s\n' "$*"; }

LOAD_START=$(load)
T0=$(now)
step "seed $SEED: random mini Qwen2-VL and synthetic records (data_prep.synthetic -> data_prep.sat) in $OUT"
"$PYTHON" -m recipes.mini_r1 prepare --out "$OUT" --seed "$SEED" \
  --shape-rows $((STAGE_A_STEPS * 16)) --color-rows $((STAGE_B_STEPS * 4)) --heldout-rows "$HELDOUT_ROWS"
PREPARE_S=$(since "$T0")

T1=$(now)
step "stage A: SFT on the shape question ($STAGE_A_STEPS steps)"
"$PYTHON" recipes/sft_baseline.py --config recipes/configs/mini/sft_shape.yaml \
  --model_name_or_path "$OUT/init" --dataset_path "$OUT/data/shape" --output_dir "$OUT/stage_a" \
  --heldout_dataset_path "$OUT/data/shape_heldout" --heldout_eval_steps "$HELDOUT_EVERY_A" \
  --max_steps "$STAGE_A_STEPS" --seed "$SEED" --report_to "$REPORT_TO" --disable_tqdm true
STAGE_A_S=$(since "$T1")

T2=$(now)
step "stage B: GRPO on the colour question ($STAGE_B_STEPS steps)"
"$PYTHON" recipes/grpo_base.py --config recipes/configs/mini/grpo_color.yaml \
  --model_name_or_path "$OUT/stage_a" --dataset_path "$OUT/data/color" --output_dir "$OUT/stage_b" \
  --heldout_dataset_path "$OUT/data/color_heldout" --heldout_eval_steps "$HELDOUT_EVERY_B" \
  --max_steps "$STAGE_B_STEPS" --seed "$SEED" --report_to "$REPORT_TO" --disable_tqdm true "$@"
STAGE_B_S=$(since "$T2")

# CPU seconds (user + system) of the finished child processes: the second line of `times`, run in this shell.
times > "$OUT/.times"
CPU_S=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, t, "m"); sub("s", "", t[2]); n += t[1] * 60 + t[2] } printf "%.1f", n }' "$OUT/.times")
rm -f "$OUT/.times"
"$PYTHON" -m recipes.mini_r1 report --out "$OUT" --seed "$SEED" \
  --seconds prepare="$PREPARE_S" stage_a="$STAGE_A_S" stage_b="$STAGE_B_S" total="$(since "$T0")" \
  --cpu-seconds "$CPU_S" --load "$LOAD_START" "$(load)"
