"""Held-out greedy accuracy during training: a callback for any recipe (GRPO or SFT), switched on from the config.

    heldout_dataset_path: data/heldout      # records written by data_prep (another seed than the training data)
    heldout_eval_steps: 25                  # also measured at the start (step 0) and at the end of training
    heldout_samples: 200                    # optional: only the first N records

At each measurement the model answers every held-out prompt greedily (batches of ``per_device_eval_batch_size``,
left padding, at most ``heldout_max_new_tokens`` or the run's ``max_completion_length`` new tokens), with the
run's own prompt template and chat template, and the project's accuracy reward scores the answers — format-gated
when the run sets ``accuracy_requires_format``. The result is logged as any other metric (``heldout/accuracy``,
plus ``heldout/format``, the share of well-formed answers, and ``heldout/seconds``): it lands in
``trainer.state.log_history`` and every ``report_to`` backend (W&B shows it as ``train/heldout/accuracy``).

With several processes every rank generates for its own shard of equal size (so that DeepSpeed ZeRO-3, whose
forward passes are collective, never waits on a rank that has stopped) and the counts are summed across ranks.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import Trainer, TrainerCallback
from trl.models import unwrap_model_for_generation

from recipes.shared.args import RecipeArguments
from recipes.shared.data import fit_images, to_prompts
from recipes.shared.errors import RecipeError
from recipes.shared.prompts import get_template, render
from rewards import build_reward
from rewards.format import format_ok

logger = logging.getLogger(__name__)

# Without a GRPO max_completion_length (SFT runs) and without heldout_max_new_tokens.
DEFAULT_MAX_NEW_TOKENS = 256


def shard(size: int, world: int, rank: int) -> tuple[list[int], list[bool]]:
    """The record indices ``rank`` scores, and whether each counts: equal lengths on every rank.

    Rank r takes records r, r + world, ...; a shorter shard is padded with a record that is generated but not
    counted, so every rank runs the same number of generation batches.

    Example:
        >>> shard(5, 2, 0), shard(5, 2, 1)
        (([0, 2, 4], [True, True, True]), ([1, 3, 4], [True, True, False]))
    """
    per_rank = math.ceil(size / world)
    positions = [rank + world * i for i in range(per_rank)]
    return [min(i, size - 1) for i in positions], [i < size for i in positions]


class HeldoutAccuracyCallback(TrainerCallback):
    """Logs ``heldout/accuracy`` (greedy) at step 0, every ``heldout_eval_steps`` steps and at the end of training."""

    def __init__(self, trainer: Trainer, script_args: RecipeArguments) -> None:
        self.trainer = trainer
        self.every = script_args.heldout_eval_steps
        if self.every < 1:
            raise RecipeError(f"heldout_eval_steps must be at least 1, got {self.every}")
        path = Path(script_args.heldout_dataset_path).expanduser()
        if not (path / "state.json").exists():
            raise RecipeError(
                f"no held-out records at {path} (heldout_dataset_path). Write them like the training data, with "
                "another seed, e.g.: python -m data_prep.fixtures.synthetic --kind mini_color --rows 200 --seed 1000 "
                f"--output heldout.parquet && python -m data_prep.sat --input heldout.parquet --output {path}"
            )
        records = load_from_disk(str(path))
        if script_args.heldout_samples is not None:
            records = records.select(range(min(script_args.heldout_samples, len(records))))
        dataset = to_prompts(records, get_template(script_args.prompt_template))
        self.dataset = fit_images(dataset, script_args.min_pixels, script_args.max_pixels)
        self.accuracy = build_reward("accuracy", script_args)  # the run's accuracy reward, with its options
        args = trainer.args
        self.max_new_tokens = (
            script_args.heldout_max_new_tokens
            or getattr(args, "max_completion_length", None)
            or DEFAULT_MAX_NEW_TOKENS
        )
        self.batch_size = args.per_device_eval_batch_size
        self.last_step: int | None = None
        self.pending: dict[str, float] | None = None

    # Trainer events -------------------------------------------------------------------------------------------
    # A measurement is logged through the trainer's public `log`, at a moment when no training metrics are pending:
    # TRL's trainers fold their running metrics into whatever is logged next, which would move them off their step.
    # The measured step is made a logging step (`control.should_log`, the callbacks' documented lever), so its own
    # training log flushes them; the measurement is logged right after, when the next step begins (or at the end).

    def on_train_begin(self, args, state, control, **kwargs):
        self._log(self._measure(state.global_step))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self.pending = self._measure(state.global_step)
            control.should_log = True
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        self._log_pending()

    def on_train_end(self, args, state, control, **kwargs):
        self._log_pending()
        if self.last_step != state.global_step:  # training stopped early, between two measurements
            self._log(self._measure(state.global_step))

    # Measurement ----------------------------------------------------------------------------------------------

    def _measure(self, step: int) -> dict[str, float]:
        start = time.perf_counter()
        correct, well_formed, count = self.evaluate()
        metrics = {
            "heldout/accuracy": correct / max(count, 1),
            "heldout/format": well_formed / max(count, 1),
            "heldout/seconds": round(time.perf_counter() - start, 3),
        }
        self.last_step = step
        logger.info("step %d: held-out accuracy %.3f (%d records)", step, metrics["heldout/accuracy"], count)
        return metrics

    def _log(self, metrics: dict[str, float]) -> None:
        self.trainer.log(metrics)

    def _log_pending(self) -> None:
        if self.pending is not None:
            metrics, self.pending = self.pending, None
            self._log(metrics)

    def evaluate(self) -> tuple[int, int, int]:
        """(correct, well-formed, scored) over the held-out records, summed over all processes."""
        trainer = self.trainer
        accelerator = trainer.accelerator
        indices, counted = shard(len(self.dataset), accelerator.num_processes, accelerator.process_index)
        per_rank = len(indices)

        model = trainer.model_wrapped
        was_training = trainer.model.training
        trainer.model.eval()
        totals = torch.zeros(3, dtype=torch.long)
        try:
            with unwrap_model_for_generation(model, accelerator) as unwrapped, torch.no_grad():
                for first in range(0, per_rank, self.batch_size):
                    batch = self.dataset.select(indices[first : first + self.batch_size])
                    prompts = list(batch["prompt"])
                    completions = self._generate(unwrapped, prompts, list(batch["images"]))
                    scores = self.accuracy(completions=completions, prompts=prompts, solution=list(batch["solution"]))
                    keep = counted[first : first + self.batch_size]
                    for completion, prompt, score, kept in zip(completions, prompts, scores, keep, strict=True):
                        if kept and score is not None:
                            totals += torch.tensor([int(score == 1.0), int(format_ok(completion, prompt)), 1])
        finally:
            trainer.model.train(was_training)
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="sum").cpu()
        return int(totals[0]), int(totals[1]), int(totals[2])

    def _generate(self, model, prompts: list[list[dict]], images: list[list]) -> list[list[dict]]:
        """Greedy completions for a batch of prompts, as TRL hands them to rewards (conversational)."""
        processor = self.trainer.processing_class
        texts = [render(processor, prompt) for prompt in prompts]
        inputs = processor(
            text=texts,
            images=images if any(images) else None,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            add_special_tokens=False,
        ).to(model.device)
        tokenizer = processor.tokenizer
        # As GRPOTrainer stops: the tokenizer's EOS and the model's own end tokens (an instruct model's <|im_end|>).
        model_eos = model.generation_config.eos_token_id
        model_eos = [] if model_eos is None else [model_eos] if isinstance(model_eos, int) else list(model_eos)
        output = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=[tokenizer.eos_token_id, *model_eos],
            use_cache=True,
            disable_compile=True,
        )
        texts = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [[{"role": "assistant", "content": text}] for text in texts]
