"""Compare runs and arms: training curves side by side, mean ± s.d. over seeds, in one self-contained HTML page.

    python -m recipes.compare outputs/paper/grpo_base outputs/paper/grpo_instruct --output outputs/paper/report.html
    python -m recipes.compare outputs/seed*/grpo_base outputs/seed*/sft_baseline --output report.html
    python -m recipes.compare --arm grpo runs/a runs/b runs/c --arm sft runs/d runs/e --output report.html
    python -m recipes.compare --wandb me/visualthinker-r1-zero/1a2b3c4d me/visualthinker-r1-zero/5e6f --output r.html

Writes ``report.html`` (the figure embedded as base64: one file to share) and the figure next to it (``report.png``),
both atomically. Needs no network unless a W&B run path is given.

Where the numbers come from
    ``RUN_DIR`` (a recipe's ``output_dir``): its log history, ``RUN_DIR/trainer_state.json`` (kept current at every
    log by `recipes.shared.callbacks.LogHistoryCallback`; ``trainer.save_state()`` writes the same file) or the newest
    ``RUN_DIR/checkpoint-*/trainer_state.json``, whichever reaches the later step. Its CV-Bench result is
    ``RUN_DIR/eval_cvbench/summary.json`` (``recipes/eval_cvbench.py --output_dir RUN_DIR/eval_cvbench``, as
    ``launch/run_ablations.sh`` does): ``accuracy`` (the paper's plain mean), ``official_score``, ``strict`` and the
    ``per_task``/``per_source`` breakdowns — counted only when it was computed from the run folder's final weights
    and covers the whole dataset (`recipes.report.checks`); any other summary is shown, marked with why, and kept
    out of every mean. A metric logged as NaN/inf is shown as divergence (a red cross in the figure, "diverged" in
    the table), never replaced by the run's last finite value.
    Its CV-Bench curve along training, ``RUN_DIR/eval_curve/step-<N>/summary.json`` (``recipes/eval_curve.py``; for
    a W&B run the ``cvbench/*`` metrics against ``cvbench/step``), is drawn in two panels: the paper's score and the
    official one.
    ``--wandb ENTITY/PROJECT/RUN_ID`` (or ``wandb:ENTITY/PROJECT/RUN_ID`` wherever a RUN_DIR is accepted): the run's
    full history, config and tags through W&B's public API (``wandb.Api().run(...)``; needs network and ``wandb
    login``). A local W&B run folder (``RUN_DIR/wandb/offline-run-*``) is read through its RUN_DIR's own log
    history: W&B's binary ``.wandb`` file is never parsed (``wandb sync`` it to read it through the API).

Arms: runs of the same experiment with different seeds
    Runs are grouped into arms; an arm of several runs is drawn as the mean over its runs with a band from the
    lowest to the highest run (min–max), its legend entry saying how many (``grpo_base (n=3)``), and the table gives
    mean ± sample s.d. of each run's final value. An arm of one run is drawn as the run itself.
    * ``--arm NAME RUN [RUN ...]`` (repeatable) names an arm and its runs explicitly.
    * Every other run is grouped automatically by its experiment: for a W&B run its ``arm:<name>`` or
      ``experiment:<name>`` tag (set by `recipes.shared.prepare.setup_reporting`; the W&B *group* is the suite, which
      holds every arm), for a RUN_DIR the folder name of ``output_dir`` in ``RUN_DIR/resolved_config.yaml`` (else the
      folder's own name). A trailing seed marker is dropped (``grpo_seed1`` and ``grpo-seed2`` are arm ``grpo``; a
      folder named ``seed3`` stands for its parent). Runs of one name are seeds of one arm only when their resolved
      configurations agree apart from the seed and what only names the run (output_dir, run_name, logging dirs, W&B
      names); otherwise the arm is split by the settings that differ, named in the arm and the table.
      The seed comes from the ``seed:<n>`` tag, the config's ``seed``
      or that marker (or a parent folder named ``seed<N>``). Two runs of one automatic arm with the same seed are
      refused (they are not seed replicates: name the arms with ``--arm``). ``--group-by run`` draws every run
      outside an ``--arm`` on its own instead.

The curves: accuracy reward, format reward, total reward, completion length, the self-reflection ("aha") monitor,
KL to the reference, entropy, training loss and the held-out accuracy (`recipes.shared.heldout`). A single run also
shows its spread within the run (total reward ± its std across completions; completion length from shortest to
longest). Runs may log at different steps or lack metrics (an SFT run has no rewards): a missing metric is an absent
line and the table says what an arm lacks; an arm's mean is taken at the steps all its runs logged.

Python API, for drivers such as a seeds × arms ablation suite (`launch/run_ablations.sh` uses the command line)::

    from recipes.report.compare import PANELS, Arm, Panel, load_run_dir, write_report

    arms = [Arm("grpo", [load_run_dir(d, scalars={"OOD accuracy": acc}) for d, acc in grpo_runs]), ...]
    write_report(arms, "report.html", "Mini ablations", panels=[*PANELS, Panel("OOD accuracy", "ood/accuracy")])

``scalars`` are per-run final values a caller measured elsewhere; the table gives their mean ± s.d. per arm.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from data_prep.files import write_atomic
from recipes.evaluation.curve import STEP_METRIC as CURVE_STEP
from recipes.evaluation.curve import curve_series
from recipes.report.checks import cvbench_problem, split_by_settings

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
DIVERGED_LABEL = "diverged (NaN/inf logged)"
BAND_NOTE = "arms of several runs: line = mean over the runs, band = min–max over the runs"


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
EXTRA_COLUMNS = (("clipped fraction", "completions/clipped_ratio"),)
CVBENCH_GROUPS = ("per_task", "per_source")  # summary.json's breakdowns (recipes/eval_cvbench.py)


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


# --- reading local runs ----------------------------------------------------------------------------------------------


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


# --- arms ------------------------------------------------------------------------------------------------------------


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


# --- the figure ------------------------------------------------------------------------------------------------------


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


# --- the tables ------------------------------------------------------------------------------------------------------


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


def write_report(
    runs: Sequence[RunLog | Arm],
    output: str | Path,
    title: str = "Ablation comparison",
    *,
    panels: Sequence[Panel] = PANELS,
    group_by: str = "arm",
) -> Path:
    """Write ``output`` (HTML) and the PNG next to it (same name, ``.png``); returns the PNG's path.

    ``runs``: `RunLog`s (grouped into arms as ``group_by`` says) and/or `Arm`s (kept as given). ``panels``: the
    curves to draw (`PANELS` plus any of the caller's); ``optional`` ones only when some run logged them.
    """
    if not runs:
        raise CompareError("nothing to compare: give at least one RUN_DIR, --arm or --wandb run")
    output = Path(output)
    png_path = output.with_suffix(".png")
    if output.is_dir() or png_path == output:
        raise CompareError(f"--output {output} must be an HTML file path (the PNG is written next to it)")
    arms = build_arms(runs, group_by)
    png = plot(arms, panels)
    page = render_html(arms, png, title, panels)
    try:
        write_atomic(png_path, png)
        write_atomic(output, page)
    except OSError as err:
        raise CompareError(f"cannot write the report: {err}") from None
    return png_path


# --- command line ----------------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.compare",
        description="Training curves of runs side by side, runs of one experiment over seeds as their mean and a "
        "min–max band, and a table of mean ± s.d. of the final metrics and CV-Bench results per arm, as one "
        "self-contained HTML file (+ a PNG next to it). Arms: the runs of an --arm, and the other runs grouped by "
        "experiment (W&B tag experiment:<name>; a RUN_DIR's resolved_config.yaml output_dir, else its folder name; "
        "a trailing -seed<N> dropped).",
        epilog="A RUN is a RUN_DIR or wandb:ENTITY/PROJECT/RUN_ID; give loose RUNs before the first --arm (an --arm "
        "takes every RUN after it). Examples: python -m recipes.compare out/s0/grpo "
        "out/s1/grpo out/s0/sft --output r.html; python -m recipes.compare --arm grpo a b c --arm sft d e "
        "--output r.html",
    )
    parser.add_argument(
        "run_dirs", nargs="*", metavar="RUN", help="output_dir of a recipe run (grouped automatically)"
    )
    parser.add_argument(
        "--wandb",
        nargs="+",
        default=[],
        metavar="RUN_PATH",
        help="W&B runs: ENTITY/PROJECT/RUN_ID through the public API (needs network and `wandb login`); a local W&B "
        "run folder RUN_DIR/wandb/offline-run-* is read through RUN_DIR's log history",
    )
    parser.add_argument(
        "--arm",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "RUN"),
        help="an arm named NAME made of the RUNs given after it (repeatable)",
    )
    parser.add_argument(
        "--group-by",
        choices=("arm", "run"),
        default="arm",
        help="arm (default): runs outside --arm grouped by experiment over seeds; run: every such run drawn alone",
    )
    parser.add_argument("--output", required=True, help="the HTML report to write; the PNG goes next to it")
    parser.add_argument("--title", default="Ablation comparison", help="the report's title")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = make_parser()
    args = parser.parse_args(argv)
    for name, *specs in args.arm:
        if not specs:
            parser.error(f"--arm {name} names no run: --arm NAME RUN [RUN ...]")
    try:
        if not (args.run_dirs or args.wandb or args.arm):
            raise CompareError("nothing to compare: give at least one RUN_DIR, --arm NAME RUN... or --wandb RUN_PATH")
        arms = [Arm(name, [load_run(spec) for spec in specs]) for name, *specs in args.arm]
        runs = [load_run(spec) for spec in args.run_dirs] + [load_run(f"wandb:{spec}") for spec in args.wandb]
        png_path = write_report([*arms, *runs], args.output, args.title, group_by=args.group_by)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    count = len(runs) + sum(len(arm.runs) for arm in arms)
    print(f"wrote {args.output} and {png_path} ({count} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
