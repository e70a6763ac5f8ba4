"""The report's tables (final values per arm, CV-Bench per task and source) and its self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from recipes.report.arms import Stat, stat
from recipes.report.figure import panels_for
from recipes.report.read import CVBENCH_SUMMARY, _number
from recipes.report.runlog import PANELS, Arm, Panel, RunLog

EXTRA_COLUMNS = (("clipped fraction", "completions/clipped_ratio"),)
CVBENCH_GROUPS = ("per_task", "per_source")  # summary.json's breakdowns (recipes/eval_cvbench.py)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:.{digits}g}"


def fmt_stat(s: Stat | None, runs: int = 1) -> str:
    """``mean ± s.d.`` (a single value alone), with ``(n=k)`` when only k of the arm's runs have the value.

    Example:
        >>> fmt_stat(stat([0.5, 0.6, 0.7]), runs=3), fmt_stat(stat([0.25]), runs=1), fmt_stat(stat([1.0, 2.0]), runs=3)
        ('0.6 ± 0.1', '0.25', '1.5 ± 0.7071 (n=2)')
    """
    if s is None:
        return "—"
    text = _fmt(s.mean) if s.sd is None else f"{_fmt(s.mean)} ± {_fmt(s.sd)}"
    return text if s.n == runs else f"{text} (n={s.n})"


def _cvbench_value(summary: dict[str, Any] | None, *path: str) -> float | None:
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return _number(value)


def _scalar_names(arms: Sequence[Arm]) -> list[str]:
    names: list[str] = []
    for run in (r for arm in arms for r in arm.runs):
        names += [name for name in run.scalars if name not in names]
    return names


def final_cell(arm: Arm, key: str) -> str:
    """Mean ± s.d. of the runs' last values of ``key``; a run that logged NaN/inf for it makes the cell say so (no
    mean is taken over the runs that did not diverge).

    Example:
        >>> runs = [RunLog("a", "a", {"loss": [(1.0, 0.5)]}), RunLog("b", "b", {"loss": [(1.0, 0.7)]})]
        >>> runs[1].diverged = {"loss": (2.0, float("nan"))}
        >>> final_cell(Arm("x", runs), "loss")
        'diverged: b (nan at step 2) — 1 of 2 runs'
    """
    broken = [(r.name, *r.diverged[key]) for r in arm.runs if key in r.diverged]
    if broken:
        runs = ", ".join(f"{name} ({value} at step {_fmt(step)})" for name, step, value in broken)
        return f"diverged: {runs}" + (f" — {len(broken)} of {len(arm.runs)} runs" if len(arm.runs) > 1 else "")
    return fmt_stat(stat(r.last(key) for r in arm.runs), len(arm.runs))


def table_rows(arms: Sequence[Arm], panels: Sequence[Panel] = PANELS) -> tuple[list[str], list[list[str]]]:
    """Per arm: its runs and seeds, mean ± s.d. of each run's last value of every curve, CV-Bench, extra scalars."""
    metrics = [(p.column or p.title, p.key) for p in panels_for(arms, panels)] + list(EXTRA_COLUMNS)
    scalars = _scalar_names(arms)
    cvbench = (("CV-Bench accuracy", ("accuracy",)), ("CV-Bench official", ("official_score",)))
    header = ["arm", "runs", "seeds", "last step", *(m for m, _ in metrics), *(c for c, _ in cvbench), *scalars]
    rows = []
    for arm in arms:
        n = len(arm.runs)
        seeds = ", ".join("?" if r.seed is None else str(r.seed) for r in arm.runs)
        last = stat(r.last_step for r in arm.runs)
        steps = "—" if last is None else "–".join(dict.fromkeys([_fmt(last.low), _fmt(last.high)]))
        notes = list(arm.notes)
        logged = [label for label, key in metrics if any(key in r.series or key in r.diverged for r in arm.runs)]
        if missing := [label for label, _ in metrics if label not in logged]:
            notes.append("not logged: " + ", ".join(missing))
        with_summary = sum(r.counted_cvbench is not None for r in arm.runs)
        excluded = [f"{r.name}: {r.cvbench_excluded}" for r in arm.runs if r.cvbench_excluded]
        if not with_summary and not excluded:
            local = any(not r.source.startswith("wandb:") for r in arm.runs)
            notes.append("no CV-Bench summary" + (f" ({CVBENCH_SUMMARY})" if local else ""))
        elif with_summary < n:
            notes.append(f"CV-Bench summary counted for {with_summary} of {n} runs")
        if excluded:
            notes.append("CV-Bench summary not counted (" + "; ".join(excluded) + ")")
        for run in arm.runs:  # counted, but over fewer rows than the dataset: rows skipped as unusable
            if skipped := _cvbench_value(run.counted_cvbench, "rows", "skipped"):
                notes.append(f"{run.name}: CV-Bench left out {int(skipped)} unusable rows (skipped)")
        if last is not None and last.low != last.high:
            notes.append("runs end at different steps: each run's last value; curves averaged where all logged")
        rows.append(
            [
                arm.name,
                str(n),
                seeds,
                steps,
                *(final_cell(arm, key) for _, key in metrics),
                *(
                    fmt_stat(stat(_cvbench_value(r.counted_cvbench, *path) for r in arm.runs), n)
                    for _, path in cvbench
                ),
                *(fmt_stat(stat(_number(r.scalars.get(name)) for r in arm.runs), n) for name in scalars),
                "; ".join(notes),
            ]
        )
    return [*header, "notes"], rows


def cvbench_breakdown(arms: Sequence[Arm]) -> tuple[list[str], list[list[str]]]:
    """CV-Bench accuracy (mean ± s.d. over the runs with a summary) overall, strict, per task and per source."""
    columns = [("accuracy", ("accuracy",)), ("official", ("official_score",)), ("strict", ("strict", "accuracy"))]
    for run in (r for arm in arms for r in arm.runs):
        for group in CVBENCH_GROUPS:
            for name in (run.cvbench or {}).get(group) or {}:
                if name not in [label for label, _ in columns]:
                    columns.append((name, (group, name, "accuracy")))
    rows = []
    for arm in arms:
        summaries = [r.counted_cvbench for r in arm.runs if r.counted_cvbench is not None]
        if summaries:
            values = [
                fmt_stat(stat(_cvbench_value(s, *path) for s in summaries), len(summaries)) for _, path in columns
            ]
            rows.append([arm.name, str(len(summaries)), *values])
    return ["arm", "runs", *(label for label, _ in columns)], rows


# --- the page --------------------------------------------------------------------------------------------------------


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _describe(run: RunLog, arm: Arm) -> str:
    parts = [f"arm {arm.name}", f"seed {'?' if run.seed is None else run.seed}", run.source]
    if run.cvbench_source:
        counted = f"not counted: {run.cvbench_excluded}" if run.cvbench_excluded else "counted"
        parts.append(f"CV-Bench: {run.cvbench_source} ({counted})")
    if run.diverged:
        parts.append("diverged: " + ", ".join(f"{k} {v} at step {_fmt(s)}" for k, (s, v) in run.diverged.items()))
    if run.info.get("group"):
        parts.append(f"W&B group {run.info['group']}")
    if run.info.get("tags"):
        parts.append(f"tags {', '.join(run.info['tags'])}")
    return "; ".join(parts)


def render_html(arms: Sequence[Arm], png: bytes, title: str, panels: Sequence[Panel] = PANELS) -> str:
    metrics_table = _html_table(*table_rows(arms, panels))
    header, rows = cvbench_breakdown(arms)
    cvbench_table = "<h2>CV-Bench accuracy per task and per source</h2>" + _html_table(header, rows) if rows else ""
    runs = [(run, arm) for arm in arms for run in arm.runs]
    sources = "".join(f"<li><b>{html.escape(r.name)}</b>: {html.escape(_describe(r, a))}</li>" for r, a in runs)
    cvbench_details = "".join(
        f"<details><summary>CV-Bench summary of {html.escape(run.name)}"
        f"{html.escape(f' — NOT COUNTED: {run.cvbench_excluded}' if run.cvbench_excluded else '')}</summary><pre>"
        f"{html.escape(json.dumps(run.cvbench, indent=2, sort_keys=True))}</pre></details>"
        for run, _ in runs
        if run.cvbench is not None
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} th, td {{ border: 1px solid #ccc; padding: 0.3em 0.5em; }}
th {{ background: #f3f3f3; }} td {{ text-align: right; }} td:first-child, td:last-child {{ text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(arms)} arms, {len(runs)} runs, generated {stamp} by <code>python -m recipes.compare</code>. Curves against the
optimizer step; a metric no run of an arm logged has no line. An arm of one run is drawn as that run (total reward
± its std across completions, completion length from shortest to longest); for an arm of n &gt; 1 runs (seeds) the
line is the mean over its runs at the steps they all logged and the band spans the lowest to the highest run
(min–max).</p>
<img alt="training curves" src="data:image/png;base64,{image}">
<h2>Final values per arm</h2>
{metrics_table}
<p>Each run's last logged value; for an arm of several runs, mean ± sample standard deviation over its runs
("(n=k)": only k runs have the value). CV-Bench accuracy: the plain mean over all rows (the paper's number);
official: ½·(mean of the ADE20K and COCO accuracies + the Omni3D accuracy).</p>
{cvbench_table}
<h2>Runs</h2><ul>{sources}</ul>
{cvbench_details}
</body></html>
"""
