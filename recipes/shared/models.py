"""Loading the model and its processor: availability, attention kernel, pixel bounds, freezing, LoRA, inference.

Families: Qwen2-VL, Qwen2.5-VL and Qwen3-VL load through the same `AutoModelForImageTextToText`/`AutoProcessor`
route; what differs between them (patch size, chat template, vision tokens) comes from the checkpoint itself.

LoRA (``use_peft: true`` and TRL's ``lora_*`` options of `ModelConfig`) and the freeze options combine as follows.
With LoRA every original weight is frozen and only the adapters train; ``freeze_vision`` puts no adapter in the
vision tower (with its patch merger), ``freeze_llm`` none in the language model (with its embeddings and head). So
``lora_target_modules`` picks the layer types, the freeze options the parts of the model; a combination that would
train nothing, or a ``lora_modules_to_save`` entry inside a frozen part, is refused. The trainers apply the adapter
(`peft_config_for` → their ``peft_config=``), save the adapter alone, and resume it; `load_for_inference` loads a full
model folder or an adapter folder (merged into its base model) for evaluation.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel, inject_adapter_in_model
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.utils import find_adapter_config_file
from trl import get_peft_config

from recipes.shared.args import RecipeArguments
from recipes.shared.cli import QUICKSTART
from recipes.shared.errors import RecipeError
from recipes.shared.prompts import PromptTemplate, set_chat_template

logger = logging.getLogger(__name__)

# Module names (relative to the model given to peft) of the two parts the freeze options act on; the same in the
# three families. `lora_coverage` checks them against the model, so a family that names them otherwise is refused
# rather than silently adapted.
VISION_MODULES = r"model\.visual(\..*)?"
LLM_MODULES = r"model\.language_model(\..*)?|lm_head"
LORA_EXAMPLE = "lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"


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
            "or point --model_name_or_path at a local folder (python -m data_prep.fixtures.tiny_model --output DIR)."
        ) from None


def attn_implementation(requested: str | None) -> str:
    """The requested attention, or FlashAttention-2 when it is installed and a GPU is present, else SDPA."""
    if requested:
        return requested
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


_pick_attention = attn_implementation  # `load_for_inference` has a parameter of that name


# ----- processor and pixel bounds ------------------------------------------------------------------------------------


def image_unit(processor) -> int:
    """Side in pixels of the image area that becomes one image token: patch size × merge size.

    28 for Qwen2-VL and Qwen2.5-VL (14-pixel patches merged 2×2), 32 for Qwen3-VL (16-pixel patches).
    """
    image_processor = processor.image_processor
    patch, merge = getattr(image_processor, "patch_size", None), getattr(image_processor, "merge_size", None)
    if not patch or not merge:
        raise RecipeError(
            f"{type(image_processor).__name__} has no patch and merge size: min_pixels/max_pixels are the pixel "
            "bounds of the Qwen2-VL, Qwen2.5-VL and Qwen3-VL processors, which these recipes support"
        )
    return patch * merge


def check_pixel_bounds(processor, min_pixels: int, max_pixels: int) -> None:
    """Refuse image bounds this processor cannot honour; log what they mean in image tokens.

    Images are resized to whole units (`image_unit`) with an area within [min_pixels, max_pixels]; an area below
    one unit² cannot be reached, so ``max_pixels`` must allow at least one unit.
    """
    unit = image_unit(processor)
    patch = processor.image_processor.patch_size
    family = f"{type(processor).__name__}: {patch}-pixel patches merged 2×2, {unit}×{unit}-pixel units"
    if min_pixels < 1 or max_pixels < 1:
        raise RecipeError(f"min_pixels ({min_pixels}) and max_pixels ({max_pixels}) must be positive")
    if min_pixels > max_pixels:
        raise RecipeError(f"min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}): swap or fix them")
    if max_pixels < unit * unit:
        raise RecipeError(
            f"max_pixels {max_pixels} is smaller than one image token of this model ({family}, {unit * unit} "
            f"pixels): images cannot be made that small. Set max_pixels >= {unit * unit}, e.g. "
            f"{512 * unit * unit} (= 512·{unit}·{unit}) for at most 512 image tokens."
        )
    logger.info(
        "image bounds %d..%d pixels = %.1f..%.1f image tokens (%s)",
        min_pixels,
        max_pixels,
        min_pixels / unit**2,
        max_pixels / unit**2,
        family,
    )


def load_processor(model_args, script_args: RecipeArguments, template: PromptTemplate):
    """The checkpoint's processor with the run's pixel bounds (checked against its units) and chat template."""
    # `size` (shortest_edge = min pixels, longest_edge = max pixels) is the non-deprecated spelling of
    # min_pixels/max_pixels, for the image and the video processor alike.
    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        size={"shortest_edge": script_args.min_pixels, "longest_edge": script_args.max_pixels},
        padding_side="left",
    )
    check_pixel_bounds(processor, script_args.min_pixels, script_args.max_pixels)
    try:
        set_chat_template(processor, template, script_args.chat_template)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    return processor


# ----- training model: freezing and LoRA -----------------------------------------------------------------------------


def load_model(model_args, script_args: RecipeArguments, training_args):
    """Load the VLM, pick its attention implementation, apply the freeze options (or check the LoRA plan)."""
    if getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False):
        raise RecipeError(
            "load_in_4bit/load_in_8bit (quantized QLoRA) is not supported by these recipes: "
            "use use_peft: true on unquantized weights (recipes/configs/paper/grpo_base_lora.yaml)"
        )
    path = model_args.model_name_or_path
    if model_args.use_peft and _is_local(path):
        # A LoRA adapter records its base model's path: absolute, so the adapter finds it from any directory.
        path = str(Path(path).expanduser().resolve())
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "auto"
    model = AutoModelForImageTextToText.from_pretrained(
        path,
        revision=model_args.model_revision,
        dtype=getattr(torch, dtype) if dtype != "auto" else "auto",
        attn_implementation=attn_implementation(model_args.attn_implementation),
    )
    if training_args.gradient_checkpointing:  # the pinned transformers 5.20 has no activation_checkpointing
        # The trainer enables checkpointing; the KV cache is useless (and warned about) while it is on.
        model.config.use_cache = False
    if model_args.use_peft:
        # The trainer wraps the model with the adapter (peft_config=), which trains the adapters only; the original
        # weights are frozen here already, so the checks made before that (fp32 master weights) see what trains.
        lora_coverage(model, peft_config_for(model_args, script_args), script_args)
        model.requires_grad_(False)
    else:
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


def peft_config_for(model_args, script_args: RecipeArguments | None = None) -> PeftConfig | None:
    """The LoRA configuration for the trainers' ``peft_config=`` (None when ``use_peft`` is off).

    TRL's own `get_peft_config` (every ``lora_*`` option of `ModelConfig`), with the frozen parts excluded from
    adaptation and the base model's revision recorded (so `load_for_inference` reloads the same base).
    """
    if not model_args.use_peft:
        return None
    vision = bool(script_args and script_args.freeze_vision)
    llm = bool(script_args and script_args.freeze_llm)
    if vision and llm:
        raise RecipeError("freeze_vision and freeze_llm are both set: no LoRA adapter would train")
    if model_args.lora_target_modules is None and model_args.lora_target_parameters is None:
        raise RecipeError(
            "use_peft is set but lora_target_modules is not: peft has no default for vision-language models. "
            f"Add e.g. `{LORA_EXAMPLE}` (the language model's linear layers) to the YAML, or see "
            "recipes/configs/paper/grpo_base_lora.yaml"
        )
    config = get_peft_config(model_args)
    excluded = [pattern for pattern, frozen in ((VISION_MODULES, vision), (LLM_MODULES, llm)) if frozen]
    if excluded:
        config.exclude_modules = "|".join(f"(?:{pattern})" for pattern in excluded)
    config.revision = model_args.model_revision
    return config


def lora_coverage(model, config: PeftConfig, script_args: RecipeArguments) -> dict[str, int]:
    """Where ``config`` would put trainable parameters in ``model``: {"vision": n, "language model": n, "other": n}.

    Worked out by peft itself on a weightless (meta-device) copy of the model, so the model is not touched.
    Refuses a plan that trains nothing, or trains anything inside a part the freeze options froze.
    """
    with torch.device("meta"):
        skeleton = type(model)(copy.deepcopy(model.config))
    nothing = (
        f"LoRA would train nothing: lora_target_modules {config.target_modules} match no layer outside the frozen "
        "parts of this model. Pick layers of the part that trains, e.g. for the vision tower of Qwen2-VL/Qwen2.5-VL/"
        "Qwen3-VL `lora_target_modules: [qkv, proj]`."
    )
    try:
        inject_adapter_in_model(copy.deepcopy(config), skeleton)
    except ValueError as err:  # peft's NoMatchingPeftModuleError (or a bad target name)
        raise RecipeError(f"{nothing}\n(peft: {err})") from None
    parts = {"vision": model.model.visual, "language model": model.model.language_model, "lm_head": model.lm_head}
    prefixes = {name: part for name, module in model.named_modules() for part, m in parts.items() if module is m}
    counts = {"vision": 0, "language model": 0, "other": 0}
    for name, param in skeleton.named_parameters():
        if not param.requires_grad:
            continue
        part = next((p for prefix, p in prefixes.items() if name == prefix or name.startswith(prefix + ".")), "other")
        counts["language model" if part == "lm_head" else part] += param.numel()
    frozen = {"vision": script_args.freeze_vision, "language model": script_args.freeze_llm}
    for part, is_frozen in frozen.items():
        if is_frozen and counts[part]:
            raise RecipeError(
                f"freeze_{'vision' if part == 'vision' else 'llm'} is set but the LoRA configuration trains "
                f"{counts[part]} parameters in the {part} (lora_modules_to_save?): remove them from the config"
            )
    if not sum(counts.values()):
        raise RecipeError(nothing)
    logger.info(
        "LoRA r=%s alpha=%s: trainable adapter parameters %s; every original weight frozen",
        config.r,
        config.lora_alpha,
        ", ".join(f"{part} {n}" for part, n in counts.items()),
    )
    return counts


# ----- inference -----------------------------------------------------------------------------------------------------


def load_for_inference(
    path: str, dtype: str | torch.dtype = "auto", attn_implementation: str | None = None, revision: str | None = None
):
    """A model ready for evaluation from a full model folder (or hub id), or from a LoRA adapter folder.

    An adapter folder (``adapter_config.json``, as the recipes save with ``use_peft: true``) is loaded onto its
    base model (the path and revision the adapter recorded) and merged into it, so generation runs at the speed of
    the plain model. ``dtype``: "auto" (the checkpoint's), a torch dtype or its name.
    """
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    attention = _pick_attention(attn_implementation)
    adapter_file = find_adapter_config_file(path, revision=revision)
    if adapter_file is None:
        model = AutoModelForImageTextToText.from_pretrained(
            path, revision=revision, dtype=dtype, attn_implementation=attention
        )
        return model.eval()
    adapter = PeftConfig.from_pretrained(path, revision=revision)
    base = adapter.base_model_name_or_path
    if not base:
        raise RecipeError(f"the LoRA adapter in {path} does not say which base model it was trained on")
    try:
        check_model_available(base)
    except RecipeError as err:
        raise RecipeError(
            f"the LoRA adapter in {path} was trained on {base!r} (adapter_config.json: base_model_name_or_path), "
            f"which cannot be loaded here; make it available or edit that field.\n{err}"
        ) from None
    model = AutoModelForImageTextToText.from_pretrained(
        base, revision=adapter.revision, dtype=dtype, attn_implementation=attention
    )
    logger.info("merging the LoRA adapter %s into its base model %s", path, base)
    return PeftModel.from_pretrained(model, path, revision=revision).merge_and_unload().eval()
