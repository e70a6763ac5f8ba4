#!/usr/bin/env bash
# The paper's ablation suite in one W&B group: base GRPO, instruct GRPO, SFT baseline, base GRPO + length reward;
# then CV-Bench for each (prompts: base, instruct, instruct_no_reasoning, base) and one comparison report.
# Usage: bash launch/run_ablations.sh [overrides for every training...]      e.g. --max_steps 200
#        TINY=1 bash launch/run_ablations.sh      # the same suite offline on CPU: tiny configs, synthetic data, minutes
# Environment (default): OUT (outputs/ablations; TINY: outputs/ablations-tiny), SEED (42), GROUP (<OUT name>-seed<SEED>),
#   EXPERIMENTS (grpo_base grpo_instruct sft_baseline grpo_base_length), DUMP_TRAJECTORIES (none; GRPO experiments
#   whose samples go to <run>/trajectories/, or "all"), FRESH (0: finished trainings and evaluations are kept and
#   unfinished ones resume from their last checkpoint; 1: redo everything), PYTHON (python), DRY_RUN (0; 1 prints
#   the commands instead of running them).
#   GPU suite: NUM_GPUS (8; trainings through launch/run_8gpu.sh, evaluations data parallel over the GPUs; with other
#     counts keep the paper's global batch, e.g. NUM_GPUS=4 bash launch/run_ablations.sh --gradient_accumulation_steps 2),
#     CVBENCH (nyu-visionx/CV-Bench), EVAL_LIMIT (all rows), EVAL_MAX_NEW_TOKENS (1024), EVAL_ARGS (more options for
#     recipes/eval_cvbench.py, e.g. "--backend vllm --batch_size 512").
#   TINY=1: ROWS (64 synthetic SAT rows), EVAL_ROWS (16 CV-Bench rows), MAX_STEPS (the tiny configs' 30),
#     EVAL_MAX_NEW_TOKENS (24); SAT_DATA, CVBENCH, BASE_MODEL, INSTRUCT_MODEL reuse existing ones instead of building.
# Output: OUT/<experiment>/ (model, trainer_state.json, wandb/), OUT/<experiment>/eval_cvbench/summary.json,
#   OUT/report.html + OUT/report.png (python -m recipes.compare). Expected time: TINY=1 about 3-5 min on 2 CPU cores.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}
step() { printf '\n== %s\n' "$*"; }
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  usage
  exit 0
fi

TINY=${TINY:-0}
SIZE=paper
[[ "$TINY" == 1 ]] && SIZE=tiny
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/outputs/ablations$([[ "$TINY" == 1 ]] && echo -tiny)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd) # relative to the caller's folder; the recipes run from the repository root
cd "$ROOT"

SEED=${SEED:-42}
GROUP=${GROUP:-$(basename "$OUT")-seed$SEED}
EXPERIMENTS=${EXPERIMENTS:-grpo_base grpo_instruct sft_baseline grpo_base_length}
DUMP_TRAJECTORIES=${DUMP_TRAJECTORIES:-}
FRESH=${FRESH:-0}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
export NUM_GPUS=${NUM_GPUS:-8} # read by launch/run_8gpu.sh
EVAL_LIMIT=${EVAL_LIMIT:-}
export TOKENIZERS_PARALLELISM=false

# Per experiment: its recipe, its CV-Bench prompt and whether it samples completions (GRPO).
recipe_of() {
  case $1 in
    grpo_base | grpo_base_length) echo recipes/grpo_base.py ;;
    grpo_instruct) echo recipes/grpo_instruct.py ;;
    sft_baseline) echo recipes/sft_baseline.py ;;
    *) die "unknown experiment '$1' in EXPERIMENTS; valid: grpo_base grpo_instruct sft_baseline grpo_base_length" ;;
  esac
}
eval_prompt_of() {
  case $1 in
    grpo_instruct) echo instruct ;;
    sft_baseline) echo instruct_no_reasoning ;;
    *) echo base ;;
  esac
}
dumps_for() { [[ "$1" == grpo_* && ("$DUMP_TRAJECTORIES" == all || " $DUMP_TRAJECTORIES " == *" $1 "*) ]]; }
config_value() { sed -n "s/^$2: *\([^ #]*\).*/\1/p" "$1" | head -n 1; }
finished() { [[ -f "$1/config.json" ]] && compgen -G "$1/model*.safetensors*" >/dev/null; }

for exp in $EXPERIMENTS; do recipe_of "$exp" >/dev/null; done

if [[ "$TINY" == 1 ]]; then
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
  DATA=$OUT/data
  ROWS=${ROWS:-64}
  EVAL_ROWS=${EVAL_ROWS:-16}
  EVAL_LIMIT=${EVAL_LIMIT:-$EVAL_ROWS}
  EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-24}
  SAT_DATA=${SAT_DATA:-$DATA/sat}
  CVBENCH=${CVBENCH:-$DATA/cvbench.parquet}
  BASE_MODEL=${BASE_MODEL:-$DATA/tiny-base}
  INSTRUCT_MODEL=${INSTRUCT_MODEL:-$DATA/tiny-instruct}
  step "tiny offline inputs in $DATA (seed $SEED; existing ones are reused)"
  mkdir -p "$DATA"
  if [[ ! -d "$SAT_DATA" ]]; then
    run "$PYTHON" -m data_prep.synthetic --kind sat --rows "$ROWS" --seed "$SEED" --output "$DATA/sat_raw.parquet"
    run "$PYTHON" -m data_prep.sat --input "$DATA/sat_raw.parquet" --output "$SAT_DATA" --seed "$SEED" --multi-image skip
  fi
  [[ -e "$CVBENCH" ]] || run "$PYTHON" -m data_prep.synthetic --kind cvbench --rows "$EVAL_ROWS" --seed "$SEED" --output "$CVBENCH"
  [[ -d "$BASE_MODEL" ]] || run "$PYTHON" -m data_prep.tiny_model --output "$BASE_MODEL" --variant base --seed "$SEED"
  [[ -d "$INSTRUCT_MODEL" ]] || run "$PYTHON" -m data_prep.tiny_model --output "$INSTRUCT_MODEL" --variant instruct --seed "$SEED"
else
  CVBENCH=${CVBENCH:-nyu-visionx/CV-Bench}
  EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-1024}
fi

model_of() {
  if [[ "$TINY" == 1 ]]; then
    if [[ "$1" == grpo_instruct ]]; then echo "$INSTRUCT_MODEL"; else echo "$BASE_MODEL"; fi
  else
    config_value "recipes/configs/paper/$1.yaml" model_name_or_path
  fi
}

# 1. Training: one W&B group; run names and tags say experiment, model and seed.
for exp in $EXPERIMENTS; do
  run_dir=$OUT/$exp
  if [[ "$FRESH" != 1 ]] && finished "$run_dir"; then
    step "train $exp: done already ($run_dir)"
    continue
  fi
  model=$(model_of "$exp")
  args=(--output_dir "$run_dir" --seed "$SEED" --wandb_group "$GROUP" --run_name "$exp-$(basename "$model")-seed$SEED")
  [[ "$FRESH" == 1 ]] || args+=(--resume_from_checkpoint last)
  dumps_for "$exp" && args+=(--dump_trajectories true)
  step "train $exp -> $run_dir (W&B group $GROUP)"
  if [[ "$TINY" == 1 ]]; then
    args+=(--model_name_or_path "$model" --dataset_path "$SAT_DATA")
    [[ -z "${MAX_STEPS:-}" ]] || args+=(--max_steps "$MAX_STEPS")
    run "$PYTHON" "$(recipe_of "$exp")" --config "recipes/configs/tiny/$exp.yaml" "${args[@]}" "$@"
  else
    run bash launch/run_8gpu.sh "$(recipe_of "$exp")" "recipes/configs/paper/$exp.yaml" "${args[@]}" "$@"
  fi
done

# 2. CV-Bench: each model with the prompt it was trained for, at its training image bounds (data parallel on GPUs).
read -r -a eval_extra <<<"${EVAL_ARGS:-}"
for exp in $EXPERIMENTS; do
  run_dir=$OUT/$exp
  config=recipes/configs/$SIZE/$exp.yaml
  if [[ "$FRESH" != 1 && -f "$run_dir/eval_cvbench/summary.json" ]]; then
    step "CV-Bench $exp: done already"
    continue
  fi
  step "CV-Bench $exp (prompt $(eval_prompt_of "$exp")) -> $run_dir/eval_cvbench"
  args=(--model_name_or_path "$run_dir" --dataset "$CVBENCH" --prompt "$(eval_prompt_of "$exp")"
    --output_dir "$run_dir/eval_cvbench" --max_new_tokens "$EVAL_MAX_NEW_TOKENS"
    --min_pixels "$(config_value "$config" min_pixels)" --max_pixels "$(config_value "$config" max_pixels)")
  [[ -z "$EVAL_LIMIT" ]] || args+=(--limit "$EVAL_LIMIT")
  [[ "$FRESH" != 1 ]] || run rm -rf "$run_dir/eval_cvbench" # the evaluation resumes into a folder it finds
  if [[ "$TINY" == 1 || "$NUM_GPUS" -lt 2 ]]; then
    run "$PYTHON" recipes/eval_cvbench.py "${args[@]}" "${eval_extra[@]+"${eval_extra[@]}"}"
  else
    run "$PYTHON" -m accelerate.commands.launch --multi_gpu --num_processes "$NUM_GPUS" \
      --main_process_port "${MASTER_PORT:-29500}" recipes/eval_cvbench.py "${args[@]}" "${eval_extra[@]+"${eval_extra[@]}"}"
  fi
done

# 3. The comparison report.
step "comparison report"
run_dirs=()
for exp in $EXPERIMENTS; do run_dirs+=("$OUT/$exp"); done
run "$PYTHON" -m recipes.compare "${run_dirs[@]}" --output "$OUT/report.html" --title "Ablations $GROUP ($SIZE)"

printf '\nDone.\n  report:  %s\n  runs:    %s\n  W&B:     group %s, project %s%s\n' "$OUT/report.html" "$OUT/<experiment>" \
  "$GROUP" "${WANDB_PROJECT:-see the configs}" "$([[ "${WANDB_MODE:-}" == offline ]] && echo " (offline: wandb sync $OUT/*/wandb/offline-run-*)")"
