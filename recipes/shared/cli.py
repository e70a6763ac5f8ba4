"""Running a recipe from the command line: the config file (the paper's by default), overrides, plain errors."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import string
import sys
import types
import typing
from pathlib import Path
from typing import Any

import torch

from recipes.shared.batch import derive_accumulation, flags_given
from recipes.shared.compat import skip_deepspeed_shm_op
from recipes.shared.errors import RecipeError
from rewards import check_reward_request

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "recipes" / "configs"
QUICKSTART = "bash launch/quickstart.sh"
PREP_COMMAND = "python -m data_prep.sat --input array/SAT --output {path} --limit 15000 --multi-image skip"


def default_config_args(argv: list[str], default_config: str | None) -> list[str]:
    """Command-line arguments with ``--config <default>`` added when the user gave none (and there is a default).

    ``--config=FILE`` is split in two: TrlParser recognises ``--config FILE`` only.
    """
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    if default_config is None or "config" in flags_given(argv):
        return argv
    return ["--config", str(CONFIG_DIR / default_config), *argv]


def check_config_file(argv: list[str]) -> None:
    """A ``--config`` file that does not exist is named (TrlParser would raise a bare FileNotFoundError)."""
    for i, arg in enumerate(argv):
        if arg != "--config":
            continue
        path = argv[i + 1] if i + 1 < len(argv) else ""
        if not Path(path).expanduser().is_file():
            raise RecipeError(
                f"--config {path}: no such file. The shipped configs are under {CONFIG_DIR.relative_to(REPO_ROOT)}/ "
                "(paper/, tiny/, ...), e.g. --config recipes/configs/tiny/grpo_base.yaml"
            )


def run_cli(main, parser, argv: list[str] | None, default_config: str | None) -> None:
    """Parse ``argv`` (the paper config when no --config is given), run ``main``, report `RecipeError`s plainly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    skip_deepspeed_shm_op()  # before parsing: the training arguments start DeepSpeed's comm backend
    args = default_config_args(sys.argv[1:] if argv is None else argv, default_config)
    try:
        check_config_file(args)
        try:
            parsed = parser.parse_args_and_config(args)
            parsed = derive_accumulation(parser, args, parsed)
        except ValueError as err:
            raise RecipeError(config_error_message(err)) from None
        validate_parsed(*parsed)
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


# --- checks TrlParser leaves out ------------------------------------------------------------------------------------
# A YAML value reaches the dataclasses as YAML typed it (argparse converts command-line strings, not YAML numbers), and
# TRL 1.16 checks some string options only when first used, after the model has loaded: both are checked here.

# TRL 1.16's accepted values of GRPOConfig options it validates late (GRPOTrainer raises "Unknown loss type" at the
# first loss computation); a field's own `metadata["choices"]` is checked too.
GRPO_CHOICES = {
    "loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
    "scale_rewards": ("group", "batch", "none"),
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),
    "importance_sampling_level": ("token", "sequence"),
}
# The values wandb 0.31 accepts for WANDB_MODE (wandb_settings.Settings.mode).
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")
AT_LEAST_ONE = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length")
NO_CHECKPOINT = (None, False, "", "false", "False", True, "true", "True", "last")
_SCALARS = (bool, int, float)


def _scalar_kinds(annotation: Any) -> tuple[type, ...] | None:
    """The scalar types a field annotation allows (``int``, ``float | None``, ...); None when it is not that simple."""
    if annotation in _SCALARS:
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = tuple(a for a in typing.get_args(annotation) if a is not type(None))
        if kinds and all(k in _SCALARS for k in kinds):
            return kinds
    return None


def _fits(value: Any, kinds: tuple[type, ...]) -> bool:
    if value is None or isinstance(value, str):  # None: unset; strings were converted (or refused) by argparse
        return True
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int):
        return int in kinds or float in kinds
    if isinstance(value, float):
        return float in kinds
    return False


def type_problems(options: Any) -> list[str]:
    """One message per field of the dataclass ``options`` whose value does not have the declared type."""
    try:
        hints = typing.get_type_hints(type(options))
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is simply not checked
        hints = {}
    problems = []
    for field in dataclasses.fields(options):
        kinds = _scalar_kinds(hints.get(field.name, field.type))
        value = getattr(options, field.name, None)
        if kinds and not _fits(value, kinds):
            names = {int: "a whole number", float: "a number", bool: "true or false"}
            expected = " or ".join(names[k] for k in kinds)
            problems.append(f"{field.name}: {value!r} is not {expected}")
        choices = field.metadata.get("choices")
        if choices and value is not None and value not in choices:
            problems.append(f"{field.name}: {value!r} is not one of {', '.join(map(str, choices))}")
    return problems


def option_problems(training_args: Any) -> list[str]:
    """Values the training arguments accept while parsing but that fail later (or make nothing happen)."""
    problems = []
    if hasattr(training_args, "num_generations"):  # GRPOConfig
        for name, choices in GRPO_CHOICES.items():
            value = getattr(training_args, name, None)
            if value is not None and value not in choices:
                problems.append(f"{name}: {value!r} is not one of {', '.join(choices)} (TRL 1.16)")
    temperature = getattr(training_args, "temperature", None)
    if hasattr(training_args, "num_generations") and isinstance(temperature, (int, float)) and temperature <= 0:
        problems.append(
            f"temperature: {temperature} must be above 0: GRPO samples num_generations completions per prompt "
            "(the paper: 1.0); greedy decoding would make them identical"
        )
    for name in AT_LEAST_ONE:
        value = getattr(training_args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append(f"{name}: {value} must be at least 1")
    resume = getattr(training_args, "resume_from_checkpoint", None)
    if resume not in NO_CHECKPOINT and not Path(str(resume)).expanduser().is_dir():
        problems.append(
            f"resume_from_checkpoint: {resume!r} is not a folder; give a checkpoint folder "
            "(<output_dir>/checkpoint-<step>) or 'last' (the newest complete checkpoint in output_dir)"
        )
    return problems


def recipe_problems(script_args: Any, training_args: Any) -> list[str]:
    """Recipe options that cannot work with these training arguments."""
    problems = []
    if hasattr(training_args, "num_generations") and hasattr(script_args, "reward_funcs"):
        try:  # names known or importable, one weight each: refused before the processor, data or model load
            check_reward_request(script_args.reward_funcs, training_args.reward_weights)
        except ValueError as err:
            problems.append(f"reward_funcs: {err}")
    if getattr(script_args, "dump_trajectories", False):
        if not hasattr(training_args, "num_generations"):
            problems.append("dump_trajectories needs a GRPO run (an SFT run samples no completions): remove it")
        elif not training_args.log_completions:
            problems.append(
                "dump_trajectories writes the completions TRL logs: set log_completions: true (log_multimodal: "
                "false keeps images out of W&B), or remove dump_trajectories"
            )
    template = getattr(script_args, "completion_template", None)
    if template is not None:
        problems += completion_template_problems(template)
    problems += wandb_mode_problems(training_args)
    return problems


def completion_template_problems(template: str) -> list[str]:
    """``completion_template`` must be a format string over ``{answer}`` only.

    Example:
        >>> completion_template_problems("<answer> {anwser} </answer>")
        ["completion_template: unknown field {anwser}: the only field is {answer} (the record's answer)"]
    """
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        return [f"completion_template: {err} (write a literal brace as {{{{ or }}}})"]
    return [
        f"completion_template: unknown field {{{name}}}: the only field is {{answer}} (the record's answer)"
        for name in dict.fromkeys(fields)
        if re.split(r"[.\[]", name)[0] != "answer"  # {answer!r}, {answer:>9}, {answer[0]} are all {answer}
    ]


def wandb_mode_problems(training_args: Any) -> list[str]:
    """An exported ``WANDB_MODE`` that W&B would refuse when the run starts logging (after the model loaded)."""
    mode = os.environ.get("WANDB_MODE")
    report_to = getattr(training_args, "report_to", None) or []
    if mode is None or "wandb" not in report_to or mode in WANDB_MODES:
        return []
    return [f"WANDB_MODE={mode!r} is not a W&B mode: export one of {', '.join(WANDB_MODES)} (or unset it)"]


def validate_parsed(*options: Any) -> None:
    """Refuse, before anything loads, values TrlParser let through: wrong types from YAML, unknown option values."""
    problems = [p for opts in options if dataclasses.is_dataclass(opts) for p in type_problems(opts)]
    if len(options) > 1:
        problems += option_problems(options[1]) + recipe_problems(options[0], options[1])
    if problems:
        raise RecipeError("invalid configuration:\n  " + "\n  ".join(problems))
