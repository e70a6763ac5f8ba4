#!/usr/bin/env bash
# The paper's ablations in miniature, offline on a CPU (see recipes/mini/MINI_ABLATIONS.md): per seed, the mini R1-Zero
# stage A (SFT on "Is the shape a triangle?") runs once; every arm then trains on "Is the shape red?" from that model,
# on the same records and steps: grpo (the paper's settings), grpo_length (+ the naive length reward), sft (answer
# targets), dr_grpo, dapo, gspo. Each is scored on held-out scenes and on unseen shades (out of distribution).
# Usage: bash launch/mini_ablations.sh [SEED ...]        (default: 0 1 2)
# Environment: OUT (outputs/mini_ablations), ARMS (all six), JOBS (2: stages run at once, one core each),
#   STAGE_A_STEPS (600), STAGE_B_STEPS (60), HELDOUT_ROWS (200), OOD_ROWS (200), HELDOUT_EVERY_A (100),
#   HELDOUT_EVERY_B (10), REPORT_TO (none; wandb: offline runs in W&B group GROUP, tagged arm:<arm> and seed:<n>),
#   GROUP (mini_ablations), REDO (0; 1 redoes the stages made with other settings), FRESH (0; 1 deletes what the
#   given seeds' records and OUT's record list, then starts over), PYTHON (python), OMP_NUM_THREADS (1).
# Writes OUT/seed<N>/ (data, stage_a, one folder per arm, logs/, provenance.json), OUT/summary.json, OUT/report.html
# and prints a table of mean ± s.d. per arm. Measured: three seeds, all arms, 20-24 min on 2 CPU cores (shared).
# OUT/seed<N>/provenance.json records what made each stage (seed, config values, steps) and the paths it wrote: a
# rerun skips the stages that finished with the same settings and refuses, naming the differences, to reuse any made
# with other ones. Files no record owns are never reused nor deleted: a folder holding them is refused.
set -euo pipefail

usage_line() { echo "Usage: bash launch/mini_ablations.sh [SEED ...]  (-h: help)"; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091  # launch/lib.sh is checked on its own
. "$ROOT/launch/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

seeds=()
for seed in "$@"; do
  SEED=$seed
  require_int SEED 0 1
  [[ " ${seeds[*]-} " != *" $SEED "* ]] || die "seed $SEED is given twice"
  seeds+=("$SEED")
done
[[ ${#seeds[@]} -gt 0 ]] || seeds=(0 1 2)
ARMS=${ARMS:-grpo grpo_length sft dr_grpo dapo gspo}
JOBS=${JOBS:-2}
STAGE_A_STEPS=${STAGE_A_STEPS:-600}
STAGE_B_STEPS=${STAGE_B_STEPS:-60}
HELDOUT_ROWS=${HELDOUT_ROWS:-200}
OOD_ROWS=${OOD_ROWS:-200}
HELDOUT_EVERY_A=${HELDOUT_EVERY_A:-100}
HELDOUT_EVERY_B=${HELDOUT_EVERY_B:-10}
REPORT_TO=${REPORT_TO:-none}
GROUP=${GROUP:-mini_ablations}
FRESH=${FRESH:-0}
REDO=${REDO:-0}
PYTHON=${PYTHON:-python}
require_int JOBS 1 2
require_int STAGE_A_STEPS 1 600
require_int STAGE_B_STEPS 1 60
require_int HELDOUT_ROWS 1 200
require_int OOD_ROWS 1 200
require_int HELDOUT_EVERY_A 1 100
require_int HELDOUT_EVERY_B 1 10
require_choice REPORT_TO none wandb
require_choice FRESH 0 1
require_choice REDO 0 1
[[ "$GROUP" =~ ^[A-Za-z0-9._-]+$ ]] || die "GROUP='$GROUP' must be a W&B group name (letters, digits, . _ -)"
read -r -a arms <<<"$ARMS"
valid_arms="grpo grpo_length sft dr_grpo dapo gspo"
[[ ${#arms[@]} -gt 0 ]] || die "ARMS is empty: name at least one of $valid_arms"
for name in "${arms[@]}"; do
  [[ " $valid_arms " == *" $name "* ]] || die "unknown arm '$name' in ARMS; valid arms: $valid_arms"
done

cd "$ROOT" # relative paths (OUT) are the repository's, as the default
OUT=${OUT:-outputs/mini_ablations}
[[ -n "$OUT" ]] || die "OUT is empty: unset it to get outputs/mini_ablations, or name a folder"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_PROJECT=${WANDB_PROJECT:-visualthinker-mini}

mkdir -p "$OUT"
redo=()
[[ "$REDO" == 0 ]] || redo=(--redo-changed)
[[ "$FRESH" == 0 ]] || redo+=(--fresh) # after every check: deletes only what the records of these seeds list
printf '== mini ablations in %s: seeds %s, arms %s; stage A %s steps, stage B %s steps, %s jobs at a time\n' \
  "$OUT" "${seeds[*]}" "${arms[*]}" "$STAGE_A_STEPS" "$STAGE_B_STEPS" "$JOBS"
printf '   (progress below; each stage logs to %s/seed<N>/logs/<stage>.log)\n' "$OUT"
"$PYTHON" -m recipes.mini_ablations run --out "$OUT" --seeds "${seeds[@]}" --arms "${arms[@]}" --jobs "$JOBS" \
  --stage-a-steps "$STAGE_A_STEPS" --stage-b-steps "$STAGE_B_STEPS" --heldout-rows "$HELDOUT_ROWS" \
  --ood-rows "$OOD_ROWS" --heldout-every-a "$HELDOUT_EVERY_A" --heldout-every-b "$HELDOUT_EVERY_B" \
  --report-to "$REPORT_TO" --group "$GROUP" \
  --start-over "To redo them (and the stages made from them) with the new settings: REDO=1 bash \
launch/mini_ablations.sh ${seeds[*]}; to start these seeds over: FRESH=1 (deletes what $OUT/seed<N>/provenance.json \
records); or use another folder: OUT=<folder>." "${redo[@]+"${redo[@]}"}"
