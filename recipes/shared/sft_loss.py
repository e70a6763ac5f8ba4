"""The paper's SFT loss (``sft_loss: paper``), built from the trainer's public arguments only.

The paper's SFT script tokenized the whole rendered conversation and used it as its own labels: every token counts
(system turn, question, answer and the ``<|im_end|>`` closing it) except padding and the three vision special tokens
``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``. With one sequence per device and micro-batch, the
model's token mean was a mean *per sequence*, and gradient accumulation and data parallelism averaged those: every
sequence weighs the same, whatever its length. TRL's SFTTrainer instead masks only padding (and, with
``completion_only_loss``, the prompt) and, by default, divides by the token count of the whole accumulated batch.

Here, with TRL's own loss (no ``compute_loss_func``, which TRL 1.16 deprecates and v2 removes; TRL's suggested
replacement, a subclass, is not an option in this repository): `PaperSFTLoss` passes `VisionTokenMaskingCollator`
(TRL's own vision collator, then the vision special tokens masked) as ``data_collator=``, requires one sequence per
device and micro-batch (as the paper: the global batch comes from accumulation and processes), and marks the model
as not taking loss kwargs (``accepts_loss_kwargs = False``, the attribute transformers' Trainer reads, which
Qwen2.5-VL and Qwen3-VL already declare). The Trainer then passes no ``num_items_in_batch``, TRL's loss is the token
mean of the micro-batch's one sequence, and the Trainer divides it by the accumulation steps: exactly the paper's
loss. `SequenceMeanLoss` writes that loss out for any batch; tests/test_sft_loss.py checks that TRL's route gives
its values. Set ``average_tokens_across_devices: false`` with it (the paper config does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from recipes.shared.errors import RecipeError

SFT_LOSSES = ("trl", "paper")
VISION_SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
IGNORE_INDEX = -100


class VisionTokenMaskingCollator:
    """TRL's vision-language collator, then the vision special tokens removed from the labels."""

    def __init__(self, processor, training_args) -> None:
        self.collator = DataCollatorForVisionLanguageModeling(
            processor=processor,
            max_length=training_args.max_length,
            completion_only_loss=False,  # the paper's loss covers the whole sequence
            pad_to_multiple_of=training_args.pad_to_multiple_of,
            dataset_text_field=training_args.dataset_text_field,
        )
        ids = processor.tokenizer.convert_tokens_to_ids(list(VISION_SPECIAL_TOKENS))
        unknown = processor.tokenizer.unk_token_id
        if any(i is None or (unknown is not None and i == unknown) for i in ids):
            raise ValueError(f"the tokenizer lacks one of the vision special tokens {VISION_SPECIAL_TOKENS}")
        self.masked_ids = torch.tensor(ids)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collator(examples)
        labels = batch["labels"]
        labels[torch.isin(labels, self.masked_ids)] = IGNORE_INDEX
        return batch


class SequenceMeanLoss:
    """The paper's loss written out: token mean within each sequence, mean over sequences, / accumulation steps.

    The recipe does not call it (TRL's own loss gives these values, see `PaperSFTLoss`); it is the definition the
    tests compare TRL's loss with.

    Example:
        >>> from types import SimpleNamespace
        >>> logits = torch.zeros(2, 4, 3)  # uniform: every scored token costs log(3)
        >>> labels = torch.tensor([[0, 1, 2, 2], [0, 1, -100, -100]])  # 3 and 1 scored tokens
        >>> round(SequenceMeanLoss(1)(SimpleNamespace(logits=logits), labels).item(), 4)
        1.0986
    """

    __name__ = "sequence_mean_loss"

    def __init__(self, accumulation_steps: int) -> None:
        self.accumulation_steps = accumulation_steps

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs.logits[:, :-1].float()
        targets = labels[:, 1:].to(logits.device)
        per_token = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        mask = targets != IGNORE_INDEX
        counts = mask.sum(dim=1)
        scored = counts > 0
        if not scored.any():  # nothing to learn in this micro-batch: a zero that keeps the graph
            return logits.sum() * 0.0
        per_sequence = (per_token * mask).sum(dim=1)[scored] / counts[scored]
        return per_sequence.mean() / self.accumulation_steps


class PaperSFTLoss:
    """Makes TRL's own SFT loss the paper's: one sequence per micro-batch, vision tokens masked, no token rescaling.

    Built before the model loads, so a batch it cannot give is refused first; `trainer_arguments` then prepares the
    model and returns the SFTTrainer keyword arguments.
    """

    def __init__(self, processor, training_args) -> None:
        if training_args.per_device_train_batch_size != 1:
            raise RecipeError(
                f"sft_loss: paper weighs every sequence the same, which TRL's loss does with one sequence per device "
                f"and micro-batch (as the paper); per_device_train_batch_size is "
                f"{training_args.per_device_train_batch_size}: set per_device_train_batch_size: 1 and make up the "
                "batch with gradient_accumulation_steps (or prompts_per_step), or use sft_loss: trl"
            )
        self.collator = VisionTokenMaskingCollator(processor, training_args)

    def trainer_arguments(self, model) -> dict:
        # transformers' Trainer reads this when it is built: False = no num_items_in_batch (the loss stays the
        # sequence's token mean) and the loss is divided by the accumulation steps.
        model.accepts_loss_kwargs = False
        return {"data_collator": self.collator}
