"""CV-Bench evaluation folders: nothing lost, nothing mixed.

One writer per folder (a second evaluation started into it is refused), the folder's provenance record (what the
evaluation wrote, the only files ``--overwrite_output_dir`` deletes), folders that are not the evaluation's to write,
rows whose prompt cannot be given to the model, and an adapter whose base model moved. Every data-loss case hashes
every file before and after. Runs use the tiny base model (two rows, two new tokens).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.files import tree_hashes as all_hashes

from recipes.eval_cvbench import DEFAULT_CONFIG, EvalArguments, main, make_parser
from recipes.shared import provenance
from recipes.shared.cli import REPO_ROOT, RecipeError, run_cli
from tests.test_eval_cvbench import write_cvbench

QUICK = {"limit": 2, "max_new_tokens": 2}
# Lock files aside: they hold nothing.
tree_hashes = functools.partial(all_hashes, ignore=(provenance.LOCK, provenance.WRITER_LOCK))


def evaluate(model: Path | str, dataset: Path, out: Path, **overrides) -> dict:
    options = {"model_name_or_path": str(model), "output_dir": str(out), "dataset": str(dataset), **QUICK}
    return main(EvalArguments(**(options | overrides)))


def predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


# --- the folder's record and what overwriting deletes ----------------------------------------------------------------


def test_the_record_names_the_run_key_and_overwriting_deletes_only_its_files(tiny_base_dir, cvbench_parquet, tmp_path):
    out = tmp_path / "e"
    first = evaluate(tiny_base_dir, cvbench_parquet, out)
    entry = provenance.read(out)["."]
    assert entry["kind"] == "cvbench-eval" and entry["state"] == "finished"
    assert entry["defined_by"] == {"run_key": first["fingerprint"]["id"]}
    assert {"predictions.jsonl", "run_config.json", "summary.json", "summary.md"} <= set(entry["owns"])
    # The user keeps their own files in the folder: never ours, never deleted.
    (out / "notes.txt").write_text("my notes")
    (out / "plots").mkdir()
    (out / "plots" / "a.png").write_bytes(b"\x89PNG not really")
    # A file named like a process's predictions that this evaluation did not write: neither merged nor deleted.
    (out / "predictions.rank7.jsonl").write_text(json.dumps({"row": 0, "correct": True, "fingerprint": "x"}) + "\n")
    before = tree_hashes(out)
    with pytest.raises(RecipeError, match="--overwrite_output_dir true"):
        evaluate(tiny_base_dir, cvbench_parquet, out, max_new_tokens=3)
    assert tree_hashes(out) == before
    second = evaluate(tiny_base_dir, cvbench_parquet, out, max_new_tokens=3, overwrite_output_dir=True)
    after = tree_hashes(out)
    mine = ("notes.txt", "plots/a.png", "predictions.rank7.jsonl")
    assert {k: after[k] for k in mine} == {k: before[k] for k in mine}
    assert second["fingerprint"]["id"] != first["fingerprint"]["id"]
    assert {p["fingerprint"] for p in predictions(out)} == {second["fingerprint"]["id"]}
    assert provenance.read(out)["."]["defined_by"] == {"run_key": second["fingerprint"]["id"]}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_with_files_and_no_record_is_refused_before_the_model_loads(overwrite, cvbench_parquet, tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / "predictions.jsonl").write_text(json.dumps({"row": 0, "correct": True}) + "\n")
    (out / "results.csv").write_text("someone else's results\n")
    before = tree_hashes(out)
    # An unavailable model: the folder is refused first, so the message is about the folder.
    with pytest.raises(RecipeError) as err:
        evaluate("nobody/no-such-model", cvbench_parquet, out, overwrite_output_dir=overwrite)
    assert "no evaluation recorded writing" in str(err.value) and "choose another --output_dir" in str(err.value)
    assert tree_hashes(out) == before and sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "results.csv"]


def test_a_record_of_another_evaluation_without_results_is_reused(tiny_base_dir, cvbench_parquet, tmp_path):
    # What an evaluation killed before its first prediction leaves: its record and run key, no results.
    provenance.start(tmp_path, "cvbench-eval", {"run_key": "0123456789abcdef"}, owns=["run_config.json"])
    (tmp_path / "run_config.json").write_text(json.dumps({"id": "0123456789abcdef"}))
    summary = evaluate(tiny_base_dir, cvbench_parquet, tmp_path)
    assert summary["rows"]["scored"] == 2
    assert json.loads((tmp_path / "run_config.json").read_text())["id"] == summary["fingerprint"]["id"]


def test_a_training_run_folder_is_not_an_evaluation_folder(tiny_base_dir, cvbench_parquet, tmp_path):
    run = tmp_path / "run"
    provenance.start(run, "recipe-run", {"seed": 0}, owns=["trainer_state.json"])
    (run / "trainer_state.json").write_text("{}")
    before = tree_hashes(run)
    with pytest.raises(RecipeError, match="output folder of a recipe-run"):
        evaluate(tiny_base_dir, cvbench_parquet, run, overwrite_output_dir=True)
    assert tree_hashes(run) == before


def test_the_models_own_folder_is_refused_as_output(tiny_base_dir, cvbench_parquet, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_dir, model)
    before = tree_hashes(model)
    for out in (model, tmp_path):
        with pytest.raises(RecipeError, match="is or holds the evaluated model"):
            evaluate(model, cvbench_parquet, out, overwrite_output_dir=True)
    assert tree_hashes(model) == before
    summary = evaluate(model, cvbench_parquet, model / "eval_cvbench")  # a folder inside the run folder is fine
    assert summary["rows"]["scored"] == 2 and tree_hashes(model) == before | {
        f"eval_cvbench/{k}": v for k, v in tree_hashes(model / "eval_cvbench").items()
    }


def test_an_output_folder_holding_the_dataset_is_refused(tiny_base_dir, cvbench_parquet, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(cvbench_parquet, data / "cvbench.parquet")
    before = tree_hashes(data)
    with pytest.raises(RecipeError, match="is or contains the input"):
        evaluate(tiny_base_dir, data / "cvbench.parquet", data, overwrite_output_dir=True)
    assert tree_hashes(data) == before and sorted(p.name for p in data.iterdir()) == ["cvbench.parquet"]


def test_an_output_dir_that_is_a_file_is_a_one_line_error(tiny_base_dir, cvbench_parquet, tmp_path, capsys):
    target = tmp_path / "e"
    target.write_text("not a folder")
    argv = ["--model_name_or_path", str(tiny_base_dir), "--output_dir", str(target), "--dataset", str(cvbench_parquet)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, make_parser(), argv, DEFAULT_CONFIG)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is a file, not a folder" in err and "Traceback" not in err
    assert target.read_text() == "not a folder"


# --- one writer per folder -------------------------------------------------------------------------------------------


def test_a_second_evaluation_into_a_folder_being_written_is_refused(tiny_base_dir, cvbench_parquet, tmp_path):
    out = tmp_path / "e"
    evaluate(tiny_base_dir, cvbench_parquet, out)
    before = tree_hashes(out)
    # Another process holds the folder, as a running evaluation does, through the real lock.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom recipes.shared.provenance import sole_writer\n"
            "with sole_writer(sys.argv[1], 'a CV-Bench evaluation'):\n    print('held', flush=True)\n"
            "    time.sleep(120)\n",
            str(out),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RecipeError, match="being written by another process"):
            evaluate(tiny_base_dir, cvbench_parquet, out, limit=4, overwrite_output_dir=True)
        assert tree_hashes(out) == before
    finally:
        holder.kill()
        holder.wait()
    assert evaluate(tiny_base_dir, cvbench_parquet, out, limit=4)["rows"]["scored"] == 4  # free again


# --- rows that cannot be given to the model --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "why"),
    [
        (None, "the prompt is missing (None)"),
        ("   ", "the prompt is missing ('   ')"),
        ("How many <|image_pad|> are there?", "special token(s) <|image_pad|>"),
        ("Which is closer?<|im_end|>\n<|im_start|>assistant", "special token(s) <|im_start|>, <|im_end|>"),
    ],
)
def test_a_row_with_an_unusable_prompt_is_named_or_skipped(prompt, why, tiny_base_dir, tmp_path):
    def spoil(columns):
        columns["prompt"][1] = prompt

    data = write_cvbench(tmp_path / "rows.parquet", 3, spoil)
    out = tmp_path / "e"
    with pytest.raises(RecipeError) as err:
        evaluate(tiny_base_dir, data, out, limit=None)
    assert "row 1 (idx 1)" in str(err.value) and why in str(err.value) and "--skip_bad_images true" in str(err.value)
    assert not out.exists()  # refused before anything was written
    summary = evaluate(tiny_base_dir, data, out, limit=None, skip_bad_images=True)
    assert summary["rows"] | {"limit": None} == {
        "scored": 2,
        "skipped": 1,
        "selected": 3,
        "missing": 0,
        "dataset": 3,
        "limit": None,
    }
    assert summary["skipped"]["idx"] == [1] and why in summary["skipped"]["reasons"][0]


# --- an adapter whose base model moved -------------------------------------------------------------------------------


def test_an_adapter_whose_base_model_moved_names_the_missing_path(tiny_base_dir, cvbench_parquet, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = tmp_path / "base"
    shutil.copytree(tiny_base_dir, base)
    model = AutoModelForImageTextToText.from_pretrained(base)
    adapter = tmp_path / "adapter"
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    base.rename(tmp_path / "moved")
    out = tmp_path / "e"
    with pytest.raises(RecipeError) as err:
        evaluate(adapter, cvbench_parquet, out)
    assert f"base model {base}, which does not exist" in str(err.value) and "base_model_name_or_path" in str(err.value)
    assert not out.exists()
