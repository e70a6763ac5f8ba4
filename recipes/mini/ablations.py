"""The paper's ablations in miniature: stage-B arms from one shared stage-A model per seed, over seeds, on a CPU.

    bash launch/mini_ablations.sh                       # seeds 0 1 2, every arm (what this module's `run` does)
    python -m recipes.mini_ablations run --out outputs/mini_ablations --seeds 0 1 2
    python -m recipes.mini_ablations summarize --out outputs/mini_ablations --seeds 0 1 2   # summary + report again
    python -m recipes.mini_ablations score --run RUN_DIR --base STAGE_A_DIR --records RECORDS --output ood.json

Per seed (``OUT/seed<N>/``), the mini R1-Zero experiment's stage A (`recipes.mini.r1`: SFT of a random mini Qwen2-VL
on "Is the shape a triangle?") runs once; every arm then trains on "Is the shape red?" from that model, on the same
records, for the same number of steps (`ARMS`): GRPO with the paper's settings (MINI_R1's stage B), GRPO + the
naive length reward, the SFT baseline (answer targets), Dr. GRPO, DAPO and GSPO. Each arm is scored at step 0, every
``every_b`` steps and at the end on two held-out sets, by greedy decoding and the run's own format-gated accuracy
reward (`recipes.shared.heldout`):

* the held-out scenes (``data/color_heldout``: drawn like the training scenes, another seed), logged during
  training as ``heldout/accuracy``;
* the out-of-distribution scenes (``data/color_ood``): the same question about shades of red and blue that no
  record of any stage shows (`data_prep.fixtures.synthetic` kind ``mini_color_shade``). The arm saves a model at each
  of those steps; `score` rescores them (and the stage-A model, step 0) on these scenes, writes ``<arm>/ood.json`` and
  deletes the intermediate checkpoints.

Outputs: ``OUT/summary.json`` (every arm and seed: held-out and OOD accuracy before/after and their curves, OOD
accuracy per shade, wall and CPU seconds; mean ± s.d. per arm), ``OUT/report.html`` + ``report.png``
(`recipes.report.compare`: each arm's curves as the mean over seeds with a min–max band, and a table of mean ± s.d.)
and ``OUT/figure.png`` (held-out and OOD accuracy and completion length only). Stages are keyed by what defines them
(`recipes.mini.runs`): a rerun skips what finished with the same settings and refuses what was made with others.
Each seed folder's ``provenance.json`` records its stages, OUT's the report files (`recipes.shared.provenance`):
``--fresh`` deletes exactly those, for the seeds given, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from data_prep.files import write_atomic
from recipes.mini.r1 import (
    COLOR_PROMPTS_PER_STEP,
    CONFIG_DIR,
    GRPO_RECIPE,
    SFT_RECIPE,
    SHAPE_BATCH,
    color_stage,
    load_average,
    prepare_stage,
    recipe_command,
    recipe_definition,
    stage_a_stage,
)
from recipes.mini.runs import Stage, StageError, claim_outputs, run_stages, stage_timings, start_over
from recipes.shared import provenance

logger = logging.getLogger(__name__)

SUITE = "mini_ablations"
MINI = CONFIG_DIR / "mini"
OOD_FILE = "ood.json"
HELDOUT_KEY, OOD_KEY = "heldout/accuracy", "ood/accuracy"


@dataclass(frozen=True)
class ArmSpec:
    recipe: Path
    config: Path
    description: str


ARMS: dict[str, ArmSpec] = {
    "grpo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color.yaml", "GRPO, the paper's settings (MINI_R1's stage B)"),
    "grpo_length": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_length.yaml", "GRPO + the naive length reward"),
    "sft": ArmSpec(SFT_RECIPE, MINI / "sft_color.yaml", "SFT on the same records (answer targets)"),
    "dr_grpo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_dr_grpo.yaml", "Dr. GRPO loss"),
    "dapo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_dapo.yaml", "DAPO loss"),
    "gspo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_gspo.yaml", "GSPO (sequence-level ratio, off-policy split)"),
}


@dataclass
class Settings:
    """What defines a suite run (the launcher's environment)."""

    out: Path
    seeds: list[int]
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    stage_a_steps: int = 600
    stage_b_steps: int = 60
    heldout_rows: int = 200
    ood_rows: int = 200
    every_a: int = 100
    every_b: int = 10
    report_to: str = "none"
    group: str = SUITE
    jobs: int = 2

    def check(self) -> None:
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown:
            raise StageError(f"unknown arm(s) {', '.join(unknown)}; valid arms: {', '.join(ARMS)}")
        if not self.seeds or not self.arms:
            raise StageError("give at least one seed and one arm")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.arms)) != len(self.arms):
            raise StageError(f"seeds and arms must not repeat: seeds {self.seeds}, arms {self.arms}")
        for name in ("stage_a_steps", "stage_b_steps", "heldout_rows", "ood_rows", "every_a", "every_b", "jobs"):
            if getattr(self, name) < 1:
                raise StageError(f"{name} must be at least 1, got {getattr(self, name)}")


# --------------------------------------------------------------------------------------------------------------
# the stages
# --------------------------------------------------------------------------------------------------------------


def home_of(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def wandb_env(arm: str, seed: int) -> dict[str, str]:
    # recipes.shared.callbacks.setup_reporting adds experiment:<folder>, model: and seed: to these tags.
    return {"WANDB_TAGS": f"suite:{SUITE},arm:{arm},seed:{seed}"}


def arm_stage(settings: Settings, home: Path, seed: int, arm: str, stage_a: Stage, records: Stage) -> Stage:
    """One arm: train from the stage-A model (a model saved at every measured step), then score on the OOD scenes."""
    spec = ARMS[arm]
    every, steps = settings.every_b, settings.stage_b_steps
    train = recipe_command(
        spec.recipe,
        spec.config,
        model_name_or_path=home / "stage_a",
        dataset_path=home / "data" / "color",
        output_dir=home / arm,
        heldout_dataset_path=home / "data" / "color_heldout",
        heldout_eval_steps=every,
        max_steps=steps,
        seed=seed,
        save_strategy="steps",
        save_steps=every,
        save_only_model=True,
        report_to=settings.report_to,
        wandb_group=settings.group,
        run_name=f"{arm}-seed{seed}",
        disable_tqdm=True,
    )
    score = [sys.executable, "-m", "recipes.mini.ablations", "score", "--run", str(home / arm)]
    score += ["--base", str(home / "stage_a"), "--records", str(home / "data" / "color_ood")]
    score += ["--output", str(home / arm / OOD_FILE)]
    definition = recipe_definition(
        spec.recipe,
        spec.config,
        seed=seed,
        max_steps=steps,
        heldout_eval_steps=every,
        ood_records="data/color_ood",
        stage_a=stage_a.defined_by,
        records=records.defined_by,
    )
    return Stage(
        arm,
        home,
        (home / arm,),
        definition,
        [train, score],
        after=(stage_a.key, records.key),
        env=wandb_env(arm, seed),
        label=f"seed {seed} {arm}",
    )


def suite_stages(settings: Settings) -> list[Stage]:
    """Every stage of every seed, each seed's stage A first (so that the arms of every seed can start early)."""
    out = settings.out
    per_seed = []
    for seed in settings.seeds:
        home = home_of(out, seed)
        prepared = prepare_stage(
            home,
            seed,
            settings.stage_a_steps * SHAPE_BATCH,
            settings.heldout_rows,
            settings.ood_rows,
            label=f"seed {seed} data",
        )
        records = color_stage(
            home, seed, settings.stage_b_steps * COLOR_PROMPTS_PER_STEP, label=f"seed {seed} records"
        )
        stage_a = stage_a_stage(
            home,
            prepared,
            seed,
            settings.stage_a_steps,
            settings.every_a,
            settings.report_to,
            label=f"seed {seed} stage A",
            wandb_group=settings.group,
            run_name=f"stage_a-seed{seed}",
        )
        stage_a.env = wandb_env("stage_a", seed)
        arms = [arm_stage(settings, home, seed, arm, stage_a, records) for arm in settings.arms]
        per_seed.append(([prepared, records, stage_a], arms))
    return [stage for first, _ in per_seed for stage in first] + [stage for _, arms in per_seed for stage in arms]


# --------------------------------------------------------------------------------------------------------------
# out-of-distribution scoring
# --------------------------------------------------------------------------------------------------------------


def _checkpoint_step(path: Path) -> int | None:
    suffix = path.name.removeprefix("checkpoint-")
    return int(suffix) if path.name.startswith("checkpoint-") and suffix.isdigit() else None


def models_to_score(run_dir: Path, base_dir: Path) -> list[tuple[int, Path]]:
    """(step, model folder): the starting model (step 0), every saved checkpoint, and the final model."""
    state = json.loads((run_dir / "trainer_state.json").read_text())
    final = int(state["global_step"])
    saved = sorted((s, p) for p in run_dir.glob("checkpoint-*") if (s := _checkpoint_step(p)) is not None)
    return [(0, base_dir), *((s, p) for s, p in saved if 0 < s < final), (final, run_dir)]


def score_models(run_dir: Path, models: list[tuple[int, Path]], records: Path) -> dict[str, Any]:
    """Greedy format-gated accuracy of each model on ``records``, exactly as the run scored its held-out set: its
    own `recipes.shared.heldout.HeldoutAccuracyCallback` (prompt template, pixel bounds, accuracy reward, max new
    tokens from the run's ``resolved_config.yaml``), evaluating through a plain `transformers.Trainer`.

    Records of several ``question_type``s (the OOD set's shades) are also scored per type (``by_type``); the
    overall accuracy is over all records.
    """
    import yaml
    from datasets import load_from_disk
    from transformers import Trainer, TrainingArguments

    from recipes.shared.args import RecipeArguments
    from recipes.shared.heldout import DEFAULT_MAX_NEW_TOKENS, HeldoutAccuracyCallback
    from recipes.shared.models import load_for_inference, load_processor
    from recipes.shared.prompts import get_template

    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    recipe, training = resolved["recipe"], resolved["training"]
    script_args = RecipeArguments(**recipe)
    script_args.heldout_samples = None
    script_args.heldout_max_new_tokens = (
        recipe.get("heldout_max_new_tokens") or training.get("max_completion_length") or DEFAULT_MAX_NEW_TOKENS
    )
    template = get_template(script_args.prompt_template)
    dataset = load_from_disk(str(records))
    types = sorted(set(dataset["question_type"])) if "question_type" in dataset.column_names else []
    curve, formats, by_type = [], [], {kind: [] for kind in types} if len(types) > 1 else {}
    with tempfile.TemporaryDirectory() as scratch:
        # One record folder per type (the callback reads its records from disk); the whole set when only one.
        parts = {None: records}
        if by_type:
            parts = {}
            for i, kind in enumerate(types):
                parts[kind] = Path(scratch) / f"part{i}"
                dataset.filter(lambda t, kind=kind: t == kind, input_columns="question_type").save_to_disk(parts[kind])
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=training.get("per_device_eval_batch_size") or 100,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        for step, path in models:
            processor = load_processor(
                SimpleNamespace(model_name_or_path=str(path), model_revision=None), script_args, template
            )
            model = load_for_inference(str(path), dtype="float32")
            trainer = Trainer(model=model, args=args, processing_class=processor)
            totals = [0, 0, 0]
            for kind, folder in parts.items():
                script_args.heldout_dataset_path = str(folder)
                correct, well_formed, count = HeldoutAccuracyCallback(trainer, script_args).evaluate()
                totals = [totals[0] + correct, totals[1] + well_formed, totals[2] + count]
                if kind is not None:
                    by_type[kind].append([step, correct / max(count, 1)])
            curve.append([step, totals[0] / max(totals[2], 1)])
            formats.append([step, totals[1] / max(totals[2], 1)])
            logger.info("step %d (%s): accuracy %.3f on %s (%d records)", step, path, curve[-1][1], records, totals[2])
    return {"records": str(records), "rows": len(dataset), "curve": curve, "format": formats, "by_type": by_type}


def score(run_dir: Path, base_dir: Path, records: Path, output: Path, keep_checkpoints: bool = False) -> dict:
    """Score a finished arm on ``records`` at each saved step, write ``output``, then drop the checkpoints (the final
    model stays): they exist only to be scored at the steps the held-out set was."""
    models = models_to_score(run_dir, base_dir)
    result = score_models(run_dir, models, records)
    write_atomic(output, json.dumps(result, indent=2) + "\n")
    if not keep_checkpoints:
        for path in run_dir.glob("checkpoint-*"):
            if _checkpoint_step(path) is not None:
                shutil.rmtree(path)
    return result


# --------------------------------------------------------------------------------------------------------------
# summary and report
# --------------------------------------------------------------------------------------------------------------


def _series(history: list[dict], key: str) -> list[list[float]]:
    points = {entry["step"]: entry[key] for entry in history if entry.get(key) is not None}
    return [[step, points[step]] for step in sorted(points)]


def run_summary(home: Path, seed: int, arm: str, timings: dict[str, Any]) -> dict[str, Any]:
    """One arm of one seed: held-out and OOD accuracy before, after and along the way, its final format and
    completion length, and what it cost."""
    run_dir = home / arm
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    heldout = _series(history, HELDOUT_KEY)
    if not heldout:
        raise StageError(f"{run_dir} logged no {HELDOUT_KEY}: was it trained by this suite?")
    ood = json.loads((run_dir / OOD_FILE).read_text())
    heldout_format = _series(history, "heldout/format")
    length = _series(history, "completions/mean_length")
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
        shape = _series(history, HELDOUT_KEY)
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


REPORT_ENTRY, REPORT_KIND = "report", "mini-report"
REPORT_FILES = ("summary.json", "report.html", "report.png", "figure.png")


def finish(settings: Settings, extra: dict[str, Any]) -> dict[str, Any]:
    summary = summarize(settings, extra)
    # Recorded before they are written: FRESH=1 deletes them (and only them) even after a run killed half-way.
    claim_outputs(settings.out, REPORT_ENTRY, REPORT_KIND, REPORT_FILES, seeds=settings.seeds)
    write_atomic(settings.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_report(settings, summary)
    return summary


def check_out(settings: Settings) -> list[Path]:
    """The seed folders, after refusing an OUT that holds files of unknown origin (no record, not a seed folder)."""
    homes = [home_of(settings.out, seed) for seed in settings.seeds]
    seed_folders = [p.name for p in settings.out.glob("seed*") if (p / provenance.RECORD).is_file()]
    kept = [*seed_folders, *(home.name for home in homes)]
    verdict = provenance.inspect(settings.out, REPORT_KIND, {}, REPORT_ENTRY, ignore=kept)
    if verdict.state == "foreign":
        raise StageError(
            f"{settings.out} holds files but no {provenance.RECORD} saying what made them "
            f"({', '.join(verdict.foreign)}): they are not this suite's, and nothing there is reused or deleted. "
            "Choose another output folder (OUT=<new folder>)."
        )
    return homes


def delete_recorded(settings: Settings, homes: list[Path]) -> list[Path]:
    """FRESH=1: what the given seeds' records and OUT's record own, and nothing else (other seeds stay)."""
    removed = start_over(homes)
    others = [home.name for home in settings.out.glob("seed*")]
    return removed + start_over([settings.out], kinds=(REPORT_KIND,), ignore=others)


def run(settings: Settings, start_over_hint: str, redo_changed: bool = False, fresh: bool = False) -> dict[str, Any]:
    """Every stage not done already (``jobs`` at a time), then ``summary.json`` and ``report.html``. With ``fresh``,
    what the records of OUT and of the given seeds' folders own is deleted first (and nothing else)."""
    settings.check()
    settings.out = settings.out.resolve()
    homes = check_out(settings)
    if fresh:
        delete_recorded(settings, homes)
    start, load_start = time.perf_counter(), load_average()
    fates = run_stages(suite_stages(settings), settings.jobs, start_over_hint, redo_changed)
    extra = {
        "invocation": {
            "wall_seconds": round(time.perf_counter() - start, 1),
            "stages_run": sum(fate == "run" for fate in fates.values()),
            "stages_done_already": sum(fate == "done" for fate in fates.values()),
            "jobs": settings.jobs,
            "cpu_count": os.cpu_count(),
            "load_average": [load_start, load_average()],
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    }
    return finish(settings, extra)


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help=f"any of: {', '.join(ARMS)}")
    parser.add_argument("--stage-a-steps", type=int, default=600)
    parser.add_argument("--stage-b-steps", type=int, default=60)
    parser.add_argument("--heldout-rows", type=int, default=200)
    parser.add_argument("--ood-rows", type=int, default=200)
    parser.add_argument("--heldout-every-a", dest="every_a", type=int, default=100)
    parser.add_argument("--heldout-every-b", dest="every_b", type=int, default=10)
    parser.add_argument("--report-to", default="none", choices=["none", "wandb"])
    parser.add_argument("--group", default=SUITE, help="W&B group of every run")
    parser.add_argument("--jobs", type=int, default=2, help="stages run at the same time (one CPU core each)")


def _settings(args: argparse.Namespace) -> Settings:
    names = ("out", "seeds", "arms", "stage_a_steps", "stage_b_steps", "heldout_rows", "ood_rows", "every_a")
    names += ("every_b", "report_to", "group", "jobs")
    return Settings(**{name: getattr(args, name) for name in names})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.mini_ablations", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    whole = commands.add_parser("run", help="every stage not done already, then summary.json and report.html")
    _add_settings(whole)
    whole.add_argument("--redo-changed", action="store_true", help="redo the stages made with other settings")
    whole.add_argument("--fresh", action="store_true", help="first delete what the records of these seeds own")
    whole.add_argument(
        "--start-over",
        default="To redo them (and the stages made from them): --redo-changed; or write elsewhere: --out.",
        help="the sentence that says how to redo or start over",
    )
    again = commands.add_parser("summarize", help="summary.json, report.html and the table from finished runs")
    _add_settings(again)
    rescore = commands.add_parser("score", help="score a finished arm on another held-out set (OOD)")
    rescore.add_argument("--run", type=Path, required=True, help="the arm's output_dir")
    rescore.add_argument("--base", type=Path, required=True, help="the model it started from (step 0)")
    rescore.add_argument("--records", type=Path, required=True, help="records written by data_prep")
    rescore.add_argument("--output", type=Path, required=True)
    rescore.add_argument("--keep-checkpoints", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "score":
            score(args.run, args.base, args.records, args.output, args.keep_checkpoints)
            return 0
        settings = _settings(args)
        if args.command == "run":
            summary = run(settings, args.start_over, args.redo_changed, args.fresh)
        else:
            settings.check()
            summary = finish(settings, {})
    except (StageError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_table(summary))
    print(f"\nsummary: {settings.out / 'summary.json'}\nreport:  {settings.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
