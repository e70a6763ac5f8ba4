"""Run integrity on the real TRL trainers and the tiny model: no silent overwrite, no untrained model saved as trained,
resume past torn checkpoints, plain errors for bad options, and every run's resolved configuration written down.

Each refusal is checked as the user meets it: exit code 2, a message naming the fix, no traceback, and every file
already in the output folder unchanged (names, sizes, contents and modification times).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from fixtures.cli import run_in_process
from fixtures.files import tree_hashes
from safetensors.torch import load_file, save_file

from data_prep.fixtures.tiny_model import build_tiny_model
from recipes import grpo_base, sft_baseline
from recipes.shared import provenance
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.resolved import RESOLVED_CONFIG
from recipes.shared.runs import checkpoint_problem

STEPS = 3


tree = functools.partial(tree_hashes, folders=True, times=True)  # a file rewritten with the same bytes counts


def recipe_argv(config: str | Path, model_dir, data_dir, out_dir, *extra: str) -> list[str]:
    """A config (a shipped one by name) with the test's model, data and output folder; one prompt (4 completions)
    per GRPO step, 4 examples per SFT step."""
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--disable_tqdm", "true"]
    if "sft" not in Path(config).name:
        argv += ["--per_device_train_batch_size", "4", "--log_completions", "false"]  # no sample tables printed
    else:  # the paper's SFT loss takes one sequence per micro-batch
        argv += ["--gradient_accumulation_steps", "4"]
    return [*argv, *extra]


def train(module, argv: list[str]):
    return module.main(*module.make_parser().parse_args_and_config(argv))


cli = run_in_process  # a recipe's command line in this process: (exit code, stderr)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_base_dir, sat_records_dir):
    """A finished 3-step GRPO run with a checkpoint at every step and a CV-Bench summary beside its model."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, out, "--max_steps", str(STEPS))
    trainer = train(grpo_base, [*argv, "--save_steps", "1"])
    assert trainer.state.global_step == STEPS
    # Its CV-Bench evaluation, recorded in its own folder as the evaluation records it.
    (out / "eval_cvbench").mkdir()
    (out / "eval_cvbench" / "summary.json").write_text('{"accuracy": 0.5}')
    provenance.start(out / "eval_cvbench", "cvbench-eval", {"model": "finished"}, owns=["summary.json"])
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


# --- no silent overwrite ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "config"), [(grpo_base, "tiny/grpo_base.yaml"), (sft_baseline, "tiny/sft_baseline.yaml")]
)
def test_a_finished_run_is_not_overwritten(module, config, finished_run, tiny_base_dir, sat_records_dir, capsys):
    before = tree(finished_run)
    code, err = cli(module, recipe_argv(config, tiny_base_dir, sat_records_dir, finished_run), capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and "already holds a finished recipe run with other settings" in err
    assert "--resume_from_checkpoint last" in err and "--overwrite_output_dir true" in err
    assert "training.max_steps: 3 there, 30 now" in err or module is sft_baseline
    assert len(err.strip().splitlines()) == 1
    assert tree(finished_run) == before


def test_resuming_a_finished_run_with_its_own_settings_is_refused(
    finished_run, tiny_base_dir, sat_records_dir, capsys
):
    # Its last checkpoint is its final step: resuming it would train one step past max_steps and rewrite its files.
    before = tree(finished_run)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, finished_run, "--max_steps", str(STEPS))
    code, err = cli(grpo_base, [*argv, "--save_steps", "1", "--resume_from_checkpoint", "last"], capsys)
    assert code == 2 and "nothing left to train" in err and "raise --max_steps" in err
    assert tree(finished_run) == before


def test_the_refusal_comes_before_anything_loads(finished_run, tiny_base_dir, tmp_path, capsys):
    # The dataset does not exist: a check that ran after loading data (or the model) would report that instead.
    before = tree(finished_run)
    code, err = cli(
        grpo_base, recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, tmp_path / "none", finished_run), capsys
    )
    assert code == 2 and "already holds a finished recipe run" in err
    assert tree(finished_run) == before


def test_a_dry_run_may_look_into_a_finished_run(finished_run, tiny_base_dir, sat_records_dir, capsys):
    before = tree(finished_run)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, finished_run, "--dry_run", "true")
    code, err = cli(grpo_base, argv, capsys)
    assert code == 0, err
    assert tree(finished_run) == before


def test_overwrite_replaces_the_earlier_run_and_leaves_no_stale_file(run_copy, tiny_base_dir, sat_records_dir, caplog):
    (run_copy / "notes.txt").write_text("mine")  # not a run file: kept
    old_model = (run_copy / "model.safetensors").stat().st_mtime_ns
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", "1")
    with caplog.at_level(logging.INFO, logger="recipes.shared.run_folder"):
        trainer = train(grpo_base, [*argv, "--save_steps", "100", "--overwrite_output_dir", "true"])
    assert trainer.state.global_step == 1
    # The earlier run's checkpoints 1-3 and evaluation are gone; checkpoint-1 is the new run's end-of-training save.
    assert [p.name for p in run_copy.glob("checkpoint-*")] == ["checkpoint-1"]
    assert json.loads((run_copy / "checkpoint-1" / "trainer_state.json").read_text())["max_steps"] == 1
    assert not (run_copy / "eval_cvbench").exists()
    assert (run_copy / "notes.txt").read_text() == "mine"
    state = json.loads((run_copy / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and [e["step"] for e in state["log_history"] if "loss" in e] == [1]
    assert (run_copy / "model.safetensors").stat().st_mtime_ns != old_model
    assert "deleted the earlier run" in caplog.text


def test_resume_and_overwrite_together_are_refused(finished_run, tiny_base_dir, sat_records_dir, capsys):
    before = tree(finished_run)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, finished_run)
    code, err = cli(grpo_base, [*argv, "--resume_from_checkpoint", "last", "--overwrite_output_dir", "true"], capsys)
    assert code == 2 and "both set" in err and "which replacing the run would delete" in err
    assert tree(finished_run) == before


def test_resuming_a_finished_run_without_checkpoints_is_refused(run_copy, tiny_base_dir, sat_records_dir, capsys):
    for checkpoint in run_copy.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    before = tree(run_copy)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", "6")
    code, err = cli(grpo_base, [*argv, "--resume_from_checkpoint", "last"], capsys)
    assert code == 2 and "no complete checkpoint" in err and "--overwrite_output_dir true" in err
    assert tree(run_copy) == before


# --- no untrained model ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "config", "extra", "expected"),
    [
        # One GRPO step here takes 8 completions / 4 generations = 2 prompts.
        (
            grpo_base,
            "tiny/grpo_base.yaml",
            ("--max_train_samples", "1", "--per_device_train_batch_size", "8"),
            "2 prompts",
        ),
        (grpo_base, "tiny/grpo_base.yaml", ("--max_train_samples", "0"), "has 0 record(s)"),
        (sft_baseline, "tiny/sft_baseline.yaml", ("--max_train_samples", "0"), "has 0 record(s)"),
        (sft_baseline, "tiny/sft_baseline.yaml", ("--max_train_samples", "3"), "4 examples"),
        (grpo_base, "tiny/grpo_base.yaml", ("--max_steps", "0"), "max_steps is 0"),
    ],
    ids=["grpo-1-record", "grpo-0-records", "sft-0-records", "sft-3-records", "max-steps-0"],
)
def test_no_optimizer_step_is_refused_before_the_model_loads(
    module, config, extra, expected, tiny_base_dir, sat_records_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    code, err = cli(module, recipe_argv(config, tiny_base_dir, sat_records_dir, out, *extra), capsys)
    assert code == 2 and "Traceback" not in err and "StopIteration" not in err
    assert expected in err
    assert not out.exists()  # no model, configuration or checkpoint written


# --- torn checkpoints ------------------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


TEARS = {
    "weights-truncated": (lambda c: truncate(c / "model.safetensors"), "model.safetensors is unreadable"),
    "state-missing": (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
    "optimizer-truncated": (lambda c: truncate(c / "optimizer.pt"), "optimizer.pt is unreadable"),
    "scheduler-missing": (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
}


@pytest.mark.parametrize("tear", TEARS)
def test_a_named_torn_checkpoint_is_refused_with_the_newest_complete_one(
    tear, run_copy, tiny_base_dir, sat_records_dir, capsys
):
    damage, reason = TEARS[tear]
    damage(run_copy / "checkpoint-3")
    assert checkpoint_problem(run_copy / "checkpoint-2") is None
    before = tree(run_copy)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", "4")
    code, err = cli(grpo_base, [*argv, "--resume_from_checkpoint", str(run_copy / "checkpoint-3")], capsys)
    assert code == 2 and "Traceback" not in err
    assert reason in err and f"newest complete one there is {run_copy / 'checkpoint-2'}" in err
    assert tree(run_copy) == before


def unpicklable(path: Path) -> None:
    """A zip archive whose pickle is damaged: the archive opens, loading it would fail after the model loaded."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("optimizer/data.pkl", b"\x80\x04not a pickle")
        archive.writestr("optimizer/version", "3\n")


def test_an_optimizer_state_that_opens_but_does_not_load_is_refused(run_copy, tiny_base_dir, sat_records_dir, capsys):
    unpicklable(run_copy / "checkpoint-3" / "optimizer.pt")
    before = tree(run_copy)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", "4")
    code, err = cli(grpo_base, [*argv, "--resume_from_checkpoint", str(run_copy / "checkpoint-3")], capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "optimizer.pt opens but does not load" in err
    assert f"the newest complete one there is {run_copy / 'checkpoint-2'}" in err
    assert tree(run_copy) == before


def poison(checkpoint: Path) -> None:
    """Put a NaN into one weight of the checkpoint, as a diverged run saves it."""
    weights = load_file(checkpoint / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("resume", ["named", "last"])
def test_a_checkpoint_with_nan_weights_is_refused_naming_the_newest_good_one(
    resume, run_copy, tiny_base_dir, sat_records_dir, capsys
):
    poison(run_copy / "checkpoint-3")
    before = tree(run_copy)
    target = str(run_copy / "checkpoint-3") if resume == "named" else "last"
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", "4")
    code, err = cli(grpo_base, [*argv, "--resume_from_checkpoint", target], capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"cannot resume from {run_copy / 'checkpoint-3'}: model.safetensors: " in err
    assert "holds NaN or infinite values" in err
    assert f"the newest good one there is {run_copy / 'checkpoint-2'}" in err
    assert tree(run_copy) == before


def test_resuming_with_use_peft_toggled_is_refused(run_copy, tiny_base_dir, sat_records_dir, capsys):
    before = tree(run_copy)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", "4")
    argv += ["--use_peft", "true", "--lora_target_modules", "q_proj", "v_proj", "--resume_from_checkpoint", "last"]
    code, err = cli(grpo_base, argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"cannot resume from {run_copy / 'checkpoint-3'}" in err and "use_peft: False there, True now" in err
    assert tree(run_copy) == before
    # An adapter of another rank does not load either (its run's recorded LoRA settings, edited to say so).
    recorded = run_copy / "checkpoint-3" / RESOLVED_CONFIG
    config = yaml.safe_load(recorded.read_text())
    config["model"].update(use_peft=True, lora_r=8, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"])
    recorded.write_text(yaml.safe_dump(config))
    code, err = cli(grpo_base, [*argv, "--lora_r", "16", "--lora_dropout", "0.1"], capsys)
    assert code == 2 and "lora_r: 8 there, 16 now" in err
    assert "use_peft:" not in err and "lora_dropout" not in err  # dropout acts in training only


def test_resuming_into_another_architecture_is_refused(run_copy, sat_records_dir, tmp_path, capsys):
    other = build_tiny_model(tmp_path / "qwen2_5", variant="base", seed=0, arch="qwen2_5_vl")
    resumed = tmp_path / "resumed"
    argv = recipe_argv("tiny/grpo_base.yaml", other, sat_records_dir, resumed, "--max_steps", "4")
    code, err = cli(grpo_base, [*argv, "--resume_from_checkpoint", str(run_copy / "checkpoint-3")], capsys)
    assert code == 2 and "Traceback" not in err
    assert "model_type: qwen2_vl there, qwen2_5_vl now" in err
    assert not resumed.exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda c: truncate(c / "model.safetensors"), "model.safetensors is unreadable"),  # killed while saving
        pytest.param(
            lambda c: unpicklable(c / "optimizer.pt"),
            "optimizer.pt opens but does not load",
            marks=pytest.mark.slow,  # trains as the other does: one of them in the quick loop
        ),
    ],
    ids=["weights-torn", "optimizer-unpicklable"],
)
def test_last_resumes_from_the_newest_complete_checkpoint(
    damage, reason, run_copy, tiny_base_dir, sat_records_dir, caplog
):
    damage(run_copy / "checkpoint-3")
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", str(STEPS))
    with caplog.at_level(logging.INFO, logger="recipes"):
        trainer = train(grpo_base, [*argv, "--save_steps", "1", "--resume_from_checkpoint", "last"])
    assert "skipping incomplete checkpoint" in caplog.text and f"checkpoint-3: {reason}" in caplog.text
    assert f"resuming from {run_copy / 'checkpoint-2'}" in caplog.text
    assert trainer.state.global_step == STEPS
    # Only step 3 was trained again, and its checkpoint is whole again.
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3]
    assert checkpoint_problem(run_copy / "checkpoint-3") is None


def test_resuming_with_other_settings_lists_each_difference(run_copy, tiny_base_dir, sat_records_dir, caplog):
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, run_copy, "--max_steps", "4")
    argv += ["--learning_rate", "3e-4", "--reward_weights", "1", "2", "0", "--resume_from_checkpoint", "last"]
    with caplog.at_level(logging.WARNING, logger="recipes.shared.resolved"):
        trainer = train(grpo_base, argv)
    assert trainer.state.global_step == 4
    warning = next(r.getMessage() for r in caplog.records if "differ from its run" in r.getMessage())
    assert "checkpoint-3" in warning
    assert "learning_rate: 0.0001 -> 0.0003" in warning
    assert "reward_weights: [1.0, 1.0, 0.0] -> [1.0, 2.0, 0.0]" in warning
    assert "max_steps: 3 -> 4" in warning
    assert "seed" not in warning and "resume_from_checkpoint" not in warning


# --- parse-time validation -------------------------------------------------------------------------------------------


def bad_config(tmp_path: Path, **changes) -> Path:
    config = yaml.safe_load((CONFIG_DIR / "tiny/grpo_base.yaml").read_text())
    config.update(changes)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("changes", "argv", "expected"),
    [
        ({"max_steps": 2.7}, (), "max_steps: 2.7 is not a whole number"),
        ({"max_steps": True}, (), "max_steps: True is not a whole number"),
        ({"loss_type": "gpro"}, (), "loss_type: 'gpro' is not one of grpo, dr_grpo, dapo"),
        ({}, ("--loss_type", "gpro"), "loss_type: 'gpro' is not one of grpo, dr_grpo, dapo"),
        ({}, ("--resume_from_checkpoint", "runs/nowhere/checkpoint-5"), "'runs/nowhere/checkpoint-5' is not a folder"),
        ({"freeze_vision": 1}, (), "freeze_vision: 1 is not true or false"),
        ({}, ("--per_device_train_batch_size", "0"), "per_device_train_batch_size: 0 must be at least 1"),
        ({"temperature": 0}, (), "temperature: 0 must be above 0"),
        ({}, ("--temperature", "-1"), "temperature: -1.0 must be above 0"),
        # argparse takes the dash spelling too: the contradiction check must see it as well.
        ({}, ("--prompts_per_step", "4", "--gradient-accumulation-steps", "1"), "1 contradicts prompts_per_step=4"),
        ({}, ("--prompts_per_step", "4", "--gradient-accumulation-steps=1"), "1 contradicts prompts_per_step=4"),
    ],
)
def test_bad_options_are_refused_while_parsing(
    changes, argv, expected, tiny_base_dir, sat_records_dir, tmp_path, capsys
):
    config = bad_config(tmp_path, **changes)
    out = tmp_path / "run"
    code, err = cli(grpo_base, [*recipe_argv(config, tiny_base_dir, sat_records_dir, out), *argv], capsys)
    assert code == 2 and "Traceback" not in err
    assert expected in err
    assert not out.exists()


def test_a_missing_config_file_is_named(tiny_base_dir, sat_records_dir, tmp_path, capsys):
    argv = recipe_argv(tmp_path / "nope.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run")
    code, err = cli(grpo_base, argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"--config {tmp_path / 'nope.yaml'}: no such file" in err and "recipes/configs/" in err
    argv[1] = f"--config={tmp_path / 'nope.yaml'}"  # argparse's other spelling
    code, err = cli(grpo_base, argv[1:], capsys)
    assert code == 2 and f"--config {tmp_path / 'nope.yaml'}: no such file" in err


def test_a_completion_template_field_that_does_not_exist_is_named(tiny_base_dir, sat_records_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = recipe_argv("tiny/sft_baseline.yaml", tiny_base_dir, sat_records_dir, out)
    code, err = cli(sft_baseline, [*argv, "--completion_template", "<answer> {anwser} </answer>"], capsys)
    assert code == 2 and "Traceback" not in err and "KeyError" not in err
    assert "completion_template: unknown field {anwser}: the only field is {answer}" in err
    assert not out.exists()


def test_an_unknown_wandb_mode_is_refused_before_anything_loads(
    tiny_base_dir, sat_records_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "ofline")
    out = tmp_path / "run"
    argv = [*recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, out), "--report_to", "wandb"]
    code, err = cli(grpo_base, argv, capsys)
    assert code == 2 and "WANDB_MODE='ofline' is not a W&B mode: export one of online, offline, disabled" in err
    assert not out.exists()
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # W&B's own older spelling of offline: accepted
    code, err = cli(grpo_base, [*argv, "--dry_run", "true"], capsys)
    assert code == 0, err


def test_data_resized_at_other_pixel_bounds_is_refused_naming_both(
    sat_parquet, tiny_base_dir, sat_records_dir, tmp_path, capsys
):
    # The synthetic images are 112x112 = 12,544 pixels, the tiny configs' max_pixels: 6,272 makes the prep resize.
    from data_prep.sat import convert

    small = tmp_path / "sat_small"
    convert(str(sat_parquet), small, seed=0, multi_image="skip", max_pixels=6272, fit_images_at_prep=True)
    out = tmp_path / "run"
    code, err = cli(grpo_base, recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, small, out), capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "prepared at min_pixels 3136 / max_pixels 6272" in err
    assert "this run's bounds are min_pixels 3136 / max_pixels 12544" in err
    assert not out.exists()
    # Records whose images were all kept as they were (sat_records_dir: none resized) suit any bounds.
    assert json.loads((sat_records_dir / "prep_report.json").read_text())["images"]["resized"] == 0
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, out, "--dry_run", "true")
    assert cli(grpo_base, [*argv, "--max_pixels", "6272"], capsys)[0] == 0


def test_a_folder_that_is_not_a_model_is_named(sat_records_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = cli(
        grpo_base, recipe_argv("tiny/grpo_base.yaml", tmp_path / "empty", sat_records_dir, tmp_path / "o"), capsys
    )
    assert code == 2 and "is not a model folder: expected config.json and model weights (model.safetensors)" in err


def test_a_run_folder_holding_only_checkpoints_points_at_its_newest(run_copy, sat_records_dir, tmp_path, capsys):
    for path in run_copy.iterdir():
        if not path.name.startswith("checkpoint-"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    code, err = cli(grpo_base, recipe_argv("tiny/grpo_base.yaml", run_copy, sat_records_dir, tmp_path / "o"), capsys)
    assert code == 2 and "run folder holding only checkpoints" in err
    assert f"e.g. {run_copy / 'checkpoint-3'}" in err


# --- the resolved configuration --------------------------------------------------------------------------------------


def test_every_run_writes_its_resolved_configuration(finished_run, tiny_base_dir):
    text = (finished_run / RESOLVED_CONFIG).read_text()
    config = yaml.safe_load(text)
    assert set(config) == {"recipe", "training", "model", "environment"}
    assert config["recipe"]["reward_funcs"] == ["accuracy", "format", "reflection"]
    assert config["training"]["learning_rate"] == 1e-4 and config["training"]["num_generations"] == 4
    assert config["training"]["reward_weights"] == [1.0, 1.0, 0.0] and config["training"]["max_steps"] == STEPS
    assert config["training"]["loss_type"] == "grpo" and config["training"]["beta"] == 0.04
    assert config["model"]["model_name_or_path"] == str(tiny_base_dir)
    environment = config["environment"]
    assert environment["num_processes"] == 1
    assert {"torch", "transformers", "trl", "accelerate", "datasets"} <= set(environment["versions"])
    assert not list(finished_run.glob(f".{RESOLVED_CONFIG}*"))  # written atomically: no temporary file left
    # Each checkpoint keeps the configuration it was written with, for a later resumption to compare against.
    assert yaml.safe_load((finished_run / "checkpoint-2" / RESOLVED_CONFIG).read_text()) == config


def test_the_resolved_configuration_is_logged_at_start(tiny_base_dir, sat_records_dir, tmp_path, caplog):
    argv = recipe_argv("tiny/sft_baseline.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run", "--max_steps", "1")
    with caplog.at_level(logging.INFO, logger="recipes.shared.resolved"):
        train(sft_baseline, [*argv, "--save_steps", "100"])
    logged = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resolved configuration"))
    assert "sft_loss: paper" in logged and "learning_rate: 0.001" in logged and "num_processes: 1" in logged
    assert yaml.safe_load((tmp_path / "run" / RESOLVED_CONFIG).read_text())["training"]["max_steps"] == 1


@pytest.mark.slow
def test_the_command_line_refuses_an_overwrite_with_exit_code_2(finished_run, tiny_base_dir, sat_records_dir):
    before = tree(finished_run)
    argv = recipe_argv("tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, finished_run)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / "grpo_base.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: output_dir" in result.stderr and "--overwrite_output_dir true" in result.stderr
    assert tree(finished_run) == before
