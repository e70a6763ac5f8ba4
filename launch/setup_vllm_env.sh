#!/usr/bin/env bash
# Build the vLLM environment: a second virtual environment in which TRL 1.16 generates with vLLM 0.31.0.
# Why a second one: no vLLM release installs next to requirements.txt (requirements-gpu.txt lists what each asks
# for), and TRL needs vLLM in the training processes in colocate and in server mode alike.
# Usage: [VENV=.venv-vllm] [FLASH_ATTN=0] bash launch/setup_vllm_env.sh
# Environment (default): VENV (.venv-vllm; a relative path is taken from the repository root), PYTHON (python3: the
#   interpreter the environment is made from; the set was resolved for 3.11), FLASH_ATTN (0; 1 also builds
#   flash-attn from requirements-gpu.txt: needs nvcc, tens of minutes), DRY_RUN (0; 1 prints the commands and
#   changes nothing).
# An existing VENV made by python -m venv is updated in place; any other non-empty folder is refused.
# At the end it checks that the recipes parse a vLLM paper config there, and says what fails if they do not.
# Then: . .venv-vllm/bin/activate && bash launch/gpu_check.sh         (launch/README.md, "Generation with vLLM")
set -euo pipefail

usage_line() { echo "Usage: [VENV=.venv-vllm] [FLASH_ATTN=0] bash launch/setup_vllm_env.sh  (-h: help)"; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091  # launch/lib.sh is checked on its own
. "$ROOT/launch/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi
[[ $# -eq 0 ]] || die "unexpected argument '$1': settings are environment variables, e.g. VENV=.venv-vllm"

VENV=${VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
FLASH_ATTN=${FLASH_ATTN:-0}
DRY_RUN=${DRY_RUN:-0}
require_choice FLASH_ATTN 0 1
require_choice DRY_RUN 0 1
[[ -n "$VENV" ]] || die "VENV is empty: give the folder to create, e.g. VENV=.venv-vllm"
[[ "$VENV" == /* ]] || VENV=$ROOT/$VENV
if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]] && ! is_empty_dir "$VENV"; then
  die "$VENV exists and is not a virtual environment; nothing was changed." \
    "Choose another folder: VENV=<new folder>"
fi
command -v "$PYTHON" >/dev/null ||
  die "PYTHON='$PYTHON' is not a command: set PYTHON to a Python 3 interpreter (3.11 was checked)"

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local line
    printf -v line '%q ' "$@"
    printf '%s\n' "${line% }"
  else
    "$@"
  fi
}

cd "$ROOT"
[[ -f "$VENV/pyvenv.cfg" ]] || run "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
run "${PIP[@]}" install -r requirements-vllm.txt
# The repository's own pyproject asks for transformers 5.23, which vLLM 0.31.0 does not accept: install the code
# without its dependencies (requirements-vllm.txt holds them).
run "${PIP[@]}" install --no-deps -e .
if [[ "$FLASH_ATTN" == 1 ]]; then
  run "${PIP[@]}" install -r requirements-gpu.txt --no-build-isolation
fi

# The check: the environment imports vLLM and TRL, and the recipes parse the vLLM paper config there.
run "$VENV/bin/python" -c 'import torch, transformers, trl, vllm
for m in (vllm, torch, transformers, trl):
    print(m.__name__, m.__version__)'
check='from recipes.grpo_base import make_parser
make_parser().parse_args_and_config(["--config", "recipes/configs/paper/grpo_base_vllm.yaml", "--use_cpu", "true"])'
if [[ "$DRY_RUN" == 1 ]]; then
  run "$VENV/bin/python" -c "$check"
elif ! "$VENV/bin/python" -c "$check" 2>"$VENV/recipe_check.log"; then
  echo "error: $VENV is installed, but the recipes do not parse the vLLM paper config there:" >&2
  tail -n 1 "$VENV/recipe_check.log" >&2
  echo "(full message: $VENV/recipe_check.log; launch/README.md, 'Generation with vLLM', says what is known)" >&2
  exit 1
fi
[[ "$DRY_RUN" == 1 ]] || echo "Done: . ${VENV#"$ROOT"/}/bin/activate && bash launch/gpu_check.sh"
