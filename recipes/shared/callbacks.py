"""Reporting callbacks of the recipes: trajectory dumps, prompt ids in TRL's completions, a readable log history.

All go through public routes: `transformers.TrainerCallback` events and their documented arguments, the reward
functions' keyword arguments (every dataset column, and TRL's ``log_extra``), and the files TRL's own completions
logging writes. No trainer is subclassed and nothing is generated or scored twice. The one workaround left (W&B
tables with image prompts) lives in `recipes.shared.compat`.

The per-step curves need no callback: TRL 1.16's GRPOTrainer logs, at every ``logging_steps`` (to
``trainer_state.json`` and, prefixed ``train/``, to W&B) ``rewards/<name>_reward/mean|std`` for every reward
(``reflection_reward`` is the "aha" monitor: the fraction of completions with self-reflection phrases, weight 0),
``reward`` and ``reward_std`` (the weighted total), ``completions/mean_length|min_length|max_length`` and
``completions/clipped_ratio`` (completions cut at ``max_completion_length``), ``kl`` (when ``beta`` > 0),
``entropy``, ``frac_reward_zero_std``, ``clip_ratio/*``, ``loss``, ``grad_norm`` and ``learning_rate``.

`PromptIdLogger` (GRPO runs, wrapped around the first reward function when the trainer is built)
    Logs each completion's record ``id`` with TRL's ``log_extra`` reward argument, so TRL's completions table
    (printed, ``<output_dir>/completions/completions_*.parquet`` and the W&B table ``completions``) has a
    ``prompt_id`` column. The rewards are the wrapped function's, unchanged, under its own name.

`TrajectoryDumpCallback` (``dump_trajectories: true``, off by default; GRPO runs with ``log_completions: true``)
    Writes ``<output_dir>/trajectories/step-000001.jsonl`` for every logged step: TRL's completions file of that
    step (its latest generation batch, every process's completions included), one JSON object per completion,
    written atomically by the main process::

        {"step": 1, "prompt_id": "array/SAT:train:42", "completion": "...",
         "rewards": {"accuracy_reward": 1.0, "format_reward": 1.0, "reflection_reward": 0.0},
         "reward": 2.0, "advantage": 0.93}

    ``rewards`` holds each reward function's raw value (``null`` when the function could not judge), ``reward``
    their weighted sum (what the advantage is computed from) and ``advantage`` the trainer's own advantage. The G
    completions of one prompt share a ``prompt_id``. One file per logging step (``logging_steps: 1`` gives every
    step); with ``num_iterations > 1`` a batch that serves several steps is written once, under the first.

W&B's completions table (``log_completions: true``): TRL logs it, with the prompt images (``log_multimodal``, on by
default), as a ``run_table`` artifact (``run-<id>-completions``) holding the table and its images
(``media/images/*.png``); offline (``WANDB_MODE=offline``) the files wait in the run folder and W&B's staging folder
(``$WANDB_DATA_DIR``, default ``~/.local/share/wandb``) until ``wandb sync`` uploads them. At the paper's scale
(logging_steps 1, 8 prompts a step) that is about 8 images a step: set ``log_multimodal: false`` to keep text only.

`LogHistoryCallback` (always attached)
    Keeps ``<output_dir>/trainer_state.json`` current at every log and at the end of training, so
    ``python -m recipes.compare`` can read a finished, running or crashed run without a checkpoint.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from transformers import TrainerCallback

from data_prep.files import write_atomic
from recipes.shared.args import RecipeArguments
from recipes.shared.compat import compat_callbacks
from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

PROMPT_ID_COLUMN = "prompt_id"
TRAJECTORY_DIR = "trajectories"
TRAJECTORY_FILE = "step-{step:06d}.jsonl"
TRAINER_STATE = "trainer_state.json"
# Where TRL 1.16's log_completions writes each logged step's table (GRPOTrainer.log).
COMPLETIONS_FILE = Path("completions") / "completions_{step:05d}.parquet"
IMAGE_MARKER = "<image>"


# --- prompt ids: passed by the trainer to the reward functions, logged with TRL's `log_extra` ------------------------


class PromptIdLogger:
    """Wraps one reward function: logs each completion's record ``id`` with TRL's ``log_extra``, then delegates.

    GRPOTrainer passes every dataset column to reward functions, ``id`` included, and a ``log_extra`` callable whose
    columns land beside the completions in TRL's completions table. Picklable; ``__name__`` is the wrapped
    function's, so TRL's log keys do not change.

    Example:
        >>> def one(completions, **kwargs):
        ...     return [1.0] * len(completions)
        >>> logged = {}
        >>> wrapped = PromptIdLogger(one)
        >>> def log_extra(column, values):
        ...     logged[column] = values
        >>> wrapped(completions=["a", "b"], id=["x", "x"], log_extra=log_extra)
        [1.0, 1.0]
        >>> wrapped.__name__, logged
        ('one', {'prompt_id': ['x', 'x']})
    """

    def __init__(self, reward_func: Callable) -> None:
        self.reward_func = reward_func
        self.__name__ = getattr(reward_func, "__name__", type(reward_func).__name__)

    def __call__(self, *args, **kwargs):
        log_extra = kwargs.get("log_extra")
        if log_extra is not None:
            ids = kwargs.get("id")
            log_extra(PROMPT_ID_COLUMN, list(ids) if ids is not None else [None] * len(kwargs["completions"]))
        return self.reward_func(*args, **kwargs)


def log_prompt_ids(reward_funcs: Sequence) -> list:
    """The reward functions to build a GRPOTrainer with, the first plain one wrapped in a `PromptIdLogger`.

    Reward models (``torch.nn.Module`` or a model id) and async functions are left alone: TRL gives them no
    ``log_extra``. With none of the plain kind the list is returned unchanged (no ``prompt_id`` column then).
    """
    funcs = list(reward_funcs)
    for i, func in enumerate(funcs):
        if isinstance(func, PromptIdLogger):
            return funcs
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
        if callable(func) and not isinstance(func, torch.nn.Module) and not is_async:
            funcs[i] = PromptIdLogger(func)
            return funcs
    return funcs


# --- trajectories: TRL's completions files, as JSON lines ------------------------------------------------------------


def _text(message: Any) -> str:
    """The text of a completion or prompt: a string, or a conversation whose parts are strings or typed parts."""
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        return _content_text(message.get("content"))
    if isinstance(message, (list, tuple)):
        return "".join(_text(turn) for turn in message)
    return "" if message is None else str(message)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("image", "video"):
                parts.append(IMAGE_MARKER)
            elif isinstance(part, dict):
                parts.append(part.get("text") or "")
            else:
                parts.append(str(part))
        return "".join(parts)
    return "" if content is None else str(content)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def trajectory_rows(table: list[dict[str, Any]], names: Sequence[str], weights: Sequence[float]) -> list[dict]:
    """One trajectory row per row of TRL's completions table (see the module docstring for the fields).

    Example:
        >>> table = [{"step": 3, "prompt": "q", "completion": [{"role": "assistant", "content": "<answer>A</answer>"}],
        ...           "accuracy_reward": 1.0, "format_reward": float("nan"), "prompt_id": "sat:1", "advantage": 0.5}]
        >>> trajectory_rows(table, ["accuracy_reward", "format_reward"], [1.0, 1.0])
        [{'step': 3, 'prompt_id': 'sat:1', 'completion': '<answer>A</answer>', 'rewards': {'accuracy_reward': 1.0, \
'format_reward': None}, 'reward': 1.0, 'advantage': 0.5}]
    """
    rows = []
    for entry in table:
        values = {name: _number(entry.get(name)) for name in names}
        judged = [(w, v) for w, v in zip(weights, values.values(), strict=True) if v is not None]
        rows.append(
            {
                "step": int(entry["step"]),
                "prompt_id": entry.get(PROMPT_ID_COLUMN),
                "completion": _text(entry.get("completion")),
                "rewards": values,
                "reward": sum(w * v for w, v in judged) if judged else None,
                "advantage": _number(entry.get("advantage")),
            }
        )
    return rows


class TrajectoryDumpCallback(TrainerCallback):
    """Writes ``<output_dir>/trajectories/step-NNNNNN.jsonl`` per logged step from TRL's completions files.

    TRL writes a step's completions file while logging it, after the callbacks' ``on_log``; each step logged in
    this session is converted at the next event that finds its file (the next log, step, save or the end of
    training), so a file left by an earlier, killed session is never taken for this session's.
    """

    def __init__(self, trainer) -> None:
        if not hasattr(trainer, "reward_funcs"):
            raise RecipeError(
                f"dump_trajectories needs a GRPO run ({type(trainer).__name__} samples no completions); "
                "remove dump_trajectories from this config"
            )
        if not getattr(trainer.args, "log_completions", False):
            raise RecipeError(
                "dump_trajectories writes the completions TRL logs: set log_completions: true (add "
                "log_multimodal: false to keep images out of W&B), or remove dump_trajectories"
            )
        self.names = list(trainer.reward_func_names)
        self.weights = [float(w) for w in trainer.reward_weights.tolist()]
        self.output_dir = Path(trainer.args.output_dir)
        self.pending: set[int] = set()
        self.done: set[int] = set()
        self.last_rows: list[dict] | None = None

    def _flush(self, state, final: bool = False) -> None:
        if not state.is_world_process_zero:
            return
        for step in sorted(self.pending):
            path = self.output_dir / str(COMPLETIONS_FILE).format(step=step)
            if path.is_file():
                self._dump(step, pq.read_table(path).to_pylist())
                self.pending.discard(step)
                self.done.add(step)
            elif final:
                logger.warning("no trajectories for step %d: TRL wrote no %s", step, path)

    def _dump(self, step: int, table: list[dict]) -> None:
        rows = trajectory_rows(table, self.names, self.weights)
        unstamped = [{k: v for k, v in row.items() if k != "step"} for row in rows]
        if not rows or unstamped == self.last_rows:  # the same generation batch, already written
            return
        self.last_rows = unstamped
        for row in rows:
            row["step"] = step
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_atomic(self.output_dir / TRAJECTORY_DIR / TRAJECTORY_FILE.format(step=step), text)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._flush(state)
        if state.global_step not in self.done:
            self.pending.add(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._flush(state)

    def on_save(self, args, state, control, **kwargs):
        self._flush(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush(state, final=True)


class LogHistoryCallback(TrainerCallback):
    """Keeps ``<output_dir>/trainer_state.json`` (the run's log history) current, for `recipes.report.compare`."""

    def _write(self, args, state) -> None:
        if state.is_world_process_zero:
            text = json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n"
            write_atomic(Path(args.output_dir) / TRAINER_STATE, text)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._write(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(args, state)


def reporting_callbacks(trainer, script_args) -> list[TrainerCallback]:
    """The callbacks a recipe run gets: log history always, trajectories when asked, upstream workarounds if needed."""
    callbacks: list[TrainerCallback] = [LogHistoryCallback(), *compat_callbacks(trainer)]
    if script_args.dump_trajectories:
        callbacks.append(TrajectoryDumpCallback(trainer))
    return callbacks


def setup_reporting(script_args: RecipeArguments, training_args, model_args=None) -> None:
    """W&B project, group, tags and run name from the config, and W&B's files inside the run's output folder.

    An exported WANDB_PROJECT / WANDB_RUN_GROUP / WANDB_DIR wins over the config. The tags ``experiment:<name of
    the output folder>``, ``model:<model folder or hub name>`` and ``seed:<seed>`` are added to any WANDB_TAGS; a
    run without ``run_name`` is named ``<experiment>-<model>-seed<seed>``. `recipes.report.compare` finds the offline
    run under ``<output_dir>/wandb``.
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
    if "wandb" in (training_args.report_to or []) and not script_args.dry_run:  # a dry run writes nothing
        Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)


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
