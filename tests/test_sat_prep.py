"""`data_prep.sat`: faithful records, reproducible option order, bad rows skipped and counted by reason, images
stored at the resolution the model sees, clear errors that leave everything intact, and the output appearing only
when complete. All offline, on synthetic SAT, through `convert` / the command line (the path the pipeline runs)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Features, Image, List, load_from_disk
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

import data_prep.sat as sat
import data_prep.sat_convert as sat_convert
from data_prep.fixtures.synthetic import SAT_FEATURES, write_synthetic
from data_prep.images import IMAGE_FACTOR, MAX_PIXELS, MIN_PIXELS, fit_encoded, fit_image, fitted_size, is_fixed_point
from data_prep.sat import PrepError, convert, main, shuffled_options
from data_prep.sat_output import LOCK_NAME, WORK_PREFIX
from data_prep.schema import RECORD_FEATURES, user_text
from data_prep.sources import SAT_REVISION

REPO = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


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
    # The paper's defaults, written down; 112-pixel images are within the bounds, so none is resized.
    assert report["images"] == {
        "min_pixels": 3136,
        "max_pixels": 401408,
        "factor": 28,
        "keep_original": False,
        "fitted": "load",
        "outside_bounds": 0,
        "resized": 0,
    }
    assert report["max_prompt_tokens"] == 1024 and report["skipped_by_reason"]["prompt_too_long"] == 0


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


def test_a_split_that_no_file_matches_is_an_error_listing_the_files_and_splits(sat_parquet, tmp_path, capsys):
    folder = tmp_path / "sat"
    folder.mkdir()
    for name in ("SAT_train.parquet", "SAT_val.parquet", "SAT_static.parquet"):
        shutil.copy(sat_parquet, folder / name)
    before = listing(tmp_path)
    assert main(["--input", str(folder), "--output", str(tmp_path / "out"), "--split", "test"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --split 'test' matches none of the 3 parquet file(s)")
    assert "SAT_static.parquet, SAT_train.parquet, SAT_val.parquet" in error
    assert "split names): static, train, val" in error and "--split" in error
    assert listing(tmp_path) == before
    assert convert(str(folder), tmp_path / "out", split="val")["source_files"] == [str(folder / "SAT_val.parquet")]


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
    assert calls == [("array/SAT", {"split": "train", "streaming": True, "revision": SAT_REVISION})]
    assert report["rows_read"] == 40 and report["source_files"] == [] and report["revision"] == SAT_REVISION
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


def encoded(size: tuple[int, int], image_format: str = "PNG", mode: str = "RGB") -> bytes:
    """An image of ``size`` (width, height) with a gradient (so resizing really changes pixels), encoded."""
    width, height = size
    image = PILImage.linear_gradient("L").resize((width, height)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def bad_rows_parquet(sat_parquet, tmp_path):
    """A SAT file mixing good rows with one row per kind of defect; returns (path, [(row, expected reason)])."""
    rows = source_rows(sat_parquet)
    good = next(r for r in rows if len(r["image_bytes"]) == 1)
    two = next(r for r in rows if len(r["image_bytes"]) == 2)
    jpeg = good["image_bytes"][0]
    answer = good["correct_answer"]
    variants = [
        (good, None),
        ({**good, "question": None}, "question_empty"),
        ({**good, "question": "   "}, "question_empty"),
        ({**good, "answers": None}, "options_missing"),
        ({**good, "answers": []}, "options_missing"),
        ({**good, "answers": [answer, None]}, "options_invalid"),
        ({**good, "answers": [answer, answer]}, "options_duplicate"),
        ({**good, "answers": [answer, f" {answer} "]}, "options_duplicate"),  # the same option once shown
        ({**good, "correct_answer": "somewhere else"}, "answer_not_in_options"),
        ({**good, "correct_answer": None}, "answer_not_in_options"),
        # The model's own special tokens in text: an image slot without an image, a turn ended early.
        ({**good, "question": "How many <|image_pad|> chairs?"}, "special_tokens"),
        ({**good, "question": "Which is closer?<|im_end|>\n<|im_start|>assistant"}, "special_tokens"),
        ({**good, "answers": [answer, "<|vision_start|>left"], "correct_answer": answer}, "special_tokens"),
        ({**good, "image_bytes": None}, "image_missing"),
        ({**good, "image_bytes": []}, "image_missing"),
        ({**good, "image_bytes": [None]}, "image_missing"),
        ({**good, "image_bytes": [b""]}, "image_missing"),
        ({**good, "image_bytes": [jpeg[: len(jpeg) // 2]]}, "image_undecodable"),  # truncated
        ({**good, "image_bytes": [jpeg[:-3]]}, "image_undecodable"),  # lost its last bytes
        ({**good, "image_bytes": [b"certainly not an image"]}, "image_undecodable"),
        ({**two, "image_bytes": [two["image_bytes"][0], b"\xff\xd8\xff broken"]}, "image_undecodable"),
        ({**good, "image_bytes": [encoded((600, 2))]}, "image_aspect_ratio"),  # Qwen2-VL refuses 300:1
        ({**good, "question": "Where is it? " * 7_700}, "prompt_too_long"),  # 100,100 characters
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


def test_a_conversion_that_would_write_no_record_fails_and_leaves_nothing(tmp_path, capsys):
    path = tmp_path / "src" / "all_bad.parquet"
    path.parent.mkdir()
    row = {"image_bytes": [b"junk"], "question": "Q?", "answers": ["a"], "question_type": "t", "correct_answer": "a"}
    pq.write_table(pa.Table.from_pylist([row, {**row, "answers": ["b"]}], schema=SAT_FEATURES.arrow_schema), path)
    assert main(["--input", str(path), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error == (
        "error: no record to write: all 2 rows read were skipped (answer_not_in_options=1, image_undecodable=1). "
        "Nothing was written; check the input (the skip reasons are listed in data_prep/sat.py) and run again.\n"
    )
    assert listing(tmp_path) == ["src"]


# --------------------------------------------------------------------------------------------------------------
# The prompt budget: the paper's 1,024 tokens, image tokens included
# --------------------------------------------------------------------------------------------------------------


def test_ordinary_rows_fit_the_default_budget_and_a_huge_question_does_not(bad_rows_parquet, sat_parquet, tmp_path):
    assert convert(str(sat_parquet), tmp_path / "ordinary")["skipped_by_reason"]["prompt_too_long"] == 0
    path, variants = bad_rows_parquet
    report = convert(str(path), tmp_path / "bad")
    assert report["skipped_by_reason"]["prompt_too_long"] == 1
    assert report["prompt_tokens_counted_with"] == "estimate: 1 token per 2 UTF-8 bytes"


def test_with_a_tokenizer_rows_over_the_budget_are_exactly_those_skipped(sat_parquet, tiny_base_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    full = convert(str(sat_parquet), tmp_path / "full", tokenizer=str(tiny_base_dir))
    records = written_records(tmp_path / "full")
    # 112-pixel images: 16 image tokens each; the template allowance is documented in data_prep.sat.
    lengths = {
        r["id"]: len(tokenizer(user_text(r["question"], r["options"]), add_special_tokens=False)["input_ids"])
        + 16 * len(r["images"])
        + sat.TEMPLATE_TOKENS
        for r in records
    }
    budget = sorted(lengths.values())[len(lengths) // 2]
    report = convert(str(sat_parquet), tmp_path / "cut", tokenizer=str(tiny_base_dir), max_prompt_tokens=budget)
    kept = [r["id"] for r in written_records(tmp_path / "cut")]
    assert kept == [i for i, length in lengths.items() if length <= budget]
    assert report["skipped_by_reason"]["prompt_too_long"] == len(records) - len(kept) > 0
    assert full["prompt_tokens_counted_with"] == f"tokenizer: {tiny_base_dir}"


def test_a_tokenizer_that_cannot_be_loaded_is_a_clear_error(sat_parquet, tmp_path, capsys):
    argv = ["--input", str(sat_parquet), "--output", str(tmp_path / "out"), "--tokenizer", str(tmp_path / "nope")]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: cannot load the tokenizer")
    assert listing(tmp_path) == []


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
    real = sat_convert._inspect_batch
    calls = []

    def crash_on_second_batch(image_lists, bounds):
        calls.append(len(image_lists))
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real(image_lists, bounds)

    monkeypatch.setattr(sat_convert, "_inspect_batch", crash_on_second_batch)
    monkeypatch.setattr(sat_convert, "BATCH_ROWS", 16)  # 64 rows: four batches
    with pytest.raises(RuntimeError, match="power cut"):
        convert(str(sat_parquet), tmp_path / "out")
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("column", "arrow_type", "value", "found", "expected"),
    [
        ("question", pa.int64(), 7, "int64", "a string"),
        ("answers", pa.string(), "left, right", "string", "a list of strings"),
        ("correct_answer", pa.list_(pa.string()), ["left"], "list<element: string>", "a string"),
        ("image_bytes", pa.list_(pa.string()), ["x"], "list<element: string>", "a list of encoded images"),
        ("question_type", pa.float64(), 1.5, "double", "a string"),
    ],
)
def test_a_column_of_the_wrong_type_is_named_with_the_type_found(
    column, arrow_type, value, found, expected, sat_parquet, tmp_path, capsys
):
    table = pq.read_table(sat_parquet).slice(0, 4)
    index = table.schema.get_field_index(column)
    path = tmp_path / "typed.parquet"
    pq.write_table(table.set_column(index, column, pa.array([value] * 4, type=arrow_type)), path)
    before = listing(tmp_path)
    assert main(["--input", str(path), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {path}: the column {column!r} holds {found}, but SAT's {column} is {expected}")
    assert error.count("\n") == 1
    assert listing(tmp_path) == before


def test_an_output_inside_a_file_is_a_one_line_error(sat_parquet, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("precious")
    assert main(["--input", str(sat_parquet), "--output", str(tmp_path / "notes.txt" / "sub" / "out")]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"error: cannot create {tmp_path / 'notes.txt' / 'sub' / 'out'}: {tmp_path / 'notes.txt'} is a file, not a "
        "folder. Choose another --output.\n"
    )
    assert listing(tmp_path) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "precious"


def without_write_override(command: list[str]) -> list[str]:
    """``command`` run so that a read-only folder really is read-only: root ignores permission bits unless it drops
    the capabilities that let it (util-linux's setpriv)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only for this test")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *command]


def test_an_output_in_a_read_only_folder_is_a_one_line_error(sat_parquet, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        command = [sys.executable, "-m", "data_prep.sat", "--input", str(sat_parquet), "--output"]
        result = subprocess.run(
            without_write_override(command + [str(locked / "out")]), capture_output=True, text=True, env=OFFLINE_ENV
        )
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: cannot create {locked / 'out'}: the folder {locked} is read-only. Choose another --output.\n"
    )
    assert listing(locked) == []


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
        ({"max_prompt_tokens": 0}, "max_prompt_tokens must be at least 1"),
        ({"min_pixels": 500_000}, r"min_pixels \(500000\) must not exceed max_pixels \(401408\)\. Fix --min-pixels"),
        ({"min_pixels": 1, "max_pixels": 100}, r"max_pixels \(100\) must be at least factor² = 784"),
        ({"image_factor": 0}, "the image factor must be at least 1"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message, sat_parquet, tmp_path):
    with pytest.raises(PrepError, match=message):
        convert(str(sat_parquet), tmp_path / "out", **kwargs)
    assert listing(tmp_path) == []


def test_cli_exit_codes(sat_parquet, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--input", str(sat_parquet), "--output", str(out)]) == 0
    printed = capsys.readouterr()
    assert "wrote 64 records" in printed.out
    assert "converting SAT" not in printed.err and "\r" not in printed.err  # no progress bar off a terminal
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


# --------------------------------------------------------------------------------------------------------------
# A killed run: nothing outlives it, and the next run removes what it left
# --------------------------------------------------------------------------------------------------------------

# The converter, slowed down between batches so that the test can kill it halfway (the kill itself is real).
SLOW_CONVERTER = """
import sys, time
import data_prep.sat as sat
import data_prep.sat_convert as sat_convert
real_finish = sat_convert._finish
def slow_finish(*args):
    time.sleep(0.3)
    return real_finish(*args)
sat_convert._finish = slow_finish
sat_convert.BATCH_ROWS = 16
sys.exit(sat.main(sys.argv[1:]))
"""


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie waiting to be reaped has exited)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


@pytest.mark.slow
def test_a_killed_run_leaves_no_process_and_the_next_run_removes_its_hidden_folder(tmp_path):
    source = write_synthetic("sat", rows=256, seed=0, output=tmp_path / "src" / "sat.parquet")
    out = tmp_path / "out"
    command = [sys.executable, "-c", SLOW_CONVERTER, "--input", str(source), "--output", str(out), "--num-proc", "2"]
    converter = subprocess.Popen(command, env=OFFLINE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while True:  # wait until the image threads run and the hidden work folder exists
            assert converter.poll() is None, "the conversion ended before it could be killed"
            assert time.monotonic() < deadline, "the conversion never started"
            descendants = psutil.Process(converter.pid).children(recursive=True)
            threads = psutil.Process(converter.pid).num_threads()
            hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]
            if threads >= 3 and hidden:  # the main thread and the two image threads (at least)
                break
            time.sleep(0.2)
        converter.send_signal(signal.SIGKILL)
        converter.wait()
        deadline = time.monotonic() + 20
        while alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(descendants) == []  # the image work runs in threads: no process outlives the converter
    finally:
        converter.kill()
        for process in alive(descendants):  # never leave strays behind, even when the test fails
            process.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*hidden, "src"])  # what the kill left

    report = convert(str(source), out, seed=0)
    assert report["rows_written"] == 256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # the leftover is gone


def test_a_running_conversions_work_folder_is_not_removed(sat_parquet, tmp_path):
    """A work folder whose lock is held belongs to a conversion in progress: another run leaves it alone."""
    import fcntl

    busy = tmp_path / f".other{WORK_PREFIX}0123abcd"
    busy.mkdir()
    with open(busy / LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        convert(str(sat_parquet), tmp_path / "out", limit=4)
        assert sorted(p.name for p in tmp_path.iterdir()) == [busy.name, "out"]


# --------------------------------------------------------------------------------------------------------------
# Images stored at the training resolution: the same grid for every processor
# --------------------------------------------------------------------------------------------------------------


def test_the_image_bounds_are_the_paper_configs_and_the_processors():
    from transformers import Qwen2VLImageProcessor

    config = yaml.safe_load((REPO / "recipes" / "configs" / "paper" / "grpo_base.yaml").read_text())
    assert (MIN_PIXELS, MAX_PIXELS) == (config["min_pixels"], config["max_pixels"]) == (3136, 401408)
    processor = Qwen2VLImageProcessor()
    assert IMAGE_FACTOR == processor.patch_size * processor.merge_size == 28


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 3000), height=st.integers(1, 3000))
def test_fixed_points_are_exactly_the_sizes_smart_resize_keeps(width, height):
    from qwen_vl_utils import smart_resize

    try:
        kept = smart_resize(height, width, IMAGE_FACTOR, MIN_PIXELS, MAX_PIXELS) == (height, width)
    except ValueError:  # aspect ratio beyond 200:1
        kept = False
    assert is_fixed_point(width, height, MIN_PIXELS, MAX_PIXELS, IMAGE_FACTOR) == kept
    if not kept and max(width, height) <= 200 * min(width, height):
        new_height, new_width = smart_resize(height, width, IMAGE_FACTOR, MIN_PIXELS, MAX_PIXELS)
        assert fitted_size(width, height, MIN_PIXELS, MAX_PIXELS) == (new_width, new_height)


def test_fit_image_returns_the_same_image_within_bounds_and_a_resized_copy_outside():
    within = PILImage.new("RGB", (224, 112), "red")
    assert fit_image(within, MIN_PIXELS, MAX_PIXELS) is within
    for size, mode in [((1500, 1000), "RGB"), ((40, 30), "RGB"), ((100, 150), "RGB"), ((900, 900), "RGBA")]:
        image = PILImage.new(mode, size, "red")
        fitted = fit_image(image, MIN_PIXELS, MAX_PIXELS, 28)
        assert fitted.size == fitted_size(*size, MIN_PIXELS, MAX_PIXELS) != size
        assert fitted.mode == ("RGB" if mode == "RGBA" else mode)  # alpha dropped first, as the processor does
    palette = PILImage.new("P", (1000, 1000))
    assert fit_image(palette, MIN_PIXELS, MAX_PIXELS).mode == "RGB"
    with pytest.raises(ValueError, match="aspect ratio"):
        fit_image(PILImage.new("RGB", (600, 2)), MIN_PIXELS, MAX_PIXELS)


def test_fit_encoded_keeps_bytes_within_bounds_and_resizes_losslessly_outside():
    within = encoded((112, 168), "JPEG")
    assert fit_encoded(within, MIN_PIXELS, MAX_PIXELS) == (within, False)
    big = encoded((1000, 700), "JPEG")
    data, resized = fit_encoded(big, MIN_PIXELS, MAX_PIXELS)
    stored = PILImage.open(io.BytesIO(data))
    assert resized and stored.format == "PNG" and stored.size == fitted_size(1000, 700, MIN_PIXELS, MAX_PIXELS)
    expected = fit_image(PILImage.open(io.BytesIO(big)), MIN_PIXELS, MAX_PIXELS)
    assert stored.convert("RGB").tobytes() == expected.tobytes()  # lossless: exactly the resized pixels


@pytest.fixture
def mixed_size_parquet(sat_parquet, tmp_path):
    """SAT rows whose images are larger than max_pixels, smaller than min_pixels, within the bounds but not a
    multiple of 28, and already at a fixed point; returns (path, the source images in row order)."""
    rows = source_rows(sat_parquet)
    single = next(r for r in rows if len(r["image_bytes"]) == 1)
    images = [
        [encoded((1500, 1000), "JPEG")],  # 1.5 MP: shrunk to 756 x 504
        [encoded((40, 30), "PNG")],  # below min_pixels: enlarged to 84 x 56
        [encoded((100, 150), "JPEG")],  # within the area bounds, sides not multiples of 28: 112 x 140
        [encoded((640, 480), "JPEG", "L")],  # grayscale, shrunk; the mode is kept
        [encoded((112, 224), "JPEG")],  # a fixed point: stored as it is
        [encoded((2000, 800), "PNG"), encoded((224, 224), "JPEG")],  # two images, one resized
    ]
    path = tmp_path / "mixed.parquet"
    table_rows = [{**single, "image_bytes": row_images} for row_images in images]
    pq.write_table(pa.Table.from_pylist(table_rows, schema=SAT_FEATURES.arrow_schema), path)
    return path, images


def test_stored_images_give_the_same_grid_at_the_default_and_the_training_bounds(mixed_size_parquet, tmp_path):
    from transformers import Qwen2VLImageProcessor

    path, source_images = mixed_size_parquet
    report = convert(str(path), tmp_path / "out", fit_images_at_prep=True)
    records = written_records(tmp_path / "out")
    assert [len(r["images"]) for r in records] == [len(images) for images in source_images]

    default = Qwen2VLImageProcessor()  # as vLLM or an evaluation at the processor's own bounds would see them
    training = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    resized = 0
    for record, originals in zip(records, source_images, strict=True):
        for image, original in zip(record["images"], originals, strict=True):
            stored = PILImage.open(io.BytesIO(image["bytes"]))
            source = PILImage.open(io.BytesIO(original))
            grid_default = default(images=[stored], return_tensors="pt")["image_grid_thw"].tolist()
            grid_training = training(images=[stored], return_tensors="pt")["image_grid_thw"].tolist()
            assert grid_default == grid_training
            # ... and it is the grid the trainer computes from the original image.
            assert grid_training == training(images=[source], return_tensors="pt")["image_grid_thw"].tolist()
            if stored.size == source.size:
                assert image["bytes"] == original  # within the bounds: the source's bytes, untouched
            else:
                resized += 1
                assert stored.format == "PNG" and stored.mode == source.mode
                assert stored.tobytes() == fit_image(source, MIN_PIXELS, MAX_PIXELS).tobytes()
    assert resized == 5
    assert report["images"] == {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "factor": IMAGE_FACTOR,
        "keep_original": False,
        "fitted": "prep",
        "outside_bounds": 5,
        "resized": 5,
    }
    # Without the resize the default processor sees the large image at another resolution: the point of it all.
    large = PILImage.open(io.BytesIO(source_images[0][0]))
    assert default(images=[large])["image_grid_thw"].tolist() != training(images=[large])["image_grid_thw"].tolist()


def test_keep_original_images_stores_every_source_image_untouched(mixed_size_parquet, tmp_path):
    path, source_images = mixed_size_parquet
    argv = ["--input", str(path), "--output", str(tmp_path / "kept"), "--keep-original-images"]
    assert main(argv) == 0
    records = written_records(tmp_path / "kept")
    assert [[i["bytes"] for i in r["images"]] for r in records] == source_images
    report = report_of(tmp_path / "kept")
    assert report["images"]["keep_original"] is True and report["images"]["resized"] == 0
    assert report["fingerprint"] != convert(str(path), tmp_path / "fitted", fit_images_at_prep=True)["fingerprint"]
    # Keeping the originals is also what the default does (the recipes fit them when they load the records).
    assert report["fingerprint"] == convert(str(path), tmp_path / "default")["fingerprint"]


def test_other_bounds_are_honoured_and_recorded(mixed_size_parquet, tmp_path):
    path, _ = mixed_size_parquet
    argv = ["--input", str(path), "--output", str(tmp_path / "out"), "--min-pixels", "6272", "--max-pixels", "50176"]
    assert main(argv + ["--image-factor", "28", "--fit-images-at-prep"]) == 0
    for record in written_records(tmp_path / "out"):
        for image in record["images"]:
            width, height = PILImage.open(io.BytesIO(image["bytes"])).size
            assert is_fixed_point(width, height, 6272, 50176, 28)
    report = report_of(tmp_path / "out")
    assert (report["images"]["min_pixels"], report["images"]["max_pixels"], report["images"]["factor"]) == (
        6272,
        50176,
        28,
    )


@pytest.mark.parametrize(("min_pixels", "max_pixels"), [(MIN_PIXELS, MAX_PIXELS), (6272, 50176), (784, 784)])
def test_fitted_size_is_smart_resize_on_a_grid_of_sizes(min_pixels, max_pixels):
    """`fitted_size` does smart_resize's arithmetic itself (importing qwen_vl_utils imports torch): the same answer,
    refusal included, on sizes around the factor, the bounds and the 200:1 limit."""
    from qwen_vl_utils import smart_resize

    heights = (1, 13, 14, 15, 27, 28, 29, 42, 56, 383, 384, 500, 633, 1000, 2999)
    for width in [*range(1, 200), *range(200, 3000, 7)]:
        for height in heights:
            try:
                expected = smart_resize(height, width, IMAGE_FACTOR, min_pixels, max_pixels)[::-1]
            except ValueError:
                with pytest.raises(ValueError, match="aspect ratio"):
                    fitted_size(width, height, min_pixels, max_pixels)
                continue
            assert fitted_size(width, height, min_pixels, max_pixels) == expected, (width, height)


@pytest.fixture
def fitting_parquet(mixed_size_parquet, sat_parquet, tmp_path):
    """The mixed sizes plus 512 x 384 JPEG scenes (sides not multiples of 28, like most photographs and renders)."""
    path, images = mixed_size_parquet
    rows = source_rows(path)
    scenes = [row["image_bytes"] for row in source_rows(sat_parquet) if len(row["image_bytes"]) == 1][:3]
    for scene in scenes:
        buffer = io.BytesIO()
        PILImage.open(io.BytesIO(scene[0])).resize((512, 384), PILImage.Resampling.BICUBIC).save(buffer, "JPEG")
        rows.append({**rows[0], "image_bytes": [buffer.getvalue()]})
        images.append([buffer.getvalue()])
    out = tmp_path / "fitting.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SAT_FEATURES.arrow_schema), out)
    return out, images


def test_both_processors_get_the_papers_pixels_from_stored_images_but_not_from_originals(fitting_parquet, tmp_path):
    """What reaches the model: from a stored image, the PIL processor at the training bounds computes exactly the
    pixel values it (transformers 4.49's way: smart_resize + PIL bicubic) computes from the original, and the
    torchvision (default) processor the same up to float rounding of the normalisation (~1e-5 of an intensity
    level). From the original, the torchvision processor resamples differently: that is why fitted images are
    stored rather than the source's bytes."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    path, source_images = fitting_parquet
    convert(str(path), tmp_path / "out", fit_images_at_prep=True)
    fast = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    pil = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    level = 1 / (255 * max(fast.image_std))  # one 0-255 intensity level, in normalised units (an upper bound)

    def pixels(processor, image):
        return processor(images=[image], return_tensors="pt")["pixel_values"]

    originals_differ = 0
    records = written_records(tmp_path / "out")
    assert len(records) == len(source_images)
    for record, originals in zip(records, source_images, strict=True):
        for image, original in zip(record["images"], originals, strict=True):
            stored = PILImage.open(io.BytesIO(image["bytes"]))
            source = PILImage.open(io.BytesIO(original))
            papers = pixels(pil, source)
            assert pixels(pil, stored).equal(papers)
            assert (pixels(fast, stored) - papers).abs().max() < 1e-3 * level
            from_original = pixels(fast, source)
            originals_differ += from_original.shape != papers.shape or (from_original - papers).abs().max() > level / 2
    assert originals_differ >= 3  # at least the three 512 x 384 scenes


def test_the_report_states_the_stored_bytes_against_the_sources(fitting_parquet, tmp_path, capsys):
    path, source_images = fitting_parquet
    assert main(["--input", str(path), "--output", str(tmp_path / "out"), "--fit-images-at-prep"]) == 0
    report = report_of(tmp_path / "out")
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != "prep_report.json"]
    stored = [image["bytes"] for record in written_records(tmp_path / "out") for image in record["images"]]
    sizes = report["bytes"]
    assert sizes["source_images"] == sum(len(data) for images in source_images for data in images)
    assert sizes["stored_images"] == sum(map(len, stored))
    assert sizes["stored_vs_source_images"] == round(sizes["stored_images"] / sizes["source_images"], 3)
    assert sizes["source_files"] == path.stat().st_size
    assert sizes["output"] == sum(p.stat().st_size for p in files)
    assert f"stored images x{sizes['stored_vs_source_images']:.2f} the source's bytes" in capsys.readouterr().out

    kept = convert(str(path), tmp_path / "kept")["bytes"]  # the default: the source's images, fitted when loaded
    assert kept["stored_images"] == kept["source_images"] and kept["stored_vs_source_images"] == 1.0


def test_image_work_uses_the_available_cores_by_default(sat_parquet, tmp_path):
    report = convert(str(sat_parquet), tmp_path / "default")
    assert report["num_proc"] == len(os.sched_getaffinity(0)) == sat_convert.available_cores()
    assert report["fingerprint"] == convert(str(sat_parquet), tmp_path / "one", num_proc=1)["fingerprint"]


@pytest.mark.slow
def test_converting_images_that_need_fitting_imports_no_torch(fitting_parquet, tmp_path):
    """torch (through qwen_vl_utils) cost every conversion ~700 MB and seconds of start-up; fitting needs neither."""
    path, _ = fitting_parquet
    code = (
        "import sys; import data_prep.sat as sat; "
        f"assert sat.main(['--input', {str(path)!r}, '--output', {str(tmp_path / 'out')!r}]) == 0; "
        "print(sorted(m for m in ('torch', 'torchvision', 'qwen_vl_utils') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=OFFLINE_ENV, check=True)
    assert result.stdout.splitlines()[-1] == "[]"
    assert report_of(tmp_path / "out")["images"]["outside_bounds"] == 8


# --------------------------------------------------------------------------------------------------------------
# Images stored as in the source and fitted when the recipes load the records (the default)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def modes_parquet(fitting_parquet, tmp_path):
    """The fitting sizes plus images with transparency and a palette, all outside the bounds."""
    path, images = fitting_parquet
    rows = source_rows(path)
    for mode in ("RGBA", "P", "LA"):
        data = encoded((300, 200), "PNG", mode)
        rows.append({**rows[0], "image_bytes": [data]})
        images.append([data])
    out = tmp_path / "modes.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SAT_FEATURES.arrow_schema), out)
    return out, images


def test_images_fitted_at_load_are_exactly_what_prep_used_to_store(modes_parquet, tmp_path):
    """The oracle is the former prep path (`fit_encoded`: fit, then a lossless PNG): the images the recipes' loader
    hands on are the same pixels, in the same mode and size, and the real Qwen2-VL processors (both backends) make
    the same pixel_values and image_grid_thw of them."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from recipes.shared.data import fit_images

    path, source_images = modes_parquet
    report = convert(str(path), tmp_path / "out")
    assert (report["images"]["fitted"], report["images"]["outside_bounds"], report["images"]["resized"]) == (
        "load",
        11,
        0,
    )
    assert report["bytes"]["stored_vs_source_images"] == 1.0  # the source's bytes, not re-encoded
    stored = load_from_disk(str(tmp_path / "out"))
    loaded = fit_images(stored, MIN_PIXELS, MAX_PIXELS)
    processors = [Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)]
    processors.append(Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS))
    fitted = 0
    assert len(loaded) == len(source_images)
    for row, originals in zip(loaded, source_images, strict=True):
        assert len(row["images"]) == len(originals)
        for image, original in zip(row["images"], originals, strict=True):
            data, resized = fit_encoded(original, MIN_PIXELS, MAX_PIXELS)
            oracle = PILImage.open(io.BytesIO(data))
            assert (image.mode, image.size) == (oracle.mode, oracle.size)
            assert image.tobytes() == oracle.tobytes()
            fitted += resized
            for processor in processors:
                ours = processor(images=[image], return_tensors="np")
                theirs = processor(images=[oracle], return_tensors="np")
                assert np.array_equal(ours["pixel_values"], theirs["pixel_values"])
                assert np.array_equal(ours["image_grid_thw"], theirs["image_grid_thw"])
    assert fitted == 11
    # The stored records themselves are untouched: the transform works on what is read.
    assert [[i["bytes"] for i in r["images"]] for r in stored.cast_column("images", List(Image(decode=False)))] == (
        source_images
    )


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["grpo_base", "sft_baseline"])
def test_trl_trains_on_records_fitted_at_load(recipe, sat_parquet, tiny_base_dir, tmp_path, capsys):
    """A real TRL step (GRPOTrainer, SFTTrainer) on records whose 512x384 images are fitted as they are loaded, and
    the dataset the recipe hands the trainer holds only images at the run's bounds (3136 / 12544)."""
    import importlib

    from fixtures.cli import run_in_process

    from recipes.shared.prepare import prepare

    module = importlib.import_module(f"recipes.{recipe}")
    rows = [row for row in source_rows(sat_parquet) if len(row["image_bytes"]) == 1][:16]
    for row in rows:
        buffer = io.BytesIO()
        PILImage.open(io.BytesIO(row["image_bytes"][0])).resize((512, 384)).save(buffer, "JPEG")
        row["image_bytes"] = [buffer.getvalue()]
    source = tmp_path / "scenes.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SAT_FEATURES.arrow_schema), source)
    records = tmp_path / "records"
    assert convert(str(source), records, max_pixels=12544)["images"]["outside_bounds"] == 16

    config = str(REPO / "recipes" / "configs" / "tiny" / f"{recipe}.yaml")
    argv = ["--config", config, "--model_name_or_path", str(tiny_base_dir), "--dataset_path", str(records)]
    argv += ["--output_dir", str(tmp_path / "run"), "--report_to", "none", "--max_steps", "1", "--save_steps", "1"]
    argv += ["--model_save_steps", "0", "--disable_tqdm", "true"]
    argv += ["--per_device_train_batch_size", "4", "--log_completions", "false"] if "grpo" in recipe else []
    argv += ["--gradient_accumulation_steps", "2"] if "sft" in recipe else []
    _, _, dataset = prepare(*module.make_parser().parse_args_and_config(argv))
    for row in dataset:
        assert all(is_fixed_point(*image.size, 3136, 12544) for image in row["images"])
    code, err = run_in_process(module, argv, capsys)
    assert code == 0, err
    state = json.loads(next((tmp_path / "run").rglob("trainer_state.json")).read_text())
    assert state["global_step"] == 1 and any("loss" in entry for entry in state["log_history"])


def test_an_exif_rotated_jpeg_is_fitted_upright_at_load(sat_parquet, tmp_path):
    """`datasets` turns a JPEG upright by its EXIF orientation when it decodes it; the fitting follows (the former
    prep path fitted and stored it unrotated, the stated difference in data_prep/images.py)."""
    from recipes.shared.data import fit_images

    upright = PILImage.linear_gradient("L").resize((384, 512)).convert("RGB")
    exif = PILImage.Exif()
    exif[PILImage.ExifTags.Base.Orientation] = 6  # stored 90° clockwise of upright
    buffer = io.BytesIO()
    upright.transpose(PILImage.Transpose.ROTATE_90).save(buffer, "JPEG", exif=exif)
    row = source_rows(sat_parquet)[0]
    source = tmp_path / "exif.parquet"
    pq.write_table(
        pa.Table.from_pylist([{**row, "image_bytes": [buffer.getvalue()]}], schema=SAT_FEATURES.arrow_schema), source
    )
    convert(str(source), tmp_path / "out")
    (image,) = fit_images(load_from_disk(str(tmp_path / "out")), MIN_PIXELS, MAX_PIXELS)[0]["images"]
    assert image.size == fitted_size(384, 512, MIN_PIXELS, MAX_PIXELS) == (392, 504)


def test_the_hub_card_says_where_the_images_are_fitted(fitting_parquet, tmp_path):
    from data_prep.hub import dataset_card

    path, _ = fitting_parquet
    lazy = str(dataset_card(convert(str(path), tmp_path / "lazy"), "org/name"))
    assert "| images | as in the source, fitted to 3136–401408 pixels when the recipes read them (8 outside" in lazy
    eager = str(dataset_card(convert(str(path), tmp_path / "eager", fit_images_at_prep=True), "org/name"))
    assert "| images | fitted to 3136–401408 pixels (8 resized; keep_original False) |" in eager
