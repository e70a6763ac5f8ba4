"""What the report is made of: a run's metric series (`RunLog`), arms of runs over seeds (`Arm`), the panels drawn.

Reading them is `recipes.report.read`; grouping them `recipes.report.arms`; drawing `recipes.report.figure`; the
tables and the page `recipes.report.render`; the command line `recipes.report.compare`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class CompareError(RuntimeError):
    """A run that cannot be read or a request that cannot be met, said so with the fix."""


class Panel(NamedTuple):
    title: str
    key: str
    band: str | None = None  # a single run's ± spread around its line
    low: str | None = None  # or its [low, high] range
    high: str | None = None
    column: str | None = None  # the table's column header (the title when unset)
    optional: bool = False  # drawn (and tabulated) only when some run logged it


PANELS = (
    Panel("Accuracy reward", "rewards/accuracy_reward/mean", column="accuracy reward"),
    Panel("Format reward", "rewards/format_reward/mean", column="format reward"),
    Panel("Total reward (single run: ± std)", "reward", band="reward_std", column="total reward"),
    Panel(
        "Completion length (tokens; single run: min–max)",
        "completions/mean_length",
        low="completions/min_length",
        high="completions/max_length",
        column="completion length",
    ),
    Panel("Self-reflection ('aha') fraction", "rewards/reflection_reward/mean", column="aha fraction"),
    Panel("KL to the reference model", "kl", column="KL"),
    Panel("Entropy", "entropy", column="entropy"),
    Panel("Training loss", "loss", column="loss"),
    Panel("Held-out accuracy (greedy)", "heldout/accuracy", column="held-out accuracy", optional=True),
    # CV-Bench along training (recipes/eval_curve.py: <run>/eval_curve/step-<N>/summary.json)
    Panel("CV-Bench along training (paper score)", "cvbench/accuracy", column="CV-Bench curve", optional=True),
    Panel(
        "CV-Bench along training (official score)",
        "cvbench/official_score",
        column="CV-Bench curve, official",
        optional=True,
    ),
)


@dataclass
class RunLog:
    """One run: metric series (metric → sorted ``(step, value)``), CV-Bench summary, arm and seed, extra scalars."""

    name: str
    source: str
    series: dict[str, list[tuple[float, float]]]
    cvbench: dict[str, Any] | None = None
    cvbench_source: str | None = None
    arm: str | None = None  # the automatic arm (experiment) of the run; `Arm` overrides it
    seed: int | None = None
    scalars: dict[str, float] = field(default_factory=dict)  # final values measured by the caller
    info: dict[str, Any] = field(default_factory=dict)  # W&B id, group and tags
    config: dict[str, Any] = field(default_factory=dict)  # resolved configuration (W&B: the run's config)
    cvbench_excluded: str | None = None  # why the CV-Bench summary is shown but not counted
    diverged: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> first (step, NaN/inf value)

    def last(self, key: str) -> float | None:
        points = self.series.get(key)
        return points[-1][1] if points else None

    @property
    def counted_cvbench(self) -> dict[str, Any] | None:
        """The CV-Bench summary when it is the run's own score (`recipes.report.checks.cvbench_problem`)."""
        return None if self.cvbench_excluded else self.cvbench

    @property
    def last_step(self) -> float | None:
        steps = [points[-1][0] for points in self.series.values() if points]
        return max(steps) if steps else None


@dataclass
class Arm:
    """Runs of one experiment over seeds, drawn as their mean and min–max band."""

    name: str
    runs: list[RunLog]
    notes: list[str] = field(default_factory=list)  # what the table says about how the arm was formed

    @property
    def label(self) -> str:
        return self.name if len(self.runs) == 1 else f"{self.name} (n={len(self.runs)})"
