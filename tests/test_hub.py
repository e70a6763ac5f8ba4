"""The Hub (recipes/shared/hub.py, data_prep/hub.py, python -m recipes.push_to_hub): what a push uploads, every
refusal before anything is read or sent, a recipe's push_to_hub taken away from the trainer, and records read from a
Hub dataset id (offline: the error; a local folder of data files standing in on the same load_dataset path).

The Hub itself is out of reach here: no upload is tested against it, only what would be sent (`upload_files`, a pure
function of the folder) and that nothing is written or lost when a push is refused or fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk
from huggingface_hub import DatasetCard

from data_prep import hub as data_hub
from data_prep import sat
from recipes import push_to_hub
from recipes.evaluation.data import load_cvbench
from recipes.shared import provenance
from recipes.shared.args import RecipeArguments
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.data import load_records
from recipes.shared.errors import RecipeError
from recipes.shared.hub import take_push, upload_files
from recipes.shared.preflight import check_hub


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)


OWN = (provenance.RECORD, provenance.LOCK, provenance.WRITER_LOCK)


def finished_run(folder: Path, steps: int = 2) -> Path:
    """A folder laid out as a finished recipe run leaves it (files of the right names, a finished record)."""
    touch(
        folder, "model.safetensors", "config.json", "tokenizer.json", "processor_config.json", "resolved_config.yaml"
    )
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": steps}))
    touch(folder, "checkpoint-2/model.safetensors", "checkpoint-2/optimizer.pt", "checkpoint-2/rng_state.pth")
    touch(folder, "wandb/run-1/files/config.yaml", "completions/step-1.parquet", "notes.txt")
    provenance.start(folder, "recipe-run", {"seed": 0})
    provenance.finish(folder, owns=[p.name for p in folder.iterdir() if p.name not in ("notes.txt", *OWN)])
    return folder


def push(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = push_to_hub.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def online_with_token(monkeypatch, tmp_path):
    """As on a machine that could push: not offline, a token (never used: every test stops before the network)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)


# --- what is uploaded ------------------------------------------------------------------------------------------------


def test_upload_files_sends_the_model_card_and_results_never_private_state(tmp_path):
    run = finished_run(tmp_path / "run")
    touch(
        run, "README.md", "eval_cvbench/summary.json", "eval_cvbench/predictions.jsonl", "eval_cvbench/run_config.json"
    )
    touch(run, "eval_curve/curve.json", "eval_curve/step-2/summary.json", "eval_curve/step-2/predictions.jsonl")
    (run / "linked.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    touch(tmp_path, "elsewhere.safetensors")
    base = [
        "README.md",
        "config.json",
        "eval_curve/curve.json",
        "eval_curve/step-2/summary.json",
        "model.safetensors",
        "processor_config.json",
        "resolved_config.yaml",
        "tokenizer.json",
        "trainer_state.json",
    ]
    evaluation = ["eval_cvbench/predictions.jsonl", "eval_cvbench/summary.json"]
    assert upload_files(run) == sorted(base + evaluation)
    assert upload_files(run, with_evaluation=False) == base  # an evaluation of other weights stays home
    assert upload_files(run, include_checkpoints=True) == sorted(
        [*base, *evaluation, "checkpoint-2/model.safetensors"]
    )
    whole = upload_files(run, include_checkpoints=True, include_optimizer_states=True)
    assert {"checkpoint-2/optimizer.pt", "checkpoint-2/rng_state.pth"} <= set(whole)
    assert not [f for f in whole if f.startswith(("wandb/", "completions/")) or f in ("notes.txt", "provenance.json")]
    assert "linked.safetensors" not in whole  # a link may point anywhere


# --- refusals, before anything is read or sent -----------------------------------------------------------------------


def test_push_offline_without_token_or_with_a_bad_id_is_refused(tmp_path, monkeypatch, capsys):
    run = finished_run(tmp_path / "run")
    before = hashes(run)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = push([str(run), "--repo_id", "me/run"], capsys)
    assert code == 2 and "HF_HUB_OFFLINE is on: unset HF_HUB_OFFLINE" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login
    code, _, err = push([str(run), "--repo_id", "me/run"], capsys)
    assert code == 2 and "no Hugging Face token was found: run `huggingface-cli login`" in err
    code, _, err = push([str(run), "--repo_id", "me/my run!", "--token", "hf_" + "x" * 34], capsys)
    assert code == 2 and "'me/my run!' is not a valid hub repository name" in err and "--repo_id NAME" in err
    assert hashes(run) == before


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda run: touch(run, "model.safetensors"), "holds no recipe run record"),
        (lambda run: provenance.start(run, "recipe-run", {}), "holds an unfinished run"),
        (lambda run: provenance.start(run, "cvbench-eval", {}), "holds no recipe run record"),
        (lambda run: finished_run(run, steps=0), "trained no optimizer step"),
    ],
)
def test_only_a_finished_run_that_trained_is_pushed(make, message, tmp_path, capsys, online_with_token):
    run = tmp_path / "run"
    run.mkdir()
    make(run)
    before = hashes(run)
    for dry_run in ("false", "true"):
        code, _, err = push([str(run), "--repo_id", "me/run", "--dry_run", dry_run], capsys)
        assert code == 2 and message in err, err
    assert hashes(run) == before


def test_a_recipe_pushes_itself_not_through_the_trainer(tmp_path, online_with_token):
    from trl import GRPOConfig

    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo_base"), push_to_hub=True, hub_model_id="me/grpo", report_to=[], bf16=False
    )
    check_hub(args)
    request = take_push(args)
    assert request.repo_id == "me/grpo" and args.push_to_hub is False  # transformers creates and pushes nothing
    assert take_push(args) is None
    refused = GRPOConfig(
        output_dir=str(tmp_path / "x"), push_to_hub=True, hub_strategy="checkpoint", report_to=[], bf16=False
    )
    with pytest.raises(RecipeError, match="hub_strategy checkpoint is not supported.*--include_checkpoints true"):
        check_hub(refused)


@pytest.mark.slow
def test_a_run_whose_push_fails_is_finished_with_its_card(tiny_base_dir, sat_records_dir, tmp_path):
    """--push_to_hub true on a real run, the Hub pointed at a closed local port: the trainer contacts nothing while it
    is built or saves, the run finishes with our card, and the failed push says how to push again."""
    out = tmp_path / "run"
    argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)]
    argv += ["--dataset_path", str(sat_records_dir), "--output_dir", str(out), "--max_steps", "1", "--save_steps", "1"]
    argv += ["--per_device_train_batch_size", "4", "--report_to", "none", "--log_completions", "false"]
    argv += ["--push_to_hub", "true", "--hub_model_id", "me/grpo"]
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_" + "x" * 34, "HF_ENDPOINT": "http://127.0.0.1:9"}
    env |= {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_ETAG_TIMEOUT": "2"}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes/grpo_base.py"), *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pushing") and f"python -m recipes.push_to_hub {out} --repo_id me/grpo" in last
    assert provenance.read(out)["."]["state"] == "finished"
    assert "fine-tuned version of" not in (out / "README.md").read_text()
    assert "me/grpo" in (out / "README.md").read_text()  # the card says how to evaluate the pushed model


# --- Hub datasets ----------------------------------------------------------------------------------------------------


def hub_layout(records_dir: Path, folder: Path, split: str = "train") -> Path:
    """The records as `Dataset.push_to_hub` lays them out in a dataset repository (parquet under data/, the report)."""
    (folder / "data").mkdir(parents=True)
    load_from_disk(str(records_dir)).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    shutil.copy(records_dir / "prep_report.json", folder / "prep_report.json")
    return folder


def test_records_from_a_hub_id_offline_name_the_id_and_the_switch():
    with pytest.raises(RecipeError) as refused:
        load_records(RecipeArguments(dataset_path="someone/sat-records", dataset_split="train"))
    message = str(refused.value)
    assert "'someone/sat-records' (split 'train')" in message and "HF_HUB_OFFLINE" in message
    assert "python -m data_prep.sat" in message  # or convert locally
    with pytest.raises(RecipeError, match="'nyu-visionx/CV-Bench'.*HF_HUB_OFFLINE"):
        load_cvbench("nyu-visionx/CV-Bench", split="test", revision="main")


def test_records_laid_out_as_on_the_hub_load_through_load_dataset_with_the_same_checks(sat_records_dir, tmp_path):
    folder = hub_layout(sat_records_dir, tmp_path / "sat-records")
    loaded = load_records(RecipeArguments(dataset_path=str(folder), dataset_split="train"))
    saved = load_from_disk(str(sat_records_dir))
    assert loaded.features == saved.features
    assert loaded["messages"] == saved["messages"] and loaded["solution"] == saved["solution"]
    assert loaded[0]["images"] == saved[0]["images"]
    with pytest.raises(RecipeError, match="split 'validation'"):
        load_records(RecipeArguments(dataset_path=str(folder), dataset_split="validation"))
    # The report travels with the records: resized at other bounds than the run's, they are refused as locally.
    report = json.loads((folder / "prep_report.json").read_text())
    report["images"] |= {"max_pixels": 12544, "resized": 3, "keep_original": False}
    (folder / "prep_report.json").write_text(json.dumps(report))
    with pytest.raises(RecipeError, match="prepared at min_pixels 3136 / max_pixels 12544 \\(3 images"):
        load_records(RecipeArguments(dataset_path=str(folder)))
    assert len(load_records(RecipeArguments(dataset_path=str(folder), min_pixels=3136, max_pixels=12544))) == len(
        saved
    )
    with pytest.raises(RecipeError, match="--dataset_revision main applies to a Hub dataset"):
        load_records(RecipeArguments(dataset_path=str(folder), dataset_revision="main"))
    (folder / "data" / "train-00000-of-00001.parquet").unlink()
    saved.remove_columns("solution").to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(RecipeError, match="not a data_prep record dataset \\(missing columns: solution\\)"):
        load_records(RecipeArguments(dataset_path=str(folder), min_pixels=3136, max_pixels=12544))


def test_split_and_revision_define_a_run_only_where_they_select_something(sat_records_dir, tmp_path):
    from recipes import grpo_base
    from recipes.shared.run_folder import definition

    def defined(data) -> dict:
        argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--dataset_path", str(data)]
        return definition(*grpo_base.make_parser().parse_args_and_config([*argv, "--output_dir", str(tmp_path / "o")]))

    # A saved records folder has one split: runs recorded before these options existed stay "the same settings".
    assert "dataset_split" not in defined(sat_records_dir)["recipe"]
    hub = defined(hub_layout(sat_records_dir, tmp_path / "sat-records"))["recipe"]
    assert hub["dataset_split"] == "train" and hub["dataset_revision"] is None
    assert defined("someone/sat-records")["recipe"]["dataset_split"] == "train"


def test_cv_bench_laid_out_as_on_the_hub_loads_by_split(cvbench_parquet, tmp_path):
    folder = tmp_path / "cv-bench"
    (folder / "data").mkdir(parents=True)
    shutil.copy(cvbench_parquet, folder / "data" / "test-00000-of-00001.parquet")
    assert len(load_cvbench(str(folder), split="test")) == len(load_cvbench(str(cvbench_parquet)))
    with pytest.raises(RecipeError, match="cannot load CV-Bench from .*validation"):
        load_cvbench(str(folder), split="validation")


# --- data_prep.sat --push_to_hub -------------------------------------------------------------------------------------


def test_sat_push_is_refused_before_converting(sat_parquet, tmp_path, monkeypatch, capsys):
    out = tmp_path / "records"
    code = sat.main(["--input", str(sat_parquet), "--output", str(out), "--push_to_hub", "me/sat"])
    assert code == 2 and "--push_to_hub is set but HF_HUB_OFFLINE is on" in capsys.readouterr().err
    assert not out.exists()  # not an hour of conversion first


def test_the_dataset_card_says_where_the_records_came_from(sat_records_dir):
    report = json.loads((sat_records_dir / "prep_report.json").read_text())
    command = ["python", "-m", "data_prep.sat", "--input", report["source"], "--output", "data/sat"]
    card = DatasetCard(str(data_hub.dataset_card(report, "me/sat-records", command)))
    assert card.data.task_categories == ["visual-question-answering"]
    assert card.data.source_datasets is None  # a local file is no Hub source
    assert f"| rows kept | {report['rows_written']} |" in card.text
    assert f"| rows read | {report['rows_read']} |" in card.text
    for reason, count in report["skipped_by_reason"].items():
        assert (f"| skipped: {reason} | {count} |" in card.text) == bool(count)
    assert f"python -m data_prep.sat --input {report['source']} --output data/sat" in card.text
    assert "--dataset_path me/sat-records --dataset_split train" in card.text
    hub_report = {**report, "source": "array/SAT", "revision": "bda5dde942d7f7b41bff7935f086ed9a9e348ae3"}
    card = DatasetCard(str(data_hub.dataset_card(hub_report, "me/sat-records")))
    assert card.data.source_datasets == ["array/SAT"] and "at revision `bda5dde9" in card.text


def test_pushing_a_folder_that_data_prep_did_not_write_is_refused(tmp_path, capsys, online_with_token):
    (tmp_path / "records").mkdir()
    assert data_hub.main([str(tmp_path / "records"), "--repo_id", "me/sat"]) == 2
    assert "has no readable prep_report.json" in capsys.readouterr().err
