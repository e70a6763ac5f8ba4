"""Write a tiny, randomly initialised Qwen2-VL with a real processor, offline, in seconds.

The real architecture (`Qwen2VLForConditionalGeneration`: vision tower, patch merger, M-RoPE text decoder) at a
toy size, and a real `Qwen2VLProcessor` whose byte-level BPE tokenizer is trained on the spot. It stands in for
`Qwen/Qwen2-VL-2B` (``--variant base``: no chat template, like the base checkpoint's use in the paper) and
`Qwen/Qwen2-VL-2B-Instruct` (``--variant instruct``: a Qwen2-VL-style chat template) wherever the hub is out of
reach: tests, the offline quickstart and the mini R1-Zero experiment.

    python -m data_prep.tiny_model --output outputs/models/tiny-base [--variant base|instruct] [--seed 0]

Same seed, same preset → identical weights. The think/answer tags are ordinary text (as in Qwen2-VL), and the
image processor's pixel bounds (56×56 to 112×112 by default) keep synthetic scenes at 4–16 image tokens.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from data_prep.chat_templates import QWEN2VL_CHAT_TEMPLATE

logger = logging.getLogger(__name__)

# Qwen2-VL's special tokens, in its order; the tiny vocabulary keeps them all so prompts render as on the real model.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Text the BPE merges are learnt from: the shapes of the prompts, questions and answers used in this repository.
# Any other text still encodes (byte-level BPE), only less compactly.
_CORPUS = [
    "A conversation between User and Assistant. The user asks a question about the image, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then provides the user "
    "with the answer.\nUser: ",
    "\nAssistant: Let me solve this step by step.\n<think>",
    "Output the thinking process in <think> </think> and final answer (option) in <answer> </answer> tags.",
    "Answer in natural language. Choose between the following options: ",
    "Select from the following choices.\n(A) (B) (C) (D) (E) (F)",
    "<think> The image shows a shape. </think><answer> yes </answer>",
    "<think> Let me check the picture again. Wait, let me verify. However, </think> <answer> no </answer>",
    "Is the shape a triangle? Is the shape red? Is the shape in the left half? Answer yes or no.",
    "Is the red circle to the left or to the right of the blue square? left right above below",
    "Which object is closer to the camera, the green triangle or the yellow circle? closer farther",
    "How many shapes are in the image? How many red objects are there? 0 1 2 3 4 5 6 7 8 9 10",
    "Did the camera move left or right? Did the object move? The camera moved to the left. The object moved.",
    "circle square triangle red blue green yellow purple orange white black small large big",
    "Which is larger? Which is lower in the image? occluding in front of behind",
]


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vision_depth: int
    vision_embed_dim: int
    vision_heads: int
    vocab_size: int


PRESETS = {
    # Unit tests, the quickstart and the DeepSpeed runs: ~0.2M parameters, well under a second per GRPO step.
    "tiny": Preset(64, 2, 4, 2, 128, 1, 32, 2, 512),
    # The mini R1-Zero experiment: large enough to learn the colour/shape questions from 56×56 pixels.
    "mini": Preset(128, 4, 4, 2, 256, 2, 64, 4, 512),
}


def train_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with Qwen2-VL's special tokens, trained on `_CORPUS` (deterministic)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    return tokenizer


def build_processor(variant: str, vocab_size: int, min_pixels: int, max_pixels: int) -> Qwen2VLProcessor:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(vocab_size),
        eos_token="<|im_end|>" if variant == "instruct" else "<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=4096,
    )
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    chat_template = QWEN2VL_CHAT_TEMPLATE if variant == "instruct" else None
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )


def build_config(preset: Preset, tokenizer, variant: str) -> Qwen2VLConfig:
    token_id = tokenizer.convert_tokens_to_ids
    head_dim = preset.hidden_size // preset.num_attention_heads
    # M-RoPE splits the rotary half-dimension between time, height and width.
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    eos = [token_id("<|im_end|>"), token_id("<|endoftext|>")] if variant == "instruct" else token_id("<|endoftext|>")
    return Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": preset.hidden_size,
            "intermediate_size": preset.intermediate_size,
            "num_hidden_layers": preset.num_hidden_layers,
            "num_attention_heads": preset.num_attention_heads,
            "num_key_value_heads": preset.num_key_value_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": eos,
            "pad_token_id": token_id("<|endoftext|>"),
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": preset.vision_depth,
            "embed_dim": preset.vision_embed_dim,
            "hidden_size": preset.hidden_size,
            "num_heads": preset.vision_heads,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_tiny_model(
    output: str | Path,
    variant: str = "base",
    seed: int = 0,
    preset: str = "tiny",
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    overwrite: bool = False,
) -> Path:
    """Write a tiny random Qwen2-VL (model + processor) to ``output`` and return the path.

    The folder appears only when complete (written to a temporary sibling, then renamed). An existing ``output``
    is an error unless ``overwrite`` is set.
    """
    if variant not in ("base", "instruct"):
        raise ValueError(f"unknown variant {variant!r}: choose 'base' or 'instruct'")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists: choose another --output or delete it first")
    spec = PRESETS[preset]

    processor = build_processor(variant, spec.vocab_size, min_pixels, max_pixels)
    config = build_config(spec, processor.tokenizer, variant)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    generation = model.generation_config
    generation.bos_token_id = config.text_config.bos_token_id
    generation.eos_token_id = config.text_config.eos_token_id
    generation.pad_token_id = config.text_config.pad_token_id

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        tmp.chmod(0o755)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "wrote a %s tiny Qwen2-VL (%s preset, %d parameters, seed %d) to %s", variant, preset, n_params, seed, output
    )
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to write the model and processor to")
    parser.add_argument("--variant", choices=["base", "instruct"], default="base")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size")
    parser.add_argument("--min-pixels", type=int, default=56 * 56)
    parser.add_argument("--max-pixels", type=int, default=112 * 112)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build_tiny_model(
            args.output, args.variant, args.seed, args.preset, args.min_pixels, args.max_pixels, args.overwrite
        )
    except (FileExistsError, ValueError) as err:
        parser.error(str(err))
    print(path)


if __name__ == "__main__":
    main()
