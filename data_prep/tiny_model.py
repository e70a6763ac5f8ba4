"""Write a tiny, randomly initialised Qwen-VL model with a real processor, offline, in seconds.

The real architecture at a toy size, with its real processor classes and a byte-level BPE tokenizer trained on the
spot with the family's special tokens. Three families (``--arch``):

* ``qwen2_vl`` (default) — `Qwen2VLForConditionalGeneration` + `Qwen2VLProcessor`: 14-pixel patches merged 2×2
  (28-pixel units), stands in for `Qwen/Qwen2-VL-2B` and `Qwen/Qwen2-VL-2B-Instruct`.
* ``qwen2_5_vl`` — `Qwen2_5_VLForConditionalGeneration` + `Qwen2_5_VLProcessor`: the same 28-pixel units, a vision
  tower with window attention and a gated MLP; the tokenizer adds Qwen2.5's tool/FIM tokens.
* ``qwen3_vl`` — `Qwen3VLForConditionalGeneration` + `Qwen3VLProcessor` (+ `Qwen3VLVideoProcessor`): 16-pixel
  patches merged 2×2 (32-pixel units), learnt position embeddings, DeepStack features, a Qwen3 decoder (q/k norms,
  interleaved M-RoPE); ``<think>``/``</think>`` are single non-special tokens, as in Qwen3-VL's tokenizer, and the
  instruct chat template has no default system turn.

``--variant base`` has no chat template (like the base checkpoint's use in the paper); ``--variant instruct`` has
the family's instruct chat template. They stand in wherever the hub is out of reach: tests, the offline quickstart
and the mini R1-Zero experiment. Qwen2.5-VL and Qwen3-VL publish instruct checkpoints only: their "base" variant
is a test fixture (the recipes' base prompt on a model without chat template), not a published model.

    python -m data_prep.tiny_model --output outputs/models/tiny-base [--arch qwen2_vl] [--variant base|instruct]

Same arch, seed and preset → identical weights. The image processor's default pixel bounds, (2 units)² to
(4 units)² (56×56 to 112×112 for Qwen2/2.5-VL, 64×64 to 128×128 for Qwen3-VL), keep synthetic scenes at 4–16 image
tokens.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from data_prep.chat_templates import QWEN2VL_CHAT_TEMPLATE, QWEN3VL_CHAT_TEMPLATE
from data_prep.schema import SPECIAL_TOKENS as SCHEMA_SPECIAL_TOKENS

logger = logging.getLogger(__name__)

# Qwen2-VL's special tokens, in its order (defined once, with the data checks that refuse them in text); the tiny
# vocabulary keeps them all so prompts render as on the real model.
SPECIAL_TOKENS = list(SCHEMA_SPECIAL_TOKENS)
# Ordinary (non-special) added tokens of the later families' tokenizers: never split, and kept when decoding with
# skip_special_tokens (so a Qwen3-VL completion keeps its <think> tags as text).
QWEN2_5_ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
QWEN3_ADDED_TOKENS = [*QWEN2_5_ADDED_TOKENS, "<tool_response>", "</tool_response>", "<think>", "</think>"]

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


@dataclass(frozen=True)
class Arch:
    """What differs between the Qwen-VL families at the size of the tiny model."""

    title: str
    model_class: type
    processor_class: type
    video_processor_class: type
    build_config: Callable[[Preset, PreTrainedTokenizerFast, str], PreTrainedConfig]
    patch_size: int
    added_tokens: tuple[str, ...]
    chat_template: str
    # The published checkpoints' image normalisation (Qwen3-VL moved from CLIP's statistics to 0.5/0.5).
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None

    @property
    def unit(self) -> int:
        """Side, in pixels, of one image token: a patch merged 2×2."""
        return self.patch_size * 2


def train_tokenizer(vocab_size: int, added_tokens: tuple[str, ...] = ()) -> Tokenizer:
    """A byte-level BPE tokenizer with Qwen2-VL's special tokens, trained on `_CORPUS` (deterministic).

    ``added_tokens`` are appended after training as ordinary (non-special) tokens that are never split.
    """
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
    if added_tokens:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in added_tokens])
    return tokenizer


def build_processor(
    variant: str, vocab_size: int, min_pixels: int, max_pixels: int, arch: str = "qwen2_vl"
) -> ProcessorMixin:
    spec = ARCHS[arch]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(vocab_size, spec.added_tokens),
        eos_token="<|im_end|>" if variant == "instruct" else "<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=4096,
    )
    # Pixel bounds through `size` (shortest_edge = min pixels, longest_edge = max pixels): the non-deprecated
    # spelling of min_pixels/max_pixels.
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    vision = {"patch_size": spec.patch_size, "merge_size": 2, "temporal_patch_size": 2}
    if spec.image_mean is not None:
        vision |= {"image_mean": list(spec.image_mean), "image_std": list(spec.image_std)}
    image_processor = Qwen2VLImageProcessor(size=size, **vision)
    video_processor = spec.video_processor_class(size=size, **vision)
    chat_template = spec.chat_template if variant == "instruct" else None
    return spec.processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )


def _text_config(preset: Preset, tokenizer, variant: str) -> dict:
    """The decoder settings every family shares: sizes, token ids, tied embeddings."""
    token_id = tokenizer.convert_tokens_to_ids
    eos = [token_id("<|im_end|>"), token_id("<|endoftext|>")] if variant == "instruct" else token_id("<|endoftext|>")
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": preset.hidden_size,
        "intermediate_size": preset.intermediate_size,
        "num_hidden_layers": preset.num_hidden_layers,
        "num_attention_heads": preset.num_attention_heads,
        "num_key_value_heads": preset.num_key_value_heads,
        "max_position_embeddings": 4096,
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": eos,
        "pad_token_id": token_id("<|endoftext|>"),
        "tie_word_embeddings": True,
    }


def _vision_token_ids(tokenizer) -> dict:
    token_id = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": token_id("<|image_pad|>"),
        "video_token_id": token_id("<|video_pad|>"),
        "vision_start_token_id": token_id("<|vision_start|>"),
        "vision_end_token_id": token_id("<|vision_end|>"),
    }


def _mrope_section(head_dim: int) -> list[int]:
    """M-RoPE splits the rotary half-dimension between time, height and width."""
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def _mrope_text_config(preset: Preset, tokenizer, variant: str) -> dict:
    """The decoder's settings with Qwen2-VL's and Qwen2.5-VL's multimodal rotary embedding (M-RoPE)."""
    text = _text_config(preset, tokenizer, variant)
    head_dim = preset.hidden_size // preset.num_attention_heads
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": _mrope_section(head_dim),
    }
    return text


def build_config(preset: Preset, tokenizer, variant: str) -> Qwen2VLConfig:
    """Qwen2-VL: a ViT of width ``vision_embed_dim`` whose merger projects into the decoder's hidden size."""
    text = _mrope_text_config(preset, tokenizer, variant)
    return Qwen2VLConfig(
        text_config=text,
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
        **_vision_token_ids(tokenizer),
        tie_word_embeddings=True,
    )


def build_config_qwen2_5_vl(preset: Preset, tokenizer, variant: str) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL: window attention in every vision block but the last (full attention), gated vision MLP."""
    text = _mrope_text_config(preset, tokenizer, variant)
    depth = max(2, preset.vision_depth)  # at least one windowed and one full-attention block
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            "depth": depth,
            "hidden_size": preset.vision_embed_dim,
            "intermediate_size": 2 * preset.vision_embed_dim,
            "num_heads": preset.vision_heads,
            "out_hidden_size": preset.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,  # 2×2 merged tokens per window: a 112×112 image spans 4 windows
            "fullatt_block_indexes": [depth - 1],
        },
        **_vision_token_ids(tokenizer),
        tie_word_embeddings=True,
    )


def build_config_qwen3_vl(preset: Preset, tokenizer, variant: str) -> Qwen3VLConfig:
    """Qwen3-VL: 16-pixel patches, a 4×4 grid of learnt position embeddings, DeepStack from the first vision block."""
    head_dim = preset.hidden_size // preset.num_attention_heads
    text = _text_config(preset, tokenizer, variant)
    text["head_dim"] = head_dim
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": _mrope_section(head_dim),
        "mrope_interleaved": True,
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config={
            "depth": preset.vision_depth,
            "hidden_size": preset.vision_embed_dim,
            "intermediate_size": 2 * preset.vision_embed_dim,
            "num_heads": preset.vision_heads,
            "out_hidden_size": preset.hidden_size,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0],
        },
        **_vision_token_ids(tokenizer),
        tie_word_embeddings=True,
    )


ARCHS = {
    "qwen2_vl": Arch(
        "Qwen2-VL",
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        build_config,
        patch_size=14,
        added_tokens=(),
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    ),
    "qwen2_5_vl": Arch(
        "Qwen2.5-VL",
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
        build_config_qwen2_5_vl,
        patch_size=14,
        added_tokens=tuple(QWEN2_5_ADDED_TOKENS),
        # Qwen2.5-VL-Instruct renders text and image turns exactly as Qwen2-VL-Instruct (default system turn).
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    ),
    "qwen3_vl": Arch(
        "Qwen3-VL",
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
        build_config_qwen3_vl,
        patch_size=16,
        added_tokens=tuple(QWEN3_ADDED_TOKENS),
        chat_template=QWEN3VL_CHAT_TEMPLATE,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    ),
}


def default_pixel_bounds(arch: str) -> tuple[int, int]:
    """(2 units)² to (4 units)²: 4 to 16 image tokens for any family."""
    unit = ARCHS[arch].unit
    return (2 * unit) ** 2, (4 * unit) ** 2


def build_tiny_model(
    output: str | Path,
    variant: str = "base",
    seed: int = 0,
    preset: str = "tiny",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    overwrite: bool = False,
    arch: str = "qwen2_vl",
) -> Path:
    """Write a tiny random model of the ``arch`` family (model + processor) to ``output`` and return the path.

    Pixel bounds default to `default_pixel_bounds` of the family. The folder appears only when complete (written
    to a temporary sibling, then renamed). An existing ``output`` is an error unless ``overwrite`` is set.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if variant not in ("base", "instruct"):
        raise ValueError(f"unknown variant {variant!r}: choose 'base' or 'instruct'")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    spec, size = ARCHS[arch], PRESETS[preset]
    default_min, default_max = default_pixel_bounds(arch)
    min_pixels = default_min if min_pixels is None else min_pixels
    max_pixels = default_max if max_pixels is None else max_pixels
    if not 0 < min_pixels <= max_pixels or max_pixels < spec.unit**2:
        raise ValueError(
            f"pixel bounds {min_pixels}..{max_pixels} cannot be honoured by {spec.title} "
            f"({spec.unit}-pixel units): need 0 < min_pixels <= max_pixels and max_pixels >= {spec.unit**2}"
        )
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists: choose another --output or delete it first")

    processor = build_processor(variant, size.vocab_size, min_pixels, max_pixels, arch)
    config = spec.build_config(size, processor.tokenizer, variant)
    torch.manual_seed(seed)
    model = spec.model_class(config)
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
        "wrote a %s tiny %s (%s preset, %d parameters, seed %d) to %s",
        variant,
        spec.title,
        preset,
        n_params,
        seed,
        output,
    )
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to write the model and processor to")
    parser.add_argument("--arch", choices=list(ARCHS), default="qwen2_vl", help="model family")
    parser.add_argument("--variant", choices=["base", "instruct"], default="base")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size")
    parser.add_argument("--min-pixels", type=int, default=None, help="default: (2 units)², e.g. 56×56 for Qwen2-VL")
    parser.add_argument("--max-pixels", type=int, default=None, help="default: (4 units)², e.g. 112×112 for Qwen2-VL")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build_tiny_model(
            args.output,
            args.variant,
            args.seed,
            args.preset,
            args.min_pixels,
            args.max_pixels,
            args.overwrite,
            arch=args.arch,
        )
    except (FileExistsError, ValueError) as err:
        parser.error(str(err))
    print(path)


if __name__ == "__main__":
    main()
