"""Generating and scoring responses: the processor and its pixel bounds, the two backends, the loop over rows.

Images are resized within the evaluation's bounds before any processor sees them (`data_prep.images.fit_image`, the
``smart_resize`` of Qwen2-VL's processor, with PIL's bicubic filter as the paper's transformers 4.49 used): the
processor then leaves them as they are, and the transformers and vLLM backends see the same pixels and the same
``image_grid_thw``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoProcessor, GenerationConfig

from data_prep.images import fit_image
from recipes.evaluation.config import EvalArguments
from recipes.evaluation.data import open_image
from recipes.evaluation.fingerprint import is_adapter
from recipes.evaluation.output import OutputDir
from recipes.shared.errors import RecipeError
from recipes.shared.models import check_pixel_bounds, image_unit, load_for_inference
from recipes.shared.prompts import PromptTemplate, render, set_chat_template
from rewards.cvbench import extract_answer, paper_verdict, score_response_strict

logger = logging.getLogger(__name__)

Generator = Callable[[list[str], list], list[str]]


def pixel_bounds(processor) -> tuple[int, int]:
    """(min_pixels, max_pixels) the processor resizes images within: its image processor's ``size``."""
    size = processor.image_processor.size
    return int(size["shortest_edge"]), int(size["longest_edge"])


def load_processor(folder: Path, args: EvalArguments, template: PromptTemplate):
    """The checkpoint's own processor (left padding), with ``--min_pixels``/``--max_pixels`` when given; its bounds.

    A recipe run saves its processor with the training bounds, so by default a trained checkpoint is evaluated at
    the resolution it was trained at, and a hub model at the hub processor's default, as in the paper.
    """
    processor = AutoProcessor.from_pretrained(folder, padding_side="left")
    if args.min_pixels is not None or args.max_pixels is not None:
        low, high = pixel_bounds(processor)
        size = {"shortest_edge": args.min_pixels or low, "longest_edge": args.max_pixels or high}
        if size["shortest_edge"] > size["longest_edge"]:
            raise RecipeError(
                f"pixel bounds {size['shortest_edge']}..{size['longest_edge']} (the checkpoint's processor has "
                f"{low}..{high}): give both --min_pixels and --max_pixels, or a compatible one"
            )
        processor = AutoProcessor.from_pretrained(folder, size=size, padding_side="left")
    low, high = pixel_bounds(processor)
    check_pixel_bounds(processor, low, high)
    try:
        set_chat_template(processor, template, args.chat_template)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    return processor, (low, high)


class HFGenerator:
    """Greedy, batched ``generate`` with left padding; responses decoded as the paper did."""

    def __init__(self, model, processor, max_new_tokens: int):
        self.model = model
        self.processor = processor
        # The checkpoint's generation settings (e.g. its repetition penalty, as in the paper), made greedy.
        config = GenerationConfig.from_dict(model.generation_config.to_dict())
        config.update(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens)
        if config.pad_token_id is None:
            config.pad_token_id = processor.tokenizer.pad_token_id
        self.config = config

    def __call__(self, texts: list[str], images: list) -> list[str]:
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.config)
        completions = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(completions, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class VLLMGenerator:
    """Greedy generation with vLLM (GPU): the same rendered prompts and the same (already resized) images."""

    def __init__(self, args: EvalArguments, folder: Path, bounds: tuple[int, int]):
        if is_adapter(folder):
            raise RecipeError(
                f"{folder} is a LoRA adapter: --backend vllm needs a full model folder (merge the adapter into its "
                "base model and save that), or use --backend hf, which merges it on loading"
            )
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise RecipeError(
                "--backend vllm needs vLLM, which is not installed in this environment: on a CUDA machine install it "
                "into the same environment with `pip install --no-build-isolation -r requirements-gpu.txt`, or use "
                "--backend hf"
            ) from None
        self.llm = LLM(
            model=str(folder),
            dtype=args.dtype,
            tensor_parallel_size=args.vllm_tensor_parallel_size,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            max_model_len=args.vllm_max_model_len,
            limit_mm_per_prompt={"image": 1},
            mm_processor_kwargs={"min_pixels": bounds[0], "max_pixels": bounds[1]},
            seed=0,
        )
        self.params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, skip_special_tokens=True)

    def __call__(self, texts: list[str], images: list) -> list[str]:
        requests = [{"prompt": t, "multi_modal_data": {"image": im}} for t, im in zip(texts, images, strict=True)]
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def make_generator(args: EvalArguments, folder: Path, processor, bounds, device: torch.device) -> Generator:
    if args.backend == "vllm":
        return VLLMGenerator(args, folder, bounds)
    model = load_for_inference(str(folder), args.dtype, args.attn_implementation)
    return HFGenerator(model.to(device), processor, args.max_new_tokens)


def prediction_record(row: int, meta: dict, fingerprint: str, **fields: Any) -> dict:
    """One line of predictions.jsonl: the row, what the model saw and said, both verdicts (or why it was skipped)."""
    record = {
        "row": row,
        **{k: meta[k] for k in ("idx", "task", "source", "type", "answer")},
        "fingerprint": fingerprint,
    }
    if "skipped" in fields:
        return {**record, **fields, "response": None, "extracted": None, "correct": False, "correct_strict": False}
    response = fields.pop("response")
    correct, parsed = paper_verdict(response, meta["choices"], meta["answer"])
    return {
        **record,
        **fields,
        "response": response,
        "extracted": extract_answer(response),
        "parsed": [str(p) for p in parsed],
        "correct": correct,
        "correct_strict": score_response_strict(response, meta["choices"], meta["answer"]),
    }


def predict_rows(
    dataset: Dataset,
    rows: list[dict],
    shard: list[int],
    template: PromptTemplate,
    processor,
    generate: Generator,
    args: EvalArguments,
    out: OutputDir,
    fingerprint: str,
    progress: bool,
) -> None:
    """Generate, score and append the predictions of ``shard``, ``batch_size`` rows at a time."""
    images = dataset.select_columns(["image"])
    low, high = pixel_bounds(processor)
    unit = image_unit(processor)
    bar = tqdm(total=len(shard), desc="CV-Bench", unit="row", disable=None if progress else True)
    for first in range(0, len(shard), args.batch_size):
        batch = shard[first : first + args.batch_size]
        records, ready = [], []
        for row, cell in zip(batch, images[batch]["image"], strict=True):
            try:
                original = open_image(cell)
                ready.append((row, fit_image(original, low, high, unit), original.size))
            except Exception as err:  # PIL raises many types for a broken image (OSError, SyntaxError, ...)
                reason = f"the image cannot be used ({type(err).__name__}: {err})"
                if not args.skip_bad_images:
                    raise RecipeError(
                        f"row {row} (idx {rows[row]['idx']}) of {args.dataset}: {reason}. Fix or drop that row, or "
                        "skip such rows (counted in the summary, left out of the accuracy): --skip_bad_images true"
                    ) from None
                logger.warning("row %d (idx %s) skipped: %s", row, rows[row]["idx"], reason)
                records.append(prediction_record(row, rows[row], fingerprint, skipped=reason))
        prompts = [render(processor, template.messages(rows[row]["prompt"], num_images=1)) for row, _, _ in ready]
        responses = generate(prompts, [image for _, image, _ in ready]) if ready else []
        for (row, image, size), prompt, response in zip(ready, prompts, responses, strict=True):
            resized = list(image.size) != list(size)
            fields = {"prompt": prompt, "image_size": list(image.size), "resized": resized, "response": response}
            records.append(prediction_record(row, rows[row], fingerprint, **fields))
        out.append(sorted(records, key=lambda r: r["row"]))
        bar.update(len(batch))
    bar.close()
