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
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, TrainerCallback
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
    heldout_max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Longest held-out completion; unset: the run's max_completion_length (GRPO), else 256."},
    )
    completion_template: str | None = field(
        default=None,
        metadata={
            "help": "SFT target: a format string over {answer} (the record's answer), e.g. "
            "' I see it. </think><answer> {answer} </answer>'; unset: the bare answer."
        },
    )


def default_config_args(argv: list[str], default_config: str | None) -> list[str]:
    """Command-line arguments with ``--config <default>`` added when the user gave none (and there is a default)."""
    if default_config is None or "--config" in argv:
        return argv
    return ["--config", str(CONFIG_DIR / default_config), *argv]


def run_cli(main, parser, argv: list[str] | None, default_config: str | None) -> None:
    """Parse ``argv`` (the paper config when no --config is given), run ``main``, report `RecipeError`s plainly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    skip_deepspeed_shm_op()  # before parsing: the training arguments start DeepSpeed's comm backend
    args = default_config_args(sys.argv[1:] if argv is None else argv, default_config)
    try:
        try:
            parsed = parser.parse_args_and_config(args)
        except ValueError as err:
            raise RecipeError(config_error_message(err)) from None
        main(*parsed)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def skip_deepspeed_shm_op() -> None:
    """Keep DeepSpeed from compiling its CPU shared-memory all-reduce op, which training never uses.

    With no GPU, every process that starts DeepSpeed's comm backend (``deepspeed.comm.torch.TorchBackend``)
    JIT-compiles the ``deepspeed_shm_comm`` op with g++ unless ``deepspeed.ops.__compatible_ops__`` marks it
    incompatible (on Linux it never does): 60-100 s and ~1.5 GB under ``$TORCH_EXTENSIONS_DIR`` on first use.
    Only ``inference_all_reduce`` (DeepSpeed-Inference tensor parallelism) calls it; ZeRO training communicates
    through torch.distributed (gloo on CPU). ``DS_SHM_COMM_OP=1`` keeps DeepSpeed's default (build it).
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true" or torch.cuda.is_available():
        return
    if os.environ.get("DS_SHM_COMM_OP", "0") == "1":
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def config_error_message(err: ValueError) -> str:
    """Explain a configuration that TRL/transformers refused; bf16 on a machine without a GPU gets the way out."""
    message = f"invalid configuration: {err}"
    if "bf16" in str(err) and not torch.cuda.is_available():
        message += (
            "\nThe paper configs train in bf16 on GPUs and this machine has none. "
            f"To run the same pipeline on a CPU, use the offline quickstart: {QUICKSTART}\n"
            f"To train on SAT on a GPU machine, convert it first: {PREP_COMMAND.format(path='data/sat_paper')}"
        )
    return message


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


class ZeroPartitionLogger(TrainerCallback):
    """Under ZeRO-3, log on every rank, once training starts, how much of the model that rank holds.

    Each parameter then keeps only this rank's slice (``param.ds_tensor``, about 1/world-size of it), except the
    tensors smaller than ``stage3_param_persistence_threshold``, which DeepSpeed keeps whole on every rank
    (``param.ds_persist``). Silent without ZeRO-3.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        params = [p for p in model.parameters() if hasattr(p, "ds_tensor")] if model is not None else []
        if not params:
            return
        whole = [p for p in params if getattr(p, "ds_persist", False)]
        local = sum(p.ds_numel if getattr(p, "ds_persist", False) else p.ds_tensor.numel() for p in params)
        total = sum(p.ds_numel for p in params)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        message = "ZeRO-3 partitioned parameters: rank %d holds %d of %d elements (%d of %d tensors kept whole)"
        logger.info(message, rank, local, total, len(whole), len(params))


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


def to_prompts(
    records: Dataset,
    template: PromptTemplate,
    with_completion: bool = False,
    completion_template: str | None = None,
    completion_end: str = "",
) -> Dataset:
    """Apply a prompt template: ``messages`` → conversational ``prompt`` (and ``completion`` for SFT).

    The completion is the record's assistant turn (the bare answer), or ``completion_template`` formatted with
    ``answer=`` that answer; ``completion_end`` is appended to it (see `completion_end`). Only the text column is
    read and written, so images are neither decoded nor held in memory.
    """

    def completion(turn: dict) -> dict:
        if completion_template is None and not completion_end:
            return turn
        answer = "".join(part["text"] for part in turn["content"] if part["type"] == "text")
        text = answer if completion_template is None else completion_template.format(answer=answer)
        return {"role": turn["role"], "content": [{"type": "text", "text": text + completion_end}]}

    def apply(messages):
        out = {"prompt": [template.messages(prompt_text(m), num_images(m)) for m in messages]}
        if with_completion:
            out["completion"] = [[completion(turn) for turn in m if turn["role"] == "assistant"] for m in messages]
        return out

    return records.map(apply, input_columns=["messages"], batched=True, remove_columns=["messages"])


def completion_end(processor) -> str:
    """What an SFT completion must end with for the model to learn to stop.

    Nothing when the chat template closes the assistant turn itself (Qwen2-VL's ``<|im_end|>``); the tokenizer's
    EOS token when it adds nothing after the completion, as the role-free ``plain`` template does: TRL's
    vision-language collator appends no EOS to prompt-completion data, so without it the model never sees a stop.
    """
    marker = "\x00completion"
    probe = [
        {"role": "user", "content": [{"type": "text", "text": "question"}]},
        {"role": "assistant", "content": [{"type": "text", "text": marker}]},
    ]
    rendered = processor.apply_chat_template(probe, tokenize=False)
    return processor.tokenizer.eos_token if rendered.endswith(marker) else ""


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


def load_checkpoint_weights(trainer, checkpoint: str) -> None:
    """Put a checkpoint's weights into the (not yet wrapped) model before `Trainer.train` resumes from it.

    transformers 5.23's Trainer resumes weights with a raw ``load_state_dict(strict=False)``; Qwen2-VL checkpoints
    are saved under the legacy parameter names, so nothing matches and training silently restarts from the initial
    weights (with the resumed optimizer). ``from_pretrained`` maps the names. The Trainer still restores the
    optimizer, scheduler, RNG states and data position. DeepSpeed and FSDP restore weights their own way.
    """
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return
    model = trainer.model
    restored = type(model).from_pretrained(
        checkpoint, dtype=model.dtype, attn_implementation=model.config._attn_implementation
    )
    model.load_state_dict(restored.state_dict())


def train_and_save(trainer, training_args) -> None:
    """Train (resuming when asked), then save the final model and processor to ``output_dir``."""
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
        load_checkpoint_weights(trainer, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(training_args.output_dir)
    logger.info("saved the trained model to %s", training_args.output_dir)


def setup_reporting(script_args: RecipeArguments, training_args, model_args=None) -> None:
    """W&B project, group, tags and run name from the config, and W&B's files inside the run's output folder.

    An exported WANDB_PROJECT / WANDB_RUN_GROUP / WANDB_DIR wins over the config. The tags ``experiment:<name of
    the output folder>``, ``model:<model folder or hub name>`` and ``seed:<seed>`` are added to any WANDB_TAGS; a
    run without ``run_name`` is named ``<experiment>-<model>-seed<seed>``. `recipes.compare` finds the offline run
    under ``<output_dir>/wandb``.
    """
    if script_args.wandb_project:
        os.environ.setdefault("WANDB_PROJECT", script_args.wandb_project)
    if script_args.wandb_group:
        os.environ.setdefault("WANDB_RUN_GROUP", script_args.wandb_group)
    experiment = Path(training_args.output_dir).name
    model = Path(model_args.model_name_or_path).name if model_args is not None else None
    ours = {"experiment": experiment, "model": model, "seed": training_args.seed}
    kept = [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t and t.split(":")[0] not in ours]
    os.environ["WANDB_TAGS"] = ",".join([*kept, *(f"{k}:{v}" for k, v in ours.items() if v is not None)])
    if training_args.run_name is None:
        training_args.run_name = "-".join(str(v) for v in (experiment, model, f"seed{training_args.seed}") if v)
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
    end = completion_end(processor) if with_completion else ""
    dataset = to_prompts(records, template, with_completion, script_args.completion_template, end)
    setup_reporting(script_args, training_args, model_args)
    return template, processor, dataset


def attach_callbacks(trainer, script_args: RecipeArguments) -> None:
    """The recipes' callbacks: reporting (always), ZeRO-3 partition log, held-out accuracy when asked."""
    from recipes.callbacks import reporting_callbacks  # log history; completions table and trajectory dumps if set

    for callback in reporting_callbacks(trainer, script_args):
        trainer.add_callback(callback)
    trainer.add_callback(ZeroPartitionLogger())  # logs only under ZeRO-3
    if script_args.heldout_dataset_path:
        from recipes.heldout import HeldoutAccuracyCallback

        trainer.add_callback(HeldoutAccuracyCallback(trainer, script_args))
