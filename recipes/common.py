"""What the recipes share: their script arguments, model/processor/dataset loading, freezing, and friendly errors.

The recipes stay thin: each `main` calls these helpers, then hands everything to an unmodified TRL trainer.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.trainer_utils import get_last_checkpoint

from data_prep.schema import num_images, prompt_text
from recipes.prompts import PromptTemplate, get_template, render, set_chat_template

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "recipes" / "configs"
QUICKSTART = "bash launch/quickstart.sh"
PREP_COMMAND = "python -m data_prep.sat --input array/SAT --output {path} --limit 15000 --multi-image skip"


class RecipeError(RuntimeError):
    """A problem the user can fix; the recipes print its message instead of a stack trace."""


@dataclass
class RecipeArguments:
    """Options of the recipes that are not TRL training or model options."""

    dataset_path: str = field(
        default="data/sat_paper",
        metadata={"help": "A dataset written by `python -m data_prep.sat` (a folder loadable with load_from_disk)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N records (quick experiments)."}
    )
    prompt_template: str = field(
        default="base",
        metadata={"help": "Prompt template from recipes/prompts.py: base, base_no_reasoning, instruct, ..."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Replace the model's chat template: 'qwen2vl' (instruct format) or 'plain' (no roles)."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Reward names from the `rewards` registry; weights go in `reward_weights`."},
    )
    accuracy_mode: str = field(default="paper", metadata={"help": "'paper' (the paper's three checks) or 'lenient'."})
    accuracy_requires_format: bool = field(
        default=False, metadata={"help": "Count accuracy only when the format reward is 1 (format-gated accuracy)."}
    )
    length_scale: float = field(default=0.001, metadata={"help": "Reward per completion token of the length reward."})
    min_pixels: int = field(default=3136, metadata={"help": "Smallest image area (pixels) after resizing."})
    max_pixels: int = field(default=401408, metadata={"help": "Largest image area (pixels) after resizing."})
    freeze_vision: bool = field(default=False, metadata={"help": "Freeze the vision tower and its patch merger."})
    freeze_llm: bool = field(default=False, metadata={"help": "Freeze the language model (embeddings and head too)."})
    dry_run: bool = field(
        default=False, metadata={"help": "Print the first rendered prompts (special tokens included) and exit."}
    )
    dry_run_samples: int = field(default=2, metadata={"help": "How many prompts --dry_run prints."})
    wandb_project: str | None = field(default=None, metadata={"help": "W&B project (sets WANDB_PROJECT)."})
    wandb_group: str | None = field(
        default=None, metadata={"help": "W&B group shared by the runs of one ablation suite (sets WANDB_RUN_GROUP)."}
    )
    dump_trajectories: bool = field(
        default=False,
        metadata={
            "help": "Write <output_dir>/trajectories/step-*.jsonl: prompt id, completion, each reward, per step."
        },
    )
    heldout_dataset_path: str | None = field(
        default=None,
        metadata={"help": "Records (data_prep format) scored by greedy decoding every `heldout_eval_steps` steps."},
    )
    heldout_eval_steps: int = field(default=25, metadata={"help": "How often the held-out accuracy is measured."})
    heldout_samples: int | None = field(default=None, metadata={"help": "Score only the first N held-out records."})


def default_config_args(argv: list[str], default_config: str) -> list[str]:
    """Command-line arguments with ``--config <default>`` added when the user gave none."""
    if "--config" in argv:
        return argv
    return ["--config", str(CONFIG_DIR / default_config), *argv]


def run_cli(main, parser, argv: list[str] | None, default_config: str) -> None:
    """Parse ``argv`` (the paper config when no --config is given), run ``main``, report `RecipeError`s plainly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = default_config_args(sys.argv[1:] if argv is None else argv, default_config)
    try:
        main(*parser.parse_args_and_config(args))
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


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
    if training_args.gradient_checkpointing:
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
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.1f%%)", trainable, total, 100 * trainable / max(total, 1))


def load_records(script_args: RecipeArguments) -> Dataset:
    """The records written by `data_prep.sat`, memory-mapped (images stay encoded until a batch needs them)."""
    path = Path(script_args.dataset_path).expanduser()
    if not (path / "dataset_info.json").exists() and not (path / "state.json").exists():
        raise RecipeError(
            f"no converted dataset at {path}.\nConvert SAT first: {PREP_COMMAND.format(path=path)}\n"
            f"or run the offline quickstart on synthetic data: {QUICKSTART}"
        )
    records = load_from_disk(str(path))
    missing = {"messages", "images", "solution"} - set(records.column_names)
    if missing:
        raise RecipeError(
            f"{path} is not a data_prep record dataset (missing columns: {', '.join(sorted(missing))}); "
            f"convert it with: {PREP_COMMAND.format(path=path)}"
        )
    if script_args.max_train_samples is not None:
        records = records.select(range(min(script_args.max_train_samples, len(records))))
    return records


def to_prompts(records: Dataset, template: PromptTemplate, with_completion: bool = False) -> Dataset:
    """Apply a prompt template: ``messages`` → conversational ``prompt`` (and ``completion`` for SFT).

    Only the text column is read and written, so images are neither decoded nor held in memory.
    """

    def apply(messages):
        out = {"prompt": [template.messages(prompt_text(m), num_images(m)) for m in messages]}
        if with_completion:
            out["completion"] = [[turn for turn in m if turn["role"] == "assistant"] for m in messages]
        return out

    return records.map(apply, input_columns=["messages"], batched=True, remove_columns=["messages"])


def log_prompts(processor, dataset: Dataset, n: int, to_stdout: bool = False) -> list[str]:
    """Render the first ``n`` prompts exactly as the trainer will (special tokens included) and show them."""
    texts = [render(processor, dataset[i]["prompt"]) for i in range(min(n, len(dataset)))]
    for i, text in enumerate(texts):
        banner = f"----- rendered prompt {i} -----"
        if to_stdout:
            print(f"{banner}\n{text}")
        else:
            logger.info("%s\n%s", banner, text)
    return texts


def resolve_checkpoint(resume: str | bool | None, output_dir: str) -> str | None:
    """``resume_from_checkpoint``: a path, or "last"/"true" for the newest checkpoint in ``output_dir``."""
    if resume in (None, False, "", "false", "False"):
        return None
    if str(resume).lower() in ("last", "true") or resume is True:
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            logger.info("resume_from_checkpoint=%s but %s holds no checkpoint: starting fresh", resume, output_dir)
        return last
    if not Path(resume).is_dir():
        raise RecipeError(f"resume_from_checkpoint={resume!r} is not a folder; give a checkpoint path or 'last'")
    return str(resume)


def setup_reporting(script_args: RecipeArguments, training_args) -> None:
    """W&B project from the config, and W&B's files inside the run's output folder (found by `recipes.compare`)."""
    if script_args.wandb_project:
        os.environ.setdefault("WANDB_PROJECT", script_args.wandb_project)
    os.environ.setdefault("WANDB_DIR", str(Path(training_args.output_dir).resolve()))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)


def prepare(script_args: RecipeArguments, training_args, model_args, with_completion: bool = False):
    """Everything before the trainer: checks, processor, prompts dataset (model loading is left to the caller)."""
    try:
        template = get_template(script_args.prompt_template)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    records = load_records(script_args)
    check_model_available(model_args.model_name_or_path)
    processor = load_processor(model_args, script_args, template)
    dataset = to_prompts(records, template, with_completion=with_completion)
    setup_reporting(script_args, training_args)
    return template, processor, dataset


def attach_callbacks(trainer, script_args: RecipeArguments) -> None:
    """Optional callbacks, each switched on by a recipe option (off by default)."""
    if script_args.dump_trajectories:
        from recipes.callbacks import TrajectoryDumpCallback

        trainer.add_callback(TrajectoryDumpCallback(trainer))
    if script_args.heldout_dataset_path:
        from recipes.heldout import HeldoutAccuracyCallback

        trainer.add_callback(HeldoutAccuracyCallback(trainer, script_args))
