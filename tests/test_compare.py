"""`recipes.report.compare` on hand-made run folders: arms over seeds, mixed logging steps, missing metrics, bad
inputs.

`tests/test_dashboards.py` runs it on real runs (the tiny ablation suite); here every log history is written by hand,
except one real `transformers.Trainer` run logged to W&B offline.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from recipes.report import compare, render
from recipes.report.arms import aggregate, build_arms
from recipes.report.compare import Arm, CompareError, load_run_dir, write_report
from recipes.report.figure import BAND_NOTE, make_figure
from recipes.report.read import run_log_from_api

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
OFFSETS = {0: 0.1, 1: 0.2, 2: 0.6}  # total reward of seed k at step s: OFFSETS[k] + 0.01 * s


def grpo_entry(step: int, **overrides) -> dict:
    entry = {
        "step": step,
        "epoch": step / 100,
        "loss": 0.01 * step,
        "reward": 0.1 * step,
        "reward_std": 0.05,
        "rewards/accuracy_reward/mean": 0.05 * step,
        "rewards/format_reward/mean": 0.05 * step,
        "rewards/reflection_reward/mean": 0.01 * step,
        "completions/mean_length": 100.0 + step,
        "completions/min_length": 50.0,
        "completions/max_length": 200.0,
        "completions/clipped_ratio": 0.0,
        "kl": 0.001 * step,
        "entropy": 1.0,
    }
    entry.update(overrides)
    return entry


def write_state(folder: Path, history: list[dict], global_step: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    step = global_step if global_step is not None else max((e["step"] for e in history), default=0)
    path = folder / "trainer_state.json"
    path.write_text(json.dumps({"global_step": step, "log_history": history}))
    return path


def write_cvbench(
    folder: Path, accuracy: float, official: float | None = None, per_task: dict | None = None, rows: int = 48
) -> None:
    """A CV-Bench summary of the run's own final weights (``folder``'s model files, written here if missing), over
    the whole dataset, in the fields `recipes.eval_cvbench` writes; real evaluations: tests/test_compare_cvbench.py."""
    from recipes.evaluation.fingerprint import model_fingerprint

    if not (folder / "model.safetensors").exists():
        (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
        (folder / "model.safetensors").write_bytes(f"weights of {folder}".encode())
    model = model_fingerprint(folder)
    summary = {
        "model": {"name": str(folder), "sha256": model["sha256"]},
        "fingerprint": {"id": "0123456789abcdef", "model": model},
        "rows": {"scored": rows, "skipped": 0, "selected": rows, "missing": 0, "dataset": rows, "limit": None},
        "accuracy": accuracy,
        "official_score": official,
        "per_task": {name: {"accuracy": value} for name, value in (per_task or {}).items()},
        "per_source": {},
        "strict": {"accuracy": accuracy / 2, "official_score": None},
    }
    (folder / "eval_cvbench").mkdir(parents=True, exist_ok=True)
    (folder / "eval_cvbench" / "summary.json").write_text(json.dumps(summary))


def seeded_run(root: Path, arm: str, seed: int, steps=range(1, 11), config: bool = True) -> Path:
    """``root/seed<k>/<arm>``: total reward OFFSETS[k] + 0.01·step, length 100 + 10·k + step."""
    folder = root / f"seed{seed}" / arm
    history = [
        grpo_entry(s, reward=OFFSETS[seed] + 0.01 * s, **{"completions/mean_length": 100.0 + 10 * seed + s})
        for s in steps
    ]
    write_state(folder, history)
    if config:  # what the recipes write (recipes/shared/resolved.py), under a folder that has since moved
        text = f"output_dir: /elsewhere/seed{seed}/{arm}\nseed: {seed}\nrun_name: {arm}-tiny-seed{seed}\n"
        (folder / "resolved_config.yaml").write_text(text)
    return folder


def table(page: str, index: int = 0) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (by first cell) of the page's index-th table."""
    body = page.split("<table>")[index + 1].split("</table>")[0]
    header = re.findall(r"<th>(.*?)</th>", body)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    return header, {row[0]: row for row in rows if row}


def cell(page: str, arm: str, column: str, index: int = 0) -> str:
    header, rows = table(page, index)
    return rows[arm][header.index(column)]


@pytest.fixture
def three_seeds(tmp_path):
    """Arm grpo_base over seeds 0-2 (with resolved configs and CV-Bench), and one SFT run with neither."""
    root = tmp_path / "suite"
    runs = [seeded_run(root, "grpo_base", seed) for seed in SEEDS]
    for seed, folder in zip(SEEDS, runs, strict=True):
        write_cvbench(folder, accuracy=0.5 + 0.1 * seed, official=0.4, per_task={"Count": 0.2 * seed})
    sft = root / "seed0" / "sft_baseline"
    write_state(sft, [{"step": s, "loss": 2.0 / s, "entropy": 0.5} for s in (2, 4, 6)])
    return [*runs, sft]


# --- arms over seeds -------------------------------------------------------------------------------------------------


def test_runs_of_one_arm_are_grouped_by_their_resolved_config_and_seed(three_seeds):
    arms = build_arms([load_run_dir(folder) for folder in three_seeds])
    assert [(arm.name, [run.seed for run in arm.runs]) for arm in arms] == [
        ("grpo_base", [0, 1, 2]),
        ("sft_baseline", [0]),  # no resolved_config.yaml: the folder names say arm and seed
    ]
    assert [arm.label for arm in arms] == ["grpo_base (n=3)", "sft_baseline"]


def test_the_mean_line_and_min_max_band_are_drawn_per_arm_with_n_in_the_legend(three_seeds):
    import matplotlib.pyplot as plt
    import numpy as np

    arms = build_arms([load_run_dir(folder) for folder in three_seeds])
    fig = make_figure(arms)
    try:
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == ["grpo_base (n=3)", "sft_baseline"]
        assert legend.get_title().get_text() == BAND_NOTE and "min–max" in BAND_NOTE
        ax = next(ax for ax in fig.axes if ax.get_title().startswith("Total reward"))
        (line,) = ax.get_lines()  # the SFT run logged no reward
        steps = np.arange(1, 11)
        assert line.get_label() == "grpo_base (n=3)"
        np.testing.assert_allclose(line.get_xdata(), steps)
        np.testing.assert_allclose(line.get_ydata(), 0.3 + 0.01 * steps)  # mean of offsets 0.1, 0.2, 0.6
        (band,) = ax.collections  # the seeds' band only: no ± std band of a single run
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(0.11) and ys.max() == pytest.approx(0.7)  # seed 0 at step 1, seed 2 at 10
    finally:
        plt.close(fig)


def test_a_single_run_arm_keeps_its_own_spread(tmp_path):
    import matplotlib.pyplot as plt

    run = load_run_dir(seeded_run(tmp_path, "grpo_base", 0))
    fig = make_figure(build_arms([run]))
    try:
        ax = next(ax for ax in fig.axes if ax.get_title().startswith("Total reward"))
        (band,) = ax.collections
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(0.11 - 0.05) and ys.max() == pytest.approx(0.2 + 0.05)  # ± reward_std
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["grpo_base"]
        assert fig.legends[0].get_title().get_text() == ""
    finally:
        plt.close(fig)


def test_the_table_gives_mean_and_sd_per_arm_with_cvbench_and_the_callers_scalars(three_seeds, tmp_path):
    runs = [load_run_dir(folder, scalars={"OOD accuracy": 0.9 + 0.05 * i}) for i, folder in enumerate(three_seeds[:3])]
    arms = [Arm("grpo", runs), Arm("sft", [load_run_dir(three_seeds[3])])]
    output = tmp_path / "report.html"
    write_report(arms, output, "Seeds")
    page = output.read_text()

    assert cell(page, "grpo", "runs") == "3" and cell(page, "grpo", "seeds") == "0, 1, 2"
    assert cell(page, "grpo", "total reward") == "0.4 ± 0.2646"  # final 0.2, 0.3, 0.7: sample s.d. √0.07
    assert cell(page, "grpo", "completion length") == "120 ± 10"  # 110, 120, 130
    assert cell(page, "grpo", "CV-Bench accuracy") == "0.6 ± 0.1"  # 0.5, 0.6, 0.7
    assert cell(page, "grpo", "CV-Bench official") == "0.4 ± 0"
    assert cell(page, "grpo", "OOD accuracy") == "0.95 ± 0.05"
    assert cell(page, "sft", "runs") == "1" and cell(page, "sft", "loss") == "0.3333"  # one run: its value alone
    assert cell(page, "sft", "OOD accuracy") == "—"
    assert "not logged: accuracy reward" in cell(page, "sft", "notes")
    assert "no CV-Bench summary" in cell(page, "sft", "notes")
    # CV-Bench per task, averaged over the arm's summaries
    assert (
        cell(page, "grpo", "Count", index=1) == "0.2 ± 0.2" and cell(page, "grpo", "strict", index=1) == "0.3 ± 0.05"
    )
    assert "sft" not in table(page, 1)[1]
    assert "mean ± sample standard deviation" in page and "min–max" in page


def test_runs_that_log_at_different_steps_are_averaged_where_all_logged(tmp_path):
    every = load_run_dir(seeded_run(tmp_path, "grpo", 0, steps=range(1, 11)))
    sparse = load_run_dir(seeded_run(tmp_path, "grpo", 1, steps=range(2, 16, 2)))
    curve = aggregate([every.series["reward"], sparse.series["reward"]])
    assert curve.steps == [2.0, 4.0, 6.0, 8.0, 10.0] and curve.n == 2
    assert curve.mean == pytest.approx([0.15 + 0.01 * s for s in curve.steps])
    page_path = tmp_path / "r.html"
    write_report([every, sparse], page_path)
    page = page_path.read_text()
    assert cell(page, "grpo", "last step") == "10–14"
    assert "runs end at different steps" in cell(page, "grpo", "notes")
    sparse_only = load_run_dir(seeded_run(tmp_path, "other", 2, steps=[11]))
    assert aggregate([every.series["reward"], sparse_only.series["reward"]]) is None  # no common step: no mean


def test_two_runs_with_one_seed_are_not_averaged_as_replicates(tmp_path, capsys):
    a = seeded_run(tmp_path / "suite_a", "grpo_base", 1)
    b = seeded_run(tmp_path / "suite_b", "grpo_base", 1)
    output = tmp_path / "r.html"
    assert compare.main([str(a), str(b), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "error: runs" in err and "with seed 1: they are not seed replicates" in err and "--group-by run" in err
    assert not output.exists()
    assert compare.main([str(a), str(b), "--group-by", "run", "--output", str(output)]) == 0
    _, rows = table(output.read_text())
    assert list(rows) == ["suite_a/seed1/grpo_base", "suite_b/seed1/grpo_base"]  # told apart by their folders


def test_the_cli_groups_automatically_and_by_explicit_arms(three_seeds, tmp_path, capsys):
    output = tmp_path / "auto.html"
    assert compare.main([*map(str, three_seeds), "--output", str(output), "--title", "My <suite>"]) == 0
    page = output.read_text()
    assert page.startswith("<!DOCTYPE html>") and "My &lt;suite&gt;" in page
    assert list(table(page)[1]) == ["grpo_base", "sft_baseline"] and cell(page, "grpo_base", "runs") == "3"
    assert "wrote" in capsys.readouterr().out

    explicit = tmp_path / "explicit.html"
    args = ["--arm", "two", *map(str, three_seeds[:2]), "--arm", "rest", *map(str, three_seeds[2:])]
    assert compare.main([*args, "--output", str(explicit)]) == 0
    page = explicit.read_text()
    assert cell(page, "two", "runs") == "2" and cell(page, "rest", "runs") == "2"
    assert cell(page, "two", "total reward") == "0.25 ± 0.07071"
    mixed = [str(three_seeds[3]), "--arm", "sft_baseline", str(three_seeds[0]), "--output", str(explicit)]
    assert compare.main(mixed) == 2
    assert "arm name 'sft_baseline' used twice" in capsys.readouterr().err


# --- the page --------------------------------------------------------------------------------------------------------


def test_the_report_is_one_html_file_with_its_png_embedded(three_seeds, tmp_path):
    output = tmp_path / "out" / "report.html"
    png_path = write_report([load_run_dir(r) for r in three_seeds], output)
    assert png_path == output.with_suffix(".png") and png_path.read_bytes().startswith(PNG_MAGIC)
    page = output.read_text()
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == png_path.read_bytes()  # one self-contained file
    for name in ("seed0/grpo_base", "seed2/grpo_base", "sft_baseline"):  # every run listed with its source
        assert f"<b>{name}</b>" in page
    assert "arm grpo_base; seed 2;" in page
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_missing_metrics_and_the_trainers_final_entry_are_no_curves(tmp_path):
    history = [grpo_entry(s, kl=None) for s in range(5, 21, 5)]  # TRL logs None for a metric with no valid value
    history.append({"step": 20, "train_runtime": 12.0, "train_loss": 0.3, "total_flos": 0.0})
    run = load_run_dir(write_state(tmp_path / "grpo_instruct", history).parent)
    assert [p[0] for p in run.series["reward"]] == [5.0, 10.0, 15.0, 20.0]
    assert "kl" not in run.series and "train_loss" not in run.series
    write_report([run], tmp_path / "r.html")
    notes = cell((tmp_path / "r.html").read_text(), "grpo_instruct", "notes")
    assert "not logged: KL" in notes and "no CV-Bench summary (eval_cvbench/summary.json)" in notes


def test_an_optional_curve_appears_only_when_a_run_logged_it(three_seeds, tmp_path):
    write_report([load_run_dir(r) for r in three_seeds], tmp_path / "plain.html")
    assert "held-out accuracy" not in (tmp_path / "plain.html").read_text()
    write_state(three_seeds[0], [grpo_entry(s, **{"heldout/accuracy": 0.3}) for s in range(1, 11)])
    write_report([load_run_dir(r) for r in three_seeds], tmp_path / "with.html")
    page = (tmp_path / "with.html").read_text()
    assert cell(page, "grpo_base", "held-out accuracy") == "0.3 (n=1)"  # one of the arm's three runs logged it
    assert "held-out accuracy" in cell(page, "sft_baseline", "notes")


def test_the_most_advanced_history_wins_checkpoints_sorted_by_step(tmp_path):
    run = tmp_path / "grpo_base"
    write_state(run / "checkpoint-9", [grpo_entry(s) for s in range(1, 10)])
    write_state(run / "checkpoint-10", [grpo_entry(s) for s in range(1, 11)])
    assert load_run_dir(run).last_step == 10  # numeric order: checkpoint-10 after checkpoint-9
    write_state(run, [grpo_entry(s) for s in range(1, 4)])  # an older trainer_state.json of the run itself
    assert load_run_dir(run).source.endswith("checkpoint-10/trainer_state.json")
    write_state(run, [grpo_entry(s) for s in range(1, 13)])
    assert load_run_dir(run).source == str(run / "trainer_state.json")


def test_an_unreadable_resolved_config_falls_back_to_the_folder_name(tmp_path, caplog):
    folder = seeded_run(tmp_path, "grpo_base", 2, config=False)
    (folder / "resolved_config.yaml").write_text("output_dir: [unclosed\n")
    run = load_run_dir(folder)
    assert (run.arm, run.seed) == ("grpo_base", 2)  # from seed2/grpo_base
    assert "ignoring unreadable" in caplog.text
    (folder / "resolved_config.yaml").write_text("training:\n  output_dir: out/grpo_len-seed7\n  seed: 7\n")
    assert (load_run_dir(folder).arm, load_run_dir(folder).seed) == ("grpo_len", 7)  # one level of sections


# --- errors ----------------------------------------------------------------------------------------------------------


def test_cli_errors_exit_2_with_the_fix_and_leave_the_old_report(tmp_path, capsys):
    output = tmp_path / "report.html"
    output.write_text("old report")

    def fails(*argv: str) -> str:
        assert compare.main([*argv, "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        assert output.read_text() == "old report" and not (tmp_path / "report.png").exists()
        return err

    assert "nothing to compare" in fails()
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    assert re.search(
        r"no log history in .*not_a_run.*trainer_state\.json.*output_dir of a recipe run", fails(str(empty))
    )
    assert "is not a folder" in fails(str(tmp_path / "missing"))
    (empty / "trainer_state.json").write_text("{not json")
    assert f"cannot read {empty / 'trainer_state.json'}" in fails(str(empty))
    write_state(empty, [])
    assert "no logged metrics" in fails(str(empty))
    good = seeded_run(tmp_path, "grpo", 0)
    assert "the same run is given twice" in fails(str(good), str(good / ".." / good.name))
    assert compare.main([str(good), "--output", str(tmp_path / "r.png")]) == 2
    assert "must be an HTML file path" in capsys.readouterr().err


# --- W&B -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline with every file of it under tmp_path, and no credentials of the machine's user in reach."""
    home = tmp_path / "home"
    for key in ("WANDB_API_KEY", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_PROJECT", "WANDB_DIR", "WANDB_NAME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key, name in (("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(key, str(home / name))
    import wandb

    # W&B keeps the settings it read from the environment (group, tags, dirs) in a process-wide singleton: drop it
    # before (an earlier test of this process may have left one) and after, so every run reads its own environment.
    wandb.teardown()
    yield home
    wandb.teardown()


@pytest.mark.slow  # about 20 s: W&B's service starts and stops
def test_a_wandb_offline_run_compares_through_its_own_log_history(tmp_path, monkeypatch, wandb_offline, capsys):
    """A real Trainer logging to W&B offline: its run folder (and its offline W&B folder) give the same report."""
    import torch
    import wandb
    from transformers import Trainer, TrainingArguments

    class Line(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, labels):
            return {"loss": ((self.w * x - labels) ** 2).mean()}

    run_dir = tmp_path / "suite" / "grpo_base"
    monkeypatch.setenv("WANDB_DIR", str(run_dir))  # as recipes/shared/callbacks.py:setup_reporting does
    monkeypatch.setenv("WANDB_RUN_GROUP", "suite")
    monkeypatch.setenv("WANDB_TAGS", "experiment:grpo_base,seed:5")
    run_dir.mkdir(parents=True)
    data = [{"x": torch.tensor([1.0]), "labels": torch.tensor([2.0])}] * 8
    args = TrainingArguments(
        output_dir=str(run_dir),
        max_steps=4,
        logging_steps=1,
        per_device_train_batch_size=2,
        learning_rate=0.1,
        report_to=["wandb"],
        save_strategy="no",
        use_cpu=True,
        seed=5,
        run_name="grpo_base-line-seed5",
    )
    trainer = Trainer(model=Line(), args=args, train_dataset=data)
    trainer.train()
    trainer.save_state()
    wandb.finish()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    pages = []
    for argv in ([str(run_dir)], ["--wandb", str(offline)], ["--wandb", str(next(offline.glob("*.wandb")))]):
        output = tmp_path / f"report{len(pages)}.html"
        assert compare.main([*argv, "--output", str(output)]) == 0, capsys.readouterr().err
        pages.append(output.read_text())
        assert cell(pages[-1], "grpo_base", "loss") == render._fmt(losses[-1])
        assert cell(pages[-1], "grpo_base", "last step") == "4"

    (run_dir / "trainer_state.json").unlink()
    assert compare.main(["--wandb", str(offline), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "is a local W&B run, read through its run's own log history" in err and "wandb sync" in err


def test_a_wandb_run_path_without_credentials_is_a_clear_error(wandb_offline, tmp_path, capsys):
    output = tmp_path / "r.html"
    assert compare.main(["--wandb", "me/proj/abc123", "--output", str(output)]) == 2  # real wandb.Api(), no key
    err = capsys.readouterr().err
    assert "error: cannot read W&B run me/proj/abc123" in err and "wandb login" in err and "Traceback" not in err
    assert compare.main(["--wandb", "not-a-run", "--output", str(output)]) == 2
    assert "neither an existing local W&B run folder nor a run path ENTITY/PROJECT/RUN_ID" in capsys.readouterr().err
    assert not output.exists()


class PublicRun:
    """Stand-in for `wandb.apis.public.Run` with only the public attributes compare reads: a real one needs the W&B
    server (`wandb.Api().run` queries it at construction), which tests cannot reach."""

    def __init__(self, run_id: str, tags: list[str], config: dict, rewards: list[float]):
        self.id, self.name, self.group, self.tags, self.config = run_id, f"run-{run_id}", "suite-a", tags, config
        self.rewards = rewards

    def scan_history(self):
        for step, reward in enumerate(self.rewards, start=1):
            yield {"_step": 2 * step, "train/global_step": step, "train/reward": reward, "train/kl": 0.1 * step}
            yield {"_step": 2 * step + 1, "train/global_step": step, "profiling/Time taken: generate": 3.0}
        yield {"_step": 99, "completions": {"_type": "table-file"}}  # a logged table: no curve


def test_wandb_runs_are_read_from_the_public_api_run_and_grouped_by_tags(tmp_path):
    runs = [
        run_log_from_api(PublicRun("a", ["experiment:grpo_base", "seed:0"], {"seed": 9}, [0.1, 0.3]), "wandb:e/p/a"),
        run_log_from_api(PublicRun("b", ["experiment:grpo_base"], {"seed": {"value": 1}}, [0.2, 0.5]), "wandb:e/p/b"),
        run_log_from_api(PublicRun("c", [], {"output_dir": "/x/sft_baseline", "seed": 0}, [0.0]), "wandb:e/p/c"),
    ]
    assert runs[0].series["reward"] == [(1.0, 0.1), (2.0, 0.3)] and runs[0].series["kl"][-1] == (2.0, 0.2)
    assert "completions" not in runs[0].series and "_step" not in runs[0].series
    assert [(r.arm, r.seed) for r in runs] == [("grpo_base", 0), ("grpo_base", 1), ("sft_baseline", 0)]
    assert runs[0].info == {"id": "a", "group": "suite-a", "tags": ["experiment:grpo_base", "seed:0"]}
    output = tmp_path / "r.html"
    write_report(runs, output)
    page = output.read_text()
    assert cell(page, "grpo_base", "total reward") == "0.4 ± 0.1414" and cell(page, "grpo_base", "seeds") == "0, 1"
    assert cell(page, "grpo_base", "notes").endswith("no CV-Bench summary")  # no local path to suggest
    assert "W&amp;B group suite-a" in page
    with pytest.raises(CompareError, match="no logged training metrics"):
        run_log_from_api(PublicRun("d", [], {}, []), "wandb:e/p/d")
