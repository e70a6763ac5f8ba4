#!/usr/bin/env bash
# Mini R1-Zero: GRPO visibly raises held-out accuracy, offline on a CPU, in minutes (see recipes/mini/MINI_R1.md).
#   stage A: SFT of a random mini Qwen2-VL on "Is the shape a triangle?" (recipes/configs/mini/sft_shape.yaml)
#   stage B: GRPO on "Is the shape red?" from stage A, held-out greedy accuracy logged (recipes/configs/mini/grpo_color.yaml)
# Usage: bash launch/mini_r1.sh [SEED] [stage B overrides...]   e.g. bash launch/mini_r1.sh 1 --learning_rate 1e-4
# Environment: OUT (outputs/mini_r1/seed<SEED>), STAGE_A_STEPS (600), STAGE_B_STEPS (150), HELDOUT_ROWS (200),
#   HELDOUT_EVERY_A (100), HELDOUT_EVERY_B (25), REPORT_TO (none; wandb logs both stages offline), REDO (0; 1 redoes
#   the stages made with other settings), FRESH (0; 1 deletes what OUT/provenance.json records and starts over),
#   PYTHON (python), OMP_NUM_THREADS (1).
# Writes OUT/result.json (before, after, curve, timings), OUT/curve.png and prints a one-line summary.
# OUT/provenance.json records what made each stage (seed, config values, steps, options) and the paths it wrote: a
# rerun skips the stages that finished with the same settings and refuses, naming the differences, to reuse any made
# with other ones. Files no record owns are never reused nor deleted: a folder holding them is refused.
set -euo pipefail

usage_line() { echo "Usage: bash launch/mini_r1.sh [SEED] [stage B overrides...]  (-h: help)"; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091  # launch/lib.sh is checked on its own
. "$ROOT/launch/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

SEED=0
if [[ $# -gt 0 && "$1" != --* ]]; then
  SEED=$1
  shift
fi
require_int SEED 0 1
STAGE_A_STEPS=${STAGE_A_STEPS:-600}
STAGE_B_STEPS=${STAGE_B_STEPS:-150}
HELDOUT_ROWS=${HELDOUT_ROWS:-200}
HELDOUT_EVERY_A=${HELDOUT_EVERY_A:-100}
HELDOUT_EVERY_B=${HELDOUT_EVERY_B:-25}
REPORT_TO=${REPORT_TO:-none}
FRESH=${FRESH:-0}
REDO=${REDO:-0}
PYTHON=${PYTHON:-python}
require_int STAGE_A_STEPS 1 600
require_int STAGE_B_STEPS 1 150
require_int HELDOUT_ROWS 1 200
require_int HELDOUT_EVERY_A 1 100
require_int HELDOUT_EVERY_B 1 25
require_choice REPORT_TO none wandb
require_choice FRESH 0 1
require_choice REDO 0 1
require_overrides "seed: give the seed as the first argument instead
output_dir: set OUT=<folder> instead
model_name_or_path: stage B starts from this run's stage A model
dataset_path: stage B trains on this run's colour records
max_steps: set STAGE_B_STEPS=N instead
heldout_eval_steps: set HELDOUT_EVERY_B=N instead
report_to: set REPORT_TO=none|wandb instead
resume_from_checkpoint: a rerun skips finished stages and redoes unfinished ones by itself
overwrite_output_dir: a rerun with other settings is refused; FRESH=1 starts over" "$@"

cd "$ROOT" # relative paths (OUT) are the repository's, as the defaults
OUT=${OUT:-outputs/mini_r1/seed$SEED}
[[ -n "$OUT" ]] || die "OUT is empty: unset it to get outputs/mini_r1/seed$SEED, or name a folder"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_PROJECT=${WANDB_PROJECT:-visualthinker-mini}

mkdir -p "$OUT"
redo=()
[[ "$REDO" == 0 ]] || redo=(--redo-changed)
[[ "$FRESH" == 0 ]] || redo+=(--fresh) # after every check: deletes only what OUT/provenance.json records
printf '== mini R1-Zero, seed %s, in %s (stage A %s steps, stage B %s steps; progress below, logs in %s/logs)\n' \
  "$SEED" "$OUT" "$STAGE_A_STEPS" "$STAGE_B_STEPS" "$OUT"
"$PYTHON" -m recipes.mini_r1 run --out "$OUT" --seed "$SEED" \
  --stage-a-steps "$STAGE_A_STEPS" --stage-b-steps "$STAGE_B_STEPS" --heldout-rows "$HELDOUT_ROWS" \
  --heldout-every-a "$HELDOUT_EVERY_A" --heldout-every-b "$HELDOUT_EVERY_B" --report-to "$REPORT_TO" \
  --start-over "To redo them (and the stages made from them) with the new settings: REDO=1 bash launch/mini_r1.sh \
$SEED ...; to start over: FRESH=1 (deletes what $OUT/provenance.json records); or use another folder: \
OUT=<folder>." \
  "${redo[@]+"${redo[@]}"}" -- "$@"
