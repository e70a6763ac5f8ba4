"""The evaluation's options (`EvalArguments`) and the checks made on them before anything is loaded or written.

The paper's settings live in the YAML presets (``recipes/configs/eval/paper.yaml``, the default config of
``recipes/eval_cvbench.py``, and ``paper_instruct.yaml``); the defaults here are what a bare ``EvalArguments(...)``
gets, e.g. in tests: the checkpoint's own dtype and processor bounds, the base-model prompt, 1,024 new tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recipes.shared.errors import RecipeError
from recipes.shared.prompts import EVAL_TEMPLATES, PromptTemplate, get_template

BACKENDS = ("hf", "vllm")
DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class EvalArguments:
    """Options of the CV-Bench evaluation (`recipes/eval_cvbench.py`)."""

    model_name_or_path: str = field(
        metadata={"help": "The checkpoint to evaluate: a model folder, a LoRA adapter folder, or a hub id."}
    )
    output_dir: str = field(metadata={"help": "Where predictions and summaries go; re-running resumes."})
    dataset: str = field(
        default="nyu-visionx/CV-Bench",
        metadata={"help": "Hub id, parquet file, or dataset folder in CV-Bench's schema."},
    )
    dataset_split: str = field(default="test", metadata={"help": "Split of a hub dataset or saved DatasetDict."})
    dataset_revision: str | None = field(
        default=None,
        metadata={
            "help": "Hub revision (branch, tag or 40-hex commit) of a hub --dataset; unset: the pin in "
            "data_prep/sources.py. Recorded in the summary and the run fingerprint."
        },
    )
    prompt: str = field(
        default="base",
        metadata={
            "help": "CV-Bench prompt template (recipes/shared/prompts.py EVAL_TEMPLATES): "
            f"{', '.join(EVAL_TEMPLATES)}.",
            "choices": tuple(EVAL_TEMPLATES),
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Replace the model's chat template: 'qwen2vl' (instruct format) or 'plain' (no roles)."},
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})
    batch_size: int = field(default=8, metadata={"help": "Rows generated together (per process)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per row (the paper: 1024)."})
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Smallest image area after resizing; unset: the checkpoint's own saved processor's."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Largest image area after resizing; unset: the checkpoint's own saved processor's (a recipe "
            "run saves its training bounds, 401408 for the paper configs; Qwen2-VL's hub default is 12845056)."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Score only the first N rows (quick checks)."})
    backend: str = field(
        default="hf",
        metadata={"help": "'hf' (transformers generate) or 'vllm' (GPU only).", "choices": BACKENDS},
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Model dtype: auto (the checkpoint's), bfloat16, float16 or float32.", "choices": DTYPES},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel; default flash_attention_2 when available, else sdpa."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over when output_dir holds predictions of another evaluation (another model, its weights "
            "retrained, another prompt, resolution, dataset, ...): they are deleted. Without it such a run is refused."
        },
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={
            "help": "Skip rows that cannot be evaluated (counted in the summary, left out of every score) instead of "
            "stopping: an image that cannot be decoded, a missing (null or empty) prompt, a prompt holding the "
            "model's special tokens (<|image_pad|>, <|im_end|>, ...)."
        },
    )
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM: share of GPU memory to use."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: GPUs per model replica."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vLLM: context length (default: model's)."})


def check_arguments(args: EvalArguments, num_processes: int) -> PromptTemplate:
    """Fail on bad options before anything is loaded or written; the prompt template."""
    try:
        template = get_template(args.prompt, evaluation=True)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    if args.dtype not in DTYPES:
        raise RecipeError(f"unknown dtype {args.dtype!r}: choose one of {', '.join(DTYPES)}")
    if args.backend not in BACKENDS:
        raise RecipeError(f"unknown backend {args.backend!r}: choose one of {', '.join(BACKENDS)}")
    if args.backend == "vllm" and num_processes > 1:
        raise RecipeError(
            "--backend vllm batches and shards by itself: run one process (python recipes/eval_cvbench.py ...) and "
            "use --vllm_tensor_parallel_size for several GPUs"
        )
    for name in ("batch_size", "max_new_tokens", "min_pixels", "max_pixels", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RecipeError(f"--{name} must be at least 1; got {value}")
    if args.min_pixels is not None and args.max_pixels is not None and args.min_pixels > args.max_pixels:
        raise RecipeError(f"--min_pixels ({args.min_pixels}) is larger than --max_pixels ({args.max_pixels})")
    return template
