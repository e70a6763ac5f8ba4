"""The tiny offline models: real architectures and processors of the three Qwen-VL families, deterministic, generate.

Qwen2-VL (the default) is checked in detail; Qwen2.5-VL and Qwen3-VL for what differs: their classes, the image
unit (28 vs 32 pixels), their tokenizers' added tokens and Qwen3-VL's chat template without a default system turn.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from data_prep.fixtures.tiny_model import ARCHS, build_tiny_model, main
from data_prep.fixtures.tiny_tokenizer import SPECIAL_TOKENS

# Each family's real classes and image unit (patch size x merge size), written out independently of ARCHS.
FAMILIES = {
    "qwen2_vl": (Qwen2VLProcessor, Qwen2VLForConditionalGeneration, 28),
    "qwen2_5_vl": (Qwen2_5_VLProcessor, Qwen2_5_VLForConditionalGeneration, 28),
    "qwen3_vl": (Qwen3VLProcessor, Qwen3VLForConditionalGeneration, 32),
}
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def test_loads_with_the_auto_classes_as_a_real_qwen2vl(tiny_base_dir):
    processor = AutoProcessor.from_pretrained(tiny_base_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_base_dir)
    assert isinstance(processor, Qwen2VLProcessor)
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_tokenizer_has_qwen2vl_special_tokens_and_tags_as_text(tiny_base_dir):
    tokenizer = AutoProcessor.from_pretrained(tiny_base_dir).tokenizer
    vocab = tokenizer.get_vocab()
    for token in SPECIAL_TOKENS:
        assert token in vocab, token
        assert tokenizer.tokenize(token) == [token]  # never split
    text = "<think> left </think><answer> yes </answer>"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert not set(ids) & set(tokenizer.all_special_ids)  # the tags are ordinary text, as in Qwen2-VL


def test_base_has_no_chat_template_and_instruct_has_qwen2vl_format(tiny_base_dir, tiny_instruct_dir):
    assert AutoProcessor.from_pretrained(tiny_base_dir).chat_template is None
    processor = AutoProcessor.from_pretrained(tiny_instruct_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("variant", ["base", "instruct"])
def test_generates_from_an_image_prompt(variant, tiny_base_dir, tiny_instruct_dir):
    path = tiny_base_dir if variant == "base" else tiny_instruct_dir
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    text = "<|vision_start|><|image_pad|><|vision_end|>Is the shape red?"
    images = [Image.new("RGB", (112, 112), "red"), Image.new("RGB", (56, 80), "blue")]
    inputs = processor(text=[text, text], images=images, padding=True, return_tensors="pt")
    # Pixel bounds for small scenes: 112x112 → 8x8 patches → 16 image tokens; tiny images are scaled up, not refused.
    assert inputs["image_grid_thw"].tolist()[0] == [1, 8, 8]
    assert (inputs["input_ids"][0] == processor.image_token_id).sum() == 16
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 5)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=1)
    b = build_tiny_model(tmp_path / "b", seed=1)
    c = build_tiny_model(tmp_path / "c", seed=2)
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_cli_refuses_to_overwrite_and_leaves_the_existing_folder(tmp_path, capsys):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["--output", str(target)])
    assert exit_info.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no temporary left behind


@pytest.mark.slow
def test_the_module_runs_as_a_command(tmp_path):
    """The one real `python -m data_prep.fixtures.tiny_model` start (the other CLI tests call `main` in process)."""
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.fixtures.tiny_model", "--output", str(tmp_path / "model"), "--seed", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # The path is its last line (DeepSpeed, imported by accelerate when the model is saved, may log before it).
    assert result.stdout.splitlines()[-1] == str(tmp_path / "model")
    assert type(AutoProcessor.from_pretrained(tmp_path / "model")) is Qwen2VLProcessor


# ----- the three families ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """{(arch, variant): folder} for the two newer families (Qwen2-VL: the session fixtures)."""
    root = tmp_path_factory.mktemp("families")
    return {
        (arch, variant): build_tiny_model(root / f"{arch}-{variant}", variant=variant, arch=arch)
        for arch in ("qwen2_5_vl", "qwen3_vl")
        for variant in ("base", "instruct")
    }


def family_dir(arch, variant, family_dirs, tiny_base_dir, tiny_instruct_dir):
    if arch == "qwen2_vl":
        return tiny_base_dir if variant == "base" else tiny_instruct_dir
    return family_dirs[(arch, variant)]


def test_the_families_are_the_three_expected():
    assert set(ARCHS) == set(FAMILIES)


@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_loads_with_its_real_classes_and_image_unit(arch, family_dirs, tiny_base_dir, tiny_instruct_dir):
    processor_class, model_class, unit = FAMILIES[arch]
    path = family_dir(arch, "base", family_dirs, tiny_base_dir, tiny_instruct_dir)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert type(processor) is processor_class and type(model) is model_class
    assert processor.image_processor.patch_size * processor.image_processor.merge_size == unit
    assert model.config.vision_config.patch_size == unit // 2
    # The default bounds, (2 units)² to (4 units)²: a 4x4-unit image is 16 tokens; a larger one is scaled down to it.
    for side in (4 * unit, 6 * unit):
        inputs = processor(
            text=[IMAGE + "Is it red?"], images=[Image.new("RGB", (side, side), "red")], return_tensors="pt"
        )
        assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
        assert (inputs["input_ids"][0] == processor.image_token_id).sum() == 16
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_newer_tokenizers_keep_their_added_tokens_whole_and_in_decoded_text(arch, family_dirs):
    tokenizer = AutoProcessor.from_pretrained(family_dirs[(arch, "base")]).tokenizer
    for token in [*SPECIAL_TOKENS, "<tool_call>", "</tool_call>"]:
        assert tokenizer.tokenize(token) == [token]
    text = "<think> left </think><answer> yes </answer>"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # what TRL decodes completions with
    think_is_one_token = tokenizer.tokenize("<think>") == ["<think>"]
    assert think_is_one_token == (arch == "qwen3_vl")  # Qwen3's tokenizer has <think> and </think> as tokens


@pytest.mark.parametrize("arch", FAMILIES)
def test_instruct_chat_template_of_each_family(arch, family_dirs, tiny_base_dir, tiny_instruct_dir):
    assert (
        AutoProcessor.from_pretrained(
            family_dir(arch, "base", family_dirs, tiny_base_dir, tiny_instruct_dir)
        ).chat_template
        is None
    )
    processor = AutoProcessor.from_pretrained(
        family_dir(arch, "instruct", family_dirs, tiny_base_dir, tiny_instruct_dir)
    )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    turn = f"<|im_start|>user\n{IMAGE}Hi<|im_end|>\n<|im_start|>assistant\n"
    # Qwen2-VL and Qwen2.5-VL add a default system turn; Qwen3-VL does not.
    system = "" if arch == "qwen3_vl" else "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert text == system + turn
    with_system = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, *messages]
    text = processor.apply_chat_template(with_system, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n" + turn


def test_cli_builds_another_family_and_refuses_unknown_ones_and_impossible_bounds(tmp_path, capsys):
    # In process (the command's `main`): the subprocess route is covered by test_the_module_runs_as_a_command.
    main(["--output", str(tmp_path / "q3"), "--arch", "qwen3_vl", "--variant", "instruct"])
    assert type(AutoProcessor.from_pretrained(tmp_path / "q3")) is Qwen3VLProcessor
    for args, message in [
        (["--arch", "llava"], "invalid choice: 'llava'"),
        (["--arch", "qwen3_vl", "--max-pixels", "900"], "32-pixel units"),  # below one 32x32 image token
        (["--min-pixels", "20000", "--max-pixels", "10000"], "min_pixels <= max_pixels"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--output", str(tmp_path / "x"), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q3"]  # nothing written by the refused builds


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_same_seed_same_weights_for_each_family(arch, tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=3, arch=arch)
    b = build_tiny_model(tmp_path / "b", seed=3, arch=arch)
    wa, wb = (load_file(p / "model.safetensors") for p in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
