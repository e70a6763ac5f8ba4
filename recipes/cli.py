"""Running a recipe from the command line: the config file (the paper's by default), overrides, plain errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from recipes.batch import derive_accumulation
from recipes.compat import skip_deepspeed_shm_op
from recipes.errors import RecipeError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "recipes" / "configs"
QUICKSTART = "bash launch/quickstart.sh"
PREP_COMMAND = "python -m data_prep.sat --input array/SAT --output {path} --limit 15000 --multi-image skip"


def default_config_args(argv: list[str], default_config: str | None) -> list[str]:
    """Command-line arguments with ``--config <default>`` added when the user gave none (and there is a default)."""
    if default_config is None or "--config" in argv:
        return argv
    return ["--config", str(CONFIG_DIR / default_config), *argv]


def run_cli(main, parser, argv: list[str] | None, default_config: str | None) -> None:
    """Parse ``argv`` (the paper config when no --config is given), run ``main``, report `RecipeError`s plainly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    skip_deepspeed_shm_op()  # before parsing: the training arguments start DeepSpeed's comm backend
    args = default_config_args(sys.argv[1:] if argv is None else argv, default_config)
    try:
        try:
            parsed = parser.parse_args_and_config(args)
            parsed = derive_accumulation(parser, args, parsed)
        except ValueError as err:
            raise RecipeError(config_error_message(err)) from None
        main(*parsed)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def config_error_message(err: ValueError) -> str:
    """Explain a configuration that TRL/transformers refused; bf16 on a machine without a GPU gets the way out."""
    message = f"invalid configuration: {err}"
    if "bf16" in str(err) and not torch.cuda.is_available():
        message += (
            "\nThe paper configs train in bf16 on GPUs and this machine has none. "
            f"To run the same pipeline on a CPU, use the offline quickstart: {QUICKSTART}\n"
            f"To train on SAT on a GPU machine, convert it first: {PREP_COMMAND.format(path='data/sat_paper')}"
        )
    return message
