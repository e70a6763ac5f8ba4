"""Compare runs: their training curves side by side and a table of final metrics, in one self-contained HTML page.

    python -m recipes.compare outputs/paper/grpo_base outputs/paper/grpo_instruct outputs/paper/sft_baseline \\
        outputs/paper/grpo_base_length --output outputs/paper/report.html
    python -m recipes.compare outputs/paper/grpo_base --wandb me/visualthinker-r1-zero/1a2b3c4d --output report.html

Writes ``report.html`` (the figure embedded as base64, so the page is one file to share) and the figure next to it
(``report.png``), both atomically. Needs no network unless ``--wandb ENTITY/PROJECT/RUN_ID`` is given.

Where the numbers come from
    ``RUN_DIR`` (a recipe's ``output_dir``): the log history in ``RUN_DIR/trainer_state.json`` (kept current at
    every log by `recipes.callbacks.LogHistoryCallback`; ``trainer.save_state()`` writes the same file) or in the
    newest ``RUN_DIR/checkpoint-*/trainer_state.json``, whichever reaches the later step. Its CV-Bench result is
    ``RUN_DIR/eval_cvbench/summary.json`` when that exists (``python recipes/eval_cvbench.py ... --output_dir
    RUN_DIR/eval_cvbench``, as ``launch/run_ablations.sh`` does).
    ``--wandb ENTITY/PROJECT/RUN_ID``: the run's full history through W&B's public API (needs network and
    ``wandb login``). ``--wandb PATH``: an offline W&B run folder (``RUN_DIR/wandb/offline-run-*``) or its ``.wandb``
    file, read locally with `read_wandb_offline`.

The curves: accuracy reward, format reward, total reward (± its std across completions), completion length (band:
shortest to longest), the self-reflection ("aha") monitor, KL to the reference, entropy, training loss and the
held-out accuracy (`recipes.heldout`). Runs may log at different steps or lack metrics (an SFT run has no rewards):
a missing metric is an absent line, and the table lists what each run lacks.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import math
import os
import re
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
CVBENCH_SUMMARY = Path("eval_cvbench") / "summary.json"
# Keys that W&B (through transformers' WandbCallback) prefixes with "train/"; the step is "train/global_step".
WANDB_PREFIX = "train/"
WANDB_STEP = "train/global_step"
# The end-of-training summary of the Trainer is one more log entry, with no per-step metric worth a point.
SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}


class CompareError(RuntimeError):
    """A run that cannot be read, said so with the fix."""


class Panel(NamedTuple):
    title: str
    key: str
    band: str | None = None  # a ± spread around the line
    low: str | None = None  # or a [low, high] range
    high: str | None = None
    column: str | None = None  # the table's column header (the title when unset)
    optional: bool = False  # drawn (and tabulated) only when some run logged it


PANELS = (
    Panel("Accuracy reward", "rewards/accuracy_reward/mean", column="accuracy reward"),
    Panel("Format reward", "rewards/format_reward/mean", column="format reward"),
    Panel("Total reward (± std)", "reward", band="reward_std", column="total reward"),
    Panel(
        "Completion length (tokens; band: min–max)",
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
)
EXTRA_COLUMNS = (("clipped fraction", "completions/clipped_ratio"),)
CVBENCH_GROUPS = ("per_task", "per_source")  # summary.json's breakdowns (recipes/eval_cvbench.py)


@dataclass
class RunLog:
    """One run's metric series (metric → sorted ``(step, value)`` points) and its CV-Bench summary, if any."""

    name: str
    source: str
    series: dict[str, list[tuple[float, float]]]
    cvbench: dict[str, Any] | None = None
    cvbench_source: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def last(self, key: str) -> float | None:
        points = self.series.get(key)
        return points[-1][1] if points else None

    @property
    def last_step(self) -> float | None:
        steps = [points[-1][0] for points in self.series.values() if points]
        return max(steps) if steps else None


# --- reading runs --------------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def series_from_rows(rows: Iterable[dict[str, Any]], step_key: str, strip_prefix: str = "") -> dict:
    """Metric series from log rows (dicts holding a step and metrics); non-numeric and missing values are skipped.

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
        if step is None or SUMMARY_KEYS & row.keys():
            continue
        for key, value in row.items():
            if key in (step_key, "step", "epoch") or key.startswith("_"):
                continue
            value = _number(value)
            if value is None:
                continue
            name = key[len(strip_prefix) :] if strip_prefix and key.startswith(strip_prefix) else key
            series.setdefault(name, {})[step] = value  # a step logged twice keeps its latest value
    return {key: sorted(points.items()) for key, points in series.items()}


def _state_files(run_dir: Path) -> list[Path]:
    """The run's own trainer_state.json and its newest checkpoint's (by step number), those that exist."""
    checkpoints = [c for c in run_dir.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()]
    newest = max(checkpoints, key=lambda c: int(c.name.split("-")[-1]), default=None)
    candidates = [run_dir / TRAINER_STATE] + ([newest / TRAINER_STATE] if newest else [])
    return [c for c in candidates if c.is_file()]


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CompareError(f"cannot read {path}: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise CompareError(f"{path} has no log_history list: is it a transformers trainer_state.json?")
    return state


def find_trainer_state(run_dir: Path) -> Path:
    """The run's most advanced trainer_state.json: its own, or its newest checkpoint's."""
    files = _state_files(run_dir)
    if not files:
        checkpoints = sorted(p.name for p in run_dir.glob("checkpoint-*"))
        raise CompareError(
            f"no log history in {run_dir}: found neither {run_dir / TRAINER_STATE} nor "
            f"{run_dir}/checkpoint-*/{TRAINER_STATE}"
            + (f" (checkpoints: {', '.join(checkpoints)})" if checkpoints else "")
            + ". Give the output_dir of a recipe run (the recipes keep trainer_state.json there from the first "
            "logged step), or read its W&B run instead: --wandb RUN_DIR/wandb/offline-run-<...> or "
            "--wandb ENTITY/PROJECT/RUN_ID."
        )
    return max(files, key=lambda p: (_read_state(p).get("global_step") or 0, p.parent == run_dir))


def read_cvbench(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = run_dir / CVBENCH_SUMMARY
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text()), str(path)
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("ignoring unreadable CV-Bench summary %s: %s", path, err)
        return None, None


def load_run_dir(run_dir: str | os.PathLike, name: str | None = None) -> RunLog:
    """A recipe run's log history (see the module docstring for which file) and its CV-Bench summary."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CompareError(f"{path} is not a folder; give the output_dir of a training run")
    state_path = find_trainer_state(path)
    series = series_from_rows(_read_state(state_path)["log_history"], step_key="step")
    if not series:
        raise CompareError(f"{state_path} holds no logged metrics yet (empty log_history): wait for the first log")
    cvbench, cvbench_source = read_cvbench(path)
    return RunLog(name or path.name, str(state_path), series, cvbench, cvbench_source)


# --- W&B: offline run files and the public API ----------------------------------------------------------------------


_WANDB_MAGIC = b":W&B"
_BLOCK = 32 * 1024
_HEADER = 7  # the file header (":W&B", magic, version) and each record header (crc32, length, type) are 7 bytes
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_records(path: Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file: W&B's LevelDB-style log (32 KiB blocks, chunked records).

    Stops quietly at a torn or corrupt tail (a run that is still writing or was killed).
    """
    data = path.read_bytes()
    if data[:4] != _WANDB_MAGIC:
        raise CompareError(f"{path} is not a W&B run file (it does not start with {_WANDB_MAGIC!r})")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # a block's last bytes are padding
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        if kind == 0 and length == 0:
            pos += room
            continue
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _item_value(item) -> Any:
    try:
        return json.loads(item.value_json)
    except (json.JSONDecodeError, TypeError):
        return None


def read_wandb_offline(path: str | os.PathLike) -> dict[str, Any]:
    """Read an offline W&B run without network: ``{"run": {...}, "history": [rows], "artifacts": [...]}``.

    ``path`` is an ``offline-run-*`` folder, its ``.wandb`` file, or a folder holding ``wandb/offline-run-*`` (the
    newest is read). ``run`` holds ``id``, ``name``, ``project``, ``group`` and ``tags``; each history row maps the
    logged keys (as W&B shows them, e.g. ``train/reward``) to their values; each artifact is
    ``{"name", "type", "files"}`` (a logged table is a ``run_table`` artifact holding its images).
    """
    from wandb.proto import wandb_internal_pb2

    file = _find_wandb_file(Path(path))
    run: dict[str, Any] = {}
    history, artifacts = [], []
    for raw in _wandb_records(file):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a record of a newer wandb: skip it, keep the rest
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {
                "id": record.run.run_id,
                "name": record.run.display_name,
                "project": record.run.project,
                "group": record.run.run_group,
                "tags": list(record.run.tags),
            }
        elif kind == "history":
            history.append({_item_key(item): _item_value(item) for item in record.history.item})
        elif kind == "artifact":
            files = [entry.path for entry in record.artifact.manifest.contents]
            artifacts.append({"name": record.artifact.name, "type": record.artifact.type, "files": files})
    return {"run": run, "history": history, "artifacts": artifacts, "file": str(file)}


def _find_wandb_file(path: Path) -> Path:
    if path.is_file():
        return path
    runs = sorted(path.glob("run-*.wandb")) or sorted(path.glob("wandb/offline-run-*/run-*.wandb"))
    runs = runs or sorted(path.glob("offline-run-*/run-*.wandb"))
    if not runs:
        raise CompareError(
            f"no W&B run file (run-*.wandb) in {path}: give an offline run folder "
            "(<output_dir>/wandb/offline-run-<date>-<id>) or its .wandb file"
        )
    return runs[-1]


def load_wandb_offline(path: str | os.PathLike, name: str | None = None) -> RunLog:
    run = read_wandb_offline(path)
    series = series_from_rows(run["history"], step_key=WANDB_STEP, strip_prefix=WANDB_PREFIX)
    if not series:
        raise CompareError(f"{run['file']} holds no logged training metrics yet")
    label = name or run["run"].get("name") or Path(run["file"]).parent.name
    return RunLog(label, run["file"], series, info=run["run"])


def load_wandb_api(run_path: str, name: str | None = None, api=None) -> RunLog:
    """A W&B run's full history through the public API (``ENTITY/PROJECT/RUN_ID``, as in the run's URL)."""
    if not re.fullmatch(r"[^/\s]+/[^/\s]+/(runs/)?[^/\s]+", run_path):
        raise CompareError(
            f"--wandb {run_path!r} is neither a local offline run folder nor a W&B run path ENTITY/PROJECT/RUN_ID"
        )
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=60)
        run = api.run(run_path.replace("/runs/", "/"))
        rows = list(run.scan_history())
    except CompareError:
        raise
    except Exception as err:  # noqa: BLE001 - network, authentication or a wrong path: all need the user
        raise CompareError(
            f"cannot read W&B run {run_path}: {err}\nCheck the path (ENTITY/PROJECT/RUN_ID from the run's URL), "
            "`wandb login` and the network; or pass the local offline run folder (RUN_DIR/wandb/offline-run-*)."
        ) from None
    series = series_from_rows(rows, step_key=WANDB_STEP, strip_prefix=WANDB_PREFIX)
    if not series:
        raise CompareError(f"W&B run {run_path} has no logged training metrics ({WANDB_STEP} missing)")
    info = {"id": getattr(run, "id", None), "group": getattr(run, "group", None), "tags": getattr(run, "tags", [])}
    return RunLog(name or getattr(run, "name", None) or run_path, f"wandb:{run_path}", series, info=info)


def load_wandb(spec: str, name: str | None = None) -> RunLog:
    return load_wandb_offline(spec, name) if Path(spec).exists() else load_wandb_api(spec, name)


def unique_names(runs: list[RunLog]) -> None:
    """Tell apart runs that share a name (e.g. the same experiment in two suites) by their source's parent folder."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            parent = Path(run.source).parent
            parent = parent.parent if parent.name.startswith("checkpoint-") else parent
            run.name = f"{parent.parent.name}/{run.name}"
    for i, run in enumerate(runs):
        if sum(r.name == run.name for r in runs) > 1:
            run.name = f"{run.name} #{i + 1}"


# --- CV-Bench summary --------------------------------------------------------------------------------------------


def cvbench_scores(summary: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(overall accuracy = the paper's plain mean, official CV-Bench score) from an eval summary.json."""
    if not summary:
        return None, None

    def first(*keys):
        for key in keys:
            value = summary.get(key)
            if isinstance(value, dict):
                value = value.get("accuracy", value.get("score"))
            if _number(value) is not None:
                return float(value)
        return None

    return first("accuracy", "overall_accuracy", "overall"), first("official_score", "cvbench_score", "official")


# --- the report ------------------------------------------------------------------------------------------------------


def panels_for(runs: list[RunLog]) -> list[Panel]:
    """Every core panel (a metric no run logged is said so), and the optional ones that some run logged."""
    return [p for p in PANELS if not p.optional or any(p.key in run.series for run in runs)]


def plot(runs: list[RunLog]) -> bytes:
    """The curves of every panel, one colour per run, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = panels_for(runs)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn = False
        for i, run in enumerate(runs):
            points = run.series.get(panel.key)
            if not points:
                continue
            color = colors[i % len(colors)]
            steps = [s for s, _ in points]
            values = [v for _, v in points]
            ax.plot(steps, values, color=color, label=run.name, marker="o" if len(points) < 3 else None, ms=3)
            _draw_band(ax, run, panel, points, color)
            drawn = True
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "not logged by any run", ha="center", va="center", transform=ax.transAxes, alpha=0.6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[i % len(colors)], label=run.name) for i, run in enumerate(runs)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(runs), 4), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.6 * rows)))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _draw_band(ax, run: RunLog, panel: Panel, points, color) -> None:
    def at(key):
        return dict(run.series.get(key) or [])

    if panel.band:
        spread = at(panel.band)
        steps = [s for s, _ in points if s in spread]
        if steps:
            values = dict(points)
            ax.fill_between(
                steps,
                [values[s] - spread[s] for s in steps],
                [values[s] + spread[s] for s in steps],
                color=color,
                alpha=0.15,
                lw=0,
            )
    if panel.low and panel.high:
        low, high = at(panel.low), at(panel.high)
        steps = [s for s, _ in points if s in low and s in high]
        if steps:
            ax.fill_between(steps, [low[s] for s in steps], [high[s] for s in steps], color=color, alpha=0.12, lw=0)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:.{digits}g}"


def table_rows(runs: list[RunLog]) -> tuple[list[str], list[list[str]]]:
    """The final table: each run's last logged value of every curve, its CV-Bench scores and what it lacks."""
    metrics = [(p.column or p.title, p.key) for p in panels_for(runs)] + list(EXTRA_COLUMNS)
    header = ["run", "last step", *(label for label, _ in metrics), "CV-Bench accuracy", "CV-Bench official", "notes"]
    rows = []
    for run in runs:
        missing = [label for label, key in metrics if key not in run.series]
        accuracy, official = cvbench_scores(run.cvbench)
        notes = []
        if missing:
            notes.append("not logged: " + ", ".join(missing))
        if run.cvbench is None:
            notes.append("no CV-Bench summary" + ("" if run.source.startswith("wandb:") else f" ({CVBENCH_SUMMARY})"))
        rows.append(
            [
                run.name,
                _fmt(run.last_step),
                *(_fmt(run.last(key)) for _, key in metrics),
                _fmt(accuracy),
                _fmt(official),
                "; ".join(notes),
            ]
        )
    return header, rows


def _describe_source(run: RunLog) -> str:
    parts = [run.source]
    if run.cvbench_source:
        parts.append(f"CV-Bench: {run.cvbench_source}")
    if run.info.get("group"):
        parts.append(f"W&B group {run.info['group']}")
    if run.info.get("tags"):
        parts.append(f"tags {', '.join(run.info['tags'])}")
    return "; ".join(parts)


def cvbench_breakdown(runs: list[RunLog]) -> tuple[list[str], list[list[str]]]:
    """CV-Bench accuracy per task and per source of the runs that have a summary (no rows when none has)."""
    names = []
    for run in runs:
        for group in CVBENCH_GROUPS:
            for name in (run.cvbench or {}).get(group) or {}:
                if name not in names:
                    names.append(name)
    rows = []
    for run in runs:
        if run.cvbench is None:
            continue
        values = []
        for name in names:
            found = [(run.cvbench.get(g) or {}).get(name) for g in CVBENCH_GROUPS]
            entry = next((f for f in found if isinstance(f, dict)), {})
            values.append(_fmt(_number(entry.get("accuracy"))))
        accuracy, official = cvbench_scores(run.cvbench)
        rows.append([run.name, _fmt(accuracy), _fmt(official), *values])
    return ["run", "accuracy", "official", *names], rows


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(runs: list[RunLog], png: bytes, title: str) -> str:
    metrics_table = _html_table(*table_rows(runs))
    header, rows = cvbench_breakdown(runs)
    cvbench_table = "<h2>CV-Bench accuracy per task and per source</h2>" + _html_table(header, rows) if rows else ""
    sources = "".join(f"<li><b>{html.escape(run.name)}</b>: {html.escape(_describe_source(run))}</li>" for run in runs)
    cvbench_details = "".join(
        f"<details><summary>CV-Bench summary of {html.escape(run.name)}</summary><pre>"
        f"{html.escape(json.dumps(run.cvbench, indent=2, sort_keys=True))}</pre></details>"
        for run in runs
        if run.cvbench is not None
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} th, td {{ border: 1px solid #ccc; padding: 0.3em 0.5em; }}
th {{ background: #f3f3f3; }} td {{ text-align: right; }} td:first-child, td:last-child {{ text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(runs)} runs, generated {stamp} by <code>python -m recipes.compare</code>. Curves against the optimizer step;
a metric a run did not log has no line. The table gives each run's last logged value.</p>
<img alt="training curves" src="data:image/png;base64,{image}">
<h2>Last metrics and CV-Bench</h2>
{metrics_table}
<p>CV-Bench accuracy: the plain mean over all rows (the paper's number); official: ½·(mean of the ADE20K and COCO
accuracies + the Omni3D accuracy).</p>
{cvbench_table}
<h2>Sources</h2><ul>{sources}</ul>
{cvbench_details}
</body></html>
"""


def atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename it: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(runs: list[RunLog], output: str | os.PathLike, title: str = "Ablation comparison") -> Path:
    """Write ``output`` (HTML) and the PNG next to it (same name, ``.png``); returns the PNG's path."""
    if not runs:
        raise CompareError("nothing to compare: give at least one RUN_DIR or --wandb run")
    output = Path(output)
    unique_names(runs)
    png = plot(runs)
    png_path = output.with_suffix(".png")
    atomic_write(png_path, png)
    atomic_write(output, render_html(runs, png, title).encode("utf-8"))
    return png_path


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.compare",
        description="Training curves of several runs side by side, and a table of their last metrics and CV-Bench "
        "results, as one self-contained HTML file (+ a PNG next to it).",
    )
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="output_dir of a recipe run")
    parser.add_argument(
        "--wandb",
        nargs="+",
        default=[],
        metavar="RUN",
        help="W&B runs: ENTITY/PROJECT/RUN_ID (public API, needs network) or a local offline run folder",
    )
    parser.add_argument("--output", required=True, help="the HTML report to write; the PNG goes next to it")
    parser.add_argument("--title", default="Ablation comparison", help="the report's title")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        if not args.run_dirs and not args.wandb:
            raise CompareError("nothing to compare: give at least one RUN_DIR or --wandb run")
        runs = [load_run_dir(d) for d in args.run_dirs] + [load_wandb(spec) for spec in args.wandb]
        png_path = write_report(runs, args.output, args.title)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} and {png_path} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
