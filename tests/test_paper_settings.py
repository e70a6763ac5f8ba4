"""The paper's effective training settings, value for value, and the mechanisms that keep them on every launch.

The expected values are the paper's run as REFERENCE.md §1 states it (its launch script plus the defaults of the
trainer it used: trl 0.14 / transformers 4.49), written out here independently of the YAMLs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import AutoModelForImageTextToText

from recipes import grpo_base, sft_baseline
from recipes.shared.batch import accumulation_for, derive_accumulation
from recipes.shared.cli import CONFIG_DIR
from recipes.shared.errors import RecipeError
from recipes.shared.sft_loss import SequenceMeanLoss, VisionTokenMaskingCollator

PAPER_GRPO = {
    # generation
    "num_generations": 8,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "min_p": None,
    "max_completion_length": 700,
    # loss, KL, advantage
    "loss_type": "grpo",
    "beta": 0.04,
    "use_bias_correction_kl": False,
    "num_iterations": 1,
    "scale_rewards": "group",
    "importance_sampling_level": "token",
    "mask_truncated_completions": False,
    "top_entropy_quantile": 1.0,
    # optimizer and schedule
    "learning_rate": 1e-6,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "num_train_epochs": 2,
    "max_steps": -1,
    "save_steps": 100,
    "bf16": True,
    "gradient_checkpointing": True,  # transformers 5.20's name (5.23: activation_checkpointing)
    "seed": 42,
}
PAPER_PIXELS = (3136, 401408)


def parse(module, config: str, *overrides: str):
    """Parse a shipped YAML as the command line does; bf16 configs with use_cpu on this GPU-less machine."""
    path = CONFIG_DIR / config
    cpu = ["--use_cpu", "true"] if yaml.safe_load(path.read_text()).get("bf16") else []
    argv = ["--config", str(path), *cpu, *overrides]
    parser = module.make_parser()
    return derive_accumulation(parser, argv, parser.parse_args_and_config(argv))


@pytest.mark.parametrize("name", ["grpo_base", "grpo_base_length", "grpo_instruct"])
def test_paper_grpo_configs_hold_every_setting_the_papers_trainer_fixed(name):
    script_args, args, model_args = parse(grpo_base, f"paper/{name}.yaml")
    for key, value in PAPER_GRPO.items():
        assert getattr(args, key) == value, key
    assert args.optim.startswith("adamw_torch")  # AdamW; "fused" is the same update computed in one kernel
    instruct = name == "grpo_instruct"
    assert model_args.model_name_or_path == ("Qwen/Qwen2-VL-2B-Instruct" if instruct else "Qwen/Qwen2-VL-2B")
    assert model_args.dtype == "float32"  # fp32 weights, bf16 autocast: the optimizer updates fp32 values
    assert script_args.prompt_template == ("instruct" if instruct else "base")
    assert (script_args.min_pixels, script_args.max_pixels) == PAPER_PIXELS
    # 8 prompts x 8 completions per optimizer step: one prompt per device and micro-batch.
    assert script_args.prompts_per_step == 8 and args.per_device_train_batch_size == args.num_generations
    assert args.gradient_accumulation_steps == 8  # on this single process
    weights = dict(zip(script_args.reward_funcs, args.reward_weights, strict=True))
    assert weights["accuracy"] == weights["format"] == 1.0 and weights["reflection"] == 0.0
    assert script_args.accuracy_mode == "paper"
    if name == "grpo_base_length":
        assert weights["length"] == 1.0 and script_args.length_scale == 0.001
    else:
        assert "length" not in weights


def test_paper_sft_config_holds_the_papers_loss_and_batch():
    script_args, args, model_args = parse(sft_baseline, "paper/sft_baseline.yaml")
    assert model_args.model_name_or_path == "Qwen/Qwen2-VL-2B" and model_args.dtype == "float32"
    assert script_args.chat_template == "qwen2vl" and script_args.prompt_template == "sft"
    assert (args.learning_rate, args.num_train_epochs, args.lr_scheduler_type) == (2e-5, 2, "linear")
    assert args.max_length is None and not args.completion_only_loss and script_args.sft_loss == "paper"
    assert not args.average_tokens_across_devices
    assert script_args.prompts_per_step == 8 and args.per_device_train_batch_size == 1
    assert args.gradient_accumulation_steps == 8 and args.bf16
    assert (script_args.min_pixels, script_args.max_pixels) == PAPER_PIXELS


def test_the_answer_only_sft_config_differs_from_the_paper_one_only_in_its_loss():
    paper = yaml.safe_load((CONFIG_DIR / "paper/sft_baseline.yaml").read_text())
    answer_only = yaml.safe_load((CONFIG_DIR / "paper/sft_baseline_answer_only.yaml").read_text())
    differing = {k for k in paper.keys() | answer_only.keys() if paper.get(k) != answer_only.get(k)}
    assert differing == {
        "completion_only_loss",
        "sft_loss",
        "average_tokens_across_devices",
        "output_dir",
        "run_name",
    }


@pytest.mark.parametrize(("world", "accumulation"), [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_the_global_batch_is_8_prompts_on_any_number_of_processes(world, accumulation):
    assert accumulation_for(8, 8, 8, world) == accumulation  # GRPO: 8 completions per device and micro-batch
    assert accumulation_for(8, 1, 1, world) == accumulation  # SFT: 1 example per device and micro-batch


@pytest.mark.parametrize("world", [3, 16])
def test_a_process_count_that_cannot_give_the_global_batch_is_refused(world):
    with pytest.raises(RecipeError, match=r"cannot be reached exactly.*1, 2, 4, 8"):
        accumulation_for(8, 8, 8, world)


def test_prompts_per_step_is_derived_at_parse_time_and_contradictions_are_refused(tiny_base_dir):
    # tiny: 8 completions per device = 2 prompts of 4; 4 prompts per step need accumulation 2 on one process.
    _, args, _ = parse(grpo_base, "tiny/grpo_base.yaml", "--prompts_per_step", "4")
    assert args.gradient_accumulation_steps == 2
    assert args.generation_batch_size == 16  # TRL's own derived sizes follow the derived accumulation
    with pytest.raises(RecipeError, match="gradient_accumulation_steps 1 contradicts prompts_per_step=4"):
        parse(grpo_base, "tiny/grpo_base.yaml", "--prompts_per_step", "4", "--gradient_accumulation_steps", "1")
    with pytest.raises(RecipeError, match="prompts_per_step=3 cannot be reached"):
        parse(grpo_base, "tiny/grpo_base.yaml", "--prompts_per_step", "3")


def tiny(module, config: str, model_dir, data_dir, out_dir, *extra: str):
    overrides = ["--model_name_or_path", str(model_dir), "--dataset_path", str(data_dir)]
    overrides += ["--output_dir", str(out_dir), "--report_to", "none", "--save_steps", "100", *extra]
    return parse(module, config, *overrides)


LENGTH = ("--reward_funcs", "accuracy", "format", "length", "reflection", "--reward_weights", "1", "1", "1", "0")


@pytest.mark.slow
def test_one_step_at_the_papers_learning_rate_changes_every_trainable_tensor(tiny_base_dir, sat_records_dir, tmp_path):
    """fp32 weights + bf16 autocast (the paper's precision, here on CPU): no update rounds away at lr 1e-6."""
    extra = ("--learning_rate", "1e-6", "--max_steps", "1", "--bf16", "true", "--use_cpu", "true", *LENGTH)
    args = tiny(grpo_base, "tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run", *extra)
    before = {
        n: p.detach().clone() for n, p in AutoModelForImageTextToText.from_pretrained(tiny_base_dir).named_parameters()
    }
    trainer = grpo_base.main(*args)
    assert trainer.state.global_step == 1
    unchanged = [n for n, p in trainer.model.named_parameters() if p.requires_grad and torch.equal(before[n], p)]
    assert not unchanged


def test_bf16_parameters_without_master_weights_are_refused_before_training(tiny_base_dir, sat_records_dir, tmp_path):
    out = tmp_path / "run"
    args = tiny(grpo_base, "tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, out, "--dtype", "bfloat16")
    with pytest.raises(RecipeError, match=r"bfloat16 and this launch keeps no fp32 master copy.*--dtype float32"):
        grpo_base.main(*args)
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))


def test_the_paper_sft_loss_masks_padding_and_vision_tokens_and_weighs_sequences_equally(
    tiny_base_dir, sat_records_dir, tmp_path
):
    from recipes.shared.prepare import prepare

    script_args, args, model_args = tiny(
        sft_baseline, "tiny/sft_baseline.yaml", tiny_base_dir, sat_records_dir, tmp_path
    )
    _, processor, dataset = prepare(script_args, args, model_args, with_completion=True)
    collator = VisionTokenMaskingCollator(processor, args)
    batch = collator([dataset[i] for i in range(3)])
    tokenizer = processor.tokenizer
    vision = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
    # Labels are the input ids everywhere except padding and the three vision tokens: system turn and question count.
    keep = mask & ~torch.isin(ids, torch.tensor(vision))
    assert torch.equal(labels[keep], ids[keep]) and (labels[~keep] == -100).all()
    assert "<|im_start|>system" in tokenizer.decode(labels[0][labels[0] != -100])

    # The loss on logits whose per-sequence means differ (a random tiny model's are all about log(vocabulary)).
    logits = torch.randn(*ids.shape, len(tokenizer), generator=torch.Generator().manual_seed(0)) * 3
    loss = SequenceMeanLoss(accumulation_steps=2)(SimpleNamespace(logits=logits), labels)
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
    )
    scored = labels[:, 1:] != -100
    assert len(set(scored.sum(dim=1).tolist())) > 1  # sequences of different lengths
    per_sequence = torch.stack([per_token[i][scored[i]].mean() for i in range(3)])
    assert torch.allclose(loss, per_sequence.mean() / 2)
    assert not torch.allclose(loss * 2, per_token[scored].mean())  # not TRL's token mean over the batch


@pytest.mark.slow
def test_the_paper_sft_recipe_trains_every_parameter(tiny_base_dir, sat_records_dir, tmp_path):
    args = tiny(sft_baseline, "tiny/sft_baseline.yaml", tiny_base_dir, sat_records_dir, tmp_path, "--max_steps", "2")
    before = {
        n: p.detach().clone() for n, p in AutoModelForImageTextToText.from_pretrained(tiny_base_dir).named_parameters()
    }
    trainer = sft_baseline.main(*args)
    # TRL's own loss (no compute_loss_func), without token rescaling: the paper's (tests/test_sft_loss.py)
    assert trainer.state.global_step == 2 and trainer.compute_loss_func is None
    assert trainer.model_accepts_loss_kwargs is False
    assert all(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_the_paper_sft_loss_with_completion_only_loss_is_refused(tiny_base_dir, sat_records_dir, tmp_path):
    from recipes.shared.prepare import prepare

    args = tiny(
        sft_baseline,
        "tiny/sft_baseline.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path,
        "--completion_only_loss",
        "true",
    )
    with pytest.raises(RecipeError, match="sft_loss: paper is the loss over the whole sequence"):
        prepare(*args, with_completion=True)
