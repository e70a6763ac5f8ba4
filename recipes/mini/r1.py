"""Mini R1-Zero: its stages (keyed by what defines them), its inputs and its result (result.json, a PNG, a line).

    python -m recipes.mini_r1 run --out outputs/mini_r1/seed0 --seed 0         # what launch/mini_r1.sh runs
    python -m recipes.mini_r1 prepare --out outputs/mini_r1/seed0 --seed 0     # model + data, through data_prep
    python -m recipes.mini_r1 report --out outputs/mini_r1/seed0 --seed 0      # after both stages have run

``run`` runs prepare, stage A (`recipes/sft_baseline.py`), stage B (`recipes/grpo_base.py`) and the report, each
stage skipped when ``OUT/provenance.json`` says it finished with the same definition (seed, config and its hash,
steps, options; `recipes.mini.runs`) and refused when it was made with another; ``--fresh`` first deletes exactly
what that record owns. `recipes/mini/MINI_R1.md` explains the experiment. ``prepare`` writes, under ``--out``:

``init/``                  the random mini Qwen2-VL (`data_prep.fixtures.tiny_model`, preset "mini", seeded)
``data/shape``             stage A records: "Is the shape a triangle?" (`data_prep.fixtures.synthetic` →
`data_prep.sat`) ``data/shape_heldout``     held-out stage A records (another seed)
``data/color``             stage B records: "Is the shape red?"
``data/color_heldout``     the held-out colour records whose greedy accuracy is the experiment's result
``data/color_ood``         with ``--ood-rows N``: the colour question on shades of red and blue that no training record
                           shows (`data_prep.fixtures.synthetic` kind ``mini_color_shade``), the mini ablations'
                           out-of-distribution set

``report`` reads the log histories the recipes leave in ``stage_a/`` and ``stage_b/`` (`recipes.mini.r1_result`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from recipes.mini.r1_result import REPORT_KIND, report, summary_line
from recipes.mini.runs import (
    KIND,
    Stage,
    StageError,
    config_definition,
    run_stages,
    stage_timings,
    start_over,
)

logger = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 1000  # held-out scenes are drawn with seed + 1000: never the training scenes
OOD_SEED_OFFSET = 2000  # and the out-of-distribution scenes with seed + 2000
# Not recipes.shared.cli's (which imports torch): the driver starts its stages in a fraction of a second.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "recipes" / "configs"
STAGE_A_CONFIG = CONFIG_DIR / "mini" / "sft_shape.yaml"
STAGE_B_CONFIG = CONFIG_DIR / "mini" / "grpo_color.yaml"
SFT_RECIPE = REPO_ROOT / "recipes" / "sft_baseline.py"
GRPO_RECIPE = REPO_ROOT / "recipes" / "grpo_base.py"
SHAPE_BATCH, COLOR_PROMPTS_PER_STEP = 16, 4  # records per step of stage A and of stage B: one epoch of records


# --------------------------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------------------------


def datasets_to_write(
    seed: int, shape_rows: int, color_rows: int, heldout_rows: int, ood_rows: int = 0
) -> dict[str, tuple]:
    """Folder name → (synthetic kind, rows, seed) of every dataset of a run."""
    heldout_seed = seed + HELDOUT_SEED_OFFSET
    datasets = {
        "shape": ("mini_shape", shape_rows, seed),
        "shape_heldout": ("mini_shape", heldout_rows, heldout_seed),
        "color": ("mini_color", color_rows, seed),
        "color_heldout": ("mini_color", heldout_rows, heldout_seed),
    }
    if ood_rows:
        datasets["color_ood"] = ("mini_color_shade", ood_rows, seed + OOD_SEED_OFFSET)
    return datasets


def prepare(
    out: Path,
    seed: int,
    shape_rows: int = 0,
    color_rows: int = 0,
    heldout_rows: int = 0,
    ood_rows: int = 0,
    model: bool = True,
) -> None:
    """The random model (unless ``model`` is false) and each record dataset given rows, each rebuilt from scratch
    (they are deterministic); the raw synthetic parquet files stay beside them, in ``data/raw/``."""
    from data_prep.fixtures.synthetic import write_synthetic
    from data_prep.sat import convert

    if model:
        from data_prep.fixtures.tiny_model import build_tiny_model

        build_tiny_model(out / "init", variant="base", seed=seed, preset="mini", overwrite=True)
    data = out / "data"
    for name, (kind, rows, data_seed) in datasets_to_write(
        seed, shape_rows, color_rows, heldout_rows, ood_rows
    ).items():
        if rows < 1:
            continue
        shutil.rmtree(data / name, ignore_errors=True)
        raw = write_synthetic(kind, rows, data_seed, data / "raw" / f"{name}.parquet")
        convert(str(raw), data / name, seed=data_seed)
        logger.info("%s: %d %s records (seed %d)", data / name, rows, kind, data_seed)


# --------------------------------------------------------------------------------------------------------------
# stages: what `run` (and the mini ablations) run, keyed by what defines them
# --------------------------------------------------------------------------------------------------------------


def repo_path(path: Path) -> str:
    """A path inside the repository as the definitions record it: relative, the same on every machine."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def recipe_definition(recipe: Path, config: Path, **settings: Any) -> dict[str, Any]:
    return {
        "recipe": repo_path(recipe),
        "config": {**config_definition(config), "path": repo_path(config)},
        **settings,
    }


def _data_folders(home: Path, *names: str) -> tuple[Path, ...]:
    return tuple(
        folder for name in names for folder in (home / "data" / name, home / "data" / "raw" / f"{name}.parquet")
    )


def prepare_stage(
    home: Path, seed: int, shape_rows: int, heldout_rows: int, ood_rows: int = 0, label: str = ""
) -> Stage:
    """The random model and every record dataset but stage B's training records (``init/``, ``data/``)."""
    sizes = {"shape_rows": shape_rows, "heldout_rows": heldout_rows, "ood_rows": ood_rows}
    command = [sys.executable, "-m", "recipes.mini.r1", "prepare", "--out", str(home), "--seed", str(seed)]
    command += ["--color-rows=0", *(f"--{key.replace('_', '-')}={value}" for key, value in sizes.items())]
    names = ["shape", "shape_heldout", "color_heldout"] + (["color_ood"] if ood_rows else [])
    return Stage(
        "prepare",
        home,
        (home / "init", *_data_folders(home, *names)),
        {"seed": seed, "model": "data_prep.fixtures.tiny_model preset mini", **sizes},
        [command],
        label=label or "prepare",
    )


def color_stage(home: Path, seed: int, rows: int, label: str = "") -> Stage:
    """Stage B's training records (``data/color``): their number follows stage B's steps, so they have their own
    stage (changing the steps of stage B does not redo stage A)."""
    command = [sys.executable, "-m", "recipes.mini.r1", "prepare", "--out", str(home), "--seed", str(seed)]
    command += ["--no-model", "--shape-rows=0", "--heldout-rows=0", f"--color-rows={rows}"]
    return Stage(
        "color_records",
        home,
        _data_folders(home, "color"),
        {"seed": seed, "color_rows": rows},
        [command],
        label=label or "stage B records",
    )


def recipe_command(recipe: Path, config: Path, **options: Any) -> list[str]:
    """``python RECIPE --config CONFIG --option value ...`` (options in the order given)."""
    command = [sys.executable, str(recipe), "--config", str(config)]
    for key, value in options.items():
        command += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return command


def stage_a_stage(
    home: Path, prepared: Stage, seed: int, steps: int, every: int, report_to: str, label: str = "", **wandb: str
) -> Stage:
    """Stage A: SFT of the random model on the shape question (``stage_a/``)."""
    command = recipe_command(
        SFT_RECIPE,
        STAGE_A_CONFIG,
        model_name_or_path=home / "init",
        dataset_path=home / "data" / "shape",
        output_dir=home / "stage_a",
        heldout_dataset_path=home / "data" / "shape_heldout",
        heldout_eval_steps=every,
        max_steps=steps,
        seed=seed,
        report_to=report_to,
        disable_tqdm=True,
        **wandb,
    )
    return Stage(
        "stage_a",
        home,
        (home / "stage_a",),
        recipe_definition(
            SFT_RECIPE,
            STAGE_A_CONFIG,
            seed=seed,
            max_steps=steps,
            heldout_eval_steps=every,
            prepare=prepared.defined_by,
        ),
        [command],
        after=(prepared.key,),
        label=label or "stage A",
    )


def stage_b_stage(
    home: Path, stage_a: Stage, records: Stage, seed: int, steps: int, every: int, report_to: str, overrides: list[str]
) -> Stage:
    """Stage B: GRPO on the colour question from the stage A model (``stage_b/``)."""
    command = recipe_command(
        GRPO_RECIPE,
        STAGE_B_CONFIG,
        model_name_or_path=home / "stage_a",
        dataset_path=home / "data" / "color",
        output_dir=home / "stage_b",
        heldout_dataset_path=home / "data" / "color_heldout",
        heldout_eval_steps=every,
        max_steps=steps,
        seed=seed,
        report_to=report_to,
        disable_tqdm=True,
    )
    definition = recipe_definition(
        GRPO_RECIPE,
        STAGE_B_CONFIG,
        seed=seed,
        max_steps=steps,
        heldout_eval_steps=every,
        overrides=list(overrides),
        stage_a=stage_a.defined_by,
        records=records.defined_by,
    )
    return Stage(
        "stage_b", home, (home / "stage_b",), definition, [command + list(overrides)], (stage_a.key,), label="stage B"
    )


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def run(
    out: Path,
    seed: int,
    stage_a_steps: int,
    stage_b_steps: int,
    heldout_rows: int,
    every_a: int,
    every_b: int,
    report_to: str,
    overrides: list[str],
    start_over_hint: str,
    redo_changed: bool = False,
    fresh: bool = False,
) -> dict:
    """The whole experiment: each stage not done already with the same definition, then the report. With ``fresh``,
    what OUT's record owns is deleted first (nothing else)."""
    out = out.resolve()
    if fresh:
        start_over([out], kinds=(KIND, REPORT_KIND))
    load_start = load_average()
    prepared = prepare_stage(out, seed, stage_a_steps * SHAPE_BATCH, heldout_rows)
    records = color_stage(out, seed, stage_b_steps * COLOR_PROMPTS_PER_STEP)
    stage_a = stage_a_stage(out, prepared, seed, stage_a_steps, every_a, report_to)
    stage_b = stage_b_stage(out, stage_a, records, seed, stage_b_steps, every_b, report_to, overrides)
    stages = [prepared, records, stage_a, stage_b]
    run_stages(stages, jobs=1, start_over=start_over_hint, redo_changed=redo_changed)
    timings = stage_timings(out)
    seconds = {
        "prepare": timings["prepare"]["seconds"] + timings["color_records"]["seconds"],
        "stage_a": timings["stage_a"]["seconds"],
        "stage_b": timings["stage_b"]["seconds"],
    }
    seconds["total"] = round(sum(seconds.values()), 1)
    cpu = round(sum(timings[stage.name]["cpu_seconds"] for stage in stages), 1)
    return report(out, seed, seconds, {"cpu_seconds": cpu, "load_average": [load_start, load_average()]})


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def _key_values(items: list[str]) -> dict[str, float]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--seconds takes NAME=SECONDS pairs, got {item!r}")
        pairs[key] = float(value)
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.mini_r1", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    whole = commands.add_parser("run", help="every stage not done already, then the report (launch/mini_r1.sh)")
    whole.add_argument("--out", type=Path, required=True)
    whole.add_argument("--seed", type=int, default=0)
    whole.add_argument("--stage-a-steps", type=int, default=600)
    whole.add_argument("--stage-b-steps", type=int, default=150)
    whole.add_argument("--heldout-rows", type=int, default=200)
    whole.add_argument("--heldout-every-a", type=int, default=100)
    whole.add_argument("--heldout-every-b", type=int, default=25)
    whole.add_argument("--report-to", default="none")
    whole.add_argument(
        "--start-over",
        default="To redo the stages made with other settings (and those made from them): --redo-changed; "
        "or write into another folder (--out).",
        help="the sentence that says how to redo or start over",
    )
    whole.add_argument("--redo-changed", action="store_true", help="redo the stages made with other settings")
    whole.add_argument("--fresh", action="store_true", help="first delete what OUT's record owns (nothing else)")
    whole.add_argument("overrides", nargs=argparse.REMAINDER, help="after --: stage B recipe options")
    prep = commands.add_parser("prepare", help="build the random model and the records of both stages")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--shape-rows", type=int, default=9600, help="stage A records (steps x batch: one epoch)")
    prep.add_argument("--color-rows", type=int, default=600, help="stage B records (steps x prompts per step)")
    prep.add_argument("--heldout-rows", type=int, default=200, help="held-out records of each question")
    prep.add_argument("--ood-rows", type=int, default=0, help="out-of-distribution colour records (0: none)")
    prep.add_argument("--no-model", dest="model", action="store_false", help="write the records only")
    rep = commands.add_parser("report", help="write result.json and curve.png, print the summary line")
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--seconds", nargs="*", default=[], help="wall-clock seconds per stage, NAME=SECONDS")
    rep.add_argument("--cpu-seconds", type=float, default=None, help="CPU seconds used by all stages")
    rep.add_argument("--load", type=float, nargs=2, default=None, help="1-minute load average at start and end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.command == "prepare":
        prepare(args.out, args.seed, args.shape_rows, args.color_rows, args.heldout_rows, args.ood_rows, args.model)
        return 0
    try:
        if args.command == "run":
            overrides = args.overrides[1:] if args.overrides[:1] == ["--"] else args.overrides
            result = run(
                args.out,
                args.seed,
                args.stage_a_steps,
                args.stage_b_steps,
                args.heldout_rows,
                args.heldout_every_a,
                args.heldout_every_b,
                args.report_to,
                overrides,
                args.start_over,
                args.redo_changed,
                args.fresh,
            )
        else:
            extra: dict[str, Any] = {}
            if args.cpu_seconds is not None:
                extra["cpu_seconds"] = args.cpu_seconds
            if args.load is not None:
                extra["load_average"] = args.load
            result = report(args.out, args.seed, _key_values(args.seconds), extra)
    except (FileNotFoundError, ValueError, StageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_line(result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
