"""The mini R1-Zero experiment: the held-out accuracy callback, the SFT target with its stop token, the launcher's
run keying (nothing made with another seed or config is reused), and one shortened run of `launch/mini_r1.sh` in
which GRPO must raise held-out accuracy on the colour question by 25 points or more.

The end-to-end test is the project's strongest regression test: if data, prompts, rewards or training break, GRPO
stops raising accuracy. It takes a few minutes of CPU (see `CI_ENV`); the full experiment is in
recipes/mini/MINI_R1.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.files import tree_hashes

from data_prep.fixtures.synthetic import write_synthetic
from data_prep.sat import convert
from recipes import grpo_base, sft_baseline
from recipes.mini.r1 import color_stage, prepare_stage, stage_a_stage, stage_b_stage
from recipes.mini.r1_result import REPORT_KIND, build_result, series
from recipes.mini.runs import KIND, StageError, start_over
from recipes.shared import provenance
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.heldout import HeldoutAccuracyCallback

LAUNCHER = REPO_ROOT / "launch" / "mini_r1.sh"
SFT_TARGET = " The image shows a shape. </think><answer> {answer} </answer><|endoftext|>"


@pytest.fixture(scope="module")
def color_records(tmp_path_factory):
    """Six held-out colour records, through the normal data path (synthetic SAT-schema rows → data_prep.sat)."""
    folder = tmp_path_factory.mktemp("mini")
    write_synthetic("mini_color", rows=6, seed=1000, output=folder / "color.parquet")
    convert(str(folder / "color.parquet"), folder / "color", seed=1000)
    return folder / "color"


def run_recipe(module, config: str, model_dir, data_dir, out_dir, *extra: str):
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--save_strategy", "no", "--disable_tqdm", "true", *extra]
    return module.main(*module.make_parser().parse_args_and_config(argv))


def heldout_steps(trainer) -> list[int]:
    return [entry["step"] for entry in trainer.state.log_history if "heldout/accuracy" in entry]


def heldout_callback(trainer) -> HeldoutAccuracyCallback:
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, HeldoutAccuracyCallback))


@pytest.mark.parametrize(
    ("every", "max_steps", "expected"),
    [(1, 2, [0, 1, 2]), pytest.param(2, 3, [0, 2, 3], marks=pytest.mark.slow)],  # one of them in the quick loop
)
def test_heldout_accuracy_is_logged_at_start_every_n_steps_and_at_the_end(
    every, max_steps, expected, tiny_base_dir, sat_records_dir, color_records, tmp_path
):
    trainer = run_recipe(
        grpo_base,
        "tiny/grpo_base.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path / "run",
        *("--max_steps", str(max_steps), "--heldout_dataset_path", str(color_records)),
        *("--heldout_eval_steps", str(every), "--per_device_eval_batch_size", "4"),
    )
    assert heldout_steps(trainer) == expected
    entry = next(e for e in trainer.state.log_history if "heldout/accuracy" in e)
    assert 0.0 <= entry["heldout/accuracy"] <= 1.0 and 0.0 <= entry["heldout/format"] <= 1.0
    # The training metrics keep their own entries (the held-out log does not flush them into its entry).
    assert all("rewards/accuracy_reward/mean" not in e for e in trainer.state.log_history if "heldout/accuracy" in e)
    assert sum("rewards/accuracy_reward/mean" in e for e in trainer.state.log_history) == max_steps
    # The recipes keep the log history in the run folder, where `recipes.mini.r1 report` reads it.
    assert series(json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"], "heldout/accuracy")


def test_heldout_accuracy_works_for_sft_runs(tiny_base_dir, sat_records_dir, color_records, tmp_path):
    trainer = run_recipe(
        sft_baseline,
        "tiny/sft_baseline.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path / "run",
        *("--max_steps", "2", "--heldout_dataset_path", str(color_records), "--heldout_eval_steps", "5"),
        *("--heldout_max_new_tokens", "8"),
    )
    assert heldout_steps(trainer) == [0, 2]
    assert heldout_callback(trainer).max_new_tokens == 8


@pytest.mark.parametrize("gated", [True, pytest.param(False, marks=pytest.mark.slow)])  # one in the quick loop
def test_heldout_accuracy_scores_greedy_answers_with_the_runs_accuracy_reward(
    gated, tiny_base_dir, sat_records_dir, color_records, tmp_path, monkeypatch
):
    trainer = run_recipe(
        grpo_base,
        "tiny/grpo_base.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path / "run",
        *("--max_steps", "1", "--heldout_dataset_path", str(color_records), "--heldout_eval_steps", "5"),
        *("--accuracy_requires_format", str(gated).lower(), "--per_device_eval_batch_size", "4"),
    )
    callback = heldout_callback(trainer)
    truths = list(callback.dataset["solution"])

    def answers(template):
        served = iter(truths)  # the records are scored in order, batch after batch, on one process
        return lambda model, prompts, images: [
            [{"role": "assistant", "content": template.format(next(served))}] for _ in prompts
        ]

    # The base prompt ends with "<think>": a completion that closes the think block is well formed.
    monkeypatch.setattr(callback, "_generate", answers(" red, so </think><answer> {} </answer>"))
    assert callback.evaluate() == (len(truths), len(truths), len(truths))
    # Right answer, broken format: counted only when the run's accuracy is not format-gated.
    monkeypatch.setattr(callback, "_generate", answers("<answer>{}</answer>"))
    assert callback.evaluate() == (0 if gated else len(truths), 0, len(truths))


@pytest.mark.slow
def test_heldout_accuracy_under_two_zero3_ranks_counts_every_record_once(
    tiny_base_dir, sat_records_dir, color_records, tmp_path
):
    """Two real CPU processes under DeepSpeed ZeRO-3 (whose forward passes are collective): 5 records split 3 + 2,
    the short shard padded, every measurement completes on both ranks and counts 5 records."""
    config = json.loads((REPO_ROOT / "zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # really partition the tiny model
    (tmp_path / "zero3.json").write_text(json.dumps(config))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("ZERO", "ACCELERATE_CONFIG", "DDP_BACKEND", "RUN_NAME")}
    env.update(NUM_GPUS="2", MASTER_PORT=str(port), DS_CONFIG=str(tmp_path / "zero3.json"), OMP_NUM_THREADS="1")
    env.update(OUTPUT_DIR=str(tmp_path / "run"), PYTHON=sys.executable)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    args = ["--model_name_or_path", str(tiny_base_dir), "--dataset_path", str(sat_records_dir)]
    args += ["--report_to", "none", "--max_steps", "3", "--save_strategy", "no", "--log_completions", "false"]
    args += ["--heldout_dataset_path", str(color_records), "--heldout_samples", "5", "--heldout_eval_steps", "2"]
    args += ["--per_device_eval_batch_size", "2"]
    result = subprocess.run(
        [
            "bash",
            str(REPO_ROOT / "launch" / "run_8gpu.sh"),
            "recipes/grpo_base.py",
            "recipes/configs/tiny/grpo_base.yaml",
        ]
        + args,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=900,  # a hang guard, not a speed check
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    for step in (0, 2, 3):  # logged by both ranks, each with the total over the two shards
        assert log.count(f"step {step}: held-out accuracy") == 2, log[-3000:]
    assert log.count("(5 records)") == 6
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert series(history, "heldout/accuracy") and [s for s, _ in series(history, "heldout/accuracy")] == [0, 2, 3]


def test_sft_completions_through_the_plain_template_end_with_eos(tiny_base_dir, color_records, tmp_path):
    """Stage A's target: the fixed think text and the answer, then the EOS the role-free template cannot add."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from recipes.shared.prepare import prepare

    config = CONFIG_DIR / "mini/sft_shape.yaml"
    argv = ["--config", str(config), "--model_name_or_path", str(tiny_base_dir)]
    argv += ["--dataset_path", str(color_records), "--output_dir", str(tmp_path / "run")]
    argv += ["--per_device_train_batch_size", "2"]  # the fixture has fewer records than one step of 16
    _, processor, dataset = prepare(*sft_baseline.make_parser().parse_args_and_config(argv), with_completion=True)
    rows = [dict(dataset[i]) for i in range(4)]
    batch = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)(rows)
    for ids, labels, row in zip(batch["input_ids"], batch["labels"], rows, strict=True):
        assert processor.tokenizer.decode(ids[labels != -100]) == SFT_TARGET.format(answer=row["solution"])
        assert ids[labels != -100][-1] == processor.tokenizer.eos_token_id


def test_launcher_prints_its_usage():  # tests/test_launch.py runs shellcheck on it with the other launchers
    usage = subprocess.run(["bash", str(LAUNCHER), "-h"], capture_output=True, text=True, check=True).stdout
    for name in ("Usage: bash launch/mini_r1.sh [SEED]", "STAGE_A_STEPS", "STAGE_B_STEPS", "HELDOUT_ROWS", "OUT"):
        assert name in usage
    assert "FRESH" in usage and "REDO" in usage and "provenance.json" in usage


def launch(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(LAUNCHER), *args], capture_output=True, text=True, env=environment, cwd=cwd)


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fake_finished_run(out: Path, seed: int) -> None:
    """OUT as a finished run of `seed` with the launcher's default settings leaves it: every stage's folders and
    its record in provenance.json."""
    prepared = prepare_stage(out, seed, 600 * 16, 200)
    records = color_stage(out, seed, 150 * 4)
    stage_a = stage_a_stage(out, prepared, seed, 600, 100, "none")
    stages = [prepared, records, stage_a, stage_b_stage(out, stage_a, records, seed, 150, 25, "none", [])]
    for stage in stages:
        for folder in stage.folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "made.txt").write_text(f"{stage.name} seed {seed}")
        provenance.start(out, KIND, stage.defined_by, stage.name, owns=[f.relative_to(out) for f in stage.folders])
        provenance.finish(out, stage.name)


def test_a_run_of_another_seed_in_the_same_folder_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "run"
    fake_finished_run(out.resolve(), seed=0)
    before = contents(out)
    result = launch("1", cwd=tmp_path, OUT=str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "prepare (init, " in result.stderr and "seed: 0 there, 1 now" in result.stderr
    assert "stage_b (stage_b) was made with other settings" in result.stderr
    assert "REDO=1 bash launch/mini_r1.sh 1" in result.stderr and "FRESH=1" in result.stderr
    assert contents(out) == before


def test_stage_b_settings_changed_refuse_stage_b_only(tmp_path):
    out = tmp_path / "run"
    fake_finished_run(out.resolve(), seed=0)
    result = launch("0", "--learning_rate", "1e-4", cwd=tmp_path, OUT=str(out), STAGE_B_STEPS="100")
    assert result.returncode == 2
    assert "max_steps: 150 there, 100 now" in result.stderr and "color_rows: 600 there, 400 now" in result.stderr
    assert 'overrides: [] there, ["--learning_rate", "1e-4"] now' in result.stderr
    assert "stage_a (stage_a)" not in result.stderr and "prepare (" not in result.stderr  # stage A is reusable


def test_outputs_without_a_record_are_not_reused_nor_deleted(tmp_path):
    """A folder filled by an older launcher or by hand (no provenance.json): its seed and settings are unknown, so it
    is refused, with FRESH=1 and REDO=1 too, and the way out is another folder (FRESH would delete nothing there)."""
    out = tmp_path / "run"
    (out / "stage_a").mkdir(parents=True)
    (out / "stage_a" / "model.safetensors").write_text("weights of unknown origin")
    for env in ({}, {"FRESH": "1"}, {"REDO": "1"}):
        result = launch("0", cwd=tmp_path, OUT=str(out), **env)
        assert result.returncode == 2 and "holds files but no provenance.json" in result.stderr, result.stderr
        assert "OUT=<new folder>" in result.stderr and "FRESH=1" not in result.stderr.splitlines()[0]
        assert contents(out) == {"stage_a/model.safetensors": b"weights of unknown origin"}


def test_fresh_deletes_exactly_what_the_record_owns(tmp_path):
    """What FRESH=1 (``run --fresh``) does first: the run's recorded folders go; the user's files in OUT, even inside
    a folder of the run's, stay byte for byte; a folder with files but no record is refused, nothing deleted."""
    out = (tmp_path / "run").resolve()
    fake_finished_run(out, seed=0)
    (out / "notes.txt").write_text("my notes")
    (out / "data" / "mine.parquet").write_text("my data, next to the run's")
    before = tree_hashes(out)
    removed = start_over([out], kinds=(KIND, REPORT_KIND))
    assert {p.relative_to(out).parts[0] for p in removed} == {"init", "data", "stage_a", "stage_b"}
    after = tree_hashes(out)
    assert {k: v for k, v in after.items() if k not in ("provenance.json", ".provenance.lock")} == {
        "notes.txt": before["notes.txt"],
        "data/mine.parquet": before["data/mine.parquet"],
    }
    assert provenance.read(out) == {}

    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "stage_a").write_text("not a run of ours")
    with pytest.raises(StageError, match="no provenance.json saying what made them"):
        start_over([tmp_path / "theirs"], kinds=(KIND, REPORT_KIND))
    assert (tmp_path / "theirs" / "stage_a").read_text() == "not a run of ours"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["0", "--max_steps", "5"], {}, "--max_steps is set by this launcher: set STAGE_B_STEPS=N instead"),
        (["0", "--output_dir=x"], {}, "--output_dir is set by this launcher: set OUT=<folder> instead"),
        (["-1"], {}, "SEED='-1' must be a whole number >= 0"),
        (["0", "1"], {}, "unexpected argument '1': overrides are options such as --max_steps 10"),
        (["0"], {"STAGE_A_STEPS": "0"}, "STAGE_A_STEPS='0' must be a positive whole number"),
        (["0"], {"FRESH": "yes"}, "FRESH='yes' must be one of: 0 1"),
    ],
)
def test_launcher_refuses_bad_input_before_writing_anything(args, env, message, tmp_path):
    result = launch(*args, cwd=tmp_path, OUT=str(tmp_path / "run"), **env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_report_needs_the_stage_logs(tmp_path):
    with pytest.raises(FileNotFoundError, match="bash launch/mini_r1.sh"):
        build_result(tmp_path, 0, {}, {})


# A shortened run: a stage A long enough for the shape skill to switch on (it does so abruptly, around step 250
# at seed 0), a few dozen GRPO steps, 100 held-out scenes.
CI_ENV = {"STAGE_A_STEPS": "400", "STAGE_B_STEPS": "50", "HELDOUT_ROWS": "100", "HELDOUT_EVERY_B": "10"}


@pytest.mark.slow
def test_grpo_raises_heldout_accuracy_on_the_colour_question(tmp_path):
    out = tmp_path / "seed0"
    env = {**os.environ, **CI_ENV, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(LAUNCHER), "0"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("mini R1-Zero seed 0: held-out colour accuracy")

    report = json.loads((out / "result.json").read_text())
    steps = [step for step, _ in report["curve"]]
    assert steps[0] == 0 and steps[-1] == 50 and steps == sorted(steps)
    # The base was taught another question: on colour it is at chance; GRPO alone makes it look at the colour.
    assert report["before"] <= 0.6, report["curve"]
    assert report["after"] - report["before"] >= 0.25, report["curve"]
    assert report["heldout_format"][-1][1] >= 0.9  # and it keeps the output format
    assert set(report["timings"]) == {"prepare", "stage_a", "stage_b", "total"}
    png = out / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 100_000

    # The same command again: every stage is done already (same seed, configs and steps); the same result.
    again = subprocess.run(["bash", str(LAUNCHER), "0"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("done already") == 4, again.stdout + again.stderr
    assert json.loads((out / "result.json").read_text())["curve"] == report["curve"]
