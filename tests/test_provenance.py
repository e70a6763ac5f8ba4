"""The one "what made this output" record: inspect, record, delete only what is owned, never an input."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.files import tree_hashes

from recipes.shared import provenance
from recipes.shared.provenance import ProvenanceError


def test_states_and_differences(tmp_path):
    out = tmp_path / "run"
    assert provenance.inspect(out, "recipe-run", {"seed": 1}).state == "empty"
    provenance.start(out, "recipe-run", {"seed": 1, "lr": 1e-6}, owns=["model.safetensors"])
    same = provenance.inspect(out, "recipe-run", {"seed": 1, "lr": 1e-6})
    assert same.state == "same" and not same.finished
    provenance.finish(out)
    assert provenance.inspect(out, "recipe-run", {"seed": 1, "lr": 1e-6}).finished
    other = provenance.inspect(out, "recipe-run", {"seed": 2, "lr": 1e-6})
    assert other.state == "different" and other.changes == ["seed: 1 there, 2 now"]
    assert provenance.inspect(out, "cvbench-eval", {"seed": 1, "lr": 1e-6}).changes[0].startswith("kind:")


def test_a_folder_without_record_is_foreign(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    verdict = provenance.inspect(tmp_path, "recipe-run", {})
    assert verdict.state == "foreign" and verdict.foreign == ["notes.txt"]
    assert provenance.inspect(tmp_path, "recipe-run", {}, ignore=["notes.txt"]).state == "empty"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ProvenanceError, match="is a file"):
        provenance.inspect(tmp_path / "afile", "recipe-run", {})


def test_delete_removes_exactly_what_is_owned(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-1").mkdir(parents=True)
    (out / "checkpoint-1" / "w.bin").write_bytes(b"1")
    (out / "model.safetensors").write_bytes(b"2")
    # The user's own files, some named like a run's: never owned, never deleted.
    (out / "reference.safetensors").write_bytes(b"keep")
    (out / "tokenizer_notes.json").write_text("keep")
    (out / "checkpoint-9").mkdir()
    (out / "checkpoint-9" / "mine.txt").write_text("keep")
    provenance.start(out, "recipe-run", {"seed": 0}, owns=["checkpoint-1", "model.safetensors"])
    before = tree_hashes(tmp_path)
    removed = provenance.delete_owned(out)
    assert sorted(p.name for p in removed) == ["checkpoint-1", "model.safetensors"]
    after = tree_hashes(tmp_path)
    gone = {k for k in before if k not in after}
    assert gone == {"run/checkpoint-1/w.bin", "run/model.safetensors"}
    assert all(after[k] == before[k] for k in after if k != "run/provenance.json")
    assert provenance.read(out) == {}


def test_owned_paths_stay_inside_the_folder(tmp_path):
    with pytest.raises(ProvenanceError, match="outside"):
        provenance.record(tmp_path / "run", owns=["../elsewhere"])
    with pytest.raises(ProvenanceError, match="outside"):
        provenance.record(tmp_path / "run", owns=[str(tmp_path / "x")])


def test_guard_refuses_inputs_home_and_repository(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(ProvenanceError, match="is or contains the input"):
        provenance.guard_output(model, [model])
    with pytest.raises(ProvenanceError, match="is or contains the input"):
        provenance.guard_output(tmp_path, [model])
    with pytest.raises(ProvenanceError, match="inside the input"):
        provenance.guard_output(model / "out", [model])
    with pytest.raises(ProvenanceError, match="home folder"):
        provenance.guard_output(Path.home(), [])
    with pytest.raises(ProvenanceError, match="repository"):
        provenance.guard_output(provenance.REPO_ROOT, [])
    provenance.guard_output(provenance.REPO_ROOT / "outputs" / "x", ["Qwen/Qwen2-VL-2B"])  # a hub id is no path


def test_command_line(tmp_path, capsys):
    out = tmp_path / "suite"
    assert provenance.main(["record", str(out), "--name", "sft", "--kind", "launcher", "--define", "seed=1"]) == 0
    (out / "sft").mkdir()
    assert provenance.main(["record", str(out), "--name", "sft", "--owns", "sft", "--state", "finished"]) == 0
    assert provenance.main(["inspect", str(out), "--name", "sft", "--kind", "launcher", "--define", "seed=2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["different finished", "  seed: 1 there, 2 now"]
    assert provenance.main(["delete", str(out), "--name", "sft"]) == 0
    assert not (out / "sft").exists()
    assert provenance.main(["record", str(out), "--define", "oops"]) == 2


def test_one_writer_at_a_time(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from recipes.shared.provenance import sole_writer\n"
            "with sole_writer(sys.argv[1], 'a test'):\n    print('held', flush=True); time.sleep(30)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ProvenanceError, match="being written by another process"):
            with provenance.sole_writer(tmp_path, "a CV-Bench evaluation"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with provenance.sole_writer(tmp_path, "a CV-Bench evaluation"):  # released when its holder died
        pass


def test_delete_nested_removes_derived_outputs_and_keeps_the_users_files(tmp_path):
    run = tmp_path / "run"
    evaluation, mixed, other = run / "eval_cvbench", run / "eval_mine", run / "stage"
    for folder, kind in ((evaluation, "cvbench-eval"), (mixed, "cvbench-eval"), (other, "mini-stage")):
        provenance.start(folder, kind, {"model": "m"}, owns=["summary.json"])
        (folder / "summary.json").write_text("{}")
    (mixed / "my_notes.txt").write_text("keep")  # a file of the user's inside a derived folder
    (run / "plain").mkdir()
    (run / "plain" / "summary.json").write_text("no record: never ours")
    before = tree_hashes(tmp_path)
    removed = provenance.delete_nested(run, ["cvbench-eval"])
    assert evaluation in removed and not evaluation.exists()  # nothing but what it recorded: gone whole
    after = tree_hashes(tmp_path)
    assert set(before) - set(after) == {
        "run/eval_cvbench/provenance.json",
        "run/eval_cvbench/.provenance.lock",
        "run/eval_cvbench/summary.json",
        "run/eval_mine/summary.json",
    }
    assert all(after[k] == before[k] for k in after if not k.endswith(provenance.RECORD))
    assert (mixed / "my_notes.txt").read_text() == "keep" and (other / "summary.json").exists()


def test_a_dry_run_lists_what_would_be_deleted_and_deletes_nothing(tmp_path, capsys):
    out = tmp_path / "suite"
    (out / "data").mkdir(parents=True)
    (out / "data" / "sat.parquet").write_bytes(b"made")
    (out / "notes.txt").write_text("the user's")
    provenance.record(out, ".", kind="launcher", owns=["data", "report.html"])  # report.html: not written yet
    provenance.record(out, "grpo_base", kind="launcher", owns=["grpo_base"])
    (out / "grpo_base").mkdir()
    before = tree_hashes(tmp_path)
    assert provenance.delete_owned(out, ".", dry_run=True) == [out / "data"]
    assert provenance.main(["delete", str(out), "--all", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "data"), str(out / "grpo_base")]
    assert tree_hashes(tmp_path) == before and set(provenance.read(out)) == {".", "grpo_base"}
    assert provenance.main(["delete", str(out), "--all"]) == 0
    assert set(tree_hashes(tmp_path)) == {"suite/notes.txt", "suite/provenance.json", "suite/.provenance.lock"}
    assert provenance.read(out) == {}


def test_the_command_line_names_unowned_files_and_guards_even_an_empty_record(tmp_path, capsys):
    out = tmp_path / "qs"
    provenance.record(out, ".", kind="launcher", owns=["sat"])
    (out / "sat").mkdir()
    (out / "data").mkdir()
    assert provenance.main(["inspect", str(out), "--kind", "launcher", "--unowned"]) == 0
    assert capsys.readouterr().out.splitlines() == ["same", "  data", "  unowned: data"]
    inputs = tmp_path / "qs" / "data"
    assert provenance.main(["delete", str(out), "--all", "--input", str(inputs)]) == 2
    assert "is or contains the input" in capsys.readouterr().err and (out / "sat").is_dir()
    assert provenance.main(["delete", str(Path.home()), "--all"]) == 2  # no record there: still refused
