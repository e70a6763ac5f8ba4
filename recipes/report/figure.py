"""The report's figure: every panel's curves, one colour per arm (mean and min–max band over seeds), divergence
marked."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence

from recipes.report.arms import aggregate
from recipes.report.runlog import PANELS, Arm, Panel, RunLog

logger = logging.getLogger(__name__)

DIVERGED_LABEL = "diverged (NaN/inf logged)"
BAND_NOTE = "arms of several runs: line = mean over the runs, band = min–max over the runs"


def panels_for(arms: Sequence[Arm], panels: Sequence[Panel] = PANELS) -> list[Panel]:
    """Every core panel (a metric no run logged is said so), and the optional ones that some run logged."""
    return [p for p in panels if not p.optional or any(p.key in r.series for a in arms for r in a.runs)]


def make_figure(arms: Sequence[Arm], panels: Sequence[Panel] = PANELS):
    """The curves of every panel, one colour per arm (a `matplotlib.figure.Figure`; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = panels_for(arms, panels)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn = False
        for i, arm in enumerate(arms):
            color = colors[i % len(colors)]
            logged = [run for run in arm.runs if run.series.get(panel.key)]
            if len(logged) == 1:
                _draw_run(ax, logged[0], panel, color, arm.label)
            elif curve := aggregate([run.series[panel.key] for run in logged]):
                ax.plot(
                    curve.steps,
                    curve.mean,
                    color=color,
                    label=arm.label,
                    marker="o" if len(curve.steps) < 3 else None,
                    ms=3,
                )
                ax.fill_between(curve.steps, curve.low, curve.high, color=color, alpha=0.2, lw=0)
            elif logged:
                logger.warning("the runs of %s share no logged step of %s: no mean drawn", arm.name, panel.key)
            for run in arm.runs:
                if panel.key in run.diverged:
                    _mark_divergence(ax, run, panel.key, color)
                    logged.append(run)
            drawn = drawn or bool(logged)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "not logged by any run", ha="center", va="center", transform=ax.transAxes, alpha=0.6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[i % len(colors)], label=arm.label) for i, arm in enumerate(arms)]
    if any(run.diverged for arm in arms for run in arm.runs):
        handles.append(plt.Line2D([], [], color="red", marker="X", ls="", label=DIVERGED_LABEL))
    several = any(len(arm.runs) > 1 for arm in arms)
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(len(arms), 4),
        frameon=False,
        title=BAND_NOTE if several else None,
        title_fontsize=9,
    )
    top = (0.35 + 0.25 * several + 0.25 * ((len(arms) - 1) // 4)) / (3.6 * rows)
    fig.tight_layout(rect=(0, 0, 1, 1 - top))
    return fig


def _mark_divergence(ax, run: RunLog, key: str, color: str) -> None:
    """A red cross where ``run`` first logged NaN/inf for ``key`` (at its last finite value before, else 0), a dotted
    line at that step and the value written beside it."""
    step, value = run.diverged[key]
    before = [v for s, v in run.series.get(key, []) if s < step]
    y = before[-1] if before else 0.0
    ax.axvline(step, color=color, ls=":", lw=1, alpha=0.7)
    ax.plot([step], [y], marker="X", ms=10, color="red", mec=color, ls="", gid=f"diverged:{run.name}")
    ax.annotate(str(value), (step, y), xytext=(4, 4), textcoords="offset points", color="red", fontsize=8)


def _draw_run(ax, run: RunLog, panel: Panel, color: str, label: str) -> None:
    """One run's line and its spread within the run (± std, or min–max) where the panel has one."""
    points = run.series[panel.key]
    steps, values = [s for s, _ in points], [v for _, v in points]
    ax.plot(steps, values, color=color, label=label, marker="o" if len(points) < 3 else None, ms=3)
    if panel.band and (spread := dict(run.series.get(panel.band) or [])):
        at = [(s, v) for s, v in points if s in spread]
        lower = [v - spread[s] for s, v in at]
        upper = [v + spread[s] for s, v in at]
        ax.fill_between([s for s, _ in at], lower, upper, color=color, alpha=0.15, lw=0)
    if panel.low and panel.high:
        low, high = dict(run.series.get(panel.low) or []), dict(run.series.get(panel.high) or [])
        at = [s for s in steps if s in low and s in high]
        ax.fill_between(at, [low[s] for s in at], [high[s] for s in at], color=color, alpha=0.12, lw=0)


def plot(arms: Sequence[Arm], panels: Sequence[Panel] = PANELS) -> bytes:
    """`make_figure` as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = make_figure(arms, panels)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
