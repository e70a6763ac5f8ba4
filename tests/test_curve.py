"""CV-Bench along training: model snapshots written by a real TRL run, evaluated by the curve command, logged to the
run's own (offline) W&B run, drawn by recipes.report.compare; --watch beside a training process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.cli import run_in_process
from fixtures.files import tree_hashes
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoProcessor

from recipes import eval_curve, grpo_base
from recipes.evaluation.curve import CURVE_DIR, WandbCurve, curve_points, find_wandb_run, wandb_project
from recipes.report.compare import Arm, load_run_dir
from recipes.report.figure import make_figure
from recipes.shared import provenance
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.errors import RecipeError

STEPS = 3
EVAL = ("--config", str(CONFIG_DIR / "eval/tiny.yaml"), "--limit", "6", "--max_new_tokens", "4", "--batch_size", "6")


def train_argv(model, data, out, *extra: str) -> list[str]:
    argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(model)]
    argv += ["--dataset_path", str(data), "--output_dir", str(out), "--per_device_train_batch_size", "4"]
    argv += ["--log_completions", "false", "--disable_tqdm", "true", "--save_steps", "100"]
    return [*argv, "--model_save_steps", "2", *extra]


def curve(run_dir: Path, cvbench: Path, *extra: str) -> list[int]:
    argv = [*EVAL, "--dataset", str(cvbench), "--run_dir", str(run_dir), *extra]
    return eval_curve.main(*eval_curve.make_parser().parse_args_and_config(argv))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base_dir, sat_records_dir):
    """A 3-step GRPO run logging to an offline W&B run, a bf16 snapshot at step 2 and at its end (step 3)."""
    import wandb

    out = tmp_path_factory.mktemp("curve") / "grpo_base"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.delenv("WANDB_DIR", raising=False)  # W&B's files go into this run's folder
        wandb.teardown()
        argv = train_argv(tiny_base_dir, sat_records_dir, out, "--max_steps", str(STEPS), "--report_to", "wandb")
        argv += ["--model_save_dtype", "bfloat16"]
        trainer = grpo_base.main(*grpo_base.make_parser().parse_args_and_config(argv))
        wandb.finish()
        wandb.teardown()
    assert trainer.state.global_step == STEPS
    return out


@pytest.fixture(scope="module")
def evaluated(trained, cvbench_parquet, tmp_path_factory):
    """The curve of the trained run, evaluated once (W&B offline)."""
    import wandb

    runs_before = sorted((trained / "wandb").glob("offline-run-*"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        steps = curve(trained, cvbench_parquet)
        wandb.teardown()
    return trained, steps, runs_before


# --- snapshots -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_snapshots_are_16bit_model_only_folders_with_the_processor(trained):
    models = trained / "models"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["step-2", "step-3"]
    entries = provenance.read(models)
    assert {name: e["state"] for name, e in entries.items()} == {"step-2": "finished", "step-3": "finished"}
    for step in ("step-2", "step-3"):
        folder = models / step
        assert not list(folder.glob("optimizer*")) and not list(folder.glob("*.pt"))  # the model alone
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
        assert dtypes == {"BF16"}
        assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
        processor = AutoProcessor.from_pretrained(folder)
        assert processor.image_processor.size["longest_edge"] == 12544  # the training bounds, saved with it
    # The last snapshot is the trained model, in bf16.
    final = load_file(trained / "model.safetensors")
    last = load_file(models / "step-3" / "model.safetensors")
    assert final.keys() == last.keys()
    assert all(torch.equal(final[k].to(torch.bfloat16), last[k]) for k in final)
    assert "lm_head.weight" not in last  # tied to the embeddings: written once, as the trainer's own save does


# --- the curve -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_snapshot_is_evaluated_into_one_summary_per_step(evaluated):
    run, steps, _ = evaluated
    assert steps == [2, 3]
    for step in steps:
        summary = json.loads((run / CURVE_DIR / f"step-{step}" / "summary.json").read_text())
        assert summary["model"]["name"] == str(run / "models" / f"step-{step}")
        assert summary["rows"]["scored"] == 6 and summary["generation"]["dtype"] == "auto"
        assert summary["dataset"]["revision"] is None  # local data: keyed by content, no hub revision
    points = json.loads((run / CURVE_DIR / "curve.json").read_text())["points"]
    assert [p["step"] for p in points] == [2, 3]
    assert points == curve_points(run)


@pytest.mark.slow
def test_the_curve_resumes_without_generating_or_logging_again(evaluated, cvbench_parquet):
    run, _, _ = evaluated
    before = tree_hashes(run / CURVE_DIR)
    wandb_runs = sorted((run / "wandb").glob("offline-run-*"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        assert curve(run, cvbench_parquet) == [2, 3]
    after = tree_hashes(run / CURVE_DIR)
    predictions = [k for k in before if k.endswith("predictions.jsonl")]
    assert len(predictions) == 2 and all(before[k] == after[k] for k in predictions)
    assert sorted((run / "wandb").glob("offline-run-*")) == wandb_runs  # nothing new logged, no W&B run opened


@pytest.mark.slow
def test_the_points_go_to_the_training_runs_own_wandb_run(evaluated):
    run, _, runs_before = evaluated
    training_id = runs_before[0].name.rsplit("-", 1)[1]
    new = sorted(set((run / "wandb").glob("offline-run-*")) - set(runs_before))
    assert [p.name.rsplit("-", 1)[1] for p in new] == [training_id]  # `wandb sync` merges it into the training run
    entries = provenance.read(run / CURVE_DIR)
    for step in (2, 3):
        summary = json.loads((run / CURVE_DIR / f"step-{step}" / "summary.json").read_text())
        assert entries[f"step-{step}"]["wandb"] == {training_id: summary["fingerprint"]["id"]}


@pytest.mark.slow
def test_a_point_is_logged_at_its_training_step(trained, tmp_path):
    import wandb

    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns(CURVE_DIR))
    run_id = find_wandb_run(run)
    assert run_id and wandb_project(run) == "visualthinker-tiny"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        logger = WandbCurve(run, run_id, wandb_project(run))
        summary = {"accuracy": 0.5, "official_score": 0.25, "strict": {"accuracy": 0.5}, "fingerprint": {"id": "a"}}
        assert logger.log(200, summary)
        logged = dict(logger.run.summary)
        assert logger.run.id == run_id
        assert logged["cvbench/step"] == 200 and logged["cvbench/accuracy"] == 0.5
        assert logged["cvbench/official_score"] == 0.25 and "cvbench/strict_official_score" not in logged
        assert not logger.log(200, summary)  # the same evaluation is logged once
        assert logger.log(200, {**summary, "fingerprint": {"id": "b"}})  # a re-evaluated step is logged again
        logger.close()
        wandb.teardown()


@pytest.mark.slow
def test_compare_draws_the_curve_of_each_arm(evaluated):
    run, _, _ = evaluated
    log = load_run_dir(run)
    points = curve_points(run)
    assert log.series["cvbench/accuracy"] == [(float(p["step"]), p["cvbench/accuracy"]) for p in points]
    assert [s for s, _ in log.series["cvbench/official_score"]] == [2.0, 3.0]
    figure = make_figure([Arm("grpo_base", [log])])
    titles = [ax.get_title() for ax in figure.axes]
    assert "CV-Bench along training (paper score)" in titles and "CV-Bench along training (official score)" in titles


@pytest.mark.slow
def test_watch_follows_a_training_run_until_its_final_model(tiny_base_dir, sat_records_dir, cvbench_parquet, tmp_path):
    out = tmp_path / "run"
    argv = train_argv(tiny_base_dir, sat_records_dir, out, "--max_steps", "4", "--report_to", "none")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    training = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "recipes" / "grpo_base.py"), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        steps = curve(out, cvbench_parquet, "--watch", "true", "--poll_seconds", "0.5", "--log_to_wandb", "false")
        _, err = training.communicate(timeout=600)
    finally:
        training.kill()
    assert training.returncode == 0, err[-2000:]
    assert steps == [2, 4]  # every snapshot, the last one written before the final model
    assert [p["step"] for p in curve_points(out)] == [2, 4]


# --- refusals (before anything loads) --------------------------------------------------------------------------------


def run_curve_cli(argv: list[str], capsys) -> tuple[int, str]:
    return run_in_process(eval_curve, argv, capsys)


def test_a_run_without_snapshots_is_refused_with_the_fix(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, err = run_curve_cli([*EVAL, "--run_dir", str(tmp_path / "run")], capsys)
    assert code == 2 and err.startswith("error: ") and "holds no model snapshot: train with model_save_steps" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []


def test_options_the_curve_sets_itself_are_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, err = run_curve_cli([*EVAL, "--run_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "x")], capsys)
    assert code == 2 and "drop --model_name_or_path/--output_dir" in err
    code, err = run_curve_cli(list(EVAL), capsys)
    assert code == 2 and "--run_dir OUTPUT_DIR" in err
    code, err = run_curve_cli([*EVAL, "--run_dir", str(tmp_path / "none")], capsys)
    assert code == 2 and "is not a folder" in err


def test_wandb_logging_asked_for_a_run_without_wandb_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, err = run_curve_cli([*EVAL, "--run_dir", str(tmp_path / "run"), "--log_to_wandb", "true"], capsys)
    assert code == 2 and "holds no W&B run" in err and "--log_to_wandb false" in err


def test_the_wandb_run_id_is_read_from_the_run_folder(tmp_path):
    wandb_dir = tmp_path / "wandb"
    for name in ("offline-run-20261201_100000-aaaa1111", "run-20261202_090000-bbbb2222", "debug.log"):
        (wandb_dir / name).mkdir(parents=True) if "run-" in name else (wandb_dir / name).write_text("")
    assert find_wandb_run(tmp_path) == "bbbb2222"  # the newest, offline or not
    (wandb_dir / "latest-run").symlink_to(wandb_dir / "offline-run-20261201_100000-aaaa1111")
    assert find_wandb_run(tmp_path) == "aaaa1111"  # W&B's own pointer wins
    assert find_wandb_run(tmp_path / "none") is None


def test_model_save_steps_must_be_usable(tiny_base_dir, sat_records_dir, tmp_path):
    argv = train_argv(tiny_base_dir, sat_records_dir, tmp_path / "run", "--model_save_steps", "2.5")
    with pytest.raises(RecipeError, match="model_save_steps must be a whole number of steps"):
        grpo_base.main(*grpo_base.make_parser().parse_args_and_config([*argv, "--report_to", "none"]))


@pytest.mark.slow
def test_snapshots_under_zero3_on_two_cpu_ranks_are_the_consolidated_model(tiny_base_dir, sat_records_dir, tmp_path):
    """`NUM_GPUS=2 bash launch/run_8gpu.sh` (real DeepSpeed ZeRO-3 over gloo, every tensor partitioned): the
    snapshot is gathered from both ranks through accelerate's public `get_state_dict`, written once, in bf16."""
    from test_launch import launch_two_ranks  # the launch tests' helper: same launcher, same tiny ZeRO-3 config

    extra = ("--model_save_steps", "1", "--model_save_dtype", "bfloat16", "--per_device_train_batch_size", "4")
    result, out, _ = launch_two_ranks(
        tmp_path,
        "recipes/grpo_base.py",
        "recipes/configs/tiny/grpo_base_length.yaml",
        tiny_base_dir,
        sat_records_dir,
        *extra,
        DDP_BACKEND="gloo",
    )
    assert sorted(finished(out)) == ["step-1", "step-2"]
    final = load_file(out / "model.safetensors")  # the trainer's own ZeRO-3 16-bit consolidated save
    for step in ("step-1", "step-2"):
        snapshot = load_file(out / "models" / step / "model.safetensors")
        assert snapshot.keys() == final.keys() and {t.dtype for t in snapshot.values()} == {torch.bfloat16}
    last = load_file(out / "models" / "step-2" / "model.safetensors")
    assert all(torch.equal(final[k].to(torch.bfloat16), last[k]) for k in final)
    first = load_file(out / "models" / "step-1" / "model.safetensors")
    assert any(not torch.equal(first[k], last[k]) for k in last)  # step 1 is the model after one step, not the last
    log = result.stdout + result.stderr
    assert log.count("saved the step-2 model") == 1  # written by the main process only


def finished(run: Path) -> list[str]:
    return [name for name, entry in provenance.read(run / "models").items() if entry["state"] == "finished"]


@pytest.mark.slow
def test_two_processes_give_the_single_process_curve(evaluated, cvbench_parquet, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (torchrun, gloo on CPU): each step's rows are shared by the
    two processes, and every step's predictions equal the one-process curve's."""
    run, steps, _ = evaluated
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(CURVE_DIR, "wandb"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"]
    script = [str(REPO_ROOT / "recipes" / "eval_curve.py"), *EVAL, "--dataset", str(cvbench_parquet)]
    script += ["--run_dir", str(copy), "--log_to_wandb", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([*launch, str(port), *script], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    for step in steps:
        one, two = (r / CURVE_DIR / f"step-{step}" for r in (run, copy))
        assert json.loads((two / "summary.json").read_text())["run"]["num_processes"] == 2
        assert (two / "predictions.jsonl").read_bytes() == (one / "predictions.jsonl").read_bytes()
    assert [p["step"] for p in curve_points(copy)] == steps
