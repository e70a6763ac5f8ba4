"""The paper's global batch on any number of processes, and fp32 weights for the optimizer on every launch path.

Global batch: the paper took one optimizer step per 8 prompts (GRPO: × 8 completions), on 4 GPUs × 1 prompt ×
gradient accumulation 2. ``prompts_per_step`` states that number; the gradient accumulation that gives it is derived
from the number of processes when the command line is parsed (`derive_accumulation`), before TRL's config computes
its generation batch from it, and checked again when a run starts (`check_global_batch`). A combination that cannot
give it exactly is refused, never rounded.

Precision: the paper loaded the policy in fp32 and trained under DeepSpeed with bf16 mixed precision, so the optimizer
updated fp32 master weights. Adam's updates at lr 1e-6 are far below bf16's resolution (8 bits of mantissa): a model
whose trainable parameters are bf16 without a launcher that keeps fp32 master copies loses most updates while the run
looks healthy. `check_master_weights` refuses that at start.
"""

from __future__ import annotations

import logging
import os

import torch

from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

LOW_PRECISION = (torch.bfloat16, torch.float16)


def world_size_from_env() -> int:
    """The number of processes of this launch, as the launchers (accelerate, torchrun, DeepSpeed) export it."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def completions_per_prompt(training_args) -> int:
    """G for GRPO (each prompt is sampled G times); 1 for SFT."""
    return getattr(training_args, "num_generations", None) or 1


def accumulation_for(prompts_per_step: int, per_device: int, generations: int, world_size: int) -> int:
    """The gradient accumulation giving ``prompts_per_step`` prompts per optimizer step, or a RecipeError.

    Example:
        >>> [accumulation_for(8, 8, 8, world) for world in (1, 2, 4, 8)]
        [8, 4, 2, 1]
    """
    sequences = prompts_per_step * generations  # completions (GRPO) or examples (SFT) per optimizer step
    per_micro_step = per_device * world_size
    if prompts_per_step < 1 or sequences % per_micro_step:
        divisors = [n for n in range(1, sequences + 1) if sequences % (per_device * n) == 0]
        raise RecipeError(
            f"prompts_per_step={prompts_per_step} cannot be reached exactly with per_device_train_batch_size="
            f"{per_device} on {world_size} processes: {prompts_per_step} prompts × {generations} sequences = "
            f"{sequences} per step, not a multiple of {per_device} × {world_size}. Launch on one of "
            f"{', '.join(map(str, divisors)) or 'no'} processes, or change per_device_train_batch_size"
        )
    return sequences // per_micro_step


def flags_given(argv: list[str]) -> set[str]:
    """The option names on a command line, in their field spelling: ``--gradient-accumulation-steps=3`` (argparse
    accepts dashes and ``=``) and ``--gradient_accumulation_steps 3`` both give ``gradient_accumulation_steps``.

    Example:
        >>> sorted(flags_given(["--gradient-accumulation-steps", "3", "--config=x.yaml", "-v", "3"]))
        ['config', 'gradient_accumulation_steps']
    """
    return {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--") and len(a) > 2}


def derive_accumulation(parser, argv: list[str], parsed: tuple) -> tuple:
    """Re-parse with the gradient accumulation that gives ``prompts_per_step`` on this launch's processes."""
    if len(parsed) < 2 or getattr(parsed[0], "prompts_per_step", None) is None:  # e.g. the evaluation's parser
        return parsed
    script_args, training_args = parsed[0], parsed[1]
    target = script_args.prompts_per_step
    accumulation = accumulation_for(
        target, training_args.per_device_train_batch_size, completions_per_prompt(training_args), world_size_from_env()
    )
    given = training_args.gradient_accumulation_steps
    # Set on the command line, or in the YAML (anything but the default 1): a contradiction is refused, not replaced.
    explicit = "gradient_accumulation_steps" in flags_given(argv) or given != 1
    if explicit and given != accumulation:
        raise RecipeError(
            f"gradient_accumulation_steps {given} contradicts prompts_per_step={target} (which needs {accumulation} "
            f"on {world_size_from_env()} processes): drop one of the two, e.g. --prompts_per_step N to change the "
            "global batch"
        )
    if given == accumulation:
        return parsed
    return parser.parse_args_and_config([*argv, "--gradient_accumulation_steps", str(accumulation)])


def check_global_batch(script_args, training_args) -> None:
    """Log the global batch; refuse a run whose arguments do not give ``prompts_per_step`` (e.g. not parsed by us)."""
    world = max(1, training_args.world_size)
    sequences = training_args.per_device_train_batch_size * world * training_args.gradient_accumulation_steps
    generations = completions_per_prompt(training_args)
    prompts = sequences / generations
    logger.info(
        "global batch: %g prompts x %d sequences per optimizer step = %d per device x %d processes x %d accumulation",
        prompts,
        generations,
        training_args.per_device_train_batch_size,
        world,
        training_args.gradient_accumulation_steps,
    )
    target = getattr(script_args, "prompts_per_step", None)
    if target is not None and prompts != target:
        raise RecipeError(
            f"this launch gives {prompts:g} prompts per optimizer step but prompts_per_step is {target}: start the "
            "recipe from its command line (python recipes/<recipe>.py / accelerate launch ...), which derives "
            "gradient_accumulation_steps from it"
        )


def keeps_fp32_master_weights(training_args) -> bool:
    """Whether the launch keeps fp32 master weights for low-precision parameters (DeepSpeed ZeRO, FSDP)."""
    deepspeed = bool(training_args.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    fsdp = bool(training_args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    return deepspeed or fsdp


def check_master_weights(model, training_args) -> None:
    """Refuse to train bf16/fp16 parameters directly: at small learning rates most updates would round away."""
    low = {p.dtype for p in model.parameters() if p.requires_grad and p.dtype in LOW_PRECISION}
    if not low or keeps_fp32_master_weights(training_args):
        return
    kinds = ", ".join(sorted(str(d).removeprefix("torch.") for d in low))
    raise RecipeError(
        f"the trainable parameters are {kinds} and this launch keeps no fp32 master copy (no DeepSpeed, no FSDP): "
        f"the optimizer would update {kinds} weights directly, and at lr {training_args.learning_rate:g} most updates "
        "round away while the run looks healthy. Load the model in fp32 (--dtype float32; bf16: true still trains "
        "in bf16 autocast, as the paper did), or launch with DeepSpeed (bash launch/run_8gpu.sh ...)"
    )
