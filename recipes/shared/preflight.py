"""Checks made before any model loads, each failing in seconds with a one-line error that names the fix.

Called once from `recipes.shared.prepare.prepare`, after the records are read (data present and readable) and the model
is
found, before the processor and the model load:

* W&B (``report_to`` includes wandb): an API key (``WANDB_API_KEY``, a netrc entry for the W&B host as ``wandb
  login`` writes it), or a mode that needs none (``WANDB_MODE`` offline/disabled, or ``mode = offline`` in W&B's
  settings file as ``wandb offline`` writes it). Without one, W&B fails after the model loaded.
* Hub pushing (``push_to_hub``): not offline, a token (``hub_token``, ``HF_TOKEN`` or ``huggingface-cli login``),
  a valid repository name (``hub_model_id``, else the output folder's name), through huggingface_hub's public API;
  ``hub_strategy`` other than the default (pushing checkpoints while training) is refused (`recipes.shared.hub`).
* Disk: what the run will write, estimated from the model's parameter count (counted on the meta device: no
  weights are read), the precision, optimizer, DeepSpeed ZeRO stage, number of steps and the save policy
  (``save_steps``/``save_total_limit``/``save_only_model`` for the resumable checkpoints, ``model_save_steps``/
  ``model_save_dtype`` for the model-only snapshots the CV-Bench curve evaluates). It is logged, and a run whose
  output file system cannot hold it is refused (``--skip_disk_check true`` starts it anyway).

The estimate per resumable checkpoint: the weights as saved (16-bit under DeepSpeed with bf16/fp16, else the
model's dtype; twice under ZeRO 0-2, whose model states hold them again), plus the optimizer state per trainable
parameter (Adam: two fp32 moments, 8 bytes; under DeepSpeed also its fp32 master partition, 4 bytes). Measured
against real one-process, ZeRO-2 and ZeRO-3 runs: ``benchmarks/bench_disk_estimate.py``. The trainer writes a
new checkpoint before it deletes the oldest, so ``save_total_limit`` N keeps N + 1 at the peak. A resumed run is
estimated as a whole run (an over-estimate).
"""

from __future__ import annotations

import configparser
import json
import logging
import math
import netrc
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

WANDB_KEYLESS_MODES = ("offline", "disabled", "dryrun")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SNAPSHOT_DTYPES = ("auto", *DTYPE_BYTES)


def size(n: float) -> str:
    """Bytes as a reader wants them.

    Example:
        >>> size(31e9), size(2.2e6)
        ('31.0 GB', '2.2 MB')
    """
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


# --- W&B -------------------------------------------------------------------------------------------------------------


def _wandb_settings_mode() -> str | None:
    """``mode`` from W&B's settings files (``wandb offline`` writes ``mode = offline``), the local one first."""
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR", Path.home() / ".config" / "wandb"))
    local = Path(os.environ.get("WANDB_DIR", ".")) / "wandb" / "settings"
    for path in (local, config_dir / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        if parser.has_option("default", "mode"):
            return parser.get("default", "mode").strip().lower()
    return None


def _netrc_has_key(host: str) -> bool:
    paths = [os.environ["NETRC"]] if os.environ.get("NETRC") else [Path.home() / ".netrc", Path.home() / "_netrc"]
    for path in paths:
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return True
    return False


def check_wandb(report_to: list[str] | str | None) -> None:
    """Refuse ``report_to: wandb`` when W&B would fail for want of an API key, after the model loaded."""
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "wandb" not in targets and "all" not in targets:
        return
    mode = os.environ.get("WANDB_MODE", "").strip().lower() or _wandb_settings_mode()
    if mode in WANDB_KEYLESS_MODES or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    if _netrc_has_key(host):
        return
    raise RecipeError(
        f"report_to includes wandb but no W&B API key was found (WANDB_API_KEY, or a netrc entry for {host}): run "
        "`wandb login`, or set WANDB_MODE=offline (upload later with `wandb sync`) or WANDB_MODE=disabled, or drop "
        "wandb from report_to"
    )


# --- the hub ---------------------------------------------------------------------------------------------------------


def check_hub(training_args) -> None:
    """Refuse ``push_to_hub`` that would fail after training (offline, no token, an invalid repository id) or that
    asks for what this project's push does not do (``hub_strategy`` checkpoint/all_saves: checkpoints are pushed
    afterwards with ``python -m recipes.push_to_hub RUN_DIR --include_checkpoints true``)."""
    if not getattr(training_args, "push_to_hub", False):
        return
    from recipes.shared.hub import check_push, run_repo_id

    check_push(
        run_repo_id(training_args), training_args.hub_token, "push_to_hub", "set --hub_model_id NAME or USER/NAME"
    )
    strategy = str(getattr(training_args.hub_strategy, "value", training_args.hub_strategy))
    if strategy not in ("every_save", "end"):
        raise RecipeError(
            f"hub_strategy {strategy} is not supported: a run pushes once, when it has finished (model, processor, "
            "card, evaluation). Drop hub_strategy, and push checkpoints afterwards with `python -m "
            "recipes.push_to_hub OUTPUT_DIR --repo_id REPO --include_checkpoints true`"
        )


# --- disk ------------------------------------------------------------------------------------------------------------


def zero_stage(training_args) -> int | None:
    """The DeepSpeed ZeRO stage of this launch (from ``deepspeed=`` or accelerate's config), None without DeepSpeed."""
    config = training_args.deepspeed
    if not config and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"):
            return int(os.environ["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
        config = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        if not config:
            return 0
    if not config:
        return None
    if isinstance(config, (str, Path)):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, ValueError) as err:
            raise RecipeError(f"cannot read the DeepSpeed config {config}: {err}") from None
    stage = config.get("zero_optimization", {}).get("stage", 0)
    return int(stage) if str(stage).isdigit() else 0


def _local_weights(model_args) -> Path | None:
    """The folder holding the model's weights on this machine (a local folder or the hub cache), if any."""
    path = Path(model_args.model_name_or_path).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            local_files_only=True,
            allow_patterns=["*.safetensors"],
        )
    except Exception:  # noqa: BLE001 - not cached (huggingface_hub raises several kinds): counted another way
        return None
    return Path(folder)


def _tensor_sizes(model_args, zero: int | None) -> dict[str, int] | None:
    """Parameter name -> element count, without loading the model: the safetensors headers of local or cached
    weights, else the hub's safetensors metadata, else (not under ZeRO-3) the model built on the meta device."""
    folder = _local_weights(model_args)
    files = sorted(folder.glob("*.safetensors")) if folder else []
    if files:
        from safetensors import safe_open

        sizes = {}
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                sizes.update({k: math.prod(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
        return sizes
    if not Path(model_args.model_name_or_path).expanduser().exists() and not _truthy("HF_HUB_OFFLINE"):
        from huggingface_hub import get_safetensors_metadata

        try:
            meta = get_safetensors_metadata(model_args.model_name_or_path, revision=model_args.model_revision)
            return {k: t.parameter_count for f in meta.files_metadata.values() for k, t in f.tensors.items()}
        except Exception as err:  # noqa: BLE001 - no network, no safetensors on the hub: counted another way
            logger.info("no safetensors metadata for %s on the hub (%s)", model_args.model_name_or_path, err)
    if zero == 3:  # transformers would start ZeRO-3 partitioning (zero.Init) for a model only counted here
        return None
    from transformers import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, AutoConfig

    config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    with torch.device("meta"):
        model = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)](config)
    return {name: p.numel() for name, p in model.named_parameters()}


def count_parameters(model_args, script_args, zero: int | None = None) -> tuple[int, int] | None:
    """(all, trainable) parameters of the model, counted without loading it (None when it cannot be).

    The freeze options are applied by name (the vision tower's tensors hold ``visual``); with LoRA the adapters'
    few parameters are not counted as trainable (their optimizer state is small).
    """
    sizes = _tensor_sizes(model_args, zero)
    if not sizes:
        return None
    total = sum(sizes.values())
    vision = sum(n for name, n in sizes.items() if "visual" in name.split("."))
    trainable = (
        total - (vision if script_args.freeze_vision else 0) - (total - vision if script_args.freeze_llm else 0)
    )
    return total, 0 if model_args.use_peft else trainable


def total_steps(training_args, rows: int) -> int:
    """Optimizer steps the run will take: ``max_steps``, else epochs × full batches of the data."""
    args = training_args
    if args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    generations = getattr(args, "num_generations", None)
    if generations:  # GRPO: completions per step; TRL drops an incomplete batch of prompts
        per_epoch = rows // max(1, per_step // generations)
    else:
        per_epoch = math.ceil(rows / per_step)
    return max(1, math.ceil(per_epoch * args.num_train_epochs))


def _every(value: float, steps: int) -> int:
    """A ``*_steps`` setting as steps (a value below 1 is a fraction of the run, as in transformers)."""
    return max(1, math.ceil(value * steps)) if value < 1 else int(value)


def snapshot_dtype(script_args, training_args, model_dtype: str | None) -> str:
    """The dtype of the model-only snapshots: ``model_save_dtype``, or for auto the training's 16-bit precision
    (bf16/fp16), else the model's dtype."""
    chosen = getattr(script_args, "model_save_dtype", "auto")
    if chosen != "auto":
        return chosen
    if training_args.bf16:
        return "bfloat16"
    if training_args.fp16:
        return "float16"
    return str(model_dtype) if str(model_dtype) in DTYPE_BYTES else "float32"


@dataclass
class DiskEstimate:
    """What a run will write at its peak, in bytes, with the figures it comes from."""

    parameters: int
    trainable: int
    steps: int
    weights_bytes: int  # per parameter, in a resumable checkpoint (the final model: once, 16-bit under DeepSpeed)
    optimizer_bytes: int  # per trainable parameter, in a resumable checkpoint
    zero: int | None
    checkpoint_every: int | None
    checkpoints_kept: int
    checkpoint_bytes: int  # one resumable checkpoint
    snapshot_every: int | None
    snapshots: int
    snapshot_bytes: int
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        zero = "no DeepSpeed" if self.zero is None else f"DeepSpeed ZeRO-{self.zero}"
        saves = "no checkpoints" if not self.checkpoint_every else f"a checkpoint every {self.checkpoint_every} steps"
        snaps = (
            f"{self.snapshots} model snapshot(s) of {size(self.parameters * self.snapshot_bytes)} "
            f"(every {self.snapshot_every} steps + the last)"
            if self.snapshot_every
            else "no model snapshots"
        )
        return (
            f"about {size(self.total)} for {self.parameters / 1e9:.3f}B parameters ({self.trainable / 1e9:.3f}B "
            f"trained), {zero}, {self.steps} steps: {saves}, {self.checkpoints_kept} kept at the peak x "
            f"{size(self.checkpoint_bytes)} "
            f"({self.weights_bytes} B/param weights + {self.optimizer_bytes} B/trained param optimizer state) = "
            f"{size(self.parts['checkpoints'])}; {snaps} = {size(self.parts['snapshots'])}; "
            f"final model {size(self.parts['final'])}"
        )


def estimate_disk(script_args, training_args, model_args, rows: int, counts: tuple[int, int]) -> DiskEstimate:
    """The disk a run will use at its peak (see the module docstring for the formula)."""
    args = training_args
    total, trainable = counts
    steps = total_steps(args, rows)
    zero = zero_stage(args)
    half = args.bf16 or args.fp16
    model_dtype = str(model_args.dtype) if str(model_args.dtype) in DTYPE_BYTES else "float32"
    weights = 2 if zero is not None and half else DTYPE_BYTES[model_dtype]
    optim = str(args.optim)
    moments = 2 if "8bit" in optim else 0 if "sgd" in optim or "adafactor" in optim else 8
    # DeepSpeed keeps an fp32 master partition whatever the precision; ZeRO 0-2 also save the module's weights in
    # their model states (measured: benchmarks/bench_disk_estimate.py).
    optimizer = 0 if args.save_only_model else moments + (4 if zero is not None else 0)
    weights_in_checkpoint = weights * (2 if zero is not None and zero < 3 and not args.save_only_model else 1)
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    every = _every(args.save_steps, steps) if strategy == "steps" else None
    # transformers also saves at the last step when the cadence did not end on it
    saves = math.ceil(steps / every) if every else (math.ceil(args.num_train_epochs) if strategy == "epoch" else 0)
    kept = min(saves, args.save_total_limit + 1) if args.save_total_limit else saves
    snap_every = getattr(script_args, "model_save_steps", None)
    snap_every = _every(snap_every, steps) if snap_every else None
    snapshots = math.ceil(steps / snap_every) if snap_every else 0
    snap_bytes = DTYPE_BYTES[snapshot_dtype(script_args, args, model_args.dtype)]
    per_checkpoint = total * weights_in_checkpoint + trainable * optimizer
    parts = {
        "checkpoints": per_checkpoint * kept,
        "snapshots": total * snap_bytes * snapshots,
        "final": total * weights,
    }
    return DiskEstimate(
        total,
        trainable,
        steps,
        weights_in_checkpoint,
        optimizer,
        zero,
        every,
        kept,
        per_checkpoint,
        snap_every,
        snapshots,
        snap_bytes,
        parts,
    )


def free_bytes(folder: str | Path) -> tuple[int, Path]:
    """Free bytes on the file system that will hold ``folder`` (its nearest existing ancestor's)."""
    path = Path(folder).expanduser().resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free, path


def check_disk(estimate: DiskEstimate, output_dir: str, skip: bool = False) -> None:
    """Log the estimate; refuse a run whose output file system cannot hold it, unless ``skip``."""
    free, where = free_bytes(output_dir)
    logger.info("disk: this run will write %s; %s free on %s", estimate.describe(), size(free), where)
    if estimate.total <= free:
        return
    if skip:
        logger.warning(
            "disk: the run needs about %s but %s has %s free; starting anyway (--skip_disk_check true)",
            size(estimate.total),
            where,
            size(free),
        )
        return
    raise RecipeError(
        f"this run will write {estimate.describe()}, but {where} has only {size(free)} free: lower "
        "save_total_limit, raise save_steps or model_save_steps, set save_only_model true (no resumable optimizer "
        "state), choose another --output_dir, or start anyway with --skip_disk_check true"
    )


# --- all of them -----------------------------------------------------------------------------------------------------


def check_save_options(script_args) -> None:
    """The model-snapshot options (``model_save_steps``, ``model_save_dtype``) are usable."""
    every = getattr(script_args, "model_save_steps", None)
    if every is not None and (every < 0 or (every > 1 and every != int(every))):
        raise RecipeError(
            f"model_save_steps must be a whole number of steps, a fraction in (0, 1) of the run, or 0 (none); got "
            f"{every}"
        )
    dtype = getattr(script_args, "model_save_dtype", "auto")
    if dtype not in SNAPSHOT_DTYPES:
        raise RecipeError(f"unknown model_save_dtype {dtype!r}: choose one of {', '.join(SNAPSHOT_DTYPES)}")


def preflight(script_args, training_args, model_args, rows: int) -> DiskEstimate | None:
    """Every check that needs neither the processor nor the weights; the disk estimate (None for a dry run)."""
    check_save_options(script_args)
    check_wandb(training_args.report_to)
    check_hub(training_args)
    if script_args.dry_run:
        return None
    counts = count_parameters(model_args, script_args, zero_stage(training_args))
    if counts is None:
        logger.warning(
            "disk: not estimated (the parameters of %s cannot be counted before it loads: not on this machine, and "
            "no hub metadata); make sure %s has room for the run",
            model_args.model_name_or_path,
            training_args.output_dir,
        )
        return None
    estimate = estimate_disk(script_args, training_args, model_args, rows, counts)
    check_disk(estimate, training_args.output_dir, getattr(script_args, "skip_disk_check", False))
    return estimate
