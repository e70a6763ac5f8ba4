"""Dataset revisions: one pin per hub dataset (data_prep/sources.py), overridable, recorded wherever the data is used.

No hub here: where a test needs the hub branch, `load_dataset` is stood in for by the same rows from a local parquet
file (as tests/test_sat_prep.py does), and the test checks what reached it and what was recorded.
"""

from __future__ import annotations

import json

import pytest

from data_prep.sat import convert, main
from data_prep.sources import CVBENCH_REVISION, PINNED, SAT_REVISION, check_revision, revision_for
from recipes import eval_cvbench
from recipes.evaluation.config import EvalArguments
from recipes.shared.errors import RecipeError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_each_hub_dataset_has_one_pin_and_a_commit_hash_works_as_a_value(caplog):
    assert PINNED == {"array/SAT": SAT_REVISION, "nyu-visionx/CV-Bench": CVBENCH_REVISION}
    assert all(len(pin) == 40 and int(pin, 16) >= 0 for pin in PINNED.values())  # commits, not branches
    assert revision_for("array/SAT") == SAT_REVISION and revision_for("someone/else") is None
    caplog.clear()
    with caplog.at_level("WARNING", logger="data_prep.sources"):
        assert revision_for("array/SAT", COMMIT) == COMMIT
    assert "not a commit hash" not in caplog.text  # a commit is a pin
    with caplog.at_level("WARNING", logger="data_prep.sources"):
        revision_for("array/SAT", "main")
    assert "not a commit hash: the hub may change it" in caplog.text
    for bad in ("", "main branch", "a;b"):
        with pytest.raises(ValueError, match="is not a branch, tag or commit hash"):
            check_revision(bad)


def hub_stand_in(monkeypatch, module, parquet, calls: list):
    """`load_dataset` of ``module`` answering a hub id with the local parquet rows (and recording the call)."""
    real = module.load_dataset

    def load_dataset(path, **kwargs):
        if path == "parquet":
            return real(path, **kwargs)
        calls.append((path, kwargs.get("revision")))
        streaming = {"streaming": True} if kwargs.get("streaming") else {}
        return real("parquet", data_files=str(parquet), split="train", **streaming)

    monkeypatch.setattr(module, "load_dataset", load_dataset)


@pytest.mark.parametrize("revision", [None, COMMIT])
def test_sat_from_the_hub_is_read_at_the_pin_or_the_given_revision_and_it_is_recorded(
    revision, sat_parquet, tmp_path, monkeypatch
):
    import datasets

    calls = []
    hub_stand_in(monkeypatch, datasets, sat_parquet, calls)
    report = convert("array/SAT", tmp_path / "out", limit=8, revision=revision)
    expected = revision or SAT_REVISION
    assert calls == [("array/SAT", expected)]
    assert report["revision"] == expected
    assert json.loads((tmp_path / "out" / "prep_report.json").read_text())["revision"] == expected


def test_a_revision_for_local_sat_files_is_refused(sat_parquet, tmp_path, capsys):
    code = main(["--input", str(sat_parquet), "--output", str(tmp_path / "out"), "--revision", COMMIT])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "applies to a hub dataset" in err and "drop --revision" in err
    assert not (tmp_path / "out").exists()


def test_local_sat_files_record_no_revision(sat_records_dir):
    assert json.loads((sat_records_dir / "prep_report.json").read_text())["revision"] is None


def test_a_revision_for_a_local_cvbench_is_refused_before_the_model_loads(cvbench_parquet, tmp_path):
    args = EvalArguments(
        model_name_or_path=str(tmp_path / "no-model-here"),  # a check that ran after loading would say that instead
        output_dir=str(tmp_path / "eval"),
        dataset=str(cvbench_parquet),
        dataset_revision=COMMIT,
    )
    with pytest.raises(RecipeError, match="--dataset_revision .* applies to a hub dataset.*drop --dataset_revision"):
        eval_cvbench.main(args)
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_cvbench_revision_reaches_the_loader_the_summary_and_the_fingerprint(
    tiny_base_dir, cvbench_parquet, tmp_path, monkeypatch
):
    import recipes.evaluation.data as data

    calls = []
    hub_stand_in(monkeypatch, data, cvbench_parquet, calls)

    def evaluate(revision):
        args = EvalArguments(
            model_name_or_path=str(tiny_base_dir),
            output_dir=str(tmp_path / "eval"),
            dataset="nyu-visionx/CV-Bench",
            dataset_revision=revision,
            limit=2,
            max_new_tokens=4,
        )
        return eval_cvbench.main(args)

    summary = evaluate(None)
    assert calls == [("nyu-visionx/CV-Bench", CVBENCH_REVISION)]
    assert summary["dataset"]["revision"] == CVBENCH_REVISION
    assert summary["fingerprint"]["dataset"]["revision"] == CVBENCH_REVISION
    # The same rows at another revision are another evaluation: not resumed into the first one's predictions.
    with pytest.raises(RecipeError, match=f"dataset.revision: {CVBENCH_REVISION} there, {COMMIT} now"):
        evaluate(COMMIT)
