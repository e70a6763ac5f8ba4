"""CV-Bench evaluation: the paper's scorer (quirks included), the official score, and real runs on the tiny model.

The runs use a tiny Qwen2-VL whose weights are re-drawn with a larger spread than `build_tiny_model`'s, so that
its greedy answers differ from row to row (the stock tiny model answers ">>>>" to everything, which would make
"batched equals one-at-a-time" and "resumed equals uninterrupted" trivially true). Runs that take more than a few
seconds are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from fixtures.properties import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from recipes.eval_cvbench import (
    DEFAULT_CONFIG,
    EvalArguments,
    extract_answer,
    main,
    make_parser,
    official_score,
    score_response,
    score_response_strict,
)
from recipes.evaluation.output import OutputDir
from recipes.evaluation.summary import summarize
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT, RecipeError, run_cli

LR = ["left", "right"]
COUNTS = ["0", "1", "2", "3", "4"]
OBJECTS = ["red triangle", "blue circle"]
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# The paper's base prompt, written out independently of recipes/shared/prompts.py (REFERENCE §1).
PAPER_BASE_PROMPT = (
    "A conversation between User and Assistant. The user asks a question about the image, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer.\nUser: {q} \nAssistant: Let me solve this step by step.\n<think>"
)
# The paper's CV-Bench instruction for instruct models: a newline, and not the training instruction's "(option)".
PAPER_CVBENCH_INSTRUCTION = (
    "\nOutput the thinking process in <think> </think> and final answer in <answer> </answer> tags."
)
TINY = {"max_new_tokens": 8}  # short answers keep runs fast; the pixel bounds are the tiny checkpoint's own


# --------------------------------------------------------------------------------------------------------------
# The paper's scorer
# --------------------------------------------------------------------------------------------------------------

SCORING_TABLE = [
    # letters, in every form the paper accepts
    ("<think>x</think><answer>B</answer>", LR, "(B)", True),
    ("<answer>(B)</answer>", LR, "(B)", True),
    ("<answer>b</answer>", LR, "(B)", True),
    ("<answer>(b)</answer>", LR, "(B)", True),
    ("<answer> B. </answer>", LR, "(B)", True),
    ("<answer>**B**</answer>", LR, "(B)", True),
    ("<answer>Answer: C</answer>", COUNTS, "(C)", True),
    ("<answer>(C) 2</answer>", COUNTS, "(C)", True),
    ("<answer>\nB\n</answer>", LR, "(B)", True),
    # choice text; numbers through math-verify's expression and LaTeX readers
    ("<answer>right</answer>", LR, "(B)", True),
    ("<answer>The red triangle</answer>", OBJECTS, "(A)", True),
    ("<answer>2</answer>", COUNTS, "(C)", True),
    ("<answer>$2$</answer>", COUNTS, "(C)", True),
    ("<answer>\\boxed{C}</answer>", COUNTS, "(C)", True),
    # case: the response's choice text must match as written (only the gold side is lowercased)
    ("<answer>RIGHT</answer>", LR, "(B)", False),
    ("<answer>Right</answer>", LR, "(B)", False),
    # no answer tag: the whole response is read
    ("The answer is (B)", LR, "(B)", True),
    ("The answer is right", LR, "(B)", True),
    ("B", LR, "(B)", True),
    ("I think A or B", LR, "(B)", True),  # the last option named wins...
    ("I think A or B", LR, "(A)", False),  # ...so A is not read...
    ("A or B", LR, "(A)", True),  # ...unless one starts the text
    ("A or B", LR, "(B)", False),
    ("The answer is (B), not (A)", LR, "(B)", True),  # after the word "answer"
    ("<answer></answer> B", LR, "(B)", True),  # an empty block falls back to the whole response
    # wrong answers
    ("<answer>A</answer>", LR, "(B)", False),
    ("<answer>left</answer>", LR, "(B)", False),
    ("<answer>3</answer>", COUNTS, "(C)", False),
    ("<answer>B</answer>", COUNTS, "(C)", False),
    ("<answer>C)</answer>", COUNTS, "(C)", False),  # no reader takes "C)"
    # a block that spans lines is skipped for the next one, as the paper's regex (no DOTALL) does
    ("<answer>A\nB</answer> <answer>B</answer>", LR, "(B)", True),
    ("<answer>A\nB</answer>", LR, "(B)", False),
    # nothing to read
    ("", LR, "(B)", False),
    ("   ", LR, "(B)", False),
    ("<think>I am not sure</think>", LR, "(B)", False),
]


@pytest.mark.parametrize(("response", "choices", "answer", "expected"), SCORING_TABLE)
def test_score_response_reproduces_the_paper(response, choices, answer, expected):
    assert score_response(response, choices, answer) is expected


@pytest.mark.parametrize(
    ("response", "choices", "answer"),
    [
        (None, LR, "(B)"),
        (b"<answer>B</answer>", LR, "(B)"),
        ("<answer>B</answer>", None, "(B)"),
        ("<answer>B</answer>", "left right", "(B)"),
        ("<answer>B</answer>", [1, 2], "(B)"),
        ("<answer>B</answer>", LR, None),
        ("<answer>B</answer>", LR, "(Z)"),
        ("<answer>F</answer>", LR, "(F)"),  # gold letter beyond the choices
        ("<answer>B</answer>", [], "(B)"),
    ],
)
def test_score_response_is_false_on_unusable_input(response, choices, answer):
    assert score_response(response, choices, answer) is False
    assert score_response_strict(response, choices, answer) is False


def test_a_bare_gold_letter_is_accepted_like_the_bracketed_one():
    assert score_response("<answer>B</answer>", LR, "B") and score_response("<answer>B</answer>", LR, " (B) ")


@pytest.mark.parametrize(
    "response",
    [
        "<answer>" * 12_500,  # quadratic for the paper's regex
        "<answer>" + " " * 50_000 + "x" + " " * 50_000,
        "<answer>a\nb" * 8_000 + "</answer>",
        "".join(chr(33 + (i * 7919) % 90) for i in range(20_000)),
        "\x00\udcff\ufffd" * 1_000,
    ],
    ids=["many-open-tags", "long-whitespace", "multiline-blocks", "junk", "odd-code-points"],
)
def test_huge_or_junk_input_is_scored_without_raising(response):
    assert score_response(response, LR, "(B)") in (True, False)
    assert score_response_strict(response, LR, "(B)") in (True, False)


def paper_regex_extract(response: str) -> str | None:
    """The paper's extraction (its evaluation script), used as the oracle on small inputs."""
    match = re.search(r"<answer>\s*(.*?)\s*</answer>", response)
    return match.group(1) if match else None


_PIECES = ["<answer>", "</answer>", " ", "\n", "\t", "\xa0", "\u2028", "A", "b c", "<", ">", "answer"]


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_extract_answer_equals_the_paper_regex(pieces):
    response = "".join(pieces)
    assert extract_answer(response) == paper_regex_extract(response)


@pytest.mark.parametrize(
    "response",
    [
        "<answer>  B </answer>",
        "<answer> </answer><answer>B</answer>",
        "<answer>\n</answer>",
        "<answer>A\nB</answer> x <answer> C\n</answer>",
        "<answer><answer>B</answer>",
        "<answer>B</answer><answer>C</answer>",
        "<answer>B",
        "</answer><answer>B</answer>",
    ],
)
def test_extract_answer_equals_the_paper_regex_on_edge_cases(response):
    assert extract_answer(response) == paper_regex_extract(response)


@pytest.mark.parametrize(
    ("response", "choices", "answer", "expected"),
    [
        ("<answer>B</answer>", LR, "(B)", True),
        ("<answer>(b).</answer>", LR, "(B)", True),
        ("<answer>Right</answer>", LR, "(B)", True),
        ("<answer>(B) right</answer>", LR, "(B)", True),
        ("(B)", LR, "(B)", True),  # no block: the whole response (no-reasoning prompts)
        ("The answer is (B)", LR, "(B)", False),
        ("<answer>B or A</answer>", LR, "(B)", False),
        ("<answer></answer> B", LR, "(B)", False),
        ("<answer>A</answer>", LR, "(B)", False),
    ],
)
def test_strict_scorer(response, choices, answer, expected):
    assert score_response_strict(response, choices, answer) is expected


# --------------------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------------------


def test_official_score_on_a_hand_computed_example():
    # ADE20K 3/4, COCO 1/2, Omni3D 2/5: ½·((0.75 + 0.5)/2 + 0.4) = 0.5125
    per_source = {"ADE20K": {"accuracy": 3 / 4}, "COCO": {"accuracy": 1 / 2}, "Omni3D": {"accuracy": 2 / 5}}
    score, note = official_score(per_source)
    assert score == pytest.approx(0.5125) and note is None


def test_official_score_is_null_with_a_reason_when_a_source_is_missing():
    score, note = official_score({"ADE20K": {"accuracy": 1.0}, "COCO": {"accuracy": 1.0}})
    assert score is None and "Omni3D" in note


def test_summary_counts_and_scores_from_predictions():
    outcomes = [("ADE20K", "Count", 1), ("ADE20K", "Count", 1), ("ADE20K", "Relation", 1), ("ADE20K", "Count", 0)]
    outcomes += [("COCO", "Relation", 1), ("COCO", "Count", 0)]
    outcomes += [("Omni3D", "Depth", 1), ("Omni3D", "Depth", 1), ("Omni3D", "Distance", 0)]
    outcomes += [("Omni3D", "Distance", 0), ("Omni3D", "Distance", 0)]
    records = [
        {
            "row": row,
            "source": source,
            "task": task,
            "type": "2D",
            "correct": bool(correct),
            "correct_strict": row == 0,
            "extracted": "B" if row == 0 else None,
        }
        for row, (source, task, correct) in enumerate(outcomes)
    ]
    records.append({"row": 11, "idx": 99, "skipped": "the image cannot be used (OSError: broken)"})
    run = {
        "model": {"name": "m"},
        "dataset": {"name": "d"},
        "prompt": {"name": "base", "chat_template": None, "example": "x"},
        "generation": {"max_new_tokens": 8},
        "resolution": {"min_pixels": 3136, "max_pixels": 401408, "source": "s"},
        "fingerprint": {"id": "0123"},
        "rows": {"selected": 13, "dataset": 20, "limit": None},
        "data_errors": [7],
    }
    summary = summarize(records, run)
    assert summary["accuracy"] == pytest.approx(6 / 11)  # the paper's plain mean, over the scored rows
    assert summary["official_score"] == pytest.approx(0.5125)
    assert summary["rows"] == {"scored": 11, "skipped": 1, "selected": 13, "missing": 1, "dataset": 20, "limit": None}
    assert summary["skipped"]["rows"] == 1 and summary["skipped"]["idx"] == [99]
    assert summary["data_errors"] == {"rows": 1, "idx": [7]}
    assert summary["per_task"]["Count"] == {"rows": 4, "correct": 2, "accuracy": 0.5, "accuracy_strict": 0.25}
    assert summary["per_source"]["COCO"]["rows"] == 2 and summary["per_source"]["COCO"]["correct"] == 1
    assert summary["strict"]["accuracy"] == pytest.approx(1 / 11)
    assert summary["answer_tag_rate"] == pytest.approx(1 / 11)


# --------------------------------------------------------------------------------------------------------------
# Runs on the tiny model
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Two threads on two shared cores mostly wait for each other; generation here is faster on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def redraw(model_dir: Path, out: Path, seed: int, processor_from: Path | None = None) -> Path:
    """``model_dir``'s model with every weight matrix re-drawn at std 0.3 (answers that differ from row to row),
    saved to ``out`` with the processor files of ``processor_from`` (default: ``model_dir``'s)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    source = processor_from or model_dir
    for name in os.listdir(source):
        if name.startswith(("processor", "preprocessor", "tokenizer", "chat_template", "special_tokens")):
            shutil.copy(source / name, out / name)
    return out


@pytest.fixture(scope="module")
def varied_model_dir(tiny_base_dir, tmp_path_factory):
    return redraw(tiny_base_dir, tmp_path_factory.mktemp("models") / "tiny-varied", seed=0)


def evaluate(model, dataset, out, **overrides) -> dict:
    options = {"model_name_or_path": str(model), "output_dir": str(out), "dataset": str(dataset), **TINY}
    return main(EvalArguments(**(options | overrides)))


def without_run(summary: dict) -> dict:
    """A summary minus how the run was executed (batch size, processes), which must not change any score."""
    return {k: v for k, v in summary.items() if k != "run"}


def read_predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def reference(varied_model_dir, cvbench_parquet, tmp_path_factory):
    """One uninterrupted single-process run over the 48 synthetic rows, batch size 8."""
    out = tmp_path_factory.mktemp("eval") / "reference"
    summary = evaluate(varied_model_dir, cvbench_parquet, out, batch_size=8)
    return out, summary


@pytest.mark.slow
def test_end_to_end_predictions_and_summary(reference, cvbench_parquet):
    import pyarrow.parquet as pq

    out, summary = reference
    rows = pq.read_table(cvbench_parquet, columns=["idx", "task", "source", "type", "prompt", "choices", "answer"])
    rows = rows.to_pylist()
    predictions = read_predictions(out)
    assert [p["row"] for p in predictions] == list(range(48))
    assert len({p["response"] for p in predictions}) > 40  # the varied model answers differently per row
    for p, row in zip(predictions, rows, strict=True):
        assert (p["idx"], p["task"], p["source"], p["type"], p["answer"]) == (
            row["idx"],
            row["task"],
            row["source"],
            row["type"],
            row["answer"],
        )
        assert p["prompt"] == IMAGE + "<image>" + PAPER_BASE_PROMPT.format(q=row["prompt"])  # the paper's, exactly
        assert p["correct"] == score_response(p["response"], row["choices"], row["answer"])
        assert p["extracted"] == extract_answer(p["response"])
        assert p["fingerprint"] == summary["fingerprint"]["id"]

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["rows"] == {
        "scored": 48,
        "skipped": 0,
        "selected": 48,
        "missing": 0,
        "dataset": 48,
        "limit": None,
    }
    assert summary["correct"] == sum(p["correct"] for p in predictions)
    assert summary["accuracy"] == pytest.approx(summary["correct"] / 48)
    for task in ("Count", "Relation", "Depth", "Distance"):
        assert summary["per_task"][task]["rows"] == sum(r["task"] == task for r in rows)
    assert sum(g["rows"] for g in summary["per_source"].values()) == 48
    assert set(summary["per_source"]) == {"ADE20K", "COCO", "Omni3D"}
    assert summary["official_score"] is not None and summary["official_score_note"] is None
    # What the scores were computed under: the prompt (with an example), the resolution, the model's files.
    assert summary["prompt"]["name"] == "base" and summary["prompt"]["example"] == predictions[0]["prompt"]
    assert summary["generation"] == {"backend": "hf", "dtype": "auto", "max_new_tokens": 8, "do_sample": False}
    assert summary["resolution"] == {
        "min_pixels": 3136,
        "max_pixels": 12544,  # the tiny checkpoint's own processor bounds
        "source": "the checkpoint's own saved processor bounds",
        "images_resized": 0,
    }
    assert (
        len(summary["model"]["sha256"]) == 64
        and summary["fingerprint"]["model"]["sha256"] == summary["model"]["sha256"]
    )
    assert summary["skipped"] == {"rows": 0, "idx": [], "reasons": []}
    assert summary["data_errors"] == {"rows": 0, "idx": []}
    assert summary["run"] == {"batch_size": 8, "num_processes": 1}
    markdown = (out / "summary.md").read_text()
    assert "official CV-Bench score" in markdown and "| Omni3D | 24 |" in markdown
    assert "3136–12544 pixels (the checkpoint's own saved processor bounds)" in markdown
    assert predictions[0]["prompt"] in markdown
    assert json.loads((out / "run_config.json").read_text()) == summary["fingerprint"]
    assert not list(out.glob(".*tmp")) and not list(out.glob("predictions.rank*"))


@pytest.mark.slow
def test_batch_size_1_gives_the_same_predictions_as_batch_size_8(
    reference, varied_model_dir, cvbench_parquet, tmp_path
):
    out, _ = reference
    evaluate(varied_model_dir, cvbench_parquet, tmp_path / "bs1", batch_size=1, limit=16)
    assert read_predictions(tmp_path / "bs1") == read_predictions(out)[:16]


def test_instruct_prompt_runs_through_the_model_chat_template(tiny_instruct_dir, cvbench_parquet, tmp_path):
    summary = evaluate(tiny_instruct_dir, cvbench_parquet, tmp_path / "e", prompt="instruct", limit=3)
    prediction = read_predictions(tmp_path / "e")[0]
    question = prediction["prompt"].split(IMAGE, 1)[1].split("<|im_end|>")[0]
    assert prediction["prompt"].startswith("<|im_start|>system\n")
    assert prediction["prompt"].endswith("<|im_start|>assistant\n")
    assert question.endswith(PAPER_CVBENCH_INSTRUCTION)  # not the training instruction
    assert summary["rows"]["scored"] == 3 and summary["official_score"] is None
    assert "Omni3D" in summary["official_score_note"]


@pytest.mark.slow
def test_limit_then_full_run_gives_the_uninterrupted_result(reference, varied_model_dir, cvbench_parquet, tmp_path):
    ref_out, ref_summary = reference
    partial = evaluate(varied_model_dir, cvbench_parquet, tmp_path / "e", limit=10)
    assert partial["rows"]["scored"] == 10
    summary = evaluate(varied_model_dir, cvbench_parquet, tmp_path / "e")
    assert without_run(summary) == without_run(ref_summary)
    assert (tmp_path / "e" / "predictions.jsonl").read_bytes() == (ref_out / "predictions.jsonl").read_bytes()


def killed_run(out: Path, summary: dict, processes: int = 1) -> None:
    """What an evaluation killed mid-run leaves besides its predictions: its record (running) and its run key."""
    OutputDir(out, world_size=processes).start(summary["fingerprint"], clear=False, inputs=[])


@pytest.mark.slow
def test_a_torn_last_line_is_redone_and_the_result_is_unchanged(
    reference, varied_model_dir, cvbench_parquet, tmp_path
):
    ref_out, ref_summary = reference
    out = tmp_path / "e"
    killed_run(out, ref_summary)
    lines = (ref_out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    # A kill mid-write: 30 complete lines, then half of the 31st (no summary yet).
    (out / "predictions.jsonl").write_bytes(b"".join(lines[:30]) + lines[30][: len(lines[30]) // 2])
    summary = evaluate(varied_model_dir, cvbench_parquet, out)
    assert without_run(summary) == without_run(ref_summary)
    assert (out / "predictions.jsonl").read_bytes() == (ref_out / "predictions.jsonl").read_bytes()


def test_a_line_torn_inside_a_character_is_skipped(tmp_path):
    complete = {"row": 0, "response": "é", "correct": False}
    torn = json.dumps({"row": 1, "response": "é", "correct": True}, ensure_ascii=False).encode()
    (tmp_path / "predictions.jsonl").write_bytes(
        (json.dumps(complete, ensure_ascii=False) + "\n").encode() + torn[: torn.index(b"\xc3") + 1]
    )
    assert OutputDir(tmp_path).read_predictions() == {0: complete}


@pytest.mark.slow
def test_files_left_by_a_killed_multi_process_run_are_merged(reference, varied_model_dir, cvbench_parquet, tmp_path):
    ref_out, ref_summary = reference
    out = tmp_path / "e"
    killed_run(out, ref_summary, processes=2)
    lines = (ref_out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines[:10]))
    (out / "predictions.rank0.jsonl").write_text("".join(lines[10:40:2]))
    (out / "predictions.rank1.jsonl").write_text("".join(lines[11:40:2]) + lines[41][:20])
    summary = evaluate(varied_model_dir, cvbench_parquet, out)
    assert without_run(summary) == without_run(ref_summary)
    assert not list(out.glob("predictions.rank*"))
    assert (out / "predictions.jsonl").read_bytes() == (ref_out / "predictions.jsonl").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"max_new_tokens": 9}, "generation.max_new_tokens: 8 there, 9 now"),
        ({"prompt": "base_no_reasoning"}, "prompt.name: base there, base_no_reasoning now"),
        ({"max_pixels": 9999}, "resolution.max_pixels: 12544 there, 9999 now"),
        ({"dtype": "bfloat16"}, "generation.dtype: auto there, bfloat16 now"),
    ],
)
def test_resuming_with_other_settings_is_refused(reference, varied_model_dir, cvbench_parquet, tmp_path, change, key):
    ref_out, _ = reference
    out = tmp_path / "e"
    shutil.copytree(ref_out, out)
    with pytest.raises(RecipeError) as err:
        evaluate(varied_model_dir, cvbench_parquet, out, **change)
    assert key in str(err.value) and "--overwrite_output_dir true" in str(err.value)
    assert folder_bytes(out) == folder_bytes(ref_out)  # nothing changed


@pytest.mark.slow
def test_other_weights_in_the_same_folder_are_refused_then_started_over(
    reference, varied_model_dir, tiny_base_dir, cvbench_parquet, tmp_path
):
    # "Retraining" into the model's folder: same file names, sizes and configuration, other weights.
    ref_out, ref_summary = reference
    model = tmp_path / "model"
    shutil.copytree(varied_model_dir, model)
    out = tmp_path / "e"
    shutil.copytree(ref_out, out)
    assert evaluate(model, cvbench_parquet, out) == ref_summary | {
        "model": ref_summary["model"] | {"name": str(model)}
    }
    shutil.rmtree(model)
    redraw(tiny_base_dir, model, seed=1, processor_from=varied_model_dir)
    before = folder_bytes(out)
    with pytest.raises(RecipeError) as err:
        evaluate(model, cvbench_parquet, out)
    assert "the model's files differ" in str(err.value) and "model.sha256" in str(err.value)
    assert folder_bytes(out) == before
    summary = evaluate(model, cvbench_parquet, out, overwrite_output_dir=True, limit=8)
    assert summary["model"]["sha256"] != ref_summary["model"]["sha256"]
    assert summary["rows"] == {"scored": 8, "skipped": 0, "selected": 8, "missing": 0, "dataset": 48, "limit": 8}
    predictions = read_predictions(out)
    assert len(predictions) == 8 and {p["fingerprint"] for p in predictions} == {summary["fingerprint"]["id"]}
    assert [p["response"] for p in predictions] != [p["response"] for p in read_predictions(ref_out)[:8]]


def test_another_dataset_content_is_refused(varied_model_dir, cvbench_parquet, tmp_path):
    import pyarrow.parquet as pq

    evaluate(varied_model_dir, cvbench_parquet, tmp_path / "e", limit=2, max_new_tokens=2)
    table = pq.read_table(cvbench_parquet)
    answers = table.column("answer").to_pylist()
    answers[5] = "(A)" if answers[5] != "(A)" else "(B)"  # one gold answer fixed upstream
    changed = tmp_path / "cvbench.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("answer"), "answer", [answers]), changed)
    with pytest.raises(RecipeError, match=r"dataset\.sha256"):
        evaluate(varied_model_dir, changed, tmp_path / "e", limit=2, max_new_tokens=2)


def test_an_invalid_model_leaves_nothing_behind(cvbench_parquet, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    out = tmp_path / "e"
    with pytest.raises(RecipeError, match="not a model folder"):
        evaluate(empty, cvbench_parquet, out)
    assert not out.exists()


def write_cvbench(path: Path, rows: int, change=None, **kwargs) -> Path:
    """Synthetic CV-Bench rows, with ``change(columns)`` applied to its columns (a dict of lists) if given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_prep.fixtures.synthetic import write_synthetic

    write_synthetic("cvbench", rows=rows, seed=0, output=path, **kwargs)
    if change is not None:
        table = pq.read_table(path)
        columns = table.to_pydict()
        change(columns)
        pq.write_table(pa.Table.from_pydict(columns, schema=table.schema), path)
    return path


def test_an_undecodable_image_names_its_row_and_can_be_skipped(varied_model_dir, tmp_path):
    def break_image(columns):
        columns["image"][3] = {"bytes": columns["image"][3]["bytes"][:40], "path": None}  # truncated PNG

    data = write_cvbench(tmp_path / "broken.parquet", 6, break_image)
    out = tmp_path / "e"
    with pytest.raises(RecipeError) as err:
        evaluate(varied_model_dir, data, out, batch_size=2)
    assert "row 3 (idx 3)" in str(err.value) and "--skip_bad_images true" in str(err.value)
    assert [p["row"] for p in read_predictions(out)] == [0, 1]  # the batches before it are kept
    summary = evaluate(varied_model_dir, data, out, batch_size=2, skip_bad_images=True)
    assert summary["rows"] == {"scored": 5, "skipped": 1, "selected": 6, "missing": 0, "dataset": 6, "limit": None}
    assert summary["skipped"]["idx"] == [3] and "cannot be used" in summary["skipped"]["reasons"][0]
    assert summary["per_task"] and sum(g["rows"] for g in summary["per_task"].values()) == 5
    assert "Skipped (unusable image" in (out / "summary.md").read_text()
    assert evaluate(varied_model_dir, data, out, batch_size=2) == summary  # resumed: the skipped row is not retried


def test_gold_answers_outside_the_choices_are_counted_as_data_errors(varied_model_dir, tmp_path):
    def bad_gold(columns):
        columns["answer"][1] = "(F)" if len(columns["choices"][1]) < 6 else "(Z)"

    data = write_cvbench(tmp_path / "gold.parquet", 4, bad_gold)
    summary = evaluate(varied_model_dir, data, tmp_path / "e", max_new_tokens=2)
    assert summary["data_errors"] == {"rows": 1, "idx": [1]} and summary["rows"]["scored"] == 4
    assert not read_predictions(tmp_path / "e")[1]["correct"]


def test_large_images_are_resized_within_the_bounds_before_the_processor(varied_model_dir, tmp_path):
    from transformers import AutoProcessor

    data = write_cvbench(tmp_path / "large.parquet", 2, image_size=224)  # 50176 pixels > the tiny bound of 12544
    summary = evaluate(varied_model_dir, data, tmp_path / "e", max_new_tokens=2)
    assert summary["resolution"]["images_resized"] == 2
    for prediction in read_predictions(tmp_path / "e"):
        width, height = prediction["image_size"]
        assert prediction["resized"] and width * height <= 12544 and width % 28 == height % 28 == 0
    # A fitted image gets the same grid from a processor at the training bounds and at Qwen2-VL's hub default.
    from PIL import Image as PILImage

    from data_prep.images import fit_image

    image = fit_image(PILImage.new("RGB", (224, 224)), 3136, 12544)
    grids = []
    for max_pixels in (12544, 12845056):
        processor = AutoProcessor.from_pretrained(
            varied_model_dir, size={"shortest_edge": 3136, "longest_edge": max_pixels}
        )
        grids.append(processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].tolist())
    assert grids[0] == grids[1] == [[1, 8, 8]]


def test_pixel_bounds_override_the_checkpoints(varied_model_dir, cvbench_parquet, tmp_path):
    summary = evaluate(varied_model_dir, cvbench_parquet, tmp_path / "e", max_pixels=6272, limit=1, max_new_tokens=1)
    assert summary["resolution"]["max_pixels"] == 6272 and summary["resolution"]["min_pixels"] == 3136
    assert summary["resolution"]["source"] == "--min_pixels/--max_pixels"


def test_the_vllm_backend_says_how_to_get_it(varied_model_dir, cvbench_parquet, tmp_path):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RecipeError, match="pip install --no-build-isolation -r requirements-gpu.txt"):
            evaluate(varied_model_dir, cvbench_parquet, tmp_path, backend="vllm", limit=1)
    else:
        pytest.skip("vLLM is installed: its backend needs a GPU run, not this unit test")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return {**os.environ, **offline, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_two_processes_merge_to_the_single_process_result(reference, varied_model_dir, cvbench_parquet, tmp_path):
    # `--cpu --num_processes 2` would start one process (accelerate needs mpirun for multi-CPU); `--multi_gpu`
    # starts two through torchrun, and the script then uses gloo.
    ref_out, ref_summary = reference
    out = tmp_path / "e"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port())]
    script = [str(REPO_ROOT / "recipes" / "eval_cvbench.py"), "--config", str(CONFIG_DIR / "eval" / "tiny.yaml")]
    script += ["--model_name_or_path", str(varied_model_dir), "--dataset", str(cvbench_parquet)]
    script += ["--output_dir", str(out), "--batch_size", "8", "--max_new_tokens", "8"]
    result = subprocess.run(launch + script, capture_output=True, text=True, env=_env(), cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["num_processes"] == 2
    assert without_run(summary) == without_run(ref_summary)
    assert (out / "predictions.jsonl").read_bytes() == (ref_out / "predictions.jsonl").read_bytes()
    assert not list(out.glob("predictions.rank*"))


@pytest.mark.slow
def test_a_trained_checkpoint_is_evaluated_at_its_training_bounds(
    tiny_base_dir, sat_records_dir, cvbench_parquet, tmp_path
):
    # The paper's evaluation loaded each checkpoint's own processor, which its trainer saved with the training
    # bounds; our recipes save theirs the same way, and the evaluation's default reads it back.
    from recipes import grpo_base

    argv = ["--config", str(CONFIG_DIR / "tiny" / "grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)]
    argv += ["--dataset_path", str(sat_records_dir), "--output_dir", str(tmp_path / "run"), "--report_to", "none"]
    argv += ["--max_steps", "1", "--save_steps", "100", "--max_pixels", "6272"]  # not the tiny model's 12544
    grpo_base.main(*grpo_base.make_parser().parse_args_and_config(argv))
    summary = evaluate(tmp_path / "run", cvbench_parquet, tmp_path / "eval", limit=2, max_new_tokens=1)
    assert (summary["resolution"]["min_pixels"], summary["resolution"]["max_pixels"]) == (3136, 6272)
    assert summary["resolution"]["source"] == "the checkpoint's own saved processor bounds"


# --------------------------------------------------------------------------------------------------------------
# Configuration and errors
# --------------------------------------------------------------------------------------------------------------


EVAL_CONFIGS = sorted((CONFIG_DIR / "eval").glob("*.yaml"))


@pytest.mark.parametrize("config", EVAL_CONFIGS, ids=lambda p: p.stem)
def test_every_eval_config_parses_and_names_its_command(config):
    (args,) = make_parser().parse_args_and_config(
        ["--config", str(config), "--model_name_or_path", "m", "--output_dir", "d"]
    )
    assert args.prompt and args.max_new_tokens >= 1
    header = config.read_text().splitlines()[:4]
    assert any(line.lstrip("# ").startswith("python recipes/eval_cvbench.py") for line in header)


def test_the_paper_preset_is_the_default_config():
    from recipes.shared.cli import default_config_args

    argv = default_config_args(["--model_name_or_path", "m", "--output_dir", "d"], DEFAULT_CONFIG)
    (args,) = make_parser().parse_args_and_config(argv)
    # The paper's evaluation: its base prompt, greedy (always), 1,024 new tokens, bf16, CV-Bench's test split, and
    # the checkpoint's own processor bounds (no override).
    assert (args.prompt, args.max_new_tokens, args.dtype) == ("base", 1024, "bfloat16")
    assert (args.dataset, args.dataset_split) == ("nyu-visionx/CV-Bench", "test")
    assert args.min_pixels is None and args.max_pixels is None
    (instruct,) = make_parser().parse_args_and_config(
        [
            "--config",
            str(CONFIG_DIR / "eval" / "paper_instruct.yaml"),
            "--model_name_or_path",
            "m",
            "--output_dir",
            "d",
        ]
    )
    assert asdict(instruct) == asdict(args) | {"prompt": "instruct"}


def test_a_yaml_config_works_like_the_other_recipes(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": "m", "output_dir": "d", "prompt": "instruct"}))
    (args,) = make_parser().parse_args_and_config(["--config", str(config), "--max_new_tokens", "64"])
    assert (args.model_name_or_path, args.prompt, args.max_new_tokens) == ("m", "instruct", 64)
    assert (args.min_pixels, args.max_pixels, args.dataset) == (None, None, "nyu-visionx/CV-Bench")


@pytest.mark.parametrize("dataset", ["nyu-visionx/CV-Bench", "data/no-such-cvbench.parquet"])
def test_a_missing_dataset_names_the_synthetic_data_command(dataset, tiny_base_dir, tmp_path):
    with pytest.raises(RecipeError) as err:
        evaluate(tiny_base_dir, dataset, tmp_path / "e")
    assert "python -m data_prep.fixtures.synthetic --kind cvbench" in str(err.value)
    assert "launch/quickstart.sh" in str(err.value)
    assert not (tmp_path / "e").exists()


def test_a_dataset_in_another_schema_is_refused(sat_parquet, tiny_base_dir, tmp_path):
    with pytest.raises(RecipeError, match="missing column"):
        evaluate(tiny_base_dir, sat_parquet, tmp_path / "e")


def test_a_missing_model_offline_names_the_quickstart(cvbench_parquet, tmp_path):
    with pytest.raises(RecipeError, match="quickstart"):
        evaluate("nobody/no-such-model", cvbench_parquet, tmp_path / "e", limit=2)
    assert not (tmp_path / "e").exists()


def test_saved_dataset_folder(cvbench_parquet, tiny_base_dir, tmp_path):
    from datasets import Dataset

    folder = tmp_path / "saved"
    Dataset.from_parquet(str(cvbench_parquet)).save_to_disk(str(folder))
    summary = evaluate(tiny_base_dir, folder, tmp_path / "e", limit=2, max_new_tokens=2)
    assert summary["rows"]["scored"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prompt", "nonsense"], "invalid choice: 'nonsense'"),
        (["--min_pixels", "5000", "--max_pixels", "4000"], "--min_pixels (5000) is larger than --max_pixels (4000)"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_the_command_line_reports_user_errors_plainly(tiny_base_dir, tmp_path, capsys, argv, message):
    argv = ["--model_name_or_path", str(tiny_base_dir), "--output_dir", str(tmp_path / "e"), *argv]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, make_parser(), argv, DEFAULT_CONFIG)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "e").exists()
