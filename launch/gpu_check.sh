#!/usr/bin/env bash
# The five-minute GPU self-check: environment report, 3 GRPO steps on the tiny model with transformers' generate and
# 3 with vLLM colocated (step times side by side), an 8-row evaluation with --backend vllm, then (when the hub
# answers) 2 optimizer steps of the paper config on Qwen/Qwen2-VL-2B and 8 CV-Bench rows. Prints step time, peak GPU
# memory, generated tokens/s and the projected wall time of the full paper run; writes WORKDIR/gpu_check.json.
# Usage: bash launch/gpu_check.sh [--workdir outputs/gpu_check] [--budget 300] [--hub auto|skip] [--train-rows N]
# Environment (default): PYTHON (python). Without a CUDA GPU it stops at once (exit 2) with the reason.
# One environment: pip install -r requirements.txt && pip install --no-build-isolation -r requirements-gpu.txt
# (without vLLM there the vLLM stages are skipped, saying so).
# What each figure means and how it is measured: benchmarks/gpu_check.py; launch/README.md, "Performance on GPUs".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi
# Stop at once on a machine with no NVIDIA driver (importing torch to find that out takes seconds); where there is
# one, the Python side asks torch whether it can use a GPU.
if [[ ! -e /proc/driver/nvidia/version ]] && ! command -v nvidia-smi >/dev/null; then
  printf 'error: %s\n' "no NVIDIA driver here (no /proc/driver/nvidia, no nvidia-smi): gpu_check measures the GPU \
path; on a CPU run bash launch/quickstart.sh" >&2
  exit 2
fi
# Relative paths in the options stay relative to the caller's directory (the Python side resolves them there).
exec "${PYTHON:-python}" "$ROOT/benchmarks/gpu_check.py" "$@"
