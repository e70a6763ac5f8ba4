"""GRPO on the base model (the paper's main experiment): Qwen2-VL-2B, no SFT, SAT, accuracy + format rewards.

    accelerate launch recipes/grpo_base.py                                   # the paper config, 1 process
    bash launch/run_8gpu.sh recipes/grpo_base.py recipes/configs/paper/grpo_base.yaml   # 8 GPUs, ZeRO-3
    python recipes/grpo_base.py --config recipes/configs/tiny/grpo_base.yaml            # offline, CPU

Every hyper-parameter lives in the YAML (`recipes/configs/paper/grpo_base.yaml` when no --config is given);
command-line flags override it. The trainer is TRL's `GRPOTrainer`, unmodified: the paper's behaviour comes from
its settings (loss_type "grpo", beta 0.04, ...), the role-free base prompt (`recipes/shared/prompts.py`) and the
rewards.
"""

from __future__ import annotations

import logging

from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser

from recipes.shared.args import RecipeArguments
from recipes.shared.batch import check_master_weights
from recipes.shared.callbacks import log_prompt_ids
from recipes.shared.cli import RecipeError, run_cli
from recipes.shared.data import log_prompts
from recipes.shared.models import load_model, peft_config_for
from recipes.shared.prepare import attach_callbacks, prepare
from recipes.shared.run_folder import check_run, claim, train_and_save
from rewards import get_reward_funcs

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = "paper/grpo_base.yaml"


def main(script_args: RecipeArguments, training_args: GRPOConfig, model_args: ModelConfig) -> GRPOTrainer | None:
    # Run folder: not an input, no earlier run replaced unless asked, a sound checkpoint to resume; nothing loaded.
    run = check_run(script_args, training_args, model_args)
    # Data and processor: records → the experiment's prompts; fails early (with the fix) on missing model or data.
    template, processor, dataset = prepare(script_args, training_args, model_args)
    log_prompts(processor, dataset, script_args.dry_run_samples, to_stdout=script_args.dry_run)
    if script_args.dry_run:
        return None

    # Rewards: registry names or dotted paths, each reading its parameters from the options; weights from the config.
    try:
        reward_funcs, training_args.reward_weights = get_reward_funcs(
            script_args, training_args.reward_weights, tokenizer=processor.tokenizer
        )
    except ValueError as err:
        raise RecipeError(str(err)) from None

    # Model: loaded here (not by the trainer) so the freeze options apply before the optimizer sees the parameters.
    model = load_model(model_args, script_args, training_args)
    check_master_weights(model, training_args)

    # Run folder: every check passed, so only now is a run it replaces deleted; held by this run until the end.
    with claim(run, script_args, training_args, model_args):
        # Trainer
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=log_prompt_ids(reward_funcs),  # each completion's record id in TRL's completions table
            args=training_args,
            train_dataset=dataset,
            processing_class=processor,
            peft_config=peft_config_for(model_args, script_args),  # LoRA when use_peft (None otherwise)
        )
        attach_callbacks(trainer, script_args)

        # Train, then save the final model and processor (loadable with from_pretrained); the run is recorded.
        train_and_save(trainer, run, training_args)
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((RecipeArguments, GRPOConfig, ModelConfig))


if __name__ == "__main__":
    run_cli(main, make_parser(), None, DEFAULT_CONFIG)
