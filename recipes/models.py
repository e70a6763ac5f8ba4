"""Loading the model and its processor: availability check, attention kernel, pixel bounds, freezing."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from recipes.args import RecipeArguments
from recipes.cli import QUICKSTART, RecipeError
from recipes.prompts import PromptTemplate, set_chat_template

logger = logging.getLogger(__name__)


def _is_local(path: str) -> bool:
    return Path(path).expanduser().exists()


def check_model_available(name_or_path: str) -> None:
    """Fail early, with the fix, when a model can be neither found locally nor downloaded."""
    if _is_local(name_or_path):
        return
    try:
        AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        raise RecipeError(
            f"cannot load model {name_or_path!r}{' (HF_HUB_OFFLINE is set)' if offline else ''}: {err}\n"
            f"On a machine without hub access, run the offline quickstart instead: {QUICKSTART}\n"
            "or point --model_name_or_path at a local folder (python -m data_prep.tiny_model --output DIR)."
        ) from None


def attn_implementation(requested: str | None) -> str:
    """The requested attention, or FlashAttention-2 when it is installed and a GPU is present, else SDPA."""
    if requested:
        return requested
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_processor(model_args, script_args: RecipeArguments, template: PromptTemplate):
    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        min_pixels=script_args.min_pixels,
        max_pixels=script_args.max_pixels,
        padding_side="left",
    )
    try:
        set_chat_template(processor, template, script_args.chat_template)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    return processor


def load_model(model_args, script_args: RecipeArguments, training_args):
    """Load the VLM, pick its attention implementation, apply the freeze options."""
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "auto"
    model = AutoModelForImageTextToText.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=getattr(torch, dtype) if dtype != "auto" else "auto",
        attn_implementation=attn_implementation(model_args.attn_implementation),
    )
    if training_args.activation_checkpointing:
        # The trainer enables checkpointing; the KV cache is useless (and warned about) while it is on.
        model.config.use_cache = False
    freeze(model, vision=script_args.freeze_vision, llm=script_args.freeze_llm)
    return model


def freeze(model, vision: bool, llm: bool) -> None:
    """Really freeze the vision tower (with its merger) and/or the language model, and log what trains."""
    if vision:
        model.model.visual.requires_grad_(False)
    if llm:
        model.model.language_model.requires_grad_(False)
        model.lm_head.requires_grad_(False)
    if vision and llm:
        raise RecipeError("freeze_vision and freeze_llm are both set: nothing would train")
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.1f%%)", trainable, total, 100 * trainable / max(total, 1))


def _numel(param) -> int:
    """A parameter's full size, also when ZeRO-3 has partitioned it (its local tensor is then empty)."""
    return getattr(param, "ds_numel", param.numel())
