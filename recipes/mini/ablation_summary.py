"""A mini ablation suite's results: ``OUT/summary.json`` (per arm and seed, mean ± s.d. per arm), the comparison
report (`recipes.report.compare`) and ``figure.png``, and the Markdown table the suite prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_prep.files import write_atomic
from recipes.mini.ablation_arms import ARMS, HELDOUT_KEY, OOD_FILE, OOD_KEY, SUITE, Settings, home_of
from recipes.mini.r1_result import series
from recipes.mini.runs import StageError, stage_timings


def run_summary(home: Path, seed: int, arm: str, timings: dict[str, Any]) -> dict[str, Any]:
    """One arm of one seed: held-out and OOD accuracy before, after and along the way, its final format and
    completion length, and what it cost."""
    run_dir = home / arm
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    heldout = series(history, HELDOUT_KEY)
    if not heldout:
        raise StageError(f"{run_dir} logged no {HELDOUT_KEY}: was it trained by this suite?")
    ood = json.loads((run_dir / OOD_FILE).read_text())
    heldout_format = series(history, "heldout/format")
    length = series(history, "completions/mean_length")
    return {
        "arm": arm,
        "seed": seed,
        "run_dir": str(run_dir),
        "heldout": {"before": heldout[0][1], "after": heldout[-1][1], "curve": heldout},
        "ood": {
            "before": ood["curve"][0][1],
            "after": ood["curve"][-1][1],
            "curve": ood["curve"],
            # per shade: (before, after)
            "by_shade": {
                _shade(kind): [points[0][1], points[-1][1]] for kind, points in ood.get("by_type", {}).items()
            },
        },
        "heldout_format_after": heldout_format[-1][1] if heldout_format else None,
        "ood_format_after": ood["format"][-1][1],
        "completion_length": length,
        "seconds": timings.get("seconds"),
        "cpu_seconds": timings.get("cpu_seconds"),
    }


def _shade(question_type: str) -> str:
    return question_type.split(":", 1)[-1]


def _stat(values: list[float | None]) -> dict[str, float] | None:
    from recipes.report.arms import stat

    s = stat(values)
    return None if s is None else {"mean": s.mean, "sd": s.sd, "min": s.low, "max": s.high, "n": s.n}


def summarize(settings: Settings, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``OUT/summary.json`` from the runs' log histories, ``ood.json`` files and the stages' records."""
    runs, stage_a = [], {}
    for seed in settings.seeds:
        home = home_of(settings.out, seed)
        timings = stage_timings(home)
        history = json.loads((home / "stage_a" / "trainer_state.json").read_text())["log_history"]
        shape = series(history, HELDOUT_KEY)
        stage_a[str(seed)] = {
            "shape_accuracy": shape[-1][1] if shape else None,
            "seconds": sum(
                timings.get(name, {}).get("seconds") or 0 for name in ("prepare", "color_records", "stage_a")
            ),
            "cpu_seconds": sum(
                timings.get(name, {}).get("cpu_seconds") or 0 for name in ("prepare", "color_records", "stage_a")
            ),
        }
        runs += [run_summary(home, seed, arm, timings.get(arm, {})) for arm in settings.arms]
    per_arm = {}
    for arm in settings.arms:
        mine = [r for r in runs if r["arm"] == arm]
        per_arm[arm] = {
            "description": ARMS[arm].description,
            "seeds": [r["seed"] for r in mine],
            **{
                f"{which}_{when}": _stat([r[which][when] for r in mine])
                for which in ("heldout", "ood")
                for when in ("before", "after")
            },
            **{
                f"ood_{when}_by_shade": {
                    shade: _stat([r["ood"]["by_shade"].get(shade, [None, None])[index] for r in mine])
                    for shade in dict.fromkeys(shade for r in mine for shade in r["ood"]["by_shade"])
                }
                for index, when in enumerate(("before", "after"))
            },
            "seconds": _stat([r["seconds"] for r in mine]),
            "cpu_seconds": _stat([r["cpu_seconds"] for r in mine]),
        }
    return {
        "suite": SUITE,
        "settings": {
            "seeds": settings.seeds,
            "arms": settings.arms,
            "stage_a_steps": settings.stage_a_steps,
            "stage_b_steps": settings.stage_b_steps,
            "heldout_rows": settings.heldout_rows,
            "ood_rows": settings.ood_rows,
            "heldout_every_b": settings.every_b,
            "jobs": settings.jobs,
        },
        "sets": {
            "heldout": "Is the shape red? on scenes drawn like stage B's training scenes (another seed)",
            "ood": "the same question on shades of red and blue no training record shows (mini_color_shade)",
        },
        "per_arm": per_arm,
        "stage_a": stage_a,
        "runs": runs,
        **(extra or {}),
    }


def report_arms(settings: Settings, summary: dict[str, Any]) -> list:
    """One `recipes.report.compare.Arm` per arm, its runs the seeds: each run's log history, its OOD curve as one more
    series (``ood/accuracy``) and its before/after values and costs as scalars for the table."""
    from recipes.report.compare import Arm, load_run_dir

    arms = []
    for arm in settings.arms:
        logs = []
        for run in (r for r in summary["runs"] if r["arm"] == arm):
            scalars = {
                "held-out before": run["heldout"]["before"],
                "OOD before": run["ood"]["before"],
                "OOD after": run["ood"]["after"],
                "wall s": run["seconds"],
                "CPU s": run["cpu_seconds"],
            }
            log = load_run_dir(run["run_dir"], name=f"{arm}-seed{run['seed']}", scalars=scalars)
            log.seed = run["seed"]
            log.series[OOD_KEY] = [(float(s), float(v)) for s, v in run["ood"]["curve"]]
            logs.append(log)
        arms.append(Arm(arm, logs))
    return arms


def write_report(settings: Settings, summary: dict[str, Any]) -> Path:
    """``OUT/report.html`` (+ ``report.png``): `recipes.report.compare` over the arms, each the mean of its seeds; and
    ``OUT/figure.png``, its held-out, OOD and completion-length panels alone."""
    from recipes.report.compare import PANELS, Panel
    from recipes.report.compare import write_report as compare_report
    from recipes.report.figure import plot

    # The results first; KL (beta is 0 here) and the "aha" monitor (not among the mini rewards) are never logged.
    kept = [panel for panel in PANELS if panel.key not in ("kl", "rewards/reflection_reward/mean")]
    held_out = next(panel for panel in kept if panel.key == HELDOUT_KEY)
    ood = Panel("OOD accuracy (unseen shades, greedy)", OOD_KEY, column="OOD accuracy", optional=True)
    panels = [held_out, ood, *(panel for panel in kept if panel is not held_out)]
    seeds = ", ".join(map(str, settings.seeds))
    title = f"Mini ablations: {len(settings.arms)} arms x seeds {seeds} (stage B {settings.stage_b_steps} steps)"
    output = settings.out / "report.html"
    arms = report_arms(settings, summary)
    compare_report(arms, output, title, panels=panels)
    # The write-up's figure: the two accuracies and the completion length, one row.
    length = next(panel for panel in kept if panel.key == "completions/mean_length")
    write_atomic(settings.out / "figure.png", plot(arms, [held_out, ood, length]))
    return output


def summary_table(summary: dict[str, Any]) -> str:
    """A Markdown table: per arm, mean ± s.d. (min–max) over seeds of each accuracy, and the cost of one run."""

    def cell(s: dict[str, float] | None, scale: float = 100, unit: str = "%") -> str:
        if s is None:
            return "—"
        sd = "" if s["sd"] is None else f" ± {scale * s['sd']:.1f}"
        spread = "" if s["n"] < 2 else f" ({scale * s['min']:.1f}–{scale * s['max']:.1f})"
        return f"{scale * s['mean']:.1f}{sd}{unit}{spread}"

    lines = [
        "| arm | seeds | held-out before | held-out after | OOD before | OOD after | wall per run | CPU per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, values in summary["per_arm"].items():
        lines.append(
            f"| {arm} | {len(values['seeds'])} | {cell(values['heldout_before'])} | {cell(values['heldout_after'])} | "
            f"{cell(values['ood_before'])} | {cell(values['ood_after'])} | {cell(values['seconds'], 1, ' s')} | "
            f"{cell(values['cpu_seconds'], 1, ' s')} |"
        )
    shades = list(
        dict.fromkeys(shade for values in summary["per_arm"].values() for shade in values["ood_after_by_shade"])
    )
    if shades:
        lines += [
            "",
            f"| OOD accuracy per shade | {' | '.join(shades)} |",
            "|---" * (len(shades) + 1) + "|",
        ]
        first = next(iter(summary["per_arm"].values()))
        before = [cell(first["ood_before_by_shade"].get(shade)) for shade in shades]
        lines.append(f"| before (stage A) | {' | '.join(before)} |")
        for arm, values in summary["per_arm"].items():
            cells = [cell(values["ood_after_by_shade"].get(shade)) for shade in shades]
            lines.append(f"| {arm} | {' | '.join(cells)} |")
    return "\n".join(lines)
