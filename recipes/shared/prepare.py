"""What every recipe's `main` does before and around the trainer: prepare data and processor, attach callbacks.

The recipes stay thin: each `main` calls these helpers, then hands everything to an unmodified TRL trainer. The
other modules of this package are listed in its opening docstring (`recipes/shared/__init__.py`).
"""

from __future__ import annotations

import importlib.util

from recipes.shared.args import RecipeArguments
from recipes.shared.batch import check_global_batch
from recipes.shared.callbacks import ZeroPartitionLogger, reporting_callbacks, setup_reporting
from recipes.shared.cli import RecipeError
from recipes.shared.data import completion_end, fit_images, load_records, to_prompts
from recipes.shared.heldout import HeldoutAccuracyCallback
from recipes.shared.models import check_model_available, load_processor
from recipes.shared.preflight import preflight
from recipes.shared.prompts import get_template
from recipes.shared.runs import check_enough_data
from recipes.shared.sft_loss import SFT_LOSSES
from recipes.shared.snapshots import ModelSnapshotCallback


def prepare(script_args: RecipeArguments, training_args, model_args, with_completion: bool = False):
    """Everything before the trainer: checks, processor, prompts dataset (model loading is left to the caller)."""
    try:
        template = get_template(script_args.prompt_template)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    if with_completion and script_args.sft_loss not in SFT_LOSSES:
        raise RecipeError(f"unknown sft_loss {script_args.sft_loss!r}: choose one of {', '.join(SFT_LOSSES)}")
    if with_completion and script_args.sft_loss == "paper" and training_args.completion_only_loss:
        raise RecipeError(
            "sft_loss: paper is the loss over the whole sequence, but completion_only_loss is true: set "
            "completion_only_loss: false, or use sft_loss: trl for the answer-only loss"
        )
    check_global_batch(script_args, training_args)
    if getattr(training_args, "use_vllm", False) and importlib.util.find_spec("vllm") is None:
        raise RecipeError(
            "use_vllm is set but vLLM is not installed in this environment: on a CUDA machine install it into the "
            "same environment with `pip install --no-build-isolation -r requirements-gpu.txt` (it changes no pin of "
            "requirements.txt), or use the config without _vllm (transformers' generate)"
        )
    records = load_records(script_args)
    check_model_available(model_args.model_name_or_path)
    preflight(script_args, training_args, model_args, len(records))  # W&B, hub, disk: before anything loads
    processor = load_processor(model_args, script_args, template)
    end = completion_end(processor) if with_completion else ""
    dataset = to_prompts(records, template, with_completion, script_args.completion_template, end)
    dataset = fit_images(dataset, script_args.min_pixels, script_args.max_pixels)
    if not script_args.dry_run:
        check_enough_data(len(dataset), training_args)  # before anything (W&B's folder) is written
    setup_reporting(script_args, training_args, model_args)
    return template, processor, dataset


def attach_callbacks(trainer, script_args: RecipeArguments) -> None:
    """The recipes' callbacks: reporting (always), ZeRO-3 partition log, held-out accuracy when asked."""
    for callback in reporting_callbacks(trainer, script_args):
        trainer.add_callback(callback)
    trainer.add_callback(ZeroPartitionLogger())  # logs only under ZeRO-3
    if script_args.model_save_steps:
        trainer.add_callback(ModelSnapshotCallback(trainer, script_args))  # models/step-<N> for the CV-Bench curve
    if script_args.heldout_dataset_path:
        trainer.add_callback(HeldoutAccuracyCallback(trainer, script_args))
