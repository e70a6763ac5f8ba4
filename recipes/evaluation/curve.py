"""CV-Bench along training: where a run's curve lives, how it is read, and how it reaches the run's W&B run.

``recipes/eval_curve.py`` evaluates each model snapshot of a run (``<run>/models/step-<N>``,
`recipes.shared.snapshots`) into ``<run>/eval_curve/step-<N>/`` (the evaluation's own folder: predictions,
``summary.json``, ``summary.md``) and keeps ``<run>/eval_curve/curve.json``, one row per step, regenerated from those
summaries. `recipes.report.compare` draws the same points (`curve_series`).

W&B: the points are logged to the training run's own W&B run (``wandb.init(id=<its id>, resume="allow")``) under
``cvbench/accuracy``, ``cvbench/official_score`` and their strict twins, against the custom step metric
``cvbench/step`` (``define_metric``), so each point sits at the training step of the model it scores. The run id
is read from the run folder's ``wandb/`` directory (``latest-run``, else the newest ``run-*``/``offline-run-*``
folder; their names end with the id); the project from the run's ``resolved_config.yaml`` (``WANDB_PROJECT``
wins, as in training). Each point is logged once per W&B run: ``eval_curve/provenance.json`` remembers it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from data_prep.files import write_atomic
from recipes.shared import provenance
from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

CURVE_DIR = "eval_curve"
CURVE_FILE = "curve.json"
POINT_KIND = "cvbench-curve-point"
STEP = re.compile(r"^step-(\d+)$")
WANDB_RUN = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-([a-z0-9]+)$")
STEP_METRIC = "cvbench/step"
METRICS = {  # W&B / compare key -> path in summary.json
    "cvbench/accuracy": ("accuracy",),
    "cvbench/official_score": ("official_score",),
    "cvbench/strict_accuracy": ("strict", "accuracy"),
    "cvbench/strict_official_score": ("strict", "official_score"),
}


def _value(summary: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        summary = summary.get(key) if isinstance(summary, dict) else None
    ok = isinstance(summary, (int, float)) and not isinstance(summary, bool) and math.isfinite(summary)
    return float(summary) if ok else None


def curve_points(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per evaluated step: ``step``, each metric of `METRICS`, ``rows`` scored, the summary's path."""
    folder = Path(run_dir) / CURVE_DIR
    points = []
    for path in sorted(folder.glob("step-*/summary.json")):
        match = STEP.match(path.parent.name)
        if not match:
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("skipping %s: %s", path, err)
            continue
        row = {"step": int(match.group(1)), **{k: _value(summary, p) for k, p in METRICS.items()}}
        row["rows"] = (summary.get("rows") or {}).get("scored")
        row["summary"] = str(path.relative_to(folder))
        points.append(row)
    return sorted(points, key=lambda r: r["step"])


def curve_series(run_dir: str | Path) -> dict[str, list[tuple[float, float]]]:
    """The curve as metric series (``cvbench/accuracy`` → sorted ``(step, value)``), for `recipes.report.compare`."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in curve_points(run_dir):
        for key in METRICS:
            if row[key] is not None:
                series.setdefault(key, []).append((float(row["step"]), row[key]))
    return series


def write_curve(run_dir: str | Path) -> Path:
    """Regenerate ``<run>/eval_curve/curve.json`` from the step summaries (atomically; owned by the curve's record,
    so that replacing the run deletes it with the step evaluations)."""
    path = Path(run_dir) / CURVE_DIR / CURVE_FILE
    provenance.record(path.parent, CURVE_FILE, kind=POINT_KIND, owns=[CURVE_FILE], state="finished")
    return write_atomic(path, json.dumps({"points": curve_points(run_dir)}, indent=2) + "\n")


# --- W&B -------------------------------------------------------------------------------------------------------------


def find_wandb_run(run_dir: str | Path) -> str | None:
    """The id of the W&B run a training run logged to (from ``<run>/wandb/``), None when it has none."""
    folder = Path(run_dir) / "wandb"
    latest = folder / "latest-run"
    if latest.exists() and (match := WANDB_RUN.match(latest.resolve().name)):
        return match.group(1)
    runs = [p for p in folder.iterdir() if p.is_dir() and WANDB_RUN.match(p.name)] if folder.is_dir() else []
    if not runs:
        return None
    newest = max(runs, key=lambda p: p.name.removeprefix("offline-"))  # names start with the start time
    return WANDB_RUN.match(newest.name).group(1)


def wandb_project(run_dir: str | Path) -> str | None:
    """The W&B project of a training run: ``WANDB_PROJECT``, else the run's recorded ``wandb_project``."""
    if os.environ.get("WANDB_PROJECT"):
        return os.environ["WANDB_PROJECT"]
    path = Path(run_dir) / "resolved_config.yaml"
    try:
        config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (OSError, yaml.YAMLError):
        config = {}
    return ((config or {}).get("recipe") or {}).get("wandb_project")


class WandbCurve:
    """Logs curve points to a training run's W&B run, each point once (recorded in the curve's provenance)."""

    def __init__(self, run_dir: str | Path, run_id: str, project: str | None) -> None:
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / CURVE_DIR
        self.run_id = run_id
        self.project = project
        self.run = None

    def _open(self):
        import wandb

        self.run = wandb.init(id=self.run_id, resume="allow", project=self.project, dir=str(self.run_dir))
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("cvbench/*", step_metric=STEP_METRIC)
        logger.info("logging the CV-Bench curve to W&B run %s (project %s)", self.run_id, self.project)
        return self.run

    def log(self, step: int, summary: dict[str, Any]) -> bool:
        """Log one point unless this W&B run already has it (same evaluation fingerprint); True when logged."""
        name = f"step-{step}"
        logged = dict((provenance.read(self.folder).get(name) or {}).get("wandb", {}))
        evaluation = (summary.get("fingerprint") or {}).get("id")
        if logged.get(self.run_id) == evaluation:
            return False
        values = {k: v for k, p in METRICS.items() if (v := _value(summary, p)) is not None}
        (self.run or self._open()).log({STEP_METRIC: step, **values})
        provenance.record(self.folder, name, wandb={**logged, self.run_id: evaluation})
        return True

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def wandb_target(run_dir: str | Path, mode: str) -> tuple[str, str | None] | None:
    """(run id, project) to log the curve to: ``mode`` auto (when the run has a W&B run), true (required), false."""
    if mode == "false":
        return None
    run_id = find_wandb_run(run_dir)
    if run_id is None:
        if mode == "true":
            raise RecipeError(
                f"--log_to_wandb true but {run_dir} holds no W&B run (no wandb/run-* or wandb/offline-run-* folder): "
                "give the output_dir of a run trained with report_to: wandb, or --log_to_wandb false"
            )
        return None
    return run_id, wandb_project(run_dir)
