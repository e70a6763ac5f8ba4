"""CV-Bench along training: evaluate every model snapshot of a run, one summary per step, into its W&B run.

    python recipes/eval_curve.py --run_dir outputs/paper/grpo_base                 # every snapshot saved so far
    python recipes/eval_curve.py --run_dir outputs/paper/grpo_base --watch true    # beside training, until it ends
    accelerate launch --multi_gpu --num_processes 8 recipes/eval_curve.py --run_dir outputs/paper/grpo_base
    python recipes/eval_curve.py --config recipes/configs/eval/tiny.yaml --run_dir outputs/quickstart/seed0/grpo_base

The paper saved a checkpoint every 100 steps and reported CV-Bench along training (a reproduction reached 58.4% at
step 1000; which step gave the paper's 59.47% is not stated): this draws that curve. Training with
``model_save_steps`` (the paper configs: every 100 steps, bf16) writes ``<run>/models/step-<N>``
(`recipes.shared.snapshots`); each is evaluated by `recipes/eval_cvbench.py`'s own ``main`` (same config, options,
resumption, data-parallel processes) into ``<run>/eval_curve/step-<N>/``, and ``<run>/eval_curve/curve.json`` lists the
points (`recipes.evaluation.curve`). Re-running resumes: a step already scored is not generated again. ``--watch true``
keeps looking for new snapshots and stops once the run's final model has appeared and every snapshot is scored (or
after ``--watch_idle_hours`` without a new one: a crashed run). The points reach the training run's W&B run at their
step (``cvbench/*`` against ``cvbench/step``) when the run logged to W&B. ``python -m recipes.compare RUN ...`` draws
them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from trl import TrlParser

from recipes import eval_cvbench
from recipes.evaluation.config import EvalArguments, check_arguments
from recipes.evaluation.curve import CURVE_DIR, POINT_KIND, WandbCurve, wandb_target, write_curve
from recipes.evaluation.data import dataset_revision
from recipes.shared import provenance
from recipes.shared.cli import run_cli
from recipes.shared.errors import RecipeError
from recipes.shared.preflight import check_wandb
from recipes.shared.runs import weights_problem
from recipes.shared.snapshots import MODELS_DIR, finished_snapshots

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = eval_cvbench.DEFAULT_CONFIG


@dataclass
class CurveArguments(EvalArguments):
    """The evaluation's options (`EvalArguments`), applied to every snapshot, plus the curve's own."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Not used: the curve evaluates <run_dir>/models/step-<N>."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Not used: the curve writes <run_dir>/eval_curve/step-<N>."}
    )
    run_dir: str | None = field(default=None, metadata={"help": "The training run's output_dir."})
    watch: bool = field(
        default=False,
        metadata={"help": "Keep evaluating new snapshots as they appear; stop after the run's final model."},
    )
    poll_seconds: float = field(default=60.0, metadata={"help": "--watch: how often to look for new snapshots."})
    watch_idle_hours: float = field(
        default=6.0, metadata={"help": "--watch: stop after this long without a new snapshot (a crashed run)."}
    )
    log_to_wandb: str = field(
        default="auto",
        metadata={
            "help": "Log the points to the training run's W&B run: auto (when it has one), true, false.",
            "choices": ("auto", "true", "false"),
        },
    )


def main(args: CurveArguments) -> list[int]:
    """Evaluate the snapshots not scored yet (all of them, or as they appear with --watch); the steps evaluated."""
    run_dir = check_curve_arguments(args)
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=12))
    check_arguments(args, state.num_processes)
    dataset_revision(args.dataset, args.dataset_revision)
    target = wandb_target(run_dir, args.log_to_wandb) if state.is_main_process else None
    if target:
        check_wandb(["wandb"])  # a key, or WANDB_MODE offline: before any model loads
    wandb = WandbCurve(run_dir, *target) if target else None

    done: list[int] = []
    last_new = time.monotonic()
    try:
        while True:
            # The main process looks; every process evaluates the same steps, in order (data parallel per step).
            final, snapshots = broadcast_object_list([final_model_present(run_dir), finished_snapshots(run_dir)])
            todo = [(step, folder) for step, folder in snapshots.items() if step not in done]
            if not todo and not done and not args.watch:
                raise RecipeError(
                    f"{run_dir / MODELS_DIR} holds no model snapshot: train with model_save_steps (the paper configs "
                    "save one every 100 steps), or evaluate a single model with recipes/eval_cvbench.py"
                )
            for step, folder in todo:
                summary = evaluate_step(args, run_dir, step, folder, state.is_main_process)
                done.append(step)
                if state.is_main_process:
                    write_curve(run_dir)
                    if wandb is not None:
                        wandb.log(step, summary)
            last_new = time.monotonic() if todo else last_new
            if not args.watch or final:
                break
            if time.monotonic() - last_new > args.watch_idle_hours * 3600:
                logger.warning("no new snapshot in %s for %g h: stopping", run_dir, args.watch_idle_hours)
                break
            time.sleep(args.poll_seconds)
    finally:
        if wandb is not None:
            wandb.close()
    logger.info("CV-Bench curve of %s: %d step(s) evaluated -> %s", run_dir, len(done), run_dir / CURVE_DIR)
    return done


def check_curve_arguments(args: CurveArguments) -> Path:
    """The run folder, after refusing options the curve sets itself."""
    if args.model_name_or_path or args.output_dir:
        raise RecipeError(
            "the curve evaluates <run_dir>/models/step-<N> into <run_dir>/eval_curve/step-<N>: drop "
            "--model_name_or_path/--output_dir (recipes/eval_cvbench.py evaluates a single model)"
        )
    if not args.run_dir:
        raise RecipeError("give the training run's folder: --run_dir OUTPUT_DIR")
    run_dir = Path(args.run_dir).expanduser()
    if not run_dir.is_dir() and not (args.watch and not run_dir.exists()):  # --watch may start before training
        raise RecipeError(f"--run_dir {run_dir} is not a folder: give the output_dir of a training run")
    if args.poll_seconds <= 0 or args.watch_idle_hours <= 0:
        raise RecipeError("--poll_seconds and --watch_idle_hours must be positive")
    return run_dir


def final_model_present(run_dir: Path) -> bool:
    """Whether the run has saved its final model (written after its last snapshot)."""
    return (run_dir / "config.json").is_file() and weights_problem(run_dir) is None


def evaluate_step(args: CurveArguments, run_dir: Path, step: int, folder: Path, main_process: bool) -> dict | None:
    """One point: `recipes/eval_cvbench.py`'s main on ``folder`` into ``<run>/eval_curve/step-<step>``."""
    name = f"step-{step}"
    curve_dir = run_dir / CURVE_DIR
    if main_process:
        provenance.start(curve_dir, POINT_KIND, {"model": f"{MODELS_DIR}/{name}"}, name, owns=[name])
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(EvalArguments)}
    options.update(model_name_or_path=str(folder), output_dir=str(curve_dir / name))
    summary = eval_cvbench.main(EvalArguments(**options))
    if main_process:
        provenance.finish(curve_dir, name)
    return summary


def make_parser() -> TrlParser:
    return TrlParser((CurveArguments,))


if __name__ == "__main__":
    run_cli(main, make_parser(), None, DEFAULT_CONFIG)
