"""Model snapshots along training: the model alone, 16-bit, with its processor, in ``<output_dir>/models/step-<N>``.

The paper saved a checkpoint every 100 steps and reported CV-Bench along training. Keeping every resumable
checkpoint for that (weights + fp32 master + Adam moments, ~31 GB each for Qwen2-VL-2B) costs ~0.85 TB a run; a
model-only bf16 save is ~4.4 GB. So the recipes keep a few resumable checkpoints (``save_total_limit``) and, every
``model_save_steps`` steps and at the end of training, a snapshot the curve command (`recipes/eval_curve.py`)
evaluates like any model folder.

Each snapshot is a ``save_pretrained`` folder (safetensors in ``model_save_dtype``, ``config.json`` stating that
dtype, generation config, processor and tokenizer). The state dict comes from accelerate's public
``Accelerator.get_state_dict`` on the trainer's outermost model, which under DeepSpeed ZeRO-3 gathers the 16-bit
consolidated weights (``stage3_gather_16bit_weights_on_model_save: true``, as in ``zero3.json``); every process
takes part, the main process writes. A snapshot is written to a hidden folder and renamed when complete, and
recorded in ``models/provenance.json`` (`recipes.shared.provenance`): only finished entries are snapshots; a resumed
run that reaches a step again replaces that step's snapshot (and what a killed save left), nothing else.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path

import torch
from transformers import TrainerCallback

from recipes.shared import provenance
from recipes.shared.preflight import snapshot_dtype

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
KIND = "model-snapshot"
STEP = re.compile(r"^step-(\d+)$")


def snapshot_name(step: int) -> str:
    return f"step-{step}"


def finished_snapshots(run_dir: str | Path) -> dict[int, Path]:
    """The complete snapshots of a run, by step: ``models/step-<N>`` folders whose record says finished."""
    folder = Path(run_dir) / MODELS_DIR
    found = {}
    for name, entry in provenance.read(folder).items():
        match = STEP.match(name)
        if match and entry.get("kind") == KIND and entry.get("state") == "finished" and (folder / name).is_dir():
            found[int(match.group(1))] = folder / name
    return dict(sorted(found.items()))


def tie(state_dict: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """The state dict with each tied parameter (the same module parameter under two names, e.g. the LM head and
    the embeddings) pointing at one tensor: DeepSpeed ZeRO-2's state dict holds separate copies, which
    ``save_pretrained`` would write twice."""
    first: dict[int, str] = {}
    tied = dict(state_dict)
    for name, param in model.named_parameters(remove_duplicate=False):
        source = first.setdefault(id(param), name)
        if source != name and name in tied and source in tied:
            tied[name] = tied[source]
    return tied


def cast(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors in ``dtype``; tensors sharing memory (tied embeddings) still share it, so that
    ``save_pretrained`` writes them once, as the trainer's own save does.

    Example:
        >>> w = torch.ones(2, 2)
        >>> out = cast({"embed": w, "lm_head": w, "step": torch.tensor(3)}, torch.bfloat16)
        >>> out["embed"] is out["lm_head"], out["embed"].dtype, out["step"].dtype
        (True, torch.bfloat16, torch.int64)
    """
    done: dict[tuple, torch.Tensor] = {}
    result = {}
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point():
            result[name] = tensor
            continue
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if where not in done:
            done[where] = tensor.to(dtype)
        result[name] = done[where]
    return result


class ModelSnapshotCallback(TrainerCallback):
    """Every ``model_save_steps`` steps and at the end of training, save ``<output_dir>/models/step-<N>``."""

    def __init__(self, trainer, script_args) -> None:
        self.trainer = trainer
        weights = str(next(trainer.model.parameters()).dtype).removeprefix("torch.")
        self.dtype = snapshot_dtype(script_args, trainer.args, weights)
        self.every = script_args.model_save_steps
        self.inputs = [getattr(trainer.model, "name_or_path", None), script_args.dataset_path]
        self.saved: set[int] = set()

    def _due(self, state) -> bool:
        every = self.every if self.every >= 1 else max(1, round(self.every * state.max_steps))
        return state.global_step > 0 and state.global_step % int(every) == 0

    def save(self, args, state) -> Path | None:
        """Save the snapshot of the current step (every process must call this: ZeRO-3 gathers the weights)."""
        step = state.global_step
        if step in self.saved:
            return None
        self.saved.add(step)
        accelerator = self.trainer.accelerator
        state_dict = accelerator.get_state_dict(self.trainer.model_wrapped)
        folder = Path(args.output_dir) / MODELS_DIR
        name = snapshot_name(step)
        target = folder / name
        if accelerator.is_main_process:
            # A resumed run reaching this step again, or a killed save: replace exactly what our record owns.
            provenance.delete_owned(folder, name, inputs=self.inputs)
            work = folder / f".{name}.tmp"
            provenance.start(folder, KIND, {"step": step, "dtype": self.dtype}, name, owns=[work, target])
            dtype = getattr(torch, self.dtype)
            model = accelerator.unwrap_model(self.trainer.model)
            state_dict = cast(tie(state_dict, model), dtype)
            model.save_pretrained(work, state_dict=state_dict, safe_serialization=True)
            if hasattr(model, "config") and not hasattr(model, "peft_config"):
                config = copy.deepcopy(model.config)
                config.dtype = dtype  # the weights' dtype, so that dtype "auto" loads them as saved
                config.save_pretrained(work)
            if self.trainer.processing_class is not None:
                self.trainer.processing_class.save_pretrained(work)
            os.replace(work, target)
            provenance.finish(folder, name)
            logger.info("saved the step-%d model (%s, no optimizer state) to %s", step, self.dtype, target)
        accelerator.wait_for_everyone()
        return target

    def on_step_end(self, args, state, control, **kwargs):
        if self._due(state):
            self.save(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        self.save(args, state)  # the last step, when the cadence did not end on it
