"""The SFT baseline: the base Qwen2-VL-2B weights fine-tuned on SAT's bare answers (no reasoning).

    accelerate launch recipes/sft_baseline.py                                # the paper config
    python recipes/sft_baseline.py --config recipes/configs/tiny/sft_baseline.yaml     # offline, CPU

As in the paper, the base weights get the instruct model's chat template (``chat_template: qwen2vl``) and the
target is the bare correct answer. The data is in TRL's prompt-completion form, so the loss covers the completion
tokens only: the answer text and the ``<|im_end|>`` that closes the assistant turn (the model must learn to stop).
The system turn, the question, the image tokens and the ``<|im_start|>assistant`` header carry no loss: they are
given at test time, and training on them would spend capacity on predicting the prompt.
"""

from __future__ import annotations

import logging

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser

from recipes.args import RecipeArguments
from recipes.cli import run_cli
from recipes.common import attach_callbacks, prepare
from recipes.data import log_prompts
from recipes.models import load_model
from recipes.runs import train_and_save

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = "paper/sft_baseline.yaml"


def main(script_args: RecipeArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer | None:
    # Data and processor: records → prompt (user turn) + completion (the bare answer), instruct chat template.
    template, processor, dataset = prepare(script_args, training_args, model_args, with_completion=True)
    log_prompts(processor, dataset, script_args.dry_run_samples, to_stdout=script_args.dry_run)
    if script_args.dry_run:
        return None

    # Model
    model = load_model(model_args, script_args, training_args)

    # Trainer: completion-only loss (set in the YAML); images are decoded and processed per batch by the collator.
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=processor)
    attach_callbacks(trainer, script_args)

    # Train (resuming when asked), then save the final model and processor, loadable with from_pretrained.
    train_and_save(trainer, training_args)
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((RecipeArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    run_cli(main, make_parser(), None, DEFAULT_CONFIG)
