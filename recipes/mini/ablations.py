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
import sys
import time
from pathlib import Path
from typing import Any

from data_prep.files import write_atomic
from recipes.mini.ablation_arms import ARMS, OOD_FILE, SUITE, Settings, home_of
from recipes.mini.ablation_summary import summarize, summary_table, write_report
from recipes.mini.ood import score
from recipes.mini.r1 import (
    COLOR_PROMPTS_PER_STEP,
    SHAPE_BATCH,
    color_stage,
    load_average,
    prepare_stage,
    recipe_command,
    recipe_definition,
    stage_a_stage,
)
from recipes.mini.runs import Stage, StageError, claim_outputs, run_stages, start_over
from recipes.shared import provenance

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# the stages
# --------------------------------------------------------------------------------------------------------------


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
