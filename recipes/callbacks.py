"""Reporting callbacks of the recipes: trajectory dumps, a W&B-safe completions table, a readable log history.

All are plain `transformers.TrainerCallback`s added by `recipes.common.attach_callbacks`; no trainer is subclassed
and nothing is generated or scored twice: they reuse what `trl.GRPOTrainer` already computed.

The per-step curves need no callback: TRL 1.16's GRPOTrainer logs, at every ``logging_steps`` (to
``trainer_state.json`` and, prefixed ``train/``, to W&B) ``rewards/<name>_reward/mean|std`` for every reward
(``reflection_reward`` is the "aha" monitor: the fraction of completions with self-reflection phrases, weight 0),
``reward`` and ``reward_std`` (the weighted total), ``completions/mean_length|min_length|max_length`` and
``completions/clipped_ratio`` (completions cut at ``max_completion_length``), ``kl`` (when ``beta`` > 0),
``entropy``, ``frac_reward_zero_std``, ``clip_ratio/*``, ``loss``, ``grad_norm`` and ``learning_rate``.

`TrajectoryDumpCallback` (``dump_trajectories: true``, off by default; GRPO runs only)
    After every optimizer step that sampled new completions, writes ``<output_dir>/trajectories/step-000001.jsonl``
    (one file per step, named by the global step the completions were sampled for, written atomically by the
    main process). One JSON object per completion, every process's completions included::

        {"step": 1, "prompt_id": "array/SAT:train:42", "completion": "...",
         "rewards": {"accuracy_reward": 1.0, "format_reward": 1.0, "reflection_reward": 0.0},
         "reward": 2.0, "advantage": 0.93}

    ``prompt_id`` is the record's ``id`` column, ``rewards`` each reward function's raw value (``null`` when the
    function could not judge), ``reward`` their weighted sum (what the advantage is computed from) and
    ``advantage`` the trainer's advantage. The G completions of one prompt share a ``prompt_id``. With
    ``num_iterations > 1`` (or ``steps_per_generation`` above the accumulation steps) one sample serves several
    optimizer steps and is written once, under the first of them.

`CompletionsTableCallback` (attached whenever a GRPO run sets ``log_completions: true``)
    TRL's ``log_completions`` prints sample completions, writes ``<output_dir>/completions/completions_*.parquet``
    and logs a W&B table ``completions`` with the prompt images (``log_multimodal``, on by default). With image
    prompts TRL 1.16 + wandb 0.31 fail at the first logging step ("Data row contained incompatible types"): the
    prompt column mixes ``{"type": "image"}`` and ``{"type": "text", "text": ...}`` parts, which W&B tables cannot
    type. This callback rewrites the logged prompts to text (an ``<image>`` marker per image) just before TRL builds
    the table, and adds a ``prompt_id`` column. W&B stores each logged table as a ``run_table`` artifact
    (``run-<id>-completions``) holding the table and its images (``media/images/*.png``, one per distinct image);
    offline (``WANDB_MODE=offline``) the run's ``.wandb`` file records it and the files wait in W&B's staging folder
    (``$WANDB_DATA_DIR``, default ``~/.local/share/wandb``) until ``wandb sync`` uploads them. At the paper's scale
    (logging_steps 1, 8 prompts a step) that is about 8 images a step: set ``log_multimodal: false`` to keep text only.

`LogHistoryCallback` (always attached)
    Keeps ``<output_dir>/trainer_state.json`` current at every log and at the end of training, so
    ``python -m recipes.compare`` can read a finished, running or crashed run without a checkpoint.

Both GRPO callbacks read the trainer's buffer of the latest sampled completions, a private attribute of TRL 1.16
(``GRPOTrainer._logs``); `latest_rollouts` is the only place that touches it and fails with a clear message if a
TRL upgrade changes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from recipes.args import RecipeArguments

logger = logging.getLogger(__name__)

PROMPT_ID_COLUMN = "prompt_id"
TRAJECTORY_DIR = "trajectories"
TRAJECTORY_FILE = "step-{step:06d}.jsonl"
TRAINER_STATE = "trainer_state.json"
IMAGE_MARKER = "<image>"


class TrlCompatibilityError(RuntimeError):
    """The installed TRL no longer exposes what these callbacks read (they were written against TRL 1.16)."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- the one place that reads GRPOTrainer's private rollout buffer -------------------------------------------------


def latest_rollouts(trainer) -> dict[str, Any]:
    """The completions of the trainer's latest generation batch (all processes), as TRL 1.16 buffers them.

    Returns a dict with ``prompt``, ``completion``, ``advantages``, ``images`` (deques, one item per completion),
    ``rewards`` and ``extra`` (dicts of deques, one per reward function / extra column). The objects are the
    trainer's own: callers must not mutate them, except `CompletionsTableCallback` which rewrites prompts in place.
    """
    logs = getattr(trainer, "_logs", None)
    needed = ("prompt", "completion", "rewards", "advantages", "extra", "images")
    if not isinstance(logs, dict) or any(key not in logs for key in needed):
        raise TrlCompatibilityError(
            f"{type(trainer).__name__} has no completion buffer `_logs` with keys {', '.join(needed)}: "
            "recipes/callbacks.py was written against TRL 1.16's GRPOTrainer. Install it (pip install 'trl==1.16.*') "
            "or turn off dump_trajectories / log_completions."
        )
    return logs


# --- prompt ids: passed by the trainer to the reward functions, logged with TRL's `log_extra` hook -------------------


class _PromptIdLogger:
    """Wraps one reward function: logs each completion's record ``id`` with TRL's ``log_extra``, then delegates.

    The trainer passes every dataset column to reward functions, ``id`` included, and a ``log_extra`` callable
    whose columns land next to the completions in its buffer (so in the W&B table too). The reward values are the
    wrapped function's, unchanged; TRL names its log keys at construction, so they do not change either.
    """

    def __init__(self, reward_func: Callable, trainer) -> None:
        self.reward_func = reward_func
        self.__name__ = getattr(reward_func, "__name__", type(reward_func).__name__)
        self._trainer = trainer
        self.train_calls = 0  # generation batches scored in training (evaluation batches are not counted)

    def __call__(self, *args, **kwargs):
        log_extra = kwargs.get("log_extra")
        if log_extra is not None:
            ids = kwargs.get("id")
            log_extra(PROMPT_ID_COLUMN, list(ids) if ids is not None else [None] * len(kwargs["completions"]))
        if self._trainer.model.training:
            self.train_calls += 1
        return self.reward_func(*args, **kwargs)


def install_prompt_ids(trainer) -> _PromptIdLogger:
    """Make the trainer log prompt ids with its completions (idempotent); returns the wrapper, which counts batches."""
    import torch.nn as nn
    from trl.trainer.utils import is_async_callable

    funcs = trainer.reward_funcs
    for func in funcs:
        if isinstance(func, _PromptIdLogger):
            return func
    for i, func in enumerate(funcs):
        if callable(func) and not isinstance(func, nn.Module) and not is_async_callable(func):
            funcs[i] = _PromptIdLogger(func, trainer)
            return funcs[i]
    raise ValueError(
        "trajectory dumps and prompt ids need at least one plain (synchronous, non-model) reward function; "
        f"this run has: {', '.join(trainer.reward_func_names)}"
    )


def _text(message: Any) -> str:
    """The text of a completion or prompt: a string, or a conversation whose parts are strings or typed parts."""
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        return _content_text(message.get("content"))
    if isinstance(message, (list, tuple)):
        return "".join(_text(turn) for turn in message)
    return str(message)


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
    value = float(value)
    return None if math.isnan(value) else value


# --- callbacks ---------------------------------------------------------------------------------------------------


class TrajectoryDumpCallback(TrainerCallback):
    """Writes ``<output_dir>/trajectories/step-NNNNNN.jsonl`` per step: prompt id, completion, rewards, advantage."""

    def __init__(self, trainer) -> None:
        if not hasattr(trainer, "reward_funcs"):
            raise ValueError(
                f"dump_trajectories needs a GRPO run ({type(trainer).__name__} samples no completions); "
                "remove dump_trajectories from this config"
            )
        latest_rollouts(trainer)  # fail at start-up, not after the first step, if TRL changed
        self.trainer = trainer
        self.prompt_ids = install_prompt_ids(trainer)
        self.directory = Path(trainer.args.output_dir) / TRAJECTORY_DIR
        self._dumped_calls = 0

    def on_step_end(self, args, state, control, **kwargs):
        fresh = self.prompt_ids.train_calls != self._dumped_calls
        self._dumped_calls = self.prompt_ids.train_calls
        if fresh and state.is_world_process_zero:
            rows = trajectory_rows(self.trainer, state.global_step)
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            atomic_write_text(self.directory / TRAJECTORY_FILE.format(step=state.global_step), text)


def trajectory_rows(trainer, step: int) -> list[dict[str, Any]]:
    """One dict per completion of the latest generation batch (see the module docstring for the fields)."""
    logs = latest_rollouts(trainer)
    completions = list(logs["completion"])
    n = len(completions)
    # Every buffer is extended once per generation batch, so the latest batch is the last n items of each.
    ids = list(logs["extra"].get(PROMPT_ID_COLUMN, []))[-n:] or [None] * n
    names = list(trainer.reward_func_names)
    rewards = {name: list(logs["rewards"][name])[-n:] for name in names}
    weights = [float(w) for w in trainer.reward_weights.tolist()]
    advantages = list(logs["advantages"])[-n:]
    rows = []
    for i, completion in enumerate(completions):
        values = {name: _number(rewards[name][i]) for name in names}
        judged = [(w, v) for w, v in zip(weights, values.values(), strict=True) if v is not None]
        rows.append(
            {
                "step": step,
                "prompt_id": ids[i],
                "completion": _text(completion),
                "rewards": values,
                "reward": sum(w * v for w, v in judged) if judged else None,
                "advantage": _number(advantages[i]),
            }
        )
    return rows


class CompletionsTableCallback(TrainerCallback):
    """Lets TRL's ``log_completions`` W&B table hold image prompts (text prompts + images + prompt ids)."""

    def __init__(self, trainer) -> None:
        latest_rollouts(trainer)
        self.trainer = trainer
        install_prompt_ids(trainer)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # GRPOTrainer.log calls the callbacks' on_log first, then builds its table from the buffer.
        if state.is_world_process_zero:
            prompts = latest_rollouts(self.trainer)["prompt"]
            for i, prompt in enumerate(prompts):
                if isinstance(prompt, list):
                    prompts[i] = [
                        {"role": turn.get("role", ""), "content": _content_text(turn.get("content"))}
                        if isinstance(turn, dict)
                        else turn
                        for turn in prompt
                    ]


class LogHistoryCallback(TrainerCallback):
    """Keeps ``<output_dir>/trainer_state.json`` (the run's log history) current, for `recipes.compare`."""

    def _write(self, args, state) -> None:
        if state.is_world_process_zero:
            text = json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n"
            atomic_write_text(Path(args.output_dir) / TRAINER_STATE, text)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._write(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(args, state)


def reporting_callbacks(trainer, script_args) -> list[TrainerCallback]:
    """The callbacks a recipe run gets: log history always, the GRPO ones when its config asks for them."""
    callbacks: list[TrainerCallback] = [LogHistoryCallback()]
    if getattr(trainer.args, "log_completions", False) and hasattr(trainer, "reward_funcs"):
        callbacks.append(CompletionsTableCallback(trainer))
    if script_args.dump_trajectories:
        callbacks.append(TrajectoryDumpCallback(trainer))
    return callbacks


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
