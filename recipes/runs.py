"""A run's life cycle: which checkpoint to resume from, training, saving the final model."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

from recipes.cli import RecipeError
from recipes.compat import load_checkpoint_weights

logger = logging.getLogger(__name__)


def resolve_checkpoint(resume: str | bool | None, output_dir: str) -> str | None:
    """``resume_from_checkpoint``: a path, or "last"/"true" for the newest checkpoint in ``output_dir``."""
    if resume in (None, False, "", "false", "False"):
        return None
    if str(resume).lower() in ("last", "true") or resume is True:
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            logger.info("resume_from_checkpoint=%s but %s holds no checkpoint: starting fresh", resume, output_dir)
        return last
    if not Path(resume).is_dir():
        raise RecipeError(f"resume_from_checkpoint={resume!r} is not a folder; give a checkpoint path or 'last'")
    return str(resume)


def train_and_save(trainer, training_args) -> None:
    """Train (resuming when asked), then save the final model and processor to ``output_dir``."""
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
        load_checkpoint_weights(trainer, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(training_args.output_dir)
    logger.info("saved the trained model to %s", training_args.output_dir)
