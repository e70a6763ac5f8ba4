#!/usr/bin/env bash
# The offline quickstart: the paper's pipeline end to end on a CPU, in a few minutes, with no hub access.
#   synthetic SAT rows -> data_prep.sat -> tiny Qwen2-VL -> base-model GRPO (tiny config) -> CV-Bench-format eval
# Usage: bash launch/quickstart.sh [recipe overrides...]     e.g. bash launch/quickstart.sh --max_steps 10
# Environment: OUT (outputs/quickstart), SEED (0), ROWS (256 synthetic SAT rows), EVAL_ROWS (64 CV-Bench rows).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/quickstart}
SEED=${SEED:-0}
ROWS=${ROWS:-256}
EVAL_ROWS=${EVAL_ROWS:-64}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_PROJECT=${WANDB_PROJECT:-visualthinker-tiny}
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }

# Inputs are deterministic from SEED, so existing ones are reused on a re-run.
step "synthetic SAT and CV-Bench data (seed $SEED)"
[[ -f "$OUT/sat_raw.parquet" ]] || python -m data_prep.synthetic --kind sat --rows "$ROWS" --seed "$SEED" --output "$OUT/sat_raw.parquet"
[[ -f "$OUT/cvbench.parquet" ]] || python -m data_prep.synthetic --kind cvbench --rows "$EVAL_ROWS" --seed "$SEED" --output "$OUT/cvbench.parquet"

step "convert SAT -> chat records (the paper's single-image subset)"
[[ -d "$OUT/sat" ]] || python -m data_prep.sat --input "$OUT/sat_raw.parquet" --output "$OUT/sat" --seed "$SEED" --multi-image skip

step "tiny Qwen2-VL (base, no chat template)"
[[ -d "$OUT/tiny-base" ]] || python -m data_prep.tiny_model --output "$OUT/tiny-base" --variant base --seed "$SEED"

step "GRPO on the base model (recipes/configs/tiny/grpo_base.yaml)"
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  recipes/grpo_base.py --config recipes/configs/tiny/grpo_base.yaml \
  --model_name_or_path "$OUT/tiny-base" --dataset_path "$OUT/sat" --output_dir "$OUT/grpo_base" --seed "$SEED" "$@"

step "CV-Bench-format evaluation of the trained model (same prompt and pixel bounds as training)"
python recipes/eval_cvbench.py --model_name_or_path "$OUT/grpo_base" --dataset "$OUT/cvbench.parquet" \
  --prompt base --min_pixels 3136 --max_pixels 12544 --max_new_tokens 64 --output_dir "$OUT/grpo_base/eval_cvbench"

printf '\nDone.\n  checkpoint:      %s\n  W&B offline run: %s\n  CV-Bench results: %s\n' "$OUT/grpo_base" \
  "$(find "$OUT/grpo_base/wandb" -maxdepth 1 -name 'offline-run-*' 2>/dev/null | sort | tail -n 1)" \
  "$OUT/grpo_base/eval_cvbench/summary.md"

