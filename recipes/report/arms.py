"""Arms: runs grouped over seeds (split where their settings differ), and the statistics over an arm's runs."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from recipes.report.checks import split_by_settings
from recipes.report.runlog import Arm, CompareError, RunLog


def unique_names(runs: list[RunLog]) -> None:
    """Tell apart runs that share a name: local ones by as many parent folders as it takes, W&B ones by run id.

    Example:
        >>> runs = [RunLog("grpo", f"/o/{s}/seed1/grpo/trainer_state.json", {}) for s in ("a", "b")]
        >>> unique_names(runs); [run.name for run in runs]
        ['a/seed1/grpo', 'b/seed1/grpo']
    """
    for name in {run.name for run in runs}:
        twins = [run for run in runs if run.name == name]
        if len(twins) < 2:
            continue
        local = [run for run in twins if not run.source.startswith("wandb:")]
        folders = [Path(run.source).parent for run in local]
        parts = [(f.parent if f.name.startswith("checkpoint-") else f).parts for f in folders]
        for depth in range(2, max(map(len, parts), default=0) + 1):
            labels = ["/".join(p[-depth:]) for p in parts]
            if len(set(labels)) == len(labels):
                for run, label in zip(local, labels, strict=True):
                    run.name = label
                break
        for run in twins:
            if run.source.startswith("wandb:"):
                run.name = f"{run.name} ({run.info.get('id') or run.source})"
    for i, run in enumerate(runs):
        if sum(r.name == run.name for r in runs) > 1:
            run.name = f"{run.name} #{i + 1}"


def group_runs(runs: Sequence[RunLog]) -> list[Arm]:
    """Arms by each run's automatic arm, in first-seen order, split where the runs' settings differ
    (`recipes.report.checks.split_by_settings`); two runs of an arm with the same seed are refused."""
    by_name: dict[str, list[RunLog]] = {}
    for run in runs:
        by_name.setdefault(run.arm or run.name, []).append(run)
    arms = [
        Arm(name, members, notes)
        for key, group in by_name.items()
        for name, members, notes in split_by_settings(key, group)
    ]
    for arm in arms:
        for i, run in enumerate(arm.runs):
            twin = next((r for r in arm.runs[:i] if run.seed is not None and r.seed == run.seed), None)
            if twin is not None:
                raise CompareError(
                    f"runs {twin.source} and {run.source} are both arm {arm.name!r} with seed {run.seed}: they are "
                    "not seed replicates. Name the arms yourself (--arm NAME RUN...) or draw every run alone "
                    "(--group-by run)."
                )
    return arms


def build_arms(items: Sequence[RunLog | Arm], group_by: str = "arm") -> list[Arm]:
    """Explicit `Arm`s as given, loose runs grouped (``group_by="arm"``) or one arm each (``"run"``)."""
    if group_by not in ("arm", "run"):
        raise CompareError(f"group_by must be 'arm' or 'run', not {group_by!r}")
    explicit = [item for item in items if isinstance(item, Arm)]
    loose = [item for item in items if isinstance(item, RunLog)]
    for arm in explicit:
        if not arm.runs:
            raise CompareError(f"arm {arm.name!r} has no runs")
    runs = [run for arm in explicit for run in arm.runs] + loose
    sources = [run.source if run.source.startswith("wandb:") else str(Path(run.source).resolve()) for run in runs]
    if repeated := sorted({s for s in sources if sources.count(s) > 1}):
        raise CompareError(f"the same run is given twice: {', '.join(repeated)}")
    unique_names(runs)
    arms = explicit + (group_runs(loose) if group_by == "arm" else [Arm(run.name, [run]) for run in loose])
    names = [arm.name for arm in arms]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise CompareError(
            f"arm name {', '.join(map(repr, repeated))} used twice (two --arm, or an --arm and runs grouped "
            "automatically under that name): put those runs in the one --arm, or rename it"
        )
    return arms


# --- statistics over an arm's runs -----------------------------------------------------------------------------------


class Stat(NamedTuple):
    """Mean, sample s.d. (None for one value), min and max of ``n`` values."""

    mean: float
    sd: float | None
    low: float
    high: float
    n: int


def stat(values: Iterable[float | None]) -> Stat | None:
    """Statistics of the values that exist, or None when none does.

    Example:
        >>> stat([0.5, 0.6, None, 0.7])
        Stat(mean=0.6, sd=0.09999999999999998, low=0.5, high=0.7, n=3)
    """
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), sd, min(values), max(values), len(values))


class Curve(NamedTuple):
    steps: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    n: int


def aggregate(curves: Sequence[list[tuple[float, float]]]) -> Curve | None:
    """Mean and min–max of several runs' series at the steps every one of them logged (None when there are none).

    Example:
        >>> aggregate([[(1, 0.0), (2, 1.0)], [(1, 1.0), (2, 2.0), (3, 5.0)]])
        Curve(steps=[1, 2], mean=[0.5, 1.5], low=[0.0, 1.0], high=[1.0, 2.0], n=2)
    """
    tables = [dict(points) for points in curves if points]
    if not tables:
        return None
    steps = sorted(set.intersection(*(set(t) for t in tables)))
    if not steps:
        return None
    stats = [stat(t[s] for t in tables) for s in steps]
    return Curve(steps, [s.mean for s in stats], [s.low for s in stats], [s.high for s in stats], len(tables))
