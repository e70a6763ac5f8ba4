"""Workarounds for upstream bugs that leave no public route, each gated on the library version and citing its issue.

Each has a test (tests/test_compat.py) that fails once upstream is fixed, so the workaround can be dropped.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


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
