"""A run's checkpoints and inputs: which checkpoint it resumes, whether that checkpoint and the model folder are
sound, whether the data gives a step.

The output folder itself (what it may hold, what a run owns and may delete) is `recipes/shared/run_folder.py`, which
calls these in each recipe's `main`; the run's resolved configuration is `recipes/shared/resolved.py`.

* `check_model_folder` and `resolve_checkpoint` (before anything loads): the model folder is a model; the checkpoint
  to resume is complete, its optimizer state unpickles and its weights are finite.
* `check_enough_data` (before the model loads): the data gives at least one optimizer step.

A checkpoint is complete when its trainer state parses, its weights' safetensors headers open (every shard of a
sharded save), and its optimizer and scheduler states are readable archives (or DeepSpeed's own state folder is);
``last`` means the newest complete one. The checkpoint chosen is also checked in depth (the optimizer's pickle read
with its tensors memory-mapped, every weight checked for NaN), once, before the model loads.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open

from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")
# The top-level files of a model folder: what loading it (model, processor, tokenizer, generation settings) reads,
# and what a run saves there. The evaluation's fingerprint hashes exactly these.
MODEL_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.bin",
    "adapter_config.json",
    "config.json",
    "generation_config.json",
    "*processor_config.json",
    "tokenizer*.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
)


# --- checkpoints -----------------------------------------------------------------------------------------------------


def _archive_problem(path: Path) -> str | None:
    """Why a ``torch.save`` file cannot be loaded (it is a zip archive; a torn one has no central directory)."""
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile) as err:
        return f"{path.name} is unreadable ({err})"


def _safetensors_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
        return f"{path.name} is unreadable ({err})"


def weights_problem(folder: Path) -> str | None:
    """Why ``folder`` holds no loadable model weights (None when it does): a single file, or every shard."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            return f"{index.name} is unreadable ({err})"
        return next((p for p in (_safetensors_problem(folder / s) for s in shards) if p), None)
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (folder / name).is_file():
            return _safetensors_problem(folder / name)
    if (folder / "pytorch_model.bin").is_file():
        return _archive_problem(folder / "pytorch_model.bin")
    return "no model weights (model.safetensors)"


def checkpoint_step(path: str | Path) -> int:
    """The global step a complete checkpoint (`checkpoint_problem` is None) was saved at."""
    return int(json.loads((Path(path) / TRAINER_STATE).read_text())["global_step"])


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from (None when it is complete)."""
    path = Path(path)
    if not path.is_dir():
        return "not a folder"
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
        int(state["global_step"])
    except FileNotFoundError:
        return f"{TRAINER_STATE} is missing (the save was interrupted)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{TRAINER_STATE} is unreadable ({type(err).__name__}: {err})"
    tag_file = path / "latest"
    if tag_file.is_file():  # DeepSpeed keeps weights, optimizer and scheduler in its own state folder
        tag = path / tag_file.read_text().strip()
        states = sorted(tag.glob("*model_states.pt")) + sorted(tag.glob("*optim_states.pt"))
        if not any(p.name.endswith("optim_states.pt") for p in states):
            return f"DeepSpeed state {tag.name}/ holds no optimizer state"
        return next((f"{tag.name}/{p}" for p in map(_archive_problem, states) if p), None)
    problem = weights_problem(path)
    if problem:
        return problem
    optimizer = path / "optimizer.pt"
    if not optimizer.is_file() and (path / "optimizer.bin").is_file():
        optimizer = path / "optimizer.bin"
    return _archive_problem(optimizer) or _archive_problem(path / "scheduler.pt")


def checkpoints(folder: str | Path) -> list[Path]:
    """The ``checkpoint-<step>`` folders in ``folder``, newest (highest step) first."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)), reverse=True)


def _unpickle_problem(path: Path) -> str | None:
    """Why the optimizer state of a checkpoint does not load although its archive opens (a damaged pickle).

    The pickle is read in full; the tensors are memory-mapped, not read, so a multi-GB state costs little.
    """
    optimizer = next((path / n for n in ("optimizer.pt", "optimizer.bin") if (path / n).is_file()), None)
    if optimizer is None:
        return None  # DeepSpeed keeps its optimizer state elsewhere (checked as an archive)
    try:
        torch.load(optimizer, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - unpickling fails with many error types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"{optimizer.name} opens but does not load ({reason[:160]})"
    return None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [folder / n for n in ("model.safetensors", "adapter_model.safetensors") if (folder / n).is_file()]


def nonfinite_weights(path: str | Path) -> str | None:
    """The first weight of the checkpoint ``path`` holding NaN or infinite values (None when all are finite).

    Such a checkpoint was saved after training diverged: resuming from it can only go on producing NaN.
    """
    for file in _weight_files(Path(path)):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return f"{file.name}: {key} holds NaN or infinite values (training diverged before this save)"
    return None


def newest_complete_checkpoint(folder: str | Path, quiet: bool = False, deep: bool = False) -> Path | None:
    """The newest complete checkpoint in ``folder``; each newer incomplete one is logged with what is wrong.

    ``deep``: also unpickle each candidate's optimizer state (`_unpickle_problem`).
    """
    for path in checkpoints(folder):
        problem = checkpoint_problem(path) or (_unpickle_problem(path) if deep else None)
        if problem is None:
            return path
        if not quiet:
            logger.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return None


def _newest_good(folder: Path, skip: Path) -> str:
    """The newest checkpoint of ``folder`` other than ``skip`` that is complete and finite, as advice."""
    for path in checkpoints(folder):
        if path != skip and checkpoint_problem(path) is None and _unpickle_problem(path) is None:
            if nonfinite_weights(path) is None:
                return f"the newest good one there is {path}"
    return "none there is good"


def resolve_checkpoint(resume: str | bool | None, output_dir: str) -> str | None:
    """``resume_from_checkpoint``: a checkpoint path, or "last"/"true" for the newest complete one in ``output_dir``.

    An explicitly named checkpoint that is incomplete is refused, with the newest complete one in its folder. The
    chosen checkpoint's optimizer state is unpickled and its weights checked for NaN: a checkpoint that fails is
    refused, naming the newest good one ("last" skips one whose optimizer does not load, like a torn one).
    """
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() in ("last", "true"):
        path = newest_complete_checkpoint(output_dir, deep=True)
        if path is None:
            return None
    else:
        path = Path(resume)
        problem = checkpoint_problem(path) or _unpickle_problem(path)
        if problem:
            if path.parent.is_dir() and checkpoints(path.parent):
                newest = newest_complete_checkpoint(path.parent, quiet=True, deep=True)
                alternative = f"the newest complete one there is {newest}" if newest else "none there is complete"
            else:
                alternative = f"give a checkpoint-<step> folder or 'last' (the newest complete one in {output_dir})"
            raise RecipeError(f"cannot resume from {path}: {problem}; {alternative}")
    problem = nonfinite_weights(path)
    if problem:
        raise RecipeError(
            f"cannot resume from {path}: {problem}; {_newest_good(path.parent, path)} "
            "(give it as --resume_from_checkpoint, perhaps with a lower learning_rate)"
        )
    return str(path)


def check_model_folder(name_or_path: str) -> None:
    """Fail early, naming what was expected, when a local ``model_name_or_path`` is not a saved model.

    Hub ids (no local path of that name) are left to the loader.
    """
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return
    if not path.is_dir():
        raise RecipeError(f"model_name_or_path {path} is a file; give a model folder written by save_pretrained")
    if not (path / "config.json").is_file():
        saved = checkpoints(path)
        if saved:
            newest = newest_complete_checkpoint(path, quiet=True)
            raise RecipeError(
                f"model_name_or_path {path} is a run folder holding only checkpoints, no final model (config.json "
                f"and model.safetensors). Point it at a checkpoint{f', e.g. {newest}' if newest else ''}, or finish "
                f"the run (--resume_from_checkpoint last --output_dir {path})."
            )
        raise RecipeError(
            f"model_name_or_path {path} is not a model folder: expected config.json and model weights "
            "(model.safetensors), as written by save_pretrained, a recipe run or "
            "python -m data_prep.fixtures.tiny_model"
        )
    problem = weights_problem(path)
    if problem:
        raise RecipeError(f"model_name_or_path {path} holds config.json but {problem}")


# --- data ------------------------------------------------------------------------------------------------------------


def check_enough_data(rows: int, training_args) -> None:
    """Refuse a run that would take no optimizer step (and save its initial weights as "the trained model").

    One step takes ``per_device_train_batch_size`` × processes × ``gradient_accumulation_steps`` examples; for GRPO
    these are completions, ``num_generations`` per prompt, and TRL samples whole generation batches
    (``generation_batch_size``), dropping an incomplete one.
    """
    args = training_args
    if args.max_steps == 0 or (args.max_steps < 0 and args.num_train_epochs <= 0):
        raise RecipeError(
            f"max_steps is {args.max_steps} and num_train_epochs {args.num_train_epochs}: nothing would train; "
            "set max_steps to a positive number of steps (or -1 to train num_train_epochs epochs)"
        )
    per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    formula = (
        f"per_device_train_batch_size {args.per_device_train_batch_size} x {args.world_size} process(es) x "
        f"gradient_accumulation_steps {args.gradient_accumulation_steps}"
    )
    generations = getattr(args, "num_generations", None)
    if generations:
        batch = max(per_step, getattr(args, "generation_batch_size", None) or 0)
        needed, unit = batch // generations, "prompts"
        formula = f"{batch} completions ({formula}) / num_generations {generations}"
    else:
        needed, unit = per_step, "examples"
    if rows < needed:
        raise RecipeError(
            f"the training data has {rows} record(s) but one optimizer step takes {needed} {unit} ({formula}): "
            "the run would take no step and save the initial weights as the trained model. Use more records "
            "(dataset_path, max_train_samples) or a smaller batch."
        )
