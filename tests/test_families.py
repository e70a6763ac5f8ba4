"""The recipes on each model family: Qwen2-VL, Qwen2.5-VL and Qwen3-VL, as tiny random models of the real classes.

What differs between the families and what a user would notice: pixel bounds checked in the family's own image unit
(28 or 32 pixels) with a clear error; the base prompt rendered identically (role-free) and the instruct prompt in each
family's own chat template; the three recipes training every parameter and saving a model that reloads; and a real
2-process DeepSpeed ZeRO-3 GRPO run on Qwen3-VL (the family that differs most from the paper's).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from test_launch import check_zero3_run, launch_two_ranks
from transformers import AutoModelForImageTextToText, AutoProcessor

from data_prep.fixtures.tiny_model import build_tiny_model
from recipes import grpo_base, grpo_instruct, sft_baseline
from recipes.shared.cli import CONFIG_DIR
from recipes.shared.errors import RecipeError
from recipes.shared.models import load_processor
from recipes.shared.prompts import get_template, render

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
UNIT = {"qwen2_vl": 28, "qwen2_5_vl": 28, "qwen3_vl": 32}  # patch size x merge size, written out independently
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# A reward that differs between completions of a random model (those that stop early vs at the length limit); the
# paper's accuracy and format rewards are ~always 0 on it, which would leave GRPO without any signal.
LENGTH = ("--reward_funcs", "accuracy", "format", "length", "reflection", "--reward_weights", "1", "1", "1", "0")


@pytest.fixture(scope="module")
def family_model(tmp_path_factory, tiny_base_dir, tiny_instruct_dir):
    """family_model(arch, variant) -> folder of a tiny random model of that family (built once per module)."""
    built = {("qwen2_vl", "base"): tiny_base_dir, ("qwen2_vl", "instruct"): tiny_instruct_dir}
    root = tmp_path_factory.mktemp("families")

    def get(arch: str, variant: str):
        if (arch, variant) not in built:
            built[arch, variant] = build_tiny_model(root / f"{arch}-{variant}", variant=variant, arch=arch)
        return built[arch, variant]

    return get


def bounds(arch: str, low: int = 4, high: int = 16) -> tuple[str, ...]:
    """Pixel bounds of ``low`` to ``high`` image tokens in the family's unit, as command-line overrides."""
    unit = UNIT[arch]
    return ("--min_pixels", str(low * unit * unit), "--max_pixels", str(high * unit * unit))


def processor_args(path, min_pixels: int, max_pixels: int) -> SimpleNamespace:
    """The fields `load_processor` reads from the model and recipe arguments (the evaluation passes one object too)."""
    return SimpleNamespace(
        model_name_or_path=str(path),
        model_revision=None,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        chat_template=None,
    )


# ----- pixel bounds, in each family's unit ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", FAMILIES)
def test_pixel_bounds_are_checked_against_the_family_unit(arch, family_model):
    unit, path, base = UNIT[arch], family_model(arch, "base"), get_template("base")
    # One image token is the smallest image there is: max_pixels must allow it.
    args = processor_args(path, unit * unit, unit * unit)
    assert load_processor(args, args, base).image_processor.size["longest_edge"] == unit * unit
    args = processor_args(path, 100, unit * unit - 1)
    with pytest.raises(RecipeError, match=rf"max_pixels {unit * unit - 1} is smaller than one image token") as err:
        load_processor(args, args, base)
    assert f"{unit}×{unit}-pixel units" in str(err.value) and f"max_pixels >= {unit * unit}" in str(err.value)
    args = processor_args(path, 20000, 10000)
    with pytest.raises(RecipeError, match=r"min_pixels \(20000\) is larger than max_pixels \(10000\)"):
        load_processor(args, args, base)
    # 30 x 30 pixels is one Qwen2/2.5-VL token (28²) but less than one Qwen3-VL token (32²).
    args = processor_args(path, 100, 900)
    if unit == 32:
        with pytest.raises(RecipeError, match="smaller than one image token"):
            load_processor(args, args, base)
    else:
        load_processor(args, args, base)


@pytest.mark.parametrize("arch", FAMILIES)
def test_images_are_resized_into_whole_family_units_within_the_bounds(arch, family_model):
    unit = UNIT[arch]
    args = processor_args(family_model(arch, "base"), 4 * unit * unit, 16 * unit * unit)
    processor = load_processor(args, args, get_template("base"))
    patch = processor.image_processor.patch_size
    for size in [(40, 40), (300, 200), (1000, 90)]:
        inputs = processor(text=[IMAGE], images=[Image.new("RGB", size)], return_tensors="pt")
        _, rows, cols = inputs["image_grid_thw"][0].tolist()
        height, width = rows * patch, cols * patch
        assert height % unit == 0 and width % unit == 0, size
        assert 4 * unit * unit <= height * width <= 16 * unit * unit, size
        assert (inputs["input_ids"] == processor.image_token_id).sum() == height * width // (unit * unit)


# ----- prompts ------------------------------------------------------------------------------------------------------


def test_base_prompt_renders_the_same_role_free_text_on_every_family(family_model):
    question = "<image> Answer in natural language. Is the circle red? Choose between the following options: yes or no"
    texts = set()
    for arch in FAMILIES:
        args = processor_args(family_model(arch, "instruct"), 3136, 12544)  # an instruct model: its template replaced
        template = get_template("base")
        text = render(load_processor(args, args, template), template.messages(question))
        assert (
            text.startswith(IMAGE + "<image>A conversation between User and Assistant.") and "<|im_start|>" not in text
        )
        texts.add(text)
    assert len(texts) == 1


@pytest.mark.parametrize("arch", FAMILIES)
def test_instruct_prompt_goes_through_the_family_chat_template(arch, family_model):
    args = processor_args(family_model(arch, "instruct"), 3136, 12544)
    template = get_template("instruct")
    text = render(load_processor(args, args, template), template.messages("<image> How many circles?"))
    user = f"<|im_start|>user\n{IMAGE}<image> How many circles?  Output the thinking process"
    assert user in text and text.endswith("tags.<|im_end|>\n<|im_start|>assistant\n")
    # Qwen3-VL's template has no default system turn; Qwen2-VL's and Qwen2.5-VL's do.
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.") == (arch != "qwen3_vl")
    assert text.startswith(user) == (arch == "qwen3_vl")


# ----- the three recipes on each family -----------------------------------------------------------------------------


def run_recipe_main(module, config: str, model_dir, data_dir, out_dir, *extra: str):
    """Two steps of a shipped tiny config through the recipe's own `main`; checks what a user gets back."""
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--max_steps", "2", "--save_steps", "100", *extra]
    args = module.make_parser().parse_args_and_config(argv)
    initial = {
        n: p.detach().clone() for n, p in AutoModelForImageTextToText.from_pretrained(model_dir).named_parameters()
    }
    trainer = module.main(*args)
    assert trainer.state.global_step == 2
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(initial[n], p.detach())]
    assert not unchanged, unchanged
    # The saved folder reloads as the same family, with the trained weights and the run's pixel bounds.
    reloaded = AutoModelForImageTextToText.from_pretrained(out_dir)
    assert type(reloaded) is type(trainer.model)
    trained = dict(trainer.model.named_parameters())
    for name, param in reloaded.named_parameters():
        assert torch.equal(param, trained[name].detach()), name
    size = AutoProcessor.from_pretrained(out_dir).image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (args[0].min_pixels, args[0].max_pixels)
    return trainer


def grpo_signal(trainer) -> bool:
    """Whether some step had completions with different rewards (else GRPO has nothing to learn from)."""
    return any(entry.get("reward_std", 0) > 0 for entry in trainer.state.log_history)


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES)
def test_grpo_with_the_base_prompt_trains_every_parameter(arch, family_model, sat_records_dir, tmp_path):
    # Completions of up to 64 tokens: long enough for a random model to stop early in some of them.
    trainer = run_recipe_main(
        grpo_base,
        "tiny/grpo_base_length.yaml",
        family_model(arch, "base"),
        sat_records_dir,
        tmp_path / "run",
        *bounds(arch),
        *("--max_completion_length", "64"),
    )
    assert grpo_signal(trainer)


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES)
def test_grpo_with_the_instruct_prompt_trains_every_parameter(arch, family_model, sat_records_dir, tmp_path):
    # The newer families' shipped tiny configs (pixel bounds in their units); Qwen2-VL's is the paper ablation's twin.
    config = "tiny/grpo_instruct.yaml" if arch == "qwen2_vl" else f"tiny/grpo_instruct_{arch}.yaml"
    trainer = run_recipe_main(
        grpo_instruct,
        config,
        family_model(arch, "instruct"),
        sat_records_dir,
        tmp_path / "run",
        *LENGTH,
        *("--max_completion_length", "64"),
    )
    assert grpo_signal(trainer)
    prompt = render(trainer.processing_class, trainer.train_dataset[0]["prompt"])
    assert prompt.startswith("<|im_start|>system") == (arch != "qwen3_vl")


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES)
def test_sft_trains_every_parameter(arch, family_model, sat_records_dir, tmp_path):
    run_recipe_main(
        sft_baseline,
        "tiny/sft_baseline.yaml",
        family_model(arch, "base"),
        sat_records_dir,
        tmp_path / "run",
        *bounds(arch),
    )


# ----- DeepSpeed ZeRO-3 on two CPU ranks ----------------------------------------------------------------------------


@pytest.mark.slow
def test_grpo_zero3_on_two_cpu_ranks_with_qwen3_vl(family_model, sat_records_dir, tmp_path):
    # tests/test_launch.py's launch and checks (each rank held half of every tensor and of the fp32 optimizer state;
    # the saved model equals the weights rebuilt from the ZeRO shards, every one moved), on Qwen3-VL: its 16-pixel
    # patches, DeepStack mergers and learnt position embeddings, and generation under ZeRO-3.
    model_dir = family_model("qwen3_vl", "base")
    result, out, extensions = launch_two_ranks(
        tmp_path,
        "recipes/grpo_base.py",
        "recipes/configs/tiny/grpo_base_length.yaml",
        model_dir,
        sat_records_dir,
        *bounds("qwen3_vl"),
        *("--max_completion_length", "64"),
        DDP_BACKEND="gloo",
    )
    check_zero3_run(result, out, extensions, model_dir)
    assert type(AutoModelForImageTextToText.from_pretrained(out)).__name__ == "Qwen3VLForConditionalGeneration"
