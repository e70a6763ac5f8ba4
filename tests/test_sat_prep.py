"""`data_prep.sat`: faithful records, reproducible option order, bad rows skipped and counted by reason, clear
errors that leave everything intact, and the output appearing only when complete. All offline, on synthetic SAT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Features, Image, List, load_from_disk
from hypothesis import given, settings
from hypothesis import strategies as st

import data_prep.sat as sat
from data_prep.sat import PrepError, convert, convert_row, main, shuffled_options
from data_prep.schema import RECORD_FEATURES, user_text
from data_prep.synthetic import SAT_FEATURES, write_synthetic


def source_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def written_records(folder: Path) -> list[dict]:
    """The saved records with images as their stored bytes (not decoded)."""
    dataset = load_from_disk(str(folder))
    assert dataset.features == RECORD_FEATURES
    return dataset.cast_column("images", List(Image(decode=False))).to_list()


def report_of(folder: Path) -> dict:
    return json.loads((folder / "prep_report.json").read_text())


def row_index(record: dict) -> int:
    return int(record["id"].rsplit(":", 1)[1])


def assert_record_matches(record: dict, row: dict, index: int, seed: int, source_name: str = "sat") -> None:
    assert record["id"] == f"{source_name}:train:{index}"
    assert record["question"] == row["question"]
    assert record["question_type"] == row["question_type"]
    assert record["solution"] == row["correct_answer"]
    assert sorted(record["options"]) == sorted(row["answers"])
    assert record["options"] == shuffled_options(row["answers"], seed, index)
    assert [image["bytes"] for image in record["images"]] == row["image_bytes"]  # the original bytes, not re-encoded
    user, assistant = record["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert [part["type"] for part in user["content"]] == ["image"] * len(row["image_bytes"]) + ["text"]
    assert user["content"][-1]["text"] == user_text(row["question"], record["options"])
    assert assistant["content"] == [{"type": "text", "text": row["correct_answer"]}]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------------------------
# Faithful, reproducible records
# --------------------------------------------------------------------------------------------------------------


def test_every_written_record_matches_its_source_row(sat_parquet, tmp_path):
    report = convert(str(sat_parquet), tmp_path / "out", seed=3)
    rows = source_rows(sat_parquet)
    records = written_records(tmp_path / "out")
    assert [row_index(r) for r in records] == list(range(len(rows)))
    for record in records:
        assert_record_matches(record, rows[row_index(record)], row_index(record), seed=3)
    assert report == report_of(tmp_path / "out")
    assert (report["rows_read"], report["rows_written"], report["rows_skipped"]) == (64, 64, 0)
    assert report["seed"] == 3 and report["source"] == str(sat_parquet) and report["split"] == "train"
    assert any(len(r["images"]) == 2 for r in records)  # multi-image rows are kept, with all their images


def test_the_shared_fixture_holds_only_single_image_rows(sat_records_dir, sat_parquet):
    rows = source_rows(sat_parquet)
    single = [i for i, row in enumerate(rows) if len(row["image_bytes"]) == 1]
    records = written_records(sat_records_dir)
    assert [row_index(r) for r in records] == single
    assert report_of(sat_records_dir)["skipped_by_reason"]["multi_image"] == len(rows) - len(single)


def test_same_input_and_seed_give_the_same_fingerprint_whatever_num_proc(sat_parquet, tmp_path):
    one = convert(str(sat_parquet), tmp_path / "one", seed=7)
    two = convert(str(sat_parquet), tmp_path / "two", seed=7, num_proc=2)
    assert one["fingerprint"] == two["fingerprint"]
    assert written_records(tmp_path / "one") == written_records(tmp_path / "two")


def test_another_seed_changes_the_option_order_and_the_fingerprint(sat_parquet, tmp_path):
    a = convert(str(sat_parquet), tmp_path / "a", seed=0)
    b = convert(str(sat_parquet), tmp_path / "b", seed=1)
    assert a["fingerprint"] != b["fingerprint"]
    orders_a = [r["options"] for r in written_records(tmp_path / "a")]
    orders_b = [r["options"] for r in written_records(tmp_path / "b")]
    assert orders_a != orders_b
    assert [sorted(o) for o in orders_a] == [sorted(o) for o in orders_b]


@settings(max_examples=50, deadline=None)
@given(options=st.lists(st.text(min_size=1), min_size=1, max_size=6), seed=st.integers(), index=st.integers(0))
def test_option_order_is_a_permutation_fixed_by_seed_and_row(options, seed, index):
    order = shuffled_options(options, seed, index)
    assert sorted(order) == sorted(options)
    assert order == shuffled_options(list(options), seed, index)


def test_convert_row_is_a_pure_per_example_function(sat_parquet):
    row = source_rows(sat_parquet)[0]
    record, reason = convert_row(row, 5, source_name="array/SAT", split="train", seed=2)
    assert reason is None and record["id"] == "array/SAT:train:5"
    assert record == convert_row(dict(row), 5, source_name="array/SAT", split="train", seed=2)[0]
    assert convert_row({**row, "correct_answer": "?"}, 5, source_name="s", split="t", seed=2) == (
        None,
        "answer_not_in_options",
    )


def test_the_correct_answer_lands_in_every_position():
    positions = {shuffled_options(["a", "b", "c"], 0, i).index("a") for i in range(60)}
    assert positions == {0, 1, 2}


def test_struct_encoded_images_give_the_same_records_as_raw_bytes(sat_parquet, tmp_path):
    table = pq.read_table(sat_parquet)
    structs = [
        [{"bytes": b, "path": f"img_{i}.jpg"} for b in images]
        for i, images in enumerate(table.column("image_bytes").to_pylist())
    ]
    features = Features({**SAT_FEATURES, "image_bytes": List(Image())})
    struct_table = table.set_column(0, "image_bytes", pa.array(structs, type=features.arrow_schema.field(0).type))
    struct_file = tmp_path / "structs" / "sat.parquet"  # same file name: same record ids
    struct_file.parent.mkdir()
    pq.write_table(struct_table.replace_schema_metadata(features.arrow_schema.metadata), struct_file)
    assert pq.read_schema(struct_file).field("image_bytes").type.value_type == pa.struct(
        [("bytes", pa.binary()), ("path", pa.string())]
    )

    raw = convert(str(sat_parquet), tmp_path / "raw_out", seed=0)
    from_structs = convert(str(struct_file), tmp_path / "struct_out", seed=0)
    assert from_structs["fingerprint"] == raw["fingerprint"]
    assert written_records(tmp_path / "struct_out") == written_records(tmp_path / "raw_out")


def test_a_folder_source_reads_the_splits_files_in_order(sat_parquet, tmp_path):
    table = pq.read_table(sat_parquet)
    folder = tmp_path / "shards" / "sat"  # folder name "sat": the same ids as the single file
    (folder / "data").mkdir(parents=True)
    pq.write_table(table.slice(0, 40), folder / "data" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(40), folder / "data" / "train-00001-of-00002.parquet")
    pq.write_table(table.slice(0, 5), folder / "data" / "validation-00000-of-00001.parquet")

    report = convert(str(folder), tmp_path / "out", seed=0)
    assert report["rows_read"] == 64
    assert [Path(f).name for f in report["source_files"]] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert report["fingerprint"] == convert(str(sat_parquet), tmp_path / "file_out", seed=0)["fingerprint"]
    assert convert(str(folder), tmp_path / "val", split="validation")["rows_read"] == 5


def test_mini_experiment_rows_go_through_the_same_path(tmp_path):
    source = write_synthetic("mini_color", rows=8, seed=0, output=tmp_path / "mini_color.parquet")
    report = convert(str(source), tmp_path / "out", seed=0)
    records = written_records(tmp_path / "out")
    assert report["rows_written"] == 8
    for record, row in zip(records, source_rows(source), strict=True):
        assert_record_matches(record, row, row_index(record), seed=0, source_name="mini_color")
        assert record["question"] == "Is the shape red? Answer yes or no."


def test_a_hub_id_is_streamed_with_images_kept_as_bytes(sat_parquet, tmp_path, monkeypatch):
    """The hub branch, offline: `load_dataset` is stood in for by a local streaming dataset whose card-style
    features declare ``image_bytes`` as images (as array/SAT's card does), so decoding must be switched off."""
    import datasets

    table = pq.read_table(sat_parquet)
    structs = [[{"bytes": b, "path": None} for b in images] for images in table.column("image_bytes").to_pylist()]
    features = Features({**SAT_FEATURES, "image_bytes": List(Image())})
    local = tmp_path / "hub_copy.parquet"
    pq.write_table(
        table.set_column(0, "image_bytes", pa.array(structs, type=features.arrow_schema.field(0).type)).cast(
            features.arrow_schema
        ),
        local,
    )
    calls = []
    real_load = datasets.load_dataset

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return real_load("parquet", data_files=str(local), split=kwargs["split"], streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    report = convert("array/SAT", tmp_path / "out", seed=4, limit=40)
    assert calls == [("array/SAT", {"split": "train", "streaming": True})]
    assert report["rows_read"] == 40 and report["source_files"] == []
    rows = source_rows(sat_parquet)
    records = written_records(tmp_path / "out")
    assert len(records) == 40
    for record in records:
        assert_record_matches(record, rows[row_index(record)], row_index(record), seed=4, source_name="array/SAT")


# --------------------------------------------------------------------------------------------------------------
# The paper's subset
# --------------------------------------------------------------------------------------------------------------


def test_paper_subset_flags_keep_single_image_rows_among_the_first_n(sat_parquet, tmp_path):
    rows = source_rows(sat_parquet)
    report = convert(str(sat_parquet), tmp_path / "paper", limit=20, multi_image="skip")
    expected = [i for i in range(20) if len(rows[i]["image_bytes"]) == 1]
    assert 0 < len(expected) < 20
    assert [row_index(r) for r in written_records(tmp_path / "paper")] == expected
    assert report["rows_read"] == 20 and report["limit"] == 20 and report["multi_image"] == "skip"
    assert report["skipped_by_reason"]["multi_image"] == 20 - len(expected)

    argv = ["--input", str(sat_parquet), "--output", str(tmp_path / "cli"), "--limit", "20", "--multi-image", "skip"]
    assert main(argv) == 0
    assert report_of(tmp_path / "cli")["fingerprint"] == report["fingerprint"]


# --------------------------------------------------------------------------------------------------------------
# Bad rows: skipped, counted by reason, never a crash, never a wrong record
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def bad_rows_parquet(sat_parquet, tmp_path):
    """A SAT file mixing good rows with one row per kind of defect; returns (path, good single, good multi)."""
    rows = source_rows(sat_parquet)
    good = next(r for r in rows if len(r["image_bytes"]) == 1)
    two = next(r for r in rows if len(r["image_bytes"]) == 2)
    jpeg = good["image_bytes"][0]
    variants = [
        (good, None),
        ({**good, "question": None}, "question_empty"),
        ({**good, "question": "   "}, "question_empty"),
        ({**good, "answers": None}, "options_missing"),
        ({**good, "answers": []}, "options_missing"),
        ({**good, "answers": [good["correct_answer"], None]}, "options_invalid"),
        ({**good, "correct_answer": "somewhere else"}, "answer_not_in_options"),
        ({**good, "correct_answer": None}, "answer_not_in_options"),
        ({**good, "image_bytes": None}, "image_missing"),
        ({**good, "image_bytes": []}, "image_missing"),
        ({**good, "image_bytes": [None]}, "image_missing"),
        ({**good, "image_bytes": [b""]}, "image_missing"),
        ({**good, "image_bytes": [jpeg[: len(jpeg) // 2]]}, "image_undecodable"),  # truncated
        ({**good, "image_bytes": [jpeg[:-3]]}, "image_undecodable"),  # lost its last bytes
        ({**good, "image_bytes": [b"certainly not an image"]}, "image_undecodable"),
        ({**two, "image_bytes": [two["image_bytes"][0], b"\xff\xd8\xff broken"]}, "image_undecodable"),
        (two, None),
        (good, None),
    ]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([r for r, _ in variants], schema=SAT_FEATURES.arrow_schema), path)
    return path, variants


def test_every_kind_of_bad_row_is_skipped_and_counted_by_reason(bad_rows_parquet, tmp_path):
    path, variants = bad_rows_parquet
    report = convert(str(path), tmp_path / "out", seed=0)
    expected = {reason: 0 for reason in sat.SKIP_REASONS}
    for _, reason in variants:
        if reason:
            expected[reason] += 1
    assert report["skipped_by_reason"] == expected
    good = [i for i, (_, reason) in enumerate(variants) if reason is None]
    records = written_records(tmp_path / "out")
    assert [row_index(r) for r in records] == good
    for record in records:
        assert_record_matches(record, variants[row_index(record)][0], row_index(record), seed=0, source_name="bad")
    assert report["rows_read"] == len(variants) and report["rows_written"] == len(good)


def test_multi_image_rows_are_counted_before_their_images_are_decoded(bad_rows_parquet, tmp_path):
    path, variants = bad_rows_parquet
    report = convert(str(path), tmp_path / "out", multi_image="skip")
    assert report["skipped_by_reason"]["multi_image"] == 2  # the broken two-image row and the good one
    assert report["skipped_by_reason"]["image_undecodable"] == 3


def test_a_source_with_only_bad_rows_gives_an_empty_loadable_dataset(tmp_path):
    path = tmp_path / "empty.parquet"
    row = {"image_bytes": [b"junk"], "question": "Q?", "answers": ["a"], "question_type": "t", "correct_answer": "a"}
    pq.write_table(pa.Table.from_pylist([row], schema=SAT_FEATURES.arrow_schema), path)
    report = convert(str(path), tmp_path / "out")
    assert report["rows_written"] == 0 and report["skipped_by_reason"]["image_undecodable"] == 1
    assert written_records(tmp_path / "out") == []


# --------------------------------------------------------------------------------------------------------------
# Errors: clear, exit code 2, nothing touched, no partial output
# --------------------------------------------------------------------------------------------------------------


def test_a_hub_id_that_cannot_be_reached_offline_gives_a_clear_error(tmp_path):
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"
    with pytest.raises(PrepError, match=r"loading it from the Hugging Face hub .* failed.*--input"):
        convert("array/SAT", tmp_path / "out")
    assert listing(tmp_path) == []


def make_bad_source(case: str, folder: Path) -> Path:
    if case == "missing folder":
        return folder / "no such folder" / "x"
    if case == "folder without parquet":
        (folder / "empty_dir").mkdir()
        return folder / "empty_dir"
    if case == "not parquet":
        (folder / "text.parquet").write_text("not parquet")
        return folder / "text.parquet"
    if case == "not SAT":
        pq.write_table(pa.table({"foo": [1]}), folder / "other.parquet")
        return folder / "other.parquet"
    return folder / "missing.parquet"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "does not exist"),
        ("missing folder", "does not exist"),
        ("folder without parquet", "holds no .parquet files"),
        ("not parquet", "cannot read"),
        ("not SAT", "lacks the SAT column"),
    ],
)
def test_a_missing_or_unreadable_source_is_a_clear_error_and_creates_nothing(case, message, tmp_path):
    source = make_bad_source(case, tmp_path)
    before = listing(tmp_path)
    with pytest.raises(PrepError, match=message):
        convert(str(source), tmp_path / "out")
    assert listing(tmp_path) == before


def test_a_source_that_breaks_midway_leaves_no_output(tmp_path):
    path = write_synthetic("sat", rows=300, seed=0, output=tmp_path / "src" / "sat.parquet")
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    data = bytearray(path.read_bytes())
    data[column.data_page_offset + 200 : column.data_page_offset + 264] = bytes(64)  # corrupt a compressed page
    path.write_bytes(bytes(data))
    with pytest.raises(PrepError, match="failed after .* rows"):
        convert(str(path), tmp_path / "out")
    assert listing(tmp_path) == ["src"]


def test_a_crash_during_conversion_leaves_no_output(sat_parquet, tmp_path, monkeypatch):
    real = sat._decode_flags
    calls = []

    def crash_on_second_batch(image_lists):
        calls.append(len(image_lists))
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real(image_lists)

    monkeypatch.setattr(sat, "_decode_flags", crash_on_second_batch)
    monkeypatch.setattr(sat, "BATCH_ROWS", 16)  # 64 rows: four batches
    with pytest.raises(RuntimeError, match="power cut"):
        convert(str(sat_parquet), tmp_path / "out")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("existing", ["folder with a file", "file"])
def test_an_output_that_holds_something_is_refused_and_left_intact(existing, sat_parquet, tmp_path):
    out = tmp_path / "out"
    if existing == "file":
        out.write_text("precious")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("precious")
    with pytest.raises(PrepError, match="already exists. Choose a new --output or delete it"):
        convert(str(sat_parquet), out)
    assert listing(tmp_path) == ["out"]
    assert (out if existing == "file" else out / "keep.txt").read_text() == "precious"


def test_an_empty_output_folder_is_filled(sat_parquet, tmp_path):
    (tmp_path / "out").mkdir()
    assert convert(str(sat_parquet), tmp_path / "out", limit=5)["rows_written"] == 5
    assert listing(tmp_path) == ["out"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"multi_image": "drop"}, "keep, skip"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"num_proc": 0}, "num_proc"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message, sat_parquet, tmp_path):
    with pytest.raises(PrepError, match=message):
        convert(str(sat_parquet), tmp_path / "out", **kwargs)
    assert listing(tmp_path) == []


def test_cli_exit_codes(sat_parquet, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--input", str(sat_parquet), "--output", str(out)]) == 0
    assert "wrote 64 records" in capsys.readouterr().out
    assert main(["--input", str(sat_parquet), "--output", str(out)]) == 2
    assert "Choose a new --output" in capsys.readouterr().err
    assert main(["--input", "array/SAT", "--output", str(tmp_path / "hub")]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--input", str(sat_parquet), "--output", str(tmp_path / "x"), "--multi-image", "drop"])
    assert exit_info.value.code == 2


def test_the_module_runs_as_a_command_and_exits_2_on_a_missing_input(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "data_prep.sat", "--input", str(tmp_path / "nope.parquet")]
    result = subprocess.run(command + ["--output", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert listing(tmp_path) == []
