#!/usr/bin/env bash
# Launch a recipe on the GPUs of one machine with DeepSpeed ZeRO-3 (ZERO=2: ZeRO-2), through accelerate.
# Usage: bash launch/run_8gpu.sh [RECIPE] [CONFIG] [overrides...]
#   RECIPE     a recipe name (grpo_base, grpo_instruct, sft_baseline) or path (recipes/grpo_base.py); default grpo_base
#   CONFIG     default recipes/configs/paper/<recipe name>.yaml; overrides go to the recipe (e.g. --max_steps 10)
#   e.g.       bash launch/run_8gpu.sh sft_baseline recipes/configs/paper/sft_baseline.yaml --max_steps 10
# Environment (default): NUM_GPUS (8), MASTER_PORT (29500), ZERO (3), ACCELERATE_CONFIG (launch/accelerate_zero$ZERO.yaml),
#   DS_CONFIG (zero$ZERO.json), OUTPUT_DIR and RUN_NAME (the config's), DDP_BACKEND (nccl on GPUs, gloo without),
#   PYTHON (python), DRY_RUN (0; 1 prints the accelerate command instead of running it).
# The paper configs fix 8 prompts per optimizer step (prompts_per_step): the gradient accumulation is derived from it
# and the GPU count (NUM_GPUS=4: 2), so do not pass --gradient_accumulation_steps (a contradicting value is refused).
# Without a GPU, NUM_GPUS CPU processes train over gloo (how the tests check this script: NUM_GPUS=2).
# One machine is launch/run_multinode.sh with NNODES=1: this script sets that and hands over.
set -euo pipefail

usage_line() { echo "Usage: [NUM_GPUS=8] bash launch/run_8gpu.sh [RECIPE] [CONFIG] [overrides...]  (-h: help)"; }
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck disable=SC1091  # launch/lib.sh is checked on its own
. "$HERE/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

NUM_GPUS=${NUM_GPUS:-8}
require_int NUM_GPUS 1 8 # here, so that an error names the variable the user set
export NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1 GPUS_PER_NODE=$NUM_GPUS
LAUNCH_USAGE=$(usage_line) exec bash "$HERE/run_multinode.sh" "$@"
