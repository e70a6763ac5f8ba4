"""The SFT baseline: the base Qwen2-VL-2B weights fine-tuned on SAT's bare answers (no reasoning).

    accelerate launch recipes/sft_baseline.py                                # the paper config
    python recipes/sft_baseline.py --config recipes/configs/tiny/sft_baseline.yaml     # offline, CPU

As in the paper, the base weights get the instruct model's chat template (``chat_template: qwen2vl``) and the
target is the bare correct answer; the data is in TRL's prompt-completion form. Two losses, chosen in the YAML:

* ``sft_loss: paper`` (``configs/paper/sft_baseline.yaml``): the paper's — the whole rendered sequence, padding and
  the vision special tokens masked, a token mean per sequence averaged over sequences (`recipes/shared/sft_loss.py`).
* ``sft_loss: trl`` with ``completion_only_loss: true`` (``configs/paper/sft_baseline_answer_only.yaml``): TRL's
  completion-only loss, the answer and the ``<|im_end|>`` that closes it; what is given at test time carries none.
"""

from __future__ import annotations

import logging

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser

from recipes.shared.args import RecipeArguments
from recipes.shared.batch import check_master_weights
from recipes.shared.cli import run_cli
from recipes.shared.data import log_prompts
from recipes.shared.models import load_model, peft_config_for
from recipes.shared.prepare import attach_callbacks, prepare
from recipes.shared.run_folder import check_run, claim, train_and_save
from recipes.shared.sft_loss import PaperSFTLoss

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = "paper/sft_baseline.yaml"


def main(script_args: RecipeArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer | None:
    # Run folder: not an input, no earlier run replaced unless asked, a sound checkpoint to resume; nothing loaded.
    run = check_run(script_args, training_args, model_args)
    # Data and processor: records → prompt (user turn) + completion (the bare answer), instruct chat template.
    template, processor, dataset = prepare(script_args, training_args, model_args, with_completion=True)
    log_prompts(processor, dataset, script_args.dry_run_samples, to_stdout=script_args.dry_run)
    paper_loss = PaperSFTLoss(processor, training_args) if script_args.sft_loss == "paper" else None  # checks first
    if script_args.dry_run:
        return None

    # Model
    model = load_model(model_args, script_args, training_args)
    check_master_weights(model, training_args)

    # Run folder: every check passed, so only now is a run it replaces deleted; held by this run until the end.
    with claim(run, script_args, training_args, model_args):
        # Trainer: TRL's own loss, made the paper's when the YAML names it; images are processed per batch.
        loss = paper_loss.trainer_arguments(model) if paper_loss else {}
        trainer = SFTTrainer(
            model=model,
            args=training_args,
            train_dataset=dataset,
            processing_class=processor,
            peft_config=peft_config_for(model_args, script_args),  # LoRA when use_peft (None otherwise)
            **loss,
        )
        attach_callbacks(trainer, script_args)

        # Train, then save the final model and processor (loadable with from_pretrained); the run is recorded.
        train_and_save(trainer, run, training_args)
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((RecipeArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    run_cli(main, make_parser(), None, DEFAULT_CONFIG)
