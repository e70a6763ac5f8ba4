#!/usr/bin/env bash
# An ablation suite in one W&B group: every experiment trained with one seed, CV-Bench for each, one comparison report.
# Usage: [SUITE=paper|losses|families] [TINY=1] bash launch/run_ablations.sh [overrides for every training...]
#   e.g. bash launch/run_ablations.sh --max_steps 200        SUITE=losses TINY=1 bash launch/run_ablations.sh
# Suites (SUITE, default paper; each experiment is recipes/configs/<paper|tiny>/<experiment>.yaml):
#   paper     the paper's ablations: grpo_base grpo_instruct sft_baseline grpo_base_length
#   losses    the GRPO loss family against the paper's loss: grpo_base grpo_base_dr_grpo grpo_base_dapo grpo_base_bnpo
#             grpo_base_gspo grpo_base_clip_higher
#   families  instruct GRPO across model families, Qwen2-VL-2B-Instruct as reference: grpo_instruct
#             grpo_instruct_qwen2_5_vl_3b grpo_instruct_qwen2_5_vl_7b grpo_instruct_qwen3_vl_2b
#             grpo_instruct_qwen3_vl_4b
#             (TINY=1: grpo_instruct grpo_instruct_qwen2_5_vl grpo_instruct_qwen3_vl, tiny models of each family)
# TINY=1 runs the suite offline on CPU: tiny configs, synthetic data, tiny random models, minutes.
# Environment (default): SEED (42), OUT (outputs/ablations/<suite>/seed<SEED>, TINY: outputs/ablations-tiny/...;
#   relative to your directory), GROUP (ablations[-tiny]-<suite>-seed<SEED>), EXPERIMENTS (the suite's),
#   DUMP_TRAJECTORIES (none; GRPO experiments whose samples go to <run>/trajectories/, or "all"), FRESH (0: keep
#   finished trainings and evaluations made with the same settings, resume unfinished ones; 1: delete what the
#   suite recorded making in OUT and redo everything), PYTHON (python), DRY_RUN (0; 1 prints the commands and
#   writes nothing).
#   GPU suite: NUM_GPUS (8; trainings through launch/run_8gpu.sh, evaluations data parallel over the GPUs; the
#     configs' prompts_per_step keeps the paper's global batch on any count: gradient accumulation is derived from it,
#     a contradicting --gradient_accumulation_steps is refused), CVBENCH (nyu-visionx/CV-Bench), EVAL_LIMIT (all
#     rows), EVAL_MAX_NEW_TOKENS (1024).
#   One arm per node: NNODES (1) and NODE_RANK (0..NNODES-1) give each node the experiments at positions
#     NODE_RANK, NODE_RANK+NNODES, ... of the suite (trained and evaluated there); with the same settings on every
#     node and OUT on a shared file system. Once all are done, the same command with NNODES=1 on one node writes the
#     report (the arms are done already). launch/slurm_ablations.sbatch does all of it. GPU suite only, FRESH=0.
#   EVAL_ARGS: evaluation-only options for recipes/eval_cvbench.py, e.g. "--backend vllm --batch_size 512".
#   Overrides reach every stage they affect: --min_pixels/--max_pixels, --prompt_template and --chat_template go to
#   the training and to the evaluation's matching options (--prompt: the CV-Bench template of that name; sft:
#   instruct_no_reasoning). Otherwise the evaluation uses the checkpoint's own saved processor bounds (its
#   training's) and the experiment's CV-Bench prompt; an option in EVAL_ARGS wins for the evaluation.
#   TINY=1: ROWS (64 synthetic SAT rows), EVAL_ROWS (16 CV-Bench rows), MAX_STEPS (the tiny configs' 30),
#     EVAL_MAX_NEW_TOKENS (24); SAT_DATA, CVBENCH, BASE_MODEL, INSTRUCT_MODEL reuse existing ones instead of building.
# OUT/provenance.json records the seed, sizes, configs and overrides OUT was made with and what the suite created
# there: a rerun with other settings stops with the differences instead of calling another seed's results "done
# already"; FRESH=1 deletes only those recorded paths; a folder with files and no record is never used.
# Output: OUT/<experiment>/ (model, trainer_state.json, wandb/), OUT/<experiment>/eval_cvbench/summary.json,
#   OUT/report.html + OUT/report.png (python -m recipes.compare). Expected time: TINY=1 about 3-5 min on 2 CPU cores.
set -euo pipefail

usage_line() {
  echo "Usage: [SUITE=paper|losses|families] [TINY=1] bash launch/run_ablations.sh [overrides...]  (-h: help)"
}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091  # launch/lib.sh is checked on its own
. "$ROOT/launch/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

# 0. Every setting is checked before anything is written.
SUITE=${SUITE:-paper}
TINY=${TINY:-0}
SEED=${SEED:-42}
FRESH=${FRESH:-0}
DRY_RUN=${DRY_RUN:-0}
PYTHON=${PYTHON:-python}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
DUMP_TRAJECTORIES=${DUMP_TRAJECTORIES:-}
EVAL_LIMIT=${EVAL_LIMIT:-}
require_choice SUITE paper losses families
require_choice TINY 0 1
require_int SEED 0 42
require_choice FRESH 0 1
require_choice DRY_RUN 0 1
require_int NNODES 1 4
require_int NODE_RANK 0 0
((NODE_RANK < NNODES)) || die "NODE_RANK=$NODE_RANK must be in 0..$((NNODES - 1)) (NNODES=$NNODES)"
if ((NNODES > 1)); then
  [[ "$TINY" != 1 ]] || die "TINY=1 runs every arm on this machine: one arm per node (NNODES=$NNODES) is for GPU nodes"
  [[ "$FRESH" != 1 ]] || die "FRESH=1 deletes what the other nodes are writing: start over on one node first \
(FRESH=1 NNODES=1 DRY_RUN=1 lists what it deletes), then launch the nodes with FRESH=0"
fi
refused="seed: set SEED=N instead
output_dir: set OUT=<folder> instead
wandb_group: set GROUP=<name> instead
resume_from_checkpoint: a rerun resumes unfinished trainings by itself (FRESH=1 starts over)
limit: an evaluation option: set EVAL_LIMIT=N instead
max_new_tokens: an evaluation option: set EVAL_MAX_NEW_TOKENS=N instead
prompt: an evaluation option: give the training's --prompt_template (it reaches both), or EVAL_ARGS=\"--prompt NAME\"
backend: an evaluation option: set EVAL_ARGS=\"--backend ...\" instead
batch_size: an evaluation option: set EVAL_ARGS=\"--batch_size N\" instead
skip_bad_images: an evaluation option: set EVAL_ARGS=\"--skip_bad_images true\" instead"
if [[ "$TINY" == 1 ]]; then
  SIZE=tiny
  ROWS=${ROWS:-64}
  EVAL_ROWS=${EVAL_ROWS:-16}
  EVAL_LIMIT=${EVAL_LIMIT:-$EVAL_ROWS}
  EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-24}
  MAX_STEPS=${MAX_STEPS:-}
  require_int ROWS 1 64
  require_int EVAL_ROWS 1 16
  [[ -z "$MAX_STEPS" ]] || require_int MAX_STEPS 1 30
  refused+="
model_name_or_path: set BASE_MODEL / INSTRUCT_MODEL instead
dataset_path: set SAT_DATA instead"
else
  SIZE=paper
  EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-1024}
  NUM_GPUS=${NUM_GPUS:-8}
  require_int NUM_GPUS 1 8
  export NUM_GPUS # read by launch/run_8gpu.sh
fi
[[ -z "$EVAL_LIMIT" ]] || require_int EVAL_LIMIT 1 100
require_int EVAL_MAX_NEW_TOKENS 1 1024
require_overrides "$refused" "$@"
read -r -a eval_extra <<<"${EVAL_ARGS:-}"
require_overrides "model_name_or_path: the suite evaluates each of its runs (EXPERIMENTS selects them)
output_dir: each evaluation goes to OUT/<experiment>/eval_cvbench
dataset: set CVBENCH=<hub id, parquet or folder> instead
limit: set EVAL_LIMIT=N instead
max_new_tokens: set EVAL_MAX_NEW_TOKENS=N instead" ${eval_extra[@]+"${eval_extra[@]}"}

# The overrides that define the evaluation too reach it (the training's --prompt_template as the CV-Bench template
# of that name); an option in EVAL_ARGS wins. Unset, the evaluation reads the checkpoint's own saved processor.
eval_shared=()
for name in min_pixels max_pixels chat_template; do
  value=$(override_value "$name" "$@")
  [[ -z "$value" ]] || eval_shared+=("--$name" "$value")
done
eval_prompt=
template=$(override_value prompt_template "$@")
if [[ -n "$template" && -z "$(override_value prompt ${eval_extra[@]+"${eval_extra[@]}"})" ]]; then
  case $template in
    sft) eval_prompt=instruct_no_reasoning ;; # SFT trains on bare answers: CV-Bench without reasoning
    base | instruct | base_clean | base_short) eval_prompt=$template ;;
    *) die "--prompt_template $template has no CV-Bench template of that name: name the evaluation's with \
EVAL_ARGS=\"--prompt NAME\" (recipes/shared/prompts.py EVAL_TEMPLATES)" ;;
  esac
fi

suite_experiments() {
  case $SUITE in
    paper) echo grpo_base grpo_instruct sft_baseline grpo_base_length ;;
    losses) echo grpo_base grpo_base_dr_grpo grpo_base_dapo grpo_base_bnpo grpo_base_gspo grpo_base_clip_higher ;;
    families)
      if [[ "$TINY" == 1 ]]; then
        echo grpo_instruct grpo_instruct_qwen2_5_vl grpo_instruct_qwen3_vl
      else
        echo grpo_instruct grpo_instruct_qwen2_5_vl_3b grpo_instruct_qwen2_5_vl_7b grpo_instruct_qwen3_vl_2b \
          grpo_instruct_qwen3_vl_4b
      fi
      ;;
  esac
}
EXPERIMENTS=${EXPERIMENTS:-$(suite_experiments)}
# One arm per node: this node's share of the suite (every node checks the whole suite's record the same way).
MINE=
position=0
for exp in $EXPERIMENTS; do
  ((position % NNODES != NODE_RANK)) || MINE+="$exp "
  position=$((position + 1))
done
[[ -n "$MINE" ]] || die "NODE_RANK=$NODE_RANK has no arm: the suite has $position experiments for NNODES=$NNODES nodes"
MINE=${MINE% }

# Per experiment: its recipe and config, its CV-Bench prompt, the tiny model it starts from.
recipe_of() {
  case $1 in
    grpo_base*) echo recipes/grpo_base.py ;;
    grpo_instruct*) echo recipes/grpo_instruct.py ;;
    sft_baseline*) echo recipes/sft_baseline.py ;;
  esac
}
config_of() { echo "recipes/configs/$SIZE/$1.yaml"; }
eval_prompt_of() {
  case $1 in
    grpo_instruct*) echo instruct ;;
    sft_baseline*) echo instruct_no_reasoning ;;
    *) echo base ;;
  esac
}
arch_of() {
  case $1 in
    *_qwen2_5_vl*) echo qwen2_5_vl ;;
    *_qwen3_vl*) echo qwen3_vl ;;
    *) echo qwen2_vl ;;
  esac
}
variant_of() { if [[ "$1" == grpo_instruct* ]]; then echo instruct; else echo base; fi; }
dumps_for() { [[ "$1" == grpo_* && ("$DUMP_TRAJECTORIES" == all || " $DUMP_TRAJECTORIES " == *" $1 "*) ]]; }

missing=()
for exp in $EXPERIMENTS; do
  [[ "$exp" =~ ^[a-z0-9_]+$ && -n "$(recipe_of "$exp")" ]] ||
    die "unknown experiment '$exp' in EXPERIMENTS: a name starts with grpo_base, grpo_instruct or sft_baseline and \
has a config recipes/configs/$SIZE/<name>.yaml (suite $SUITE: $(suite_experiments))"
  [[ -f "$ROOT/$(config_of "$exp")" ]] || missing+=("$(config_of "$exp")")
done
[[ ${#missing[@]} -eq 0 ]] ||
  die "suite $SUITE ($SIZE) needs configs that do not exist: ${missing[*]}" \
    "Write them (one YAML per experiment), or run the others: EXPERIMENTS=\"...\" bash launch/run_ablations.sh"

tag=ablations
[[ "$TINY" != 1 ]] || tag=ablations-tiny
OUT=${OUT:-$ROOT/outputs/$tag/$SUITE/seed$SEED}
[[ "$OUT" == /* ]] || OUT=$PWD/$OUT
GROUP=${GROUP:-$tag-$SUITE-seed$SEED}
[[ -n "$GROUP" ]] || die "GROUP is empty: unset it to get $tag-$SUITE-seed$SEED, or name the W&B group"
DATA=$OUT/data
cd "$ROOT"
export TOKENIZERS_PARALLELISM=false
USER_INPUTS=("${SAT_DATA:-}" "${CVBENCH:-}" "${BASE_MODEL:-}" "${INSTRUCT_MODEL:-}") # never deleted, never inside OUT
if [[ "$TINY" == 1 ]]; then
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
  SAT_DATA=${SAT_DATA:-$DATA/sat}
  CVBENCH=${CVBENCH:-$DATA/cvbench.parquet}
  BASE_MODEL=${BASE_MODEL:-$DATA/tiny-base}
  INSTRUCT_MODEL=${INSTRUCT_MODEL:-$DATA/tiny-instruct}
else
  CVBENCH=${CVBENCH:-nyu-visionx/CV-Bench}
fi

model_of() {
  if [[ "$TINY" != 1 ]]; then
    config_value "$(config_of "$1")" model_name_or_path
  elif [[ "$(arch_of "$1")" != qwen2_vl ]]; then
    echo "$DATA/tiny-$(variant_of "$1")-$(arch_of "$1")"
  elif [[ "$(variant_of "$1")" == instruct ]]; then
    echo "$INSTRUCT_MODEL"
  else
    echo "$BASE_MODEL"
  fi
}


# 1. The record (OUT/provenance.json): what defines every file in OUT, and what the suite created there. Results are
# reused only when it matches.
KIND=launch/run_ablations.sh
defined_by=("seed=$SEED" "size=$SIZE" "group=$GROUP" "overrides=$(quoted "$@")")
defined_by+=("eval=$(quoted --dataset "$CVBENCH" --limit "${EVAL_LIMIT:-all}" --max_new_tokens "$EVAL_MAX_NEW_TOKENS" \
  ${eval_shared[@]+"${eval_shared[@]}"} ${eval_prompt:+--prompt "$eval_prompt"} ${eval_extra[@]+"${eval_extra[@]}"})")
if [[ "$TINY" == 1 ]]; then
  defined_by+=("rows=$ROWS" "eval_rows=$EVAL_ROWS" "max_steps=${MAX_STEPS:-config}" "sat_data=$SAT_DATA")
else
  defined_by+=("num_gpus=$NUM_GPUS")
fi
# experiment_definition EXP: exp_defined=(what defines the experiment's run folder: its config's content, its model).
experiment_definition() {
  exp_defined=("config=$(config_of "$1") sha256:$(file_hash "$(config_of "$1")")" "model=$(model_of "$1")")
}
[[ ! -e "$OUT" || -d "$OUT" ]] || die "OUT=$OUT is a file, not a folder: choose a folder, e.g. OUT=${OUT}_run"
start_over="Start over with FRESH=1 (deletes only what the suite recorded making there) or use another folder: \
OUT=<new folder>."
check_entry "$OUT" . "$KIND" "$start_over" "data report.html report.png" "${defined_by[@]}"
for exp in $EXPERIMENTS; do
  experiment_definition "$exp"
  check_entry "$OUT" "$exp" "$KIND" "$start_over" "$exp" "${exp_defined[@]}"
done
[[ "$FRESH" != 1 ]] || fresh_delete "$OUT" "${USER_INPUTS[@]}"
if [[ "$DRY_RUN" != 1 ]]; then
  mkdir -p "$OUT"
  record_entry "$OUT" . "$KIND" running "${defined_by[@]}"
fi

# 2. TINY: offline inputs, each written atomically (complete or absent) and made with the recorded seed and sizes.
if [[ "$TINY" == 1 ]]; then
  step "tiny offline inputs in $DATA (seed $SEED)"
  own "$OUT" . data # those the suite builds go there (SAT_DATA, CVBENCH, BASE_MODEL, INSTRUCT_MODEL: yours elsewhere)
  if ! have "$SAT_DATA"; then
    run "$PYTHON" -m data_prep.fixtures.synthetic --kind sat --rows "$ROWS" --seed "$SEED" --output "$DATA/sat_raw.parquet"
    run "$PYTHON" -m data_prep.sat --input "$DATA/sat_raw.parquet" --output "$SAT_DATA" --seed "$SEED" \
      --multi-image skip
  fi
  have "$CVBENCH" ||
    run "$PYTHON" -m data_prep.fixtures.synthetic --kind cvbench --rows "$EVAL_ROWS" --seed "$SEED" --output "$CVBENCH"
  built=" "
  for exp in $EXPERIMENTS; do
    model=$(model_of "$exp")
    if [[ "$built" == *" $model "* ]] || have "$model"; then continue; fi
    built+="$model "
    arch=()
    [[ "$(arch_of "$exp")" == qwen2_vl ]] || arch=(--arch "$(arch_of "$exp")") # qwen2_vl: the builder's default
    run "$PYTHON" -m data_prep.fixtures.tiny_model --output "$model" --variant "$(variant_of "$exp")" --seed "$SEED" \
      "${arch[@]+"${arch[@]}"}"
  done
fi

# 3. Training: one W&B group; run names and tags say experiment, model and seed. A retrained model is re-evaluated.
trained=" "
for exp in $MINE; do
  run_dir=$OUT/$exp
  if have "$run_dir" && finished "$run_dir"; then
    step "train $exp: done already ($run_dir)"
    continue
  fi
  model=$(model_of "$exp")
  experiment_definition "$exp"
  record_entry "$OUT" "$exp" "$KIND" running "${exp_defined[@]}"
  own "$OUT" "$exp" "$exp"
  args=(--output_dir "$run_dir" --seed "$SEED" --wandb_group "$GROUP" --run_name "$exp-$(basename "$model")-seed$SEED")
  args+=(--resume_from_checkpoint last) # an unfinished (killed) run resumes; with no checkpoint it starts fresh
  dumps_for "$exp" && args+=(--dump_trajectories true)
  step "train $exp -> $run_dir (W&B group $GROUP)"
  if [[ "$TINY" == 1 ]]; then
    args+=(--model_name_or_path "$model" --dataset_path "$SAT_DATA")
    [[ -z "$MAX_STEPS" ]] || args+=(--max_steps "$MAX_STEPS")
    run "$PYTHON" "$(recipe_of "$exp")" --config "$(config_of "$exp")" "${args[@]}" "$@"
  else
    run bash launch/run_8gpu.sh "$(recipe_of "$exp")" "$(config_of "$exp")" "${args[@]}" "$@"
  fi
  trained+="$exp "
done

# 4. CV-Bench: each model with the prompt it was trained for (or the one the overrides name), at the image bounds its
# checkpoint saved (its training's) unless the overrides set them; data parallel on GPUs.
for exp in $MINE; do
  run_dir=$OUT/$exp
  if [[ "$trained" != *" $exp "* ]] && have "$run_dir/eval_cvbench/summary.json"; then
    step "CV-Bench $exp: done already"
    continue
  fi
  prompt=${eval_prompt:-$(eval_prompt_of "$exp")}
  step "CV-Bench $exp (prompt $prompt) -> $run_dir/eval_cvbench"
  args=(--model_name_or_path "$run_dir" --dataset "$CVBENCH" --prompt "$prompt"
    --output_dir "$run_dir/eval_cvbench" --max_new_tokens "$EVAL_MAX_NEW_TOKENS")
  # The paper's evaluation preset (recipes/configs/eval/paper.yaml, bf16) is the default; the tiny CPU models use theirs.
  [[ "$TINY" != 1 ]] || args=(--config recipes/configs/eval/tiny.yaml "${args[@]}")
  args+=(${eval_shared[@]+"${eval_shared[@]}"})
  [[ -z "$EVAL_LIMIT" ]] || args+=(--limit "$EVAL_LIMIT")
  if [[ "$TINY" == 1 || "$NUM_GPUS" -lt 2 ]]; then
    run "$PYTHON" recipes/eval_cvbench.py "${args[@]}" "${eval_extra[@]+"${eval_extra[@]}"}"
  else
    run "$PYTHON" -m accelerate.commands.launch --multi_gpu --num_processes "$NUM_GPUS" \
      --main_process_port "${MASTER_PORT:-29500}" recipes/eval_cvbench.py "${args[@]}" \
      "${eval_extra[@]+"${eval_extra[@]}"}"
  fi
  experiment_definition "$exp"
  record_entry "$OUT" "$exp" "$KIND" finished "${exp_defined[@]}"
done

# 5. The comparison report, once every node is done.
if ((NNODES > 1)); then
  step "node $NODE_RANK of $NNODES: done with $MINE"
  printf 'When every node is done: the same command with NNODES=1 on one node writes %s\n' "$OUT/report.html"
  exit 0
fi
step "comparison report"
own "$OUT" . report.html report.png
run_dirs=()
for exp in $EXPERIMENTS; do run_dirs+=("$OUT/$exp"); done
run "$PYTHON" -m recipes.compare "${run_dirs[@]}" --output "$OUT/report.html" \
  --title "Ablations: suite $SUITE ($SIZE), seed $SEED, W&B group $GROUP"

[[ "$DRY_RUN" != 1 ]] || exit 0
record_entry "$OUT" . "$KIND" finished "${defined_by[@]}"
offline=
[[ "${WANDB_MODE:-}" != offline ]] || offline=" (offline: wandb sync $OUT/*/wandb/offline-run-*)"
printf '\nDone.\n  report:  %s\n  runs:    %s\n  W&B:     group %s, project %s%s\n' "$OUT/report.html" \
  "$OUT/<experiment>" "$GROUP" "${WANDB_PROJECT:-see the configs}" "$offline"
