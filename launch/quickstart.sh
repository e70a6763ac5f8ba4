#!/usr/bin/env bash
# The offline quickstart: the paper's pipeline end to end on a CPU, in about half a minute, with no hub access.
#   synthetic SAT rows -> data_prep.sat -> tiny Qwen2-VL -> base-model GRPO (tiny config) -> CV-Bench-format eval
# Usage: bash launch/quickstart.sh [recipe overrides...]     e.g. bash launch/quickstart.sh --max_steps 10
# Environment (default): SEED (0), OUT (outputs/quickstart/seed<SEED>; relative to your directory),
#   ROWS (256 synthetic SAT rows), EVAL_ROWS (64 CV-Bench rows), FRESH (0: reuse what OUT holds when it was made with
#   the same settings, resume an unfinished training; 1: delete what the quickstart recorded making in OUT and redo
#   everything), PYTHON (the interpreter `python` starts), DRY_RUN (0; 1 prints the commands instead of running them
#   and writes nothing).
# The console gets a short account; each stage's whole output goes to OUT/logs/<stage>.log. The Python stages share
# one import of torch and transformers (recipes/shared/stages.py); PYTHON set to another interpreter or a wrapper
# starts each stage as its own command instead.
# OUT/provenance.json records the seed, sizes, configs and overrides OUT was made with, and what the quickstart
# created there: a rerun with other settings stops with the differences instead of mixing results, and FRESH=1
# deletes only those recorded files. A folder with files and no record is never used: choose another OUT.
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
# The interpreter itself, not a shim that starts it (pyenv's): the Python stages share its imports (lib.sh run_stages).
PYTHON=${PYTHON:-$(python -c 'import sys; print(sys.executable)')}
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
EVAL_CONFIG=recipes/configs/eval/tiny.yaml
LOGS=$OUT/logs
cd "$ROOT"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_PROJECT=${WANDB_PROJECT:-visualthinker-tiny}

# What defines every file in OUT: the data (seed, sizes), the model (seed), the training and evaluation (configs and
# overrides). The record must say the same before anything there is reused.
KIND=launch/quickstart.sh
defined_by=(
  "seed=$SEED"
  "rows=$ROWS"
  "eval_rows=$EVAL_ROWS"
  "config=$CONFIG sha256:$(file_hash "$CONFIG")"
  "eval_config=$EVAL_CONFIG sha256:$(file_hash "$EVAL_CONFIG")"
  "overrides=$(quoted "$@")"
)
[[ ! -e "$OUT" || -d "$OUT" ]] || die "OUT=$OUT is a file, not a folder: choose a folder, e.g. OUT=${OUT}_run"
products="sat_raw.parquet cvbench.parquet sat tiny-base grpo_base logs"
check_entry "$OUT" . "$KIND" \
  "Start over with FRESH=1 (deletes only what the quickstart recorded making there) or use another folder: \
OUT=<new folder>." "$products" "${defined_by[@]}"
[[ "$DRY_RUN" != 1 ]] || echo "== DRY_RUN=1: the commands the quickstart would run (nothing is written)"
[[ "$FRESH" != 1 ]] || fresh_delete "$OUT"
# The inputs to build (each is written atomically: complete or absent; one that exists was recorded as made with
# these settings, checked above), claimed with the logs in the record just before they are made.
claim=(logs)
have "$OUT/sat" || claim+=(sat_raw.parquet sat)
have "$OUT/cvbench.parquet" || claim+=(cvbench.parquet)
have "$OUT/tiny-base" || claim+=(tiny-base)
if [[ "$DRY_RUN" != 1 ]]; then
  mkdir -p "$OUT"
  record_entry "$OUT" . "$KIND" running "${defined_by[@]}" -- "${claim[@]}"
  mkdir -p "$LOGS"
fi
[[ "$DRY_RUN" == 1 ]] ||
  printf 'Quickstart, seed %s, in %s (the whole output of each stage: %s/<stage>.log)\n' "$SEED" "$OUT" "$LOGS"

# 1. Inputs, built side by side: the records as soon as the raw SAT rows exist.
[[ ${#claim[@]} -gt 1 ]] || echo "  inputs (SAT records, CV-Bench rows, tiny model): done already"
if [[ " ${claim[*]} " == *" sat "* ]]; then
  add_stage sat_raw "SAT-format data: $ROWS synthetic rows" \
    "$PYTHON" -m data_prep.fixtures.synthetic --kind sat --rows "$ROWS" --seed "$SEED" --output "$OUT/sat_raw.parquet"
fi
if [[ " ${claim[*]} " == *" cvbench.parquet "* ]]; then
  add_stage cvbench "CV-Bench-format data: $EVAL_ROWS synthetic rows" "$PYTHON" -m data_prep.fixtures.synthetic \
    --kind cvbench --rows "$EVAL_ROWS" --seed "$SEED" --output "$OUT/cvbench.parquet"
fi
if [[ " ${claim[*]} " == *" tiny-base "* ]]; then
  add_stage model "tiny Qwen2-VL (base, random weights)" \
    "$PYTHON" -m data_prep.fixtures.tiny_model --output "$OUT/tiny-base" --variant base --seed "$SEED"
fi
if [[ " ${claim[*]} " == *" sat "* ]]; then
  AFTER=sat_raw add_stage sat "SAT -> chat records (the paper's single-image subset)" "$PYTHON" -m data_prep.sat \
    --input "$OUT/sat_raw.parquet" --output "$OUT/sat" --seed "$SEED" --multi-image skip
fi

# 2. GRPO. An unfinished run (killed) resumes from its last checkpoint; with none, it starts from the tiny model. One
# process: the recipe directly (accelerate's launcher would only start a second Python with the same defaults).
trained=0
if have "$OUT/grpo_base" && finished "$OUT/grpo_base"; then
  echo "  GRPO on the base model: done already"
else
  own "$OUT" . grpo_base
  AFTER="model sat" add_stage train "GRPO on the base model (tiny config, CPU)" "$PYTHON" recipes/grpo_base.py \
    --config "$CONFIG" --model_name_or_path "$OUT/tiny-base" --dataset_path "$OUT/sat" --output_dir "$OUT/grpo_base" \
    --seed "$SEED" --resume_from_checkpoint last "$@"
  trained=1
fi

# 3. CV-Bench-format evaluation (recipes/configs/eval/tiny.yaml): the paper's prompt, greedy decoding, at the
# checkpoint's own saved (training) pixel bounds, in the checkpoint's dtype (fp32 on CPU).
EVAL=$OUT/grpo_base/eval_cvbench
if [[ "$trained" == 0 ]] && have "$EVAL/summary.json"; then
  echo "  CV-Bench-format evaluation: done already"
else
  AFTER="train cvbench" add_stage eval "CV-Bench-format evaluation ($EVAL_ROWS rows, greedy)" \
    "$PYTHON" recipes/eval_cvbench.py --config "$EVAL_CONFIG" --model_name_or_path "$OUT/grpo_base" \
    --dataset "$OUT/cvbench.parquet" --output_dir "$EVAL"
fi
run_stages

[[ "$DRY_RUN" != 1 ]] || exit 0
record_entry "$OUT" . "$KIND" finished "${defined_by[@]}"

# The numbers, from the run's own files (trainer_state.json, the evaluation's summary.json).
numbers=$("$PYTHON" - "$OUT/grpo_base" "$EVAL/summary.json" <<'EOF' 2>/dev/null || true
import json, sys
history = json.load(open(sys.argv[1] + "/trainer_state.json"))["log_history"]
steps = [h for h in history if "rewards/accuracy_reward/mean" in h]
def at(h): return "accuracy {:.2f}, format {:.2f}, length {:.0f} tokens".format(
    h["rewards/accuracy_reward/mean"], h["rewards/format_reward/mean"], h.get("completions/mean_length", 0))
if steps:
    print(f"  training rewards:  step {steps[0]['step']}: {at(steps[0])}")
    print(f"                     step {steps[-1]['step']}: {at(steps[-1])}")
s = json.load(open(sys.argv[2]))
official = s.get("official_score")  # None when a source is missing from the rows (a few rows)
print("  CV-Bench accuracy: {:.1%} of {} rows (official score {})".format(
    s["accuracy"], s["rows"]["scored"], "n/a" if official is None else f"{official:.1%}"))
EOF
)
wandb_run=$(find "${WANDB_DIR:-$OUT/grpo_base}/wandb" -maxdepth 1 -name 'offline-run-*' 2>/dev/null | sort | tail -n 1)
cat <<EOF

Done (seed $SEED).
${numbers:-  (numbers unavailable: see $EVAL/summary.md)}
  checkpoint:        $OUT/grpo_base
  CV-Bench summary:  $EVAL/summary.md
  W&B offline run:   ${wandb_run:-none (WANDB_MODE=$WANDB_MODE)}${wandb_run:+
                     (upload: wandb sync $wandb_run)}

What these numbers mean: the model is a tiny Qwen2-VL with random weights, trained for a few steps on synthetic
data, so its rewards and its CV-Bench accuracy are about 0. They show that the pipeline runs end to end (data,
prompts, rewards, GRPO, checkpoint, evaluation), not that it learns.
To watch GRPO really raise held-out accuracy on a CPU (about 50% -> 100% in ~6 minutes): bash launch/mini_r1.sh
EOF
if [[ -f launch/mini_ablations.sh ]]; then
  echo "To compare the paper's ablations on that task, over seeds: bash launch/mini_ablations.sh"
fi
