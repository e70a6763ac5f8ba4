#!/usr/bin/env bash
# The offline quickstart: the paper's pipeline end to end on a CPU, in a few minutes, with no hub access.
#   synthetic SAT rows -> data_prep.sat -> tiny Qwen2-VL -> base-model GRPO (tiny config) -> CV-Bench-format eval
# Usage: bash launch/quickstart.sh [recipe overrides...]     e.g. bash launch/quickstart.sh --max_steps 10
# Environment (default): SEED (0), OUT (outputs/quickstart/seed<SEED>; relative to your directory),
#   ROWS (256 synthetic SAT rows), EVAL_ROWS (64 CV-Bench rows), FRESH (0: reuse what OUT holds when it was made with
#   the same settings, resume an unfinished training; 1: delete the quickstart's files in OUT and redo everything),
#   PYTHON (python), DRY_RUN (0; 1 prints the commands instead of running them and writes nothing).
# OUT/stamp.txt records the seed, sizes, config and overrides OUT was made with; a rerun with other settings into
# the same OUT stops with the differences instead of mixing results (FRESH=1 or another OUT starts over).
set -euo pipefail

usage_line() { echo "Usage: [SEED=0] [OUT=dir] [FRESH=1] bash launch/quickstart.sh [recipe overrides...] (-h: help)"; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091  # launch/lib.sh is checked on its own
. "$ROOT/launch/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

# Every setting is checked before anything is written.
SEED=${SEED:-0}
ROWS=${ROWS:-256}
EVAL_ROWS=${EVAL_ROWS:-64}
FRESH=${FRESH:-0}
DRY_RUN=${DRY_RUN:-0}
PYTHON=${PYTHON:-python}
require_int SEED 0 1
require_int ROWS 1 256
require_int EVAL_ROWS 1 64
require_choice FRESH 0 1
require_choice DRY_RUN 0 1
require_overrides "seed: set SEED=N instead
output_dir: set OUT=<folder> instead
model_name_or_path: the quickstart trains the tiny model it builds
dataset_path: the quickstart trains on the data it builds
resume_from_checkpoint: a rerun resumes an unfinished training by itself (FRESH=1 starts over)" "$@"
OUT=${OUT:-$ROOT/outputs/quickstart/seed$SEED}
[[ "$OUT" == /* ]] || OUT=$PWD/$OUT
CONFIG=recipes/configs/tiny/grpo_base.yaml
STAMP=$OUT/stamp.txt
cd "$ROOT"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_PROJECT=${WANDB_PROJECT:-visualthinker-tiny}


# What defines every file in OUT: the data (seed, sizes), the model (seed), the training (config and overrides).
stamp=(
  "made_by=launch/quickstart.sh"
  "seed=$SEED"
  "rows=$ROWS"
  "eval_rows=$EVAL_ROWS"
  "config=$CONFIG sha256:$(file_hash "$CONFIG")"
  "overrides=$(quoted "$@")"
)
[[ ! -e "$OUT" || -d "$OUT" ]] || die "OUT=$OUT is a file, not a folder: choose a folder, e.g. OUT=${OUT}_run"
products=(sat_raw.parquet cvbench.parquet sat tiny-base grpo_base stamp.txt)
if [[ "$FRESH" == 1 ]]; then
  step "FRESH=1: deleting the quickstart's files in $OUT"
  for name in "${products[@]}"; do [[ ! -e "$OUT/$name" ]] || run rm -rf "${OUT:?}/$name"; done
elif [[ -f "$STAMP" ]]; then
  diffs=$(stamp_diff "$STAMP" "${stamp[@]}")
  [[ -z "$diffs" ]] || die "$OUT was made with other settings:" "$diffs" \
    "Start over with FRESH=1 (deletes the quickstart's files there) or use another folder: OUT=<new folder>."
elif ! is_empty_dir "$OUT"; then
  die "$OUT is not empty and has no stamp.txt saying which settings made it." \
    "Start over with FRESH=1 (deletes the quickstart's files there) or use another folder: OUT=<new folder>."
fi
if [[ "$DRY_RUN" != 1 ]]; then
  mkdir -p "$OUT"
  stamp_write "$STAMP" "made by launch/quickstart.sh; reused only with the same settings" "${stamp[@]}"
fi

# Each input is written atomically (complete or absent), so an existing one is whole, and the stamp says it was
# made with this seed and these sizes.
step "synthetic SAT and CV-Bench data (seed $SEED)"
have "$OUT/sat_raw.parquet" ||
  run "$PYTHON" -m data_prep.synthetic --kind sat --rows "$ROWS" --seed "$SEED" --output "$OUT/sat_raw.parquet"
have "$OUT/cvbench.parquet" ||
  run "$PYTHON" -m data_prep.synthetic --kind cvbench --rows "$EVAL_ROWS" --seed "$SEED" \
    --output "$OUT/cvbench.parquet"

step "convert SAT -> chat records (the paper's single-image subset)"
have "$OUT/sat" ||
  run "$PYTHON" -m data_prep.sat --input "$OUT/sat_raw.parquet" --output "$OUT/sat" --seed "$SEED" --multi-image skip

step "tiny Qwen2-VL (base, no chat template)"
have "$OUT/tiny-base" ||
  run "$PYTHON" -m data_prep.tiny_model --output "$OUT/tiny-base" --variant base --seed "$SEED"

trained=0
if have "$OUT/grpo_base" && finished "$OUT/grpo_base"; then
  step "GRPO on the base model: done already ($OUT/grpo_base)"
else
  step "GRPO on the base model ($CONFIG)"
  # An unfinished run (killed) resumes from its last checkpoint; with none, it starts from the tiny model.
  run "$PYTHON" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no \
    --dynamo_backend no recipes/grpo_base.py --config "$CONFIG" --model_name_or_path "$OUT/tiny-base" \
    --dataset_path "$OUT/sat" --output_dir "$OUT/grpo_base" --seed "$SEED" --resume_from_checkpoint last "$@"
  trained=1
fi

EVAL=$OUT/grpo_base/eval_cvbench
if [[ "$trained" == 0 ]] && have "$EVAL/summary.json"; then
  step "CV-Bench-format evaluation: done already ($EVAL)"
else
  step "CV-Bench-format evaluation of the trained model (same prompt and pixel bounds as training)"
  # recipes/configs/eval/tiny.yaml: the paper's prompt and greedy decoding at the checkpoint's own saved (training)
  # pixel bounds, in the checkpoint's dtype (fp32 on CPU).
  run "$PYTHON" recipes/eval_cvbench.py --config recipes/configs/eval/tiny.yaml --model_name_or_path "$OUT/grpo_base" \
    --dataset "$OUT/cvbench.parquet" --output_dir "$EVAL"
fi

[[ "$DRY_RUN" != 1 ]] || exit 0
# The headline number, read from the evaluation's own summary (left out if its layout ever changes).
accuracy=$("$PYTHON" -c 'import json, sys
s = json.load(open(sys.argv[1]))
print("{:.1%} of {} rows".format(s["accuracy"], s["rows"]["scored"]))' "$EVAL/summary.json" 2>/dev/null || true)
wandb_run=$(find "${WANDB_DIR:-$OUT/grpo_base}/wandb" -maxdepth 1 -name 'offline-run-*' 2>/dev/null | sort | tail -n 1)
cat <<EOF

Done (seed $SEED).
  checkpoint:        $OUT/grpo_base
  W&B offline run:   ${wandb_run:-none (WANDB_MODE=$WANDB_MODE)}${wandb_run:+   (upload: wandb sync $wandb_run)}
  CV-Bench summary:  $EVAL/summary.md${accuracy:+   (accuracy $accuracy)}

What these numbers mean: the model is a tiny Qwen2-VL with random weights, trained for a few steps on synthetic
data, so its rewards and its CV-Bench accuracy are about 0. They show that the pipeline runs end to end (data,
prompts, rewards, GRPO, checkpoint, evaluation), not that it learns.
To watch GRPO really raise held-out accuracy on a CPU (about 50% -> 100% in ~6 minutes): bash launch/mini_r1.sh
EOF
if [[ -f launch/mini_ablations.sh ]]; then
  echo "To compare the paper's ablations on that task, over seeds: bash launch/mini_ablations.sh"
fi
