"""Nothing lost, nothing mixed: a recipe run owns exactly what it records, and overwriting deletes only that.

Every data-loss case is checked as the user would notice it: every file under the test's folders (the output folder,
the model, the data, the user's own files) listed and hashed before and after, on the real GRPO trainer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fixtures.cli import run_in_process
from fixtures.files import tree_hashes

from recipes import grpo_base
from recipes.shared import provenance
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.run_folder import KIND

USER_FILES = {
    "reference.safetensors": b"the user's reference weights",
    "tokenizer_notes.json": b'{"note": "mine"}',
    "checkpoint-best/notes.txt": b"a folder named like a checkpoint",
    "completions_old/table.parquet": b"named like TRL's completions",
    "eval_cvbench_draft/summary.json": b"{}",
}


hashes = functools.partial(tree_hashes, relative=False, folders=True)  # several roots; an emptied folder counts


def argv_for(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(model)]
    argv += ["--dataset_path", str(data), "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true"]
    argv += ["--per_device_train_batch_size", "4", "--max_steps", "2", "--save_steps", "1"]
    argv += ["--num_completions_to_print", "0"]
    return [*argv, *extra]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """The recipe's command line, in this process: (exit code, stderr)."""
    return run_in_process(grpo_base, argv, capsys)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory, tiny_base_dir, sat_records_dir):
    """A finished 2-step run (checkpoints 1 and 2) that logged completions and trajectories, with W&B offline."""
    wandb = pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("owned") / "run"
    with pytest.MonkeyPatch.context() as env:
        for key in ("WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_PROJECT", "WANDB_DIR"):
            env.delenv(key, raising=False)  # the recipe exports them; W&B goes inside this run's folder
        wandb.teardown()
        argv = argv_for(tiny_base_dir, sat_records_dir, out, "--report_to", "wandb", "--log_completions", "true")
        try:
            grpo_base.main(*grpo_base.make_parser().parse_args_and_config([*argv, "--dump_trajectories", "true"]))
        finally:
            wandb.finish()
            wandb.teardown()
    return out


@pytest.fixture
def workspace(tmp_path, recorded_run, tiny_base_dir, sat_records_dir) -> dict[str, Path]:
    """The test's own copies of the model, the data and the recorded run, all under tmp_path."""
    paths = {"model": tmp_path / "model", "data": tmp_path / "data", "run": tmp_path / "run"}
    shutil.copytree(tiny_base_dir, paths["model"])
    shutil.copytree(sat_records_dir, paths["data"])
    shutil.copytree(recorded_run, paths["run"], symlinks=True)
    return paths


# --- what a run records ----------------------------------------------------------------------------------------------


def test_a_run_records_every_path_it_wrote(recorded_run):
    entry = provenance.read(recorded_run)["."]
    assert entry["kind"] == KIND and entry["state"] == "finished" and entry["resumed_from"] is None
    written = {p.name for p in recorded_run.iterdir()} - {provenance.RECORD, provenance.LOCK, provenance.WRITER_LOCK}
    assert set(entry["owns"]) == written
    assert {"checkpoint-1", "checkpoint-2", "model.safetensors", "resolved_config.yaml", "completions"} <= written
    assert {"trajectories", "wandb", "trainer_state.json"} <= written
    # What defines the result is recorded; where and how it reports is not.
    assert entry["defined_by"]["training"]["learning_rate"] == 1e-4 and entry["defined_by"]["num_processes"] == 1
    assert "output_dir" not in entry["defined_by"]["training"] and "report_to" not in entry["defined_by"]["training"]


# --- never an input, the home folder or the repository ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("model", "is or contains the input"),
        ("model/out", "lies inside the input"),
        ("data", "is or contains the input"),
        (".", "is or contains the"),  # the folder holding the model, the data and the home folder
        ("home", "is or contains the home folder"),
    ],
)
def test_an_output_dir_that_is_an_input_or_home_is_refused_and_nothing_changes(
    where, expected, workspace, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("mine")
    before = hashes(tmp_path)
    out = tmp_path / where
    argv = argv_for(workspace["model"], workspace["data"], out, "--overwrite_output_dir", "true")
    code, err = cli(argv, capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert expected in err and "choose an output folder" in err
    assert hashes(tmp_path) == before


def test_the_repository_is_never_an_output_dir(workspace, capsys):
    argv = argv_for(workspace["model"], workspace["data"], REPO_ROOT, "--overwrite_output_dir", "true")
    code, err = cli(argv, capsys)
    assert code == 2 and "is or contains the repository" in err
    assert not (REPO_ROOT / provenance.RECORD).exists()


# --- folders without a record are never ours -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [(), ("--overwrite_output_dir", "true"), ("--resume_from_checkpoint", "last")],
    ids=["plain", "overwrite", "resume"],
)
def test_a_project_folder_with_config_and_checkpoints_but_no_record_is_never_touched(
    flags, workspace, tmp_path, capsys
):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hello')\n")
    (project / "config.json").write_text('{"name": "my project"}')
    shutil.copytree(workspace["run"] / "checkpoint-2", project / "checkpoint-5")
    before = hashes(tmp_path)
    code, err = cli(argv_for(workspace["model"], workspace["data"], project, *flags), capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "holds files that no recipe run recorded (checkpoint-5, config.json, src)" in err
    assert "choose another --output_dir" in err.lower() and "--overwrite_output_dir" not in err
    assert f"--resume_from_checkpoint {project / 'checkpoint-5'} --output_dir <new folder>" in err
    assert hashes(tmp_path) == before


def test_a_folder_of_another_kind_is_refused_even_with_overwrite(workspace, tmp_path, capsys):
    evaluation = tmp_path / "eval"
    provenance.start(evaluation, "cvbench-eval", {"model": "x"}, owns=["summary.json"])
    (evaluation / "summary.json").write_text("{}")
    before = hashes(tmp_path)
    argv = argv_for(workspace["model"], workspace["data"], evaluation, "--overwrite_output_dir", "true")
    code, err = cli(argv, capsys)
    assert code == 2 and "holds the output of a cvbench-eval, not a recipe run" in err
    assert hashes(tmp_path) == before


# --- overwriting deletes exactly what the earlier run recorded, after every check ------------------------------------


def test_overwrite_keeps_the_users_files_with_model_like_names(workspace, tmp_path, capsys):
    run = workspace["run"]
    for name, content in USER_FILES.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(content)
    # The run's CV-Bench evaluation, recorded by the evaluation in its own folder: it describes the replaced model.
    provenance.start(run / "eval_cvbench", "cvbench-eval", {"model": "old"}, owns=["summary.json"])
    (run / "eval_cvbench" / "summary.json").write_text('{"accuracy": 0.5}')
    outside = hashes(workspace["model"], workspace["data"])
    old_owned = set(provenance.read(run)["."]["owns"])
    argv = argv_for(workspace["model"], workspace["data"], run, "--max_steps", "1", "--save_steps", "100")
    code, err = cli([*argv, "--overwrite_output_dir", "true"], capsys)
    assert code == 0, err
    after = hashes(run)
    for name, content in USER_FILES.items():  # byte for byte
        assert after[str(run / name)] == hashlib.sha256(content).hexdigest()
    entry = provenance.read(run)["."]
    assert entry["state"] == "finished" and entry["defined_by"]["training"]["max_steps"] == 1
    # Nothing of the earlier run is left: what is there is the new run's, the user's, or the record.
    tops = {Path(p).relative_to(run).parts[0] for p in after}
    user_tops = {Path(n).parts[0] for n in USER_FILES}
    assert tops == set(entry["owns"]) | user_tops | {provenance.RECORD, provenance.LOCK, provenance.WRITER_LOCK}
    assert {"checkpoint-2", "trajectories", "wandb"} <= old_owned
    assert not (run / "checkpoint-2").exists() and not (run / "eval_cvbench").exists()
    assert not (run / "trajectories").exists() and not (run / "wandb").exists()  # this run logs neither
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-best"]
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 1
    assert hashes(workspace["model"], workspace["data"]) == outside


def truncated_model(workspace) -> Path:
    broken = workspace["model"].parent / "broken-model"
    shutil.copytree(workspace["model"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return broken


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda w: ["--dataset_path", str(w["data"]) + "_typo"], "no converted dataset at"),
        (lambda w: ["--reward_funcs", "accuracy", "formt"], "formt"),
        (lambda w: ["--prompt_template", "bsae"], "bsae"),
        (lambda w: ["--model_name_or_path", str(truncated_model(w))], "model.safetensors is unreadable"),
        (lambda w: ["--max_train_samples", "0"], "has 0 record(s)"),
    ],
    ids=["dataset-typo", "reward-typo", "template-typo", "torn-model", "no-data"],
)
def test_a_failing_check_with_overwrite_leaves_the_old_run_intact(change, expected, workspace, tmp_path, capsys):
    extra = change(workspace)
    before = hashes(tmp_path)
    argv = argv_for(workspace["model"], workspace["data"], workspace["run"], "--overwrite_output_dir", "true")
    code, err = cli([*argv, *extra], capsys)
    assert code == 2 and "Traceback" not in err and expected in err
    assert hashes(tmp_path) == before  # the old run, byte for byte, and everything else


# --- resume + overwrite ----------------------------------------------------------------------------------------------


def test_resuming_another_runs_checkpoint_into_a_finished_run_needs_consent(workspace, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(workspace["run"], other)
    checkpoint = other / "checkpoint-2"
    run = workspace["run"]
    before = hashes(tmp_path)
    argv = argv_for(workspace["model"], workspace["data"], run, "--max_steps", "3", "--save_steps", "100")
    argv += ["--resume_from_checkpoint", str(checkpoint)]
    code, err = cli(argv, capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"resuming another run's checkpoint ({checkpoint}) there would replace it" in err
    assert "--overwrite_output_dir true" in err
    assert hashes(tmp_path) == before

    code, err = cli([*argv, "--overwrite_output_dir", "true"], capsys)
    assert code == 0, err
    entry = provenance.read(run)["."]
    assert entry["resumed_from"] == str(checkpoint) and entry["state"] == "finished"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3"]  # the replaced run's are gone
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]
    # The run resumed from is an input: untouched.
    assert {k: v for k, v in hashes(tmp_path).items() if k.startswith(str(other))} == {
        k: v for k, v in before.items() if k.startswith(str(other))
    }


def test_the_checkpoint_resumed_from_is_an_input_too(workspace, capsys):
    checkpoint = workspace["run"] / "checkpoint-2"
    before = hashes(workspace["run"])
    argv = argv_for(workspace["model"], workspace["data"], checkpoint, "--max_steps", "3")
    code, err = cli([*argv, "--resume_from_checkpoint", str(checkpoint), "--overwrite_output_dir", "true"], capsys)
    assert code == 2 and f"is or contains the input {checkpoint}" in err
    assert hashes(workspace["run"]) == before


def test_a_run_being_written_is_refused_before_anything_loads(workspace, tmp_path, capsys):
    run = workspace["run"]
    with provenance.sole_writer(run, "a recipe run"):  # as a training process holds it (flock: per open file)
        before = hashes(tmp_path)
        argv = argv_for(
            workspace["model"], Path(str(workspace["data"]) + "_typo"), run, "--overwrite_output_dir", "true"
        )
        code, err = cli(argv, capsys)
        assert code == 2 and "is being written by another process (a recipe run)" in err
        assert hashes(tmp_path) == before
