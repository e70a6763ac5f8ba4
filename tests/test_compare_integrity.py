"""`recipes.report.compare` counts only what belongs to a run: its own CV-Bench score, its divergence, its real seeds.

* A CV-Bench summary counts for a run only when it was computed from the run folder's final weights and covers the
  whole dataset; anything else is shown, marked with the reason, and kept out of every mean.
* NaN/inf logged by a run is shown as divergence in the table and the figure, never replaced by the last finite value.
* Runs are seeds of one arm only when their resolved configurations agree apart from the seed and the run's names.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from recipes.report.arms import build_arms
from recipes.report.compare import Arm, load_run_dir, main, write_report
from recipes.report.figure import DIVERGED_LABEL, make_figure
from tests.test_compare import cell, grpo_entry, write_cvbench, write_state


def run_folder(root: Path, name: str, seed: int, history: list[dict] | None = None, **training) -> Path:
    """A run folder as the recipes leave it: log history and resolved_config.yaml (sections, as
    recipes/shared/resolved.py)."""
    folder = root / f"seed{seed}" / name
    write_state(folder, history or [grpo_entry(s) for s in range(1, 6)])
    config = {
        "recipe": {"dataset_path": "data/sat", "reward_funcs": ["accuracy", "format"], "wandb_group": f"suite-{seed}"},
        "training": {
            "learning_rate": 1e-6,
            "seed": seed,
            "data_seed": seed,
            "output_dir": f"/elsewhere/seed{seed}/{name}",
            "run_name": f"{name}-seed{seed}",
            "logging_dir": f"/elsewhere/seed{seed}/{name}/logs",
            **training,
        },
        "environment": {"num_processes": 1, "versions": {"trl": "1.16.0"}},
    }
    (folder / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    return folder


def report(tmp_path: Path, *items) -> str:
    output = tmp_path / "report.html"
    write_report(list(items), output)
    return output.read_text()


# --- CV-Bench: only the run's own, whole-dataset score counts --------------------------------------------------------


def test_a_summary_of_other_weights_or_a_subset_is_shown_marked_and_kept_out_of_the_mean(tmp_path):
    runs = [run_folder(tmp_path, "grpo", seed) for seed in (0, 1, 2, 3)]
    for seed, folder in enumerate(runs):
        write_cvbench(folder, accuracy=0.5 + 0.1 * seed)
    # seed1: training continued after the evaluation (the final weights changed); seed2: a --limit 8 evaluation;
    # seed3: an evaluation that stopped with rows missing.
    (runs[1] / "model.safetensors").write_bytes(b"weights after 200 more steps")
    summary = json.loads((runs[2] / "eval_cvbench" / "summary.json").read_text())
    summary["rows"] |= {"selected": 8, "scored": 8, "limit": 8}
    (runs[2] / "eval_cvbench" / "summary.json").write_text(json.dumps(summary))
    summary = json.loads((runs[3] / "eval_cvbench" / "summary.json").read_text())
    summary["rows"] |= {"scored": 40, "missing": 8}
    (runs[3] / "eval_cvbench" / "summary.json").write_text(json.dumps(summary))

    loaded = [load_run_dir(folder) for folder in runs]
    assert [run.counted_cvbench is not None for run in loaded] == [True, False, False, False]
    assert "names or sizes differ" in loaded[1].cvbench_excluded
    assert "--limit subset (8 of 48 rows)" in loaded[2].cvbench_excluded
    assert "8 of 48 rows have no prediction" in loaded[3].cvbench_excluded
    page = report(tmp_path, *loaded)
    assert cell(page, "grpo", "CV-Bench accuracy") == "0.5 (n=1)"  # seed0 alone, not the mean of all four
    notes = cell(page, "grpo", "notes")
    assert "CV-Bench summary counted for 1 of 4 runs" in notes and "not counted" in notes
    assert page.count("NOT COUNTED") == 3  # each summary is still shown, marked


def test_same_sizes_other_bytes_are_caught_by_the_hash(tmp_path):
    folder = run_folder(tmp_path, "grpo", 0)
    write_cvbench(folder, accuracy=0.5)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(bytes([data[0] ^ 1]) + data[1:])  # one bit of the weights
    run = load_run_dir(folder)
    assert run.counted_cvbench is None and "computed from other weights" in run.cvbench_excluded


def test_a_run_folder_without_final_weights_counts_no_summary(tmp_path):
    folder = run_folder(tmp_path, "grpo", 0)
    write_cvbench(folder, accuracy=0.5)
    for name in ("model.safetensors", "config.json"):
        (folder / name).unlink()
    run = load_run_dir(folder)
    assert run.counted_cvbench is None and "holds no final model" in run.cvbench_excluded


@pytest.mark.slow
def test_a_real_evaluation_counts_until_the_run_is_trained_further(tiny_base_dir, tmp_path):
    """The real evaluation into RUN_DIR/eval_cvbench counts; after more training (new weights) it no longer does."""
    import torch
    from transformers import AutoModelForImageTextToText

    from data_prep.fixtures.synthetic import write_synthetic
    from recipes.eval_cvbench import EvalArguments
    from recipes.eval_cvbench import main as evaluate

    data = write_synthetic("cvbench", rows=4, seed=0, output=tmp_path / "cvbench.parquet")
    runs = []
    for seed in (0, 1):
        folder = run_folder(tmp_path, "grpo", seed)
        for item in tiny_base_dir.iterdir():
            shutil.copy(item, folder / item.name)
        limit = 4 if seed == 0 else 2  # a limit at the dataset's size selects the whole dataset
        args = EvalArguments(str(folder), str(folder / "eval_cvbench"), dataset=str(data), max_new_tokens=2)
        args.limit = limit
        evaluate(args)
        runs.append(folder)
    loaded = [load_run_dir(folder) for folder in runs]
    assert loaded[0].counted_cvbench is not None and "--limit subset (2 of 4 rows)" in loaded[1].cvbench_excluded
    # Training continues in the same folder: the same files, the same sizes, other weights.
    model = AutoModelForImageTextToText.from_pretrained(runs[0], dtype=torch.float32)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    model.save_pretrained(runs[0])
    run = load_run_dir(runs[0])
    assert run.counted_cvbench is None and "computed from other" in run.cvbench_excluded


# --- NaN/inf: divergence shown, not dropped --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_diverged_run_is_shown_as_diverged_in_the_table_and_the_figure(bad, tmp_path):
    history = [grpo_entry(s) for s in range(1, 5)] + [grpo_entry(s, loss=bad) for s in range(5, 8)]
    diverged = run_folder(tmp_path, "grpo", 0, history)
    healthy = [run_folder(tmp_path, "grpo", seed, [grpo_entry(s) for s in range(1, 8)]) for seed in (1, 2)]
    runs = [load_run_dir(folder) for folder in (diverged, *healthy)]
    assert runs[0].diverged["loss"][0] == 5
    assert runs[0].last("loss") == 0.04  # the series keeps its finite points ...
    page = report(tmp_path, Arm("grpo", runs))
    text = "nan" if bad != bad else "inf"
    # ... but the table does not pass the last finite loss off as the final one, nor averages the other runs.
    assert runs[0].name == "seed0/grpo"  # runs of one name are told apart by their folders
    assert cell(page, "grpo", "loss") == f"diverged: seed0/grpo ({text} at step 5) — 1 of 3 runs"
    assert cell(page, "grpo", "total reward") == "0.7 ± 0"  # metrics that stayed finite are averaged as usual
    assert f"loss {text} at step 5" in page
    fig = make_figure(build_arms([Arm("grpo", runs)]))
    loss_ax = next(ax for ax in fig.axes if ax.get_title() == "Training loss")
    marks = [line for line in loss_ax.get_lines() if line.get_gid() == "diverged:seed0/grpo"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [5] and list(marks[0].get_ydata()) == [0.04]
    assert DIVERGED_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
    other_ax = next(ax for ax in fig.axes if ax.get_title().startswith("Total reward"))
    assert not [line for line in other_ax.get_lines() if (line.get_gid() or "").startswith("diverged")]


def test_a_run_that_logged_only_nan_is_still_shown(tmp_path):
    folder = run_folder(tmp_path, "grpo", 0, [{"step": s, "loss": float("nan")} for s in (1, 2)])
    run = load_run_dir(folder)
    assert run.diverged == {"loss": (1.0, run.diverged["loss"][1])} and not run.series
    assert cell(report(tmp_path, run), "grpo", "loss") == "diverged: grpo (nan at step 1)"


# --- seeds of one arm: only when the configurations agree ------------------------------------------------------------


def test_runs_differing_beyond_seed_and_names_are_not_averaged_as_seeds(tmp_path, capsys):
    low = [run_folder(tmp_path / "lr1", "grpo", seed) for seed in (0, 1)]
    high = [run_folder(tmp_path / "lr2", "grpo", seed, learning_rate=2e-6) for seed in (2, 3)]
    arms = build_arms([load_run_dir(folder) for folder in (*low, *high)])
    assert [(arm.name, [r.seed for r in arm.runs]) for arm in arms] == [
        ("grpo [training.learning_rate=1e-06]", [0, 1]),
        ("grpo [training.learning_rate=2e-06]", [2, 3]),
    ]
    assert "training.learning_rate=2e-06" in arms[1].notes[0] and "not grouped" in arms[1].notes[0]
    # Runs that differ only in seed, output folder, run name, logging dir and W&B group are one arm.
    assert [len(arm.runs) for arm in build_arms([load_run_dir(folder) for folder in low])] == [2]
    # The command line names the difference in the report; an explicit --arm still groups by hand.
    output = tmp_path / "r.html"
    assert main([*map(str, low), *map(str, high), "--output", str(output)]) == 0
    page = output.read_text()
    assert re.search(r"not grouped with the other grpo runs \(settings differ[^<]*learning_rate", page)
    assert main(["--arm", "all", *map(str, low), *map(str, high), "--output", str(output)]) == 0
    assert cell(output.read_text(), "all", "runs") == "4"
    capsys.readouterr()


def test_runs_without_a_recorded_configuration_are_grouped_by_name_and_said_so(tmp_path):
    folders = [run_folder(tmp_path, "grpo", seed) for seed in (0, 1)]
    bare = tmp_path / "seed2" / "grpo"
    write_state(bare, [grpo_entry(s) for s in range(1, 6)])
    arms = build_arms([load_run_dir(folder) for folder in (*folders, bare)])
    assert [(arm.name, len(arm.runs)) for arm in arms] == [
        ("grpo [configuration recorded]", 2),
        ("grpo [configuration not recorded]", 1),
    ]
    assert "cannot tell whether it is a seed" in arms[1].notes[0]


def test_a_whole_dataset_summary_with_skipped_rows_counts_and_says_so(tmp_path):
    folder = run_folder(tmp_path, "grpo", 0)
    write_cvbench(folder, accuracy=0.5)
    path = folder / "eval_cvbench" / "summary.json"
    summary = json.loads(path.read_text())
    summary["rows"] |= {"scored": 46, "skipped": 2}  # two undecodable images, --skip_bad_images true
    path.write_text(json.dumps(summary))
    page = report(tmp_path, load_run_dir(folder))
    assert cell(page, "grpo", "CV-Bench accuracy") == "0.5"
    assert "CV-Bench left out 2 unusable rows (skipped)" in cell(page, "grpo", "notes")
