#!/usr/bin/env bash
# Launch a recipe with DeepSpeed ZeRO-3 (ZERO=2: ZeRO-2) on NNODES nodes x GPUS_PER_NODE GPUs; run it on every node.
# Usage: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0 host> bash launch/run_multinode.sh [RECIPE] [CONFIG] [overrides...]
#   RECIPE     a recipe name (grpo_base, grpo_instruct, sft_baseline) or path (recipes/grpo_base.py); default grpo_base
#   CONFIG     default recipes/configs/paper/<recipe name>.yaml; overrides go to the recipe (e.g. --max_steps 10)
# Environment (default): NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1, required when NNODES > 1),
#   MASTER_PORT (29500), GPUS_PER_NODE (8), ZERO (3), ACCELERATE_CONFIG (launch/accelerate_zero$ZERO.yaml),
#   DS_CONFIG (zero$ZERO.json), OUTPUT_DIR and RUN_NAME (the config's), DDP_BACKEND (nccl on GPUs, gloo without),
#   DDP_TIMEOUT (3600: seconds a collective may wait, --ddp_timeout; TORCH_NCCL_ASYNC_ERROR_HANDLING=1 makes a timed
#   out one end the job instead of hanging it), PYTHON (python), DRY_RUN (0; 1 prints this node's command instead).
# VLLM_NODES=1: the last node (NODE_RANK = NNODES-1) runs `trl vllm-serve` (VLLM_TP GPUs, default 1; VLLM_PORT 8000;
#   VLLM_GPU_MEMORY_UTILIZATION 0.9) for the model the recipe trains, and nodes 0..NNODES-2 train with TRL's server
#   mode, reaching it at VLLM_HOST (required) within VLLM_SERVER_TIMEOUT (900) seconds. GRPO recipes only.
# REQUEUE=1 (the Slurm example sets it): a rerun of the same command resumes, never starts over:
#   --resume_from_checkpoint last (the newest complete checkpoint; torn ones are skipped), --overwrite_output_dir and
#   --resume_from_checkpoint refused; a folder holding a finished run ends a requeued job (SLURM_RESTART_COUNT > 0)
#   with "finished already", and refuses a first start.
# RECIPE/CONFIG may be relative to your directory or to the repo root; other relative paths (YAML, overrides,
# OUTPUT_DIR) are taken from the repository root, where the launch runs. Every node needs the same checkout.
# Without a GPU, GPUS_PER_NODE CPU processes train over gloo: a check of the launch path, not a way to train.
# launch/slurm_multinode.sbatch runs this script on every node of a Slurm allocation; layouts: launch/README.md.
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
# Numbers are checked as numbers before any arithmetic (see require_int).
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
ZERO=${ZERO:-3}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
DDP_TIMEOUT=${DDP_TIMEOUT:-3600}
VLLM_NODES=${VLLM_NODES:-0}
REQUEUE=${REQUEUE:-0}
require_int NNODES 1 2
require_int NODE_RANK 0 0
require_int GPUS_PER_NODE 1 8
require_int MASTER_PORT 1 29500
((MASTER_PORT <= 65535)) || die "MASTER_PORT=$MASTER_PORT must be a TCP port (1-65535), e.g. MASTER_PORT=29500"
require_int DDP_TIMEOUT 60 3600
[[ "$ZERO" == 2 || "$ZERO" == 3 ]] || die "ZERO=$ZERO: choose 3 (zero3.json) or 2 (zero2.json)"
require_choice DRY_RUN 0 1
require_choice VLLM_NODES 0 1
require_choice REQUEUE 0 1
ACCELERATE_CONFIG=$(resolve "${ACCELERATE_CONFIG:-launch/accelerate_zero$ZERO.yaml}")
DS_CONFIG=$(resolve "${DS_CONFIG:-zero$ZERO.json}")
if [[ "$NNODES" -gt 1 && -z "${MASTER_ADDR:-}" ]]; then
  die "NNODES=$NNODES needs MASTER_ADDR (the host name of the node with NODE_RANK=0), e.g. MASTER_ADDR=node01"
fi
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
[[ "$NODE_RANK" -ge 0 && "$NODE_RANK" -lt "$NNODES" ]] || die "NODE_RANK=$NODE_RANK must be in 0..$((NNODES - 1))"

# Options this launcher sets itself, per mode: given again they would contradict it.
refused=""
if [[ "$REQUEUE" == 1 ]]; then
  refused+="resume_from_checkpoint: REQUEUE=1 resumes from the newest complete checkpoint by itself
overwrite_output_dir: a requeued job must never replace its own run: unset REQUEUE to start over
"
fi
# The trainer nodes: all of them, or all but the last one, which serves generation (TRL's server mode).
TRAIN_NODES=$((NNODES - VLLM_NODES))
if [[ "$VLLM_NODES" == 1 ]]; then
  [[ "$(basename "$RECIPE")" != sft_baseline.py ]] ||
    die "VLLM_NODES=1 serves generation for GRPO: the SFT baseline generates nothing (unset VLLM_NODES)"
  [[ "$TRAIN_NODES" -ge 1 ]] ||
    die "VLLM_NODES=1 takes the last node for the vLLM server: NNODES=$NNODES leaves none to train, use NNODES>=2"
  [[ -n "${VLLM_HOST:-}" ]] ||
    die "VLLM_NODES=1 needs VLLM_HOST (the host name of the last node, NODE_RANK=$((NNODES - 1)), the vLLM server)"
  VLLM_PORT=${VLLM_PORT:-8000}
  VLLM_TP=${VLLM_TP:-1}
  VLLM_SERVER_TIMEOUT=${VLLM_SERVER_TIMEOUT:-900}
  VLLM_GPU_MEMORY_UTILIZATION=${VLLM_GPU_MEMORY_UTILIZATION:-0.9}
  require_int VLLM_PORT 1 8000
  ((VLLM_PORT <= 65535)) || die "VLLM_PORT=$VLLM_PORT must be a TCP port (1-65535), e.g. VLLM_PORT=8000"
  require_int VLLM_TP 1 1
  require_int VLLM_SERVER_TIMEOUT 1 900
  [[ "$VLLM_GPU_MEMORY_UTILIZATION" =~ ^0?\.[0-9]+$|^1(\.0*)?$ ]] ||
    die "VLLM_GPU_MEMORY_UTILIZATION='$VLLM_GPU_MEMORY_UTILIZATION' must be a fraction in (0, 1], e.g. 0.9"
  refused+="vllm_mode: VLLM_NODES=1 sets server mode (unset VLLM_NODES for colocated vLLM)
vllm_server_host: set VLLM_HOST instead
vllm_server_port: set VLLM_PORT instead
vllm_server_base_url: set VLLM_HOST and VLLM_PORT instead
vllm_server_timeout: set VLLM_SERVER_TIMEOUT instead
"
fi
require_overrides "${refused%$'\n'}" "$@"

cd "$ROOT"
for f in "$RECIPE" "$CONFIG" "$ACCELERATE_CONFIG" "$DS_CONFIG"; do
  [[ -f "$f" ]] || die "$f not found (relative paths are taken from $ROOT); see: bash $0 --help"
done

# setting NAME: the recipe's value of NAME, as it will read it: the last override, else the config's.
setting() {
  local value
  value=$(override_value "$1" "${@:2}")
  [[ -n "$value" ]] || value=$(config_value "$CONFIG" "$1")
  printf '%s\n' "$value"
}

# REQUEUE=1: the folder the run writes is checked before anything starts. A requeued job finds its own run there and
# resumes it (the recipe compares the settings and refuses another run's folder); a finished run is never retrained.
if [[ "$REQUEUE" == 1 ]]; then
  run_dir=${OUTPUT_DIR:-$(setting output_dir "$@")}
  [[ -n "$run_dir" ]] || die "REQUEUE=1 needs the run's folder: set OUTPUT_DIR or output_dir in $CONFIG"
  verdict=$("$PYTHON" -m recipes.shared.provenance inspect "$run_dir" --kind recipe-run 2>&1) ||
    die "${verdict#error: }"
  verdict=${verdict%%$'\n'*}
  if [[ " $verdict " == *" finished "* ]]; then
    if [[ "${SLURM_RESTART_COUNT:-0}" =~ ^[1-9][0-9]*$ ]]; then
      echo "finished already: $run_dir holds the finished run (requeued job, restart ${SLURM_RESTART_COUNT}): \
nothing to do" >&2
      exit 0
    fi
    die "$run_dir holds a finished run: nothing to resume, and a finished run is never retrained over. Choose \
another folder (OUTPUT_DIR=<new folder>) or replace it without REQUEUE (--overwrite_output_dir true)"
  fi
fi

# The vLLM server node: TRL's `trl vllm-serve` for the model the trainers load, resizing images within the recipe's
# pixel bounds (the trainer's), on VLLM_TP GPUs of this node. It serves until the job ends.
if [[ "$VLLM_NODES" == 1 && "$NODE_RANK" == $((NNODES - 1)) ]]; then
  [[ "$DRY_RUN" == 1 ]] || command -v trl >/dev/null ||
    die "trl not found on the vLLM server node: activate the environment (requirements.txt, requirements-gpu.txt)"
  model=$(setting model_name_or_path "$@")
  [[ -n "$model" ]] || die "no model_name_or_path in $CONFIG or the overrides: the vLLM server needs the model"
  cmd=(trl vllm-serve --model "$model" --host 0.0.0.0 --port "$VLLM_PORT" --tensor_parallel_size "$VLLM_TP"
    --gpu_memory_utilization "$VLLM_GPU_MEMORY_UTILIZATION")
  revision=$(setting model_revision "$@")
  [[ -z "$revision" || "$revision" == main ]] || cmd+=(--revision "$revision")
  bounds=()
  for name in min_pixels max_pixels; do
    value=$(setting "$name" "$@")
    [[ -z "$value" ]] || bounds+=("\"$name\": $value")
  done
  if [[ ${#bounds[@]} -gt 0 ]]; then
    joined=$(printf ', %s' "${bounds[@]}")
    cmd+=(--mm-processor-kwargs "{${joined#, }}") # passed on to `vllm serve` as is
  fi
else
  command -v accelerate >/dev/null ||
    die "accelerate not found: activate the environment (pip install -r requirements.txt)"
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

  # A collective may wait for one rank's generation or checkpoint save: DDP_TIMEOUT is its limit, and with
  # TORCH_NCCL_ASYNC_ERROR_HANDLING=1 a collective past it ends the processes (the job fails or is requeued) instead
  # of hanging until the time limit.
  export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
  extra=(--ddp_timeout "$DDP_TIMEOUT")
  [[ -n "${DDP_BACKEND:-}" ]] && extra+=(--ddp_backend "$DDP_BACKEND")
  [[ -n "${OUTPUT_DIR:-}" ]] && extra+=(--output_dir "$OUTPUT_DIR")
  [[ -n "${RUN_NAME:-}" ]] && extra+=(--run_name "$RUN_NAME")
  [[ "$REQUEUE" != 1 ]] || extra+=(--resume_from_checkpoint last)
  if [[ "$VLLM_NODES" == 1 ]]; then
    extra+=(--use_vllm true --vllm_mode server --vllm_server_host "$VLLM_HOST" --vllm_server_port "$VLLM_PORT"
      --vllm_server_timeout "$VLLM_SERVER_TIMEOUT")
  fi
  cmd=(
    accelerate launch
    --config_file "$ACCELERATE_CONFIG" --deepspeed_config_file "$DS_CONFIG"
    --num_machines "$TRAIN_NODES" --machine_rank "$NODE_RANK" --num_processes "$((TRAIN_NODES * GPUS_PER_NODE))"
    --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT"
    "$RECIPE" --config "$CONFIG" "${extra[@]}" "$@"
  )
fi
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
printf '+ %s\n' "${cmd[*]}" >&2
exec "${cmd[@]}"
