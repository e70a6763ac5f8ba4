"""Workarounds for upstream bugs that leave no public route, each gated on the library version and citing its issue.

Each workaround applies only to the versions known to have the bug (`Workaround.applies`): the range this repository
pins (pyproject.toml) and no further, so an upgrade turns it off instead of letting it poke at a changed internal.
tests/test_compat.py demonstrates each bug on the installed versions; when an upgrade fixes one, its test fails and
the workaround can be dropped (when the bug survives an upgrade, the same test asks for the range to be extended).

=================================  ============  ===================================================================
workaround                         package       upstream
=================================  ============  ===================================================================
`load_checkpoint_weights`          transformers  huggingface/transformers#43701 (resume ignores the key mapping)
`WandbImagePromptTable`            trl           none filed yet; see its docstring (W&B cannot type image prompts)
`skip_deepspeed_shm_op`            deepspeed     none filed yet; see its docstring (inference-only op built eagerly)
=================================  ============  ===================================================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import torch
from accelerate.utils import is_peft_model
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workaround:
    """A library bug this module works around: the package, the versions known to have it, the upstream reference."""

    package: str
    affected: str  # a PEP 440 specifier set, e.g. ">=4.52,<5.24"
    upstream: str

    def installed(self) -> Version | None:
        try:
            return Version(version(self.package))
        except PackageNotFoundError:
            return None

    def applies(self) -> bool:
        """Whether the installed version of the package is one known to have the bug."""
        installed = self.installed()
        return installed is not None and SpecifierSet(self.affected).contains(installed, prereleases=True)


# Trainer resumes weights with a raw load_state_dict, bypassing from_pretrained's key mapping (since 4.52; seen on
# 5.20.2, the pinned version, and on 5.23.0).
QWEN2VL_RESUME = Workaround(
    "transformers", ">=4.52,<5.24", "https://github.com/huggingface/transformers/issues/43701 (fix proposed: #44366)"
)
# GRPOTrainer.log hands W&B a prompt column whose content parts have different keys.
WANDB_IMAGE_TABLE = Workaround("trl", ">=1.16,<1.17", "none filed; trl/trainer/grpo_trainer.py GRPOTrainer.log")
# TorchBackend.__init__ JIT-builds the CPU shared-memory op whatever the job (see skip_deepspeed_shm_op).
DEEPSPEED_SHM_OP = Workaround("deepspeed", "<0.20", "none filed; deepspeed/comm/torch.py TorchBackend.__init__")


def skip_deepspeed_shm_op() -> None:
    """Keep DeepSpeed from compiling its CPU shared-memory all-reduce op, which training never uses.

    With no GPU, every process that starts DeepSpeed's comm backend (``deepspeed.comm.torch.TorchBackend``)
    JIT-compiles the ``deepspeed_shm_comm`` op with g++ unless ``deepspeed.ops.__compatible_ops__`` marks it
    incompatible (on Linux it never does): 60-100 s and ~1.5 GB under ``$TORCH_EXTENSIONS_DIR`` on first use.
    Only ``inference_all_reduce`` (DeepSpeed-Inference tensor parallelism) calls it; ZeRO training communicates
    through torch.distributed (gloo on CPU). ``DS_SHM_COMM_OP=1`` keeps DeepSpeed's default (build it). DeepSpeed
    offers no switch for this: the compatibility table it reads is the only lever.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true" or torch.cuda.is_available():
        return
    if os.environ.get("DS_SHM_COMM_OP", "0") == "1" or not DEEPSPEED_SHM_OP.applies():
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def load_checkpoint_weights(trainer, checkpoint: str) -> None:
    """Put a checkpoint's weights into the (not yet wrapped) model before `Trainer.train` resumes from it.

    transformers' Trainer (5.20 and 5.23 alike) resumes weights with a raw ``load_state_dict(strict=False)``;
    Qwen2-VL checkpoints are saved under the legacy parameter names, so nothing matches and training silently restarts
    from the initial weights (with the resumed optimizer). ``from_pretrained`` maps the names. The Trainer still
    restores the optimizer, scheduler, RNG states and data position. DeepSpeed and FSDP restore weights their own way.
    """
    # DeepSpeed, FSDP and peft (adapters only) restore weights their own way.
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled or is_peft_model(trainer.model):
        return
    if not QWEN2VL_RESUME.applies():
        return
    model = trainer.model
    restored = type(model).from_pretrained(checkpoint, dtype=model.dtype)
    model.load_state_dict(restored.state_dict())


class WandbImagePromptTable(TrainerCallback):
    """Lets TRL's ``log_completions`` W&B table hold image prompts: their image parts become an ``<image>`` text.

    TRL 1.16's ``GRPOTrainer.log`` builds the W&B table from its buffer of the latest completions, turning each image
    part of a prompt into ``{"type": "image"}`` beside the ``{"type": "text", "text": ...}`` parts; W&B 0.31 cannot
    type a column whose dicts have different keys and raises "Data row contained incompatible types" at the first
    logging step, killing the run. There is no public hook between the buffer and the table: this callback rewrites
    the buffered prompts (TRL's private ``_logs``) to text in ``on_log``, which ``GRPOTrainer.log`` calls just before
    it builds the table. Images still reach the table through its ``image`` column; completions, rewards and
    advantages are untouched, and so is the parquet copy's content apart from the prompt column.
    """

    marker = "<image>"

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    @classmethod
    def needed(cls, trainer) -> bool:
        args = trainer.args
        return bool(getattr(args, "log_completions", False)) and "wandb" in (args.report_to or [])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        prompts = getattr(self.trainer, "_logs", {}).get("prompt")
        if prompts is None:
            logger.warning("%s: TRL's completion buffer is gone; W&B may refuse image prompts", type(self).__name__)
            return
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, list):
                prompts[i] = [self._as_text(turn) for turn in prompt]

    @classmethod
    def _as_text(cls, turn):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), list):
            return turn
        parts = [
            cls.marker if isinstance(p, dict) and p.get("type") in ("image", "video") else _part_text(p)
            for p in turn["content"]
        ]
        return {"role": turn.get("role", ""), "content": "".join(parts)}


def _part_text(part) -> str:
    return (part.get("text") or "") if isinstance(part, dict) else str(part)


def compat_callbacks(trainer) -> list[TrainerCallback]:
    """The workaround callbacks this trainer needs with the installed libraries (none once upstream is fixed)."""
    if hasattr(trainer, "reward_funcs") and WandbImagePromptTable.needed(trainer) and WANDB_IMAGE_TABLE.applies():
        return [WandbImagePromptTable(trainer)]
    return []
