"""The tiny offline Qwen2-VL: real architecture, real processor, deterministic, generates from an image prompt."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from data_prep.tiny_model import SPECIAL_TOKENS, build_tiny_model


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


def test_cli_refuses_to_overwrite_and_leaves_the_existing_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.tiny_model", "--output", str(target)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no temporary left behind
