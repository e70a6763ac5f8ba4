"""LoRA through TRL's ModelConfig options (``use_peft``, ``lora_*``): what trains, what is saved, how it reloads.

On the tiny Qwen2-VL with the real trainers and peft: only adapter weights change (and only in the parts the freeze
options leave trainable), the run saves the adapter alone, the saved adapter reloads to the same outputs, evaluating
the adapter folder equals evaluating the merged model, a resumed run ends where a straight one does, and the settings
that cannot work are refused before anything is loaded into the trainer.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from fixtures.shapes import QWEN2_VL_2B
from peft import PeftConfig, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2VLConfig

from recipes import grpo_base, sft_baseline
from recipes.shared.cli import CONFIG_DIR
from recipes.shared.errors import RecipeError
from recipes.shared.models import load_for_inference, lora_coverage, peft_config_for
from recipes.shared.prompts import render

LENGTH = ("--reward_funcs", "accuracy", "format", "length", "reflection", "--reward_weights", "1", "1", "1", "0")
LLM_AND_VISION = ("--lora_target_modules", "q_proj", "v_proj", "qkv")  # qkv: the vision tower's attention


def parse(module, config: str, model_dir, data_dir, out_dir, *extra: str):
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--max_steps", "2", "--save_steps", "100", *extra]
    return module.make_parser().parse_args_and_config(argv)


def train(module, config, model_dir, data_dir, out_dir, *extra):
    trainer = module.main(*parse(module, config, model_dir, data_dir, out_dir, *extra))
    assert trainer.state.global_step == 2
    return trainer


def split_parameters(trainer) -> tuple[dict[str, torch.nn.Parameter], dict[str, torch.nn.Parameter]]:
    """(original weights under their original names, adapter weights) of a trainer's peft-wrapped model."""
    originals, adapters = {}, {}
    for name, param in trainer.model.get_base_model().named_parameters():
        if "lora_" in name:
            adapters[name] = param
        else:
            originals[name.replace(".base_layer", "")] = param
    return originals, adapters


def initial_weights(model_dir) -> dict[str, torch.Tensor]:
    return dict(AutoModelForImageTextToText.from_pretrained(model_dir).named_parameters())


def untrained(trainer, adapters) -> list[str]:
    """Adapter weights that did not train: lora_B still all zero (its initial value), or no gradient ever reached
    the weight (Adam's first moment all zero; lora_A starts at a random draw, so it is judged by that)."""
    state = trainer.optimizer.state
    return [n for n, p in adapters.items() if ("lora_B" in n and not p.any()) or not state[p]["exp_avg"].any()]


# ----- refused before training -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--freeze_llm", "true"), "both set"),  # the preset freezes the vision tower already
        (("--freeze_vision", "false", "--freeze_llm", "true"), "LoRA would train nothing"),  # its targets: the LLM's
        (
            ("--freeze_vision", "false", "--freeze_llm", "true", *LLM_AND_VISION, "--lora_modules_to_save", "lm_head"),
            "freeze_llm is set",
        ),
        (("--load_in_4bit", "true"), "load_in_4bit"),
    ],
    ids=["both-frozen", "nothing-to-adapt", "saved-module-in-frozen-part", "quantized"],
)
def test_lora_settings_that_cannot_work_are_refused(extra, message, tiny_base_dir, sat_records_dir, tmp_path):
    args = parse(grpo_base, "tiny/grpo_base_lora.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run", *extra)
    with pytest.raises(RecipeError, match=message):
        grpo_base.main(*args)
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


def test_use_peft_without_target_modules_is_refused_with_the_fix(tiny_base_dir, sat_records_dir, tmp_path):
    # The silent no-op this replaces: `--use_peft true` used to train every weight and save no adapter.
    args = parse(
        grpo_base, "tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run", "--use_peft", "true"
    )
    with pytest.raises(RecipeError, match="lora_target_modules") as err:
        grpo_base.main(*args)
    assert "q_proj" in str(err.value) and "grpo_base_lora.yaml" in str(err.value)


def test_paper_lora_preset_adapts_the_language_model_of_qwen2vl_2b_only():
    """The single-GPU preset on Qwen2-VL-2B's shape (no weights: meta device): 73.9M adapter parameters, none in
    the vision tower (the figure launch/README.md's memory arithmetic uses)."""
    parsed = grpo_base.make_parser().parse_args_and_config(
        ["--config", str(CONFIG_DIR / "paper/grpo_base_lora.yaml"), "--use_cpu", "true"]
    )
    script_args, training_args, model_args = parsed[:3]
    assert model_args.use_peft and model_args.dtype == "bfloat16" and script_args.freeze_vision
    assert training_args.learning_rate == 1e-5 and model_args.lora_dropout == 0.0
    config = peft_config_for(model_args, script_args)
    assert (config.r, config.lora_alpha) == (64, 128)
    shape = Qwen2VLConfig(**QWEN2_VL_2B)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(shape)
    counts = lora_coverage(model, config, script_args)
    assert counts == {"vision": 0, "language model": 73_859_072, "other": 0}


def test_peft_config_is_none_without_use_peft(tiny_base_dir, sat_records_dir, tmp_path):
    args = parse(grpo_base, "tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run")
    assert peft_config_for(args[2], args[0]) is None


# ----- GRPO with the shipped LoRA preset (tiny twin) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(tiny_base_dir, sat_records_dir, tmp_path_factory):
    """Two GRPO steps of recipes/configs/tiny/grpo_base_lora.yaml; returns (trainer, output folder)."""
    out = tmp_path_factory.mktemp("lora") / "run"
    trainer = train(
        grpo_base,
        "tiny/grpo_base_lora.yaml",
        tiny_base_dir,
        sat_records_dir,
        out,
        *LENGTH,
        *("--max_completion_length", "48"),
    )
    assert any(e.get("reward_std", 0) > 0 for e in trainer.state.log_history), "no reward signal: nothing to learn"
    return trainer, out


@pytest.mark.slow
def test_lora_grpo_trains_the_language_model_adapters_only(lora_run, tiny_base_dir):
    trainer, out = lora_run
    assert isinstance(trainer.model, PeftModel)
    originals, adapters = split_parameters(trainer)
    initial = initial_weights(tiny_base_dir)
    assert originals.keys() == initial.keys()
    assert all(torch.equal(p, initial[n]) for n, p in originals.items())  # every original weight untouched
    assert adapters and not any(".visual." in n for n in adapters)  # freeze_vision: no adapter in the vision tower
    assert {n.split(".")[-4] for n in adapters} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert not untrained(trainer, adapters)  # every adapter weight trained
    assert all(p.requires_grad == ("lora_" in n) for n, p in trainer.model.named_parameters())


def model_inputs(trainer, n: int = 2):
    """A batch of the run's own rendered prompts and images, as the processor makes them."""
    rows = [trainer.train_dataset[i] for i in range(n)]
    texts = [render(trainer.processing_class, row["prompt"]) for row in rows]
    images = [image for row in rows for image in row["images"]]
    return trainer.processing_class(text=texts, images=images, padding=True, return_tensors="pt")


@pytest.mark.slow
def test_lora_run_saves_the_adapter_alone_and_it_reloads_to_the_same_outputs(lora_run):
    trainer, out = lora_run
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # not a full copy of the model
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    assert AutoProcessor.from_pretrained(out).image_processor.size["longest_edge"] == 12544  # the run's bounds

    # The trained model (adapters active, unmerged) and the adapter folder merged into its base on load.
    inputs = model_inputs(trainer)
    reloaded = load_for_inference(str(out), "float32", None)
    assert not isinstance(reloaded, PeftModel)  # merged: a plain model, as fast as the base
    with torch.no_grad():
        expected = trainer.model.eval()(**inputs).logits
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_evaluating_the_adapter_equals_evaluating_the_merged_model(lora_run, tiny_base_dir, tmp_path):
    trainer, out = lora_run
    # A full model folder made by merging the adapter by hand, saved as any fine-tuned model would be.
    merged_dir = tmp_path / "merged"
    base = AutoModelForImageTextToText.from_pretrained(tiny_base_dir)
    PeftModel.from_pretrained(base, out).merge_and_unload().save_pretrained(merged_dir)
    AutoProcessor.from_pretrained(out).save_pretrained(merged_dir)
    from_adapter = load_for_inference(str(out), "float32", None)
    from_merged = load_for_inference(str(merged_dir), "float32", None)
    # Greedy generation, as the CV-Bench evaluation decodes: the same tokens from both folders.
    inputs = model_inputs(trainer, n=4)
    with torch.no_grad():
        a = from_adapter.generate(**inputs, max_new_tokens=16, do_sample=False)
        b = from_merged.generate(**inputs, max_new_tokens=16, do_sample=False)
        torch.testing.assert_close(from_adapter(**inputs).logits, from_merged(**inputs).logits)
    assert torch.equal(a, b)


@pytest.mark.slow
def test_an_adapter_whose_base_model_is_gone_is_reported(lora_run, tmp_path):
    _, out = lora_run
    moved = shutil.copytree(out, tmp_path / "adapter", ignore=shutil.ignore_patterns("checkpoint-*", "completions"))
    config = (moved / "adapter_config.json").read_text()
    base = PeftConfig.from_pretrained(moved).base_model_name_or_path
    (moved / "adapter_config.json").write_text(config.replace(base, str(tmp_path / "no-such-model")))
    with pytest.raises(RecipeError, match="base_model_name_or_path"):
        load_for_inference(str(moved), "float32", None)


# ----- the freeze options, SFT, precision, resumption --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("frozen", ["none", "vision", "llm"])
def test_freeze_options_decide_which_part_gets_trained_adapters(frozen, tiny_base_dir, sat_records_dir, tmp_path):
    flags = () if frozen == "none" else (f"--freeze_{frozen}", "true")
    trainer = train(
        grpo_base,
        "tiny/grpo_base_lora.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path / "run",
        *LLM_AND_VISION,
        *("--freeze_vision", "false"),  # the preset freezes the vision tower; each case sets its own
        *flags,
        *LENGTH,
        *("--max_completion_length", "48"),
    )
    originals, adapters = split_parameters(trainer)
    initial = initial_weights(tiny_base_dir)
    assert all(torch.equal(p, initial[n]) for n, p in originals.items())
    vision = {n for n in adapters if ".visual." in n}
    language = {n for n in adapters if ".language_model." in n}
    assert vision | language == set(adapters)
    assert bool(vision) == (frozen != "vision") and bool(language) == (frozen != "llm")
    assert not untrained(trainer, adapters)  # the adapters that exist all trained


@pytest.mark.slow
def test_lora_sft_trains_and_saves_the_adapters_only(tiny_base_dir, sat_records_dir, tmp_path):
    trainer = train(
        sft_baseline,
        "tiny/sft_baseline.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path / "run",
        *("--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0"),
        *LLM_AND_VISION,
    )
    assert isinstance(trainer.model, PeftModel)
    originals, adapters = split_parameters(trainer)
    initial = initial_weights(tiny_base_dir)
    assert all(torch.equal(p, initial[n]) for n, p in originals.items())
    assert any(".visual." in n for n in adapters) and not untrained(trainer, adapters)
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_bf16_base_weights_train_fp32_adapters(tiny_base_dir, sat_records_dir, tmp_path):
    # The paper-scale preset loads the frozen base in bf16; peft keeps the adapters in fp32, so no update of theirs
    # rounds away (and the recipes' fp32-master-weight check lets it run without DeepSpeed).
    trainer = train(
        grpo_base,
        "tiny/grpo_base_lora.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path / "run",
        *("--dtype", "bfloat16"),
        *LENGTH,
        *("--max_completion_length", "48"),
    )
    originals, adapters = split_parameters(trainer)
    assert {p.dtype for p in originals.values()} == {torch.bfloat16}
    assert {p.dtype for p in adapters.values()} == {torch.float32}


@pytest.mark.slow
def test_a_resumed_lora_run_ends_where_a_straight_one_does(tiny_base_dir, sat_records_dir, tmp_path):
    common = ("--max_steps", "4", "--save_steps", "2", *LENGTH, "--max_completion_length", "48")

    def run(out, *extra):
        argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base_lora.yaml"), "--model_name_or_path", str(tiny_base_dir)]
        argv += ["--dataset_path", str(sat_records_dir), "--output_dir", str(out), "--report_to", "none"]
        return grpo_base.main(*grpo_base.make_parser().parse_args_and_config([*argv, *common, *extra]))

    straight = tmp_path / "straight"
    assert run(straight).state.global_step == 4
    # Resumed from the checkpoint at step 2 (into a folder of its own: a folder holding a copied checkpoint but no
    # run record is not a run folder, and is refused).
    resumed = tmp_path / "resumed"
    assert run(resumed, "--resume_from_checkpoint", str(straight / "checkpoint-2")).state.global_step == 4
    a, b = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    at_2 = load_file(straight / "checkpoint-2" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    assert any(not torch.equal(a[name], at_2[name]) for name in a)  # steps 3-4 really trained after resuming
