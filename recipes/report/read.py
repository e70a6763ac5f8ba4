"""Reading runs for the report: a recipe's run folder (log history, CV-Bench summary, resolved configuration) or a
W&B run through the public API. Where each number is read from: `recipes.report.compare`'s docstring.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from recipes.evaluation.curve import STEP_METRIC as CURVE_STEP
from recipes.evaluation.curve import curve_series
from recipes.report.checks import cvbench_problem
from recipes.report.runlog import CompareError, RunLog

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
RESOLVED_CONFIG = "resolved_config.yaml"
CVBENCH_SUMMARY = Path("eval_cvbench") / "summary.json"
# transformers' WandbCallback logs every metric as "train/<name>" and the optimizer step as "train/global_step".
WANDB_PREFIX = "train/"
WANDB_STEP = "train/global_step"
# The Trainer's end-of-training entry in the log history: one more row, with no per-step metric worth a point.
TRAIN_END_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}
SEED_SUFFIX = re.compile(r"(?:^|[-_])seed[-_]?(\d+)$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _nonfinite(value: Any) -> float | None:
    """NaN or ±inf (a float, or the text JSON writers use for them), else None."""
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        value = float(value.strip().lower().replace("infinity", "inf"))
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return value
    return None


def series_from_rows(
    rows: Iterable[dict[str, Any]],
    step_key: str,
    strip_prefix: str = "",
    diverged: dict[str, tuple[float, float]] | None = None,
) -> dict:
    """Metric series from log rows (dicts holding a step and metrics); non-numeric and missing values are skipped.
    NaN and ±inf are no points of a series: each metric's first one goes to ``diverged`` (``metric: (step, value)``),
    so that the divergence is shown rather than the last finite value passed off as the final one.

    Example:
        >>> rows = [{"step": 1, "reward": 0.5, "kl": None}, {"step": 2, "reward": 0.7, "kl": 0.01}]
        >>> series_from_rows(rows, step_key="step")
        {'reward': [(1.0, 0.5), (2.0, 0.7)], 'kl': [(2.0, 0.01)]}
        >>> series_from_rows([{"train/global_step": 3, "train/kl": 0.1}], "train/global_step", strip_prefix="train/")
        {'kl': [(3.0, 0.1)]}
    """
    series: dict[str, dict[float, float]] = {}
    for row in rows:
        step = _number(row.get(step_key))
        if step is None or TRAIN_END_KEYS & row.keys():
            continue
        for key, value in row.items():
            if key in (step_key, "step", "epoch") or key.startswith("_"):
                continue
            name = key[len(strip_prefix) :] if strip_prefix and key.startswith(strip_prefix) else key
            if (bad := _nonfinite(value)) is not None and diverged is not None:
                if name not in diverged or step < diverged[name][0]:
                    diverged[name] = (step, bad)
            value = _number(value)
            if value is None:
                continue
            series.setdefault(name, {})[step] = value  # a step logged twice keeps its latest value
    return {key: sorted(points.items()) for key, points in series.items()}


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CompareError(f"cannot read {path}: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise CompareError(f"{path} has no log_history list: is it a transformers trainer_state.json?")
    return state


def find_trainer_state(run_dir: Path) -> Path:
    """The run's most advanced trainer_state.json: its own, or its newest checkpoint's (by step number)."""
    checkpoints = [c for c in run_dir.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()]
    newest = max(checkpoints, key=lambda c: int(c.name.split("-")[-1]), default=None)
    files = [p for p in (run_dir / TRAINER_STATE, newest and newest / TRAINER_STATE) if p and p.is_file()]
    if not files:
        raise CompareError(
            f"no log history in {run_dir}: found neither {run_dir / TRAINER_STATE} nor "
            f"{run_dir}/checkpoint-*/{TRAINER_STATE}. Give the output_dir of a recipe run (the recipes keep "
            "trainer_state.json there from the first logged step), or a synced W&B run: --wandb ENTITY/PROJECT/RUN_ID."
        )
    return max(files, key=lambda p: (_read_state(p).get("global_step") or 0, p.parent == run_dir))


def read_cvbench(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = run_dir / CVBENCH_SUMMARY
    if not path.is_file():
        return None, None
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("ignoring unreadable CV-Bench summary %s: %s", path, err)
        return None, None
    return (summary, str(path)) if isinstance(summary, dict) else (None, None)


def read_resolved_config(run_dir: Path) -> dict[str, Any]:
    """``RUN_DIR/resolved_config.yaml`` as a dict (flat, or one level of sections); empty when absent or unreadable."""
    path = run_dir / RESOLVED_CONFIG
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        logger.warning("ignoring unreadable %s (arm and seed come from the folder name): %s", path, err)
        return {}
    if not isinstance(config, dict):
        return {}
    flat = {k: v for section in config.values() if isinstance(section, dict) for k, v in section.items()}
    return {**flat, **config}


def _seed(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


def experiment_of(name: str, parent: str = "") -> tuple[str, int | None]:
    """(arm, seed) from an experiment or folder name: a trailing seed marker is the seed, not part of the arm.

    Example:
        >>> experiment_of("grpo_base"), experiment_of("grpo-seed2"), experiment_of("seed3", parent="sft")
        (('grpo_base', None), ('grpo', 2), ('sft', 3))
        >>> experiment_of("sft", parent="seed4")  # outputs/seed4/sft
        ('sft', 4)
    """
    if match := SEED_SUFFIX.search(name):
        return name[: match.start()] or experiment_of(parent)[0] or name, int(match.group(1))
    match = SEED_SUFFIX.fullmatch(parent)
    return name, int(match.group(1)) if match else None


def load_run_dir(run_dir: str | Path, name: str | None = None, scalars: dict[str, float] | None = None) -> RunLog:
    """A recipe run's log history, CV-Bench summary, arm and seed (see the module docstring for where each is read)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CompareError(f"{path} is not a folder; give the output_dir of a training run")
    state_path = find_trainer_state(path)
    diverged: dict[str, tuple[float, float]] = {}
    series = series_from_rows(_read_state(state_path)["log_history"], step_key="step", diverged=diverged)
    if not series and not diverged:
        raise CompareError(f"{state_path} holds no logged metrics yet (empty log_history): wait for the first log")
    series.update(curve_series(path))  # CV-Bench at each evaluated snapshot, when the curve was run
    cvbench, cvbench_source = read_cvbench(path)
    config = read_resolved_config(path)
    folder = Path(str(config["output_dir"])) if config.get("output_dir") else path.resolve()
    arm, folder_seed = experiment_of(folder.name, folder.parent.name)
    seed = _seed(config.get("seed"))
    run = RunLog(name or path.name, str(state_path), series, cvbench, cvbench_source, arm=arm)
    run.seed = folder_seed if seed is None else seed
    run.scalars = dict(scalars or {})
    run.diverged = diverged
    run.config = {k: v for k, v in config.items() if isinstance(v, dict)} or config  # its sections, else flat
    if cvbench is not None and (why := cvbench_problem(path, cvbench)):
        logger.warning("CV-Bench summary %s not counted as %s's score: %s", cvbench_source, run.name, why)
        run.cvbench_excluded = why
    return run


# --- W&B runs --------------------------------------------------------------------------------------------------------


def run_log_from_api(run: Any, source: str) -> RunLog:
    """A `RunLog` from a `wandb.apis.public.Run`, read through its public attributes only: ``scan_history()`` (the
    full, unsampled history), ``config``, ``tags``, ``group``, ``name`` and ``id``."""
    diverged: dict[str, tuple[float, float]] = {}
    rows = list(run.scan_history())
    series = series_from_rows(rows, step_key=WANDB_STEP, strip_prefix=WANDB_PREFIX, diverged=diverged)
    if not series and not diverged:
        raise CompareError(f"W&B run {source} has no logged training metrics ({WANDB_STEP} missing)")
    # The CV-Bench curve (recipes/eval_curve.py) is logged against its own step metric.
    curve = series_from_rows(rows, step_key=CURVE_STEP)
    series.update({key: points for key, points in curve.items() if key.startswith("cvbench/")})
    # The public API unwraps config values; older exports keep W&B's {"value": ...} wrapper.
    config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in dict(run.config or {}).items()}
    tags = [str(t) for t in getattr(run, "tags", None) or []]
    tagged = dict(t.split(":", 1) for t in tags if ":" in t)
    output_dir = Path(str(config["output_dir"])).name if config.get("output_dir") else None
    arm, name_seed = experiment_of(tagged.get("arm") or tagged.get("experiment") or output_dir or str(run.name))
    seed = next((s for s in (_seed(tagged.get("seed")), _seed(config.get("seed")), name_seed) if s is not None), None)
    info = {"id": run.id, "group": getattr(run, "group", None), "tags": tags}
    log = RunLog(str(run.name or run.id), source, series, arm=arm, seed=seed, info=info, config=config)
    log.diverged = diverged
    return log


def load_wandb_api(run_path: str) -> RunLog:
    """A W&B run through the public API (``ENTITY/PROJECT/RUN_ID`` as in the run's URL, ``/runs/`` allowed)."""
    if not re.fullmatch(r"[^/\s]+/[^/\s]+/(runs/)?[^/\s]+", run_path):
        raise CompareError(
            f"W&B run {run_path!r} is neither an existing local W&B run folder nor a run path ENTITY/PROJECT/RUN_ID"
        )
    try:
        import wandb

        run = wandb.Api(timeout=60).run(run_path.replace("/runs/", "/"))
        return run_log_from_api(run, f"wandb:{run_path}")
    except CompareError:
        raise
    except Exception as err:  # noqa: BLE001 - network, authentication or a wrong path: all need the user
        raise CompareError(
            f"cannot read W&B run {run_path}: {err}\nCheck the path (ENTITY/PROJECT/RUN_ID from the run's URL), "
            "`wandb login` and the network; an offline run is read locally: give its RUN_DIR."
        ) from None


def load_wandb_local(path: Path) -> RunLog:
    """A local W&B run folder (``RUN_DIR/wandb/offline-run-*``, or its ``.wandb`` file): its RUN_DIR's log history."""
    folder = path.parent if path.is_file() else path
    run_dir = folder.parent.parent if folder.parent.name == "wandb" else folder
    try:
        return load_run_dir(run_dir)
    except CompareError as err:
        raise CompareError(
            f"{path} is a local W&B run, read through its run's own log history, which failed: {err}\n"
            "W&B's binary .wandb file is not read: give the run's output_dir, or `wandb sync` the run and pass "
            "--wandb ENTITY/PROJECT/RUN_ID."
        ) from None


def load_run(spec: str) -> RunLog:
    """``RUN_DIR``, ``wandb:ENTITY/PROJECT/RUN_ID`` or ``wandb:<local W&B run folder>``."""
    if not spec.startswith("wandb:"):
        return load_run_dir(spec)
    target = spec.removeprefix("wandb:")
    return load_wandb_local(Path(target)) if Path(target).exists() else load_wandb_api(target)
