#!/usr/bin/env bash
# Launch a recipe with DeepSpeed ZeRO-3 (ZERO=2: ZeRO-2) on NNODES nodes x GPUS_PER_NODE GPUs; run it on every node.
# Usage: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0 host> bash launch/run_multinode.sh [RECIPE] [CONFIG] [overrides...]
#   RECIPE     a recipe name (grpo_base, grpo_instruct, sft_baseline) or path (recipes/grpo_base.py); default grpo_base
#   CONFIG     default recipes/configs/paper/<recipe name>.yaml; overrides go to the recipe (e.g. --max_steps 10)
# Environment (default): NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1, required when NNODES > 1),
#   MASTER_PORT (29500), GPUS_PER_NODE (8), ZERO (3), ACCELERATE_CONFIG (launch/accelerate_zero$ZERO.yaml),
#   DS_CONFIG (zero$ZERO.json), OUTPUT_DIR and RUN_NAME (the config's), DDP_BACKEND (nccl on GPUs, gloo without),
#   PYTHON (python), DRY_RUN (0; 1 prints the accelerate command instead of running it).
# RECIPE/CONFIG may be relative to your directory or to the repo root; other relative paths (YAML, overrides,
# OUTPUT_DIR) are taken from the repository root, where the launch runs. Every node needs the same checkout.
# Without a GPU, GPUS_PER_NODE CPU processes train over gloo: a check of the launch path, not a way to train.
# launch/slurm_multinode.sbatch runs this script on every node of a Slurm allocation.
set -euo pipefail

usage_line() {
  echo "${LAUNCH_USAGE:-Usage: [NNODES=N NODE_RANK=R MASTER_ADDR=host] bash launch/run_multinode.sh [RECIPE] [CONFIG] \
[overrides...]  (-h: help)}"
}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091  # launch/lib.sh is checked on its own
. "$ROOT/launch/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

CALLER_DIR=$PWD

# A path as the caller typed it: relative to their working directory if it exists there, else to the repo root.
resolve() {
  if [[ "$1" != /* && -e "$CALLER_DIR/$1" ]]; then
    printf '%s\n' "$CALLER_DIR/$1"
  else
    printf '%s\n' "$1"
  fi
}

# The first arguments: [RECIPE] [CONFIG], then only options. Anything else is refused rather than passed on to the
# recipe while the default config is silently used.
RECIPES="grpo_base grpo_instruct sft_baseline"
RECIPE=recipes/grpo_base.py
if [[ $# -gt 0 && "$1" != -* && "$1" != *.yaml && "$1" != *.yml ]]; then
  if [[ "$1" == *.py ]]; then
    RECIPE=$(resolve "$1")
  elif [[ " $RECIPES " == *" $1 "* ]]; then
    RECIPE=recipes/$1.py
  else
    die "'$1' is neither a recipe (${RECIPES// /, } or a path to a .py file), a config (.yaml) nor an option (--flag)"
  fi
  shift
fi
CONFIG=recipes/configs/paper/$(basename "$RECIPE" .py).yaml
if [[ $# -gt 0 && ("$1" == *.yaml || "$1" == *.yml) ]]; then
  CONFIG=$(resolve "$1")
  shift
fi
require_overrides "" "$@"

# Numbers are checked as numbers before any arithmetic (see require_int).
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
ZERO=${ZERO:-3}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
require_int NNODES 1 2
require_int NODE_RANK 0 0
require_int GPUS_PER_NODE 1 8
require_int MASTER_PORT 1 29500
((MASTER_PORT <= 65535)) || die "MASTER_PORT=$MASTER_PORT must be a TCP port (1-65535), e.g. MASTER_PORT=29500"
[[ "$ZERO" == 2 || "$ZERO" == 3 ]] || die "ZERO=$ZERO: choose 3 (zero3.json) or 2 (zero2.json)"
require_choice DRY_RUN 0 1
ACCELERATE_CONFIG=$(resolve "${ACCELERATE_CONFIG:-launch/accelerate_zero$ZERO.yaml}")
DS_CONFIG=$(resolve "${DS_CONFIG:-zero$ZERO.json}")
if [[ "$NNODES" -gt 1 && -z "${MASTER_ADDR:-}" ]]; then
  die "NNODES=$NNODES needs MASTER_ADDR (the host name of the node with NODE_RANK=0), e.g. MASTER_ADDR=node01"
fi
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
[[ "$NODE_RANK" -ge 0 && "$NODE_RANK" -lt "$NNODES" ]] || die "NODE_RANK=$NODE_RANK must be in 0..$((NNODES - 1))"

cd "$ROOT"
for f in "$RECIPE" "$CONFIG" "$ACCELERATE_CONFIG" "$DS_CONFIG"; do
  [[ -f "$f" ]] || die "$f not found (relative paths are taken from $ROOT); see: bash $0 --help"
done
command -v accelerate >/dev/null || die "accelerate not found: activate the environment (pip install -r requirements.txt)"

# Without GPUs, accelerate picks no process-group backend and every rank would train alone: ask for gloo.
# (Not accelerate's --cpu: that switches DeepSpeed off.)
if [[ -z "${DDP_BACKEND:-}" ]]; then
  visible=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())') ||
    die "could not count the GPUs with $PYTHON -c 'import torch': activate the environment or set DDP_BACKEND"
  if [[ "$visible" -eq 0 ]]; then
    DDP_BACKEND=gloo
    echo "no GPU visible: running $GPUS_PER_NODE CPU processes per node over gloo (a launch check, not training)" >&2
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(($(nproc) / GPUS_PER_NODE > 0 ? $(nproc) / GPUS_PER_NODE : 1))}
  elif [[ "$visible" -lt "$GPUS_PER_NODE" ]]; then
    die "GPUS_PER_NODE=$GPUS_PER_NODE but this node sees $visible GPUs: set NUM_GPUS/GPUS_PER_NODE=$visible (the \
configs' prompts_per_step keeps the global batch: the gradient accumulation follows)"
  fi
fi

extra=()
[[ -n "${DDP_BACKEND:-}" ]] && extra+=(--ddp_backend "$DDP_BACKEND")
[[ -n "${OUTPUT_DIR:-}" ]] && extra+=(--output_dir "$OUTPUT_DIR")
[[ -n "${RUN_NAME:-}" ]] && extra+=(--run_name "$RUN_NAME")

cmd=(
  accelerate launch
  --config_file "$ACCELERATE_CONFIG" --deepspeed_config_file "$DS_CONFIG"
  --num_machines "$NNODES" --machine_rank "$NODE_RANK" --num_processes "$((NNODES * GPUS_PER_NODE))"
  --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT"
  "$RECIPE" --config "$CONFIG" "${extra[@]}" "$@"
)
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
printf '+ %s\n' "${cmd[*]}" >&2
exec "${cmd[@]}"
