"""The paper's SFT loss (``sft_loss: paper``), built from the trainer's public arguments only.

The paper's SFT script tokenized the whole rendered conversation and used it as its own labels: every token counts
(system turn, question, answer and the ``<|im_end|>`` closing it) except padding and the three vision special tokens
``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``. With one sequence per device and micro-batch, the
model's token mean was a mean *per sequence*, and gradient accumulation and data parallelism averaged those: every
sequence weighs the same, whatever its length. TRL's SFTTrainer instead masks only padding (and, with
``completion_only_loss``, the prompt) and averages over all the batch's tokens.

Here: `VisionTokenMaskingCollator` wraps TRL's own vision collator (passed as ``data_collator=``) and masks the
vision special tokens; `SequenceMeanLoss` (passed as ``compute_loss_func=``) takes the token mean per sequence, then
the mean over sequences, divided by the gradient-accumulation steps (the trainer leaves that division to a custom
loss). Set ``average_tokens_across_devices: false`` with it so no process rescales the loss by the token count of
the others (the paper config does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

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
    """Causal-LM cross-entropy: token mean within each sequence, mean over sequences, / accumulation steps.

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


def paper_loss_arguments(processor, training_args) -> dict:
    """The SFTTrainer keyword arguments that give the paper's loss."""
    return {
        "data_collator": VisionTokenMaskingCollator(processor, training_args),
        "compute_loss_func": SequenceMeanLoss(training_args.gradient_accumulation_steps),
    }
