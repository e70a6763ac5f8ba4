"""The aha task (issue #26): its scenes, its three kinds of stage-A text, the monitor and the premise probe.

The texts are checked against the scenes they describe (a tally that miscounts would teach wrong reasoning); the
image is checked to cost one image token per cell through the real Qwen2-VL processor; the probe runs on a tiny
random model (its numbers mean nothing there; that it scores every mode the same way is what is checked).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from PIL import Image

from data_prep.fixtures import aha_scenes
from data_prep.fixtures.aha_scenes import (
    CELLS,
    MAX_COUNT,
    count_item,
    count_records,
    describes_first,
    direct_text,
    reasoning_text,
    stage_a_records,
)
from recipes.mini.aha_probe import lists_first_reward
from rewards.accuracy import AccuracyReward


def as_completion(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_reasoning_text_tallies_the_asked_colour_and_ends_with_the_count():
    rng = random.Random(3)
    for _ in range(300):
        row, color, _ = count_item(rng)
        text = reasoning_text(row, color)
        listing = text.split(":", 1)[1].split(".")[0]
        items = [item.split() for item in listing.split(",")]
        assert [(i[0], i[1]) for i in items] == list(row.cells)
        tallies = [int(i[2]) for i in items if len(i) == 3]
        assert tallies == list(range(1, row.count(color) + 1))
        assert all(i[0] == color for i in items if len(i) == 3)
        assert text.endswith(f"<answer> {row.count(color)} </answer>")


def test_tally_on_every_item_keeps_every_item_the_same_number_of_tokens(tiny_base_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    rng = random.Random(4)
    lengths = set()
    for _ in range(50):
        row, color, _ = count_item(rng)
        listing = row.tally(color, every=True)
        items = [item.split() for item in listing.split(",")]
        assert [int(i[2]) for i in items][-1] == row.count(color)
        lengths.add(len(tokenizer(reasoning_text(row, color, every=True))["input_ids"]))
    assert len(lengths) == 1


def test_prepare_refuses_an_existing_folder(tmp_path, capsys):
    from recipes.mini import aha

    (tmp_path / "keep.txt").write_text("mine")
    assert aha.main(["prepare", "--out", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_counts_are_uniform_over_the_options():
    rng = random.Random(0)
    counts = Counter(row.count(color) for row, color, _ in (count_item(rng) for _ in range(2000)))
    assert sorted(counts) == list(range(MAX_COUNT + 1))
    assert all(abs(n / 2000 - 1 / (MAX_COUNT + 1)) < 0.04 for n in counts.values())


def test_row_image_costs_one_image_token_per_cell(tiny_base_dir):
    from io import BytesIO

    from transformers import AutoProcessor

    _, _, image = count_item(random.Random(1))
    picture = Image.open(BytesIO(image))
    processor = AutoProcessor.from_pretrained(tiny_base_dir)
    grid = processor.image_processor(images=[picture], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert picture.size == (28 * CELLS, 28)
    assert grid[0] * grid[1] * grid[2] // 4 == CELLS  # 2x2 patches merge into one token


def test_stage_a_mixes_descriptions_direct_answers_and_some_reasoning():
    records = stage_a_records(seed=0, rows=2000, reasoning_share=0.2, describe_share=0.3)
    kinds = Counter(r["question_type"] for r in records)
    assert abs(kinds["describe"] / 2000 - 0.3) < 0.04
    count_questions = kinds["count"] + kinds["count_reasoned"]
    assert abs(kinds["count_reasoned"] / count_questions - 0.2) < 0.04
    for record in records[:50]:
        target = record["messages"][1]["content"][0]["text"]
        assert record["solution"] == target
        assert describes_first(target) == (record["question_type"] != "count")


def test_accuracy_and_monitor_judge_both_ways_of_answering():
    rng = random.Random(5)
    row, color, _ = count_item(rng)
    truth = str(row.count(color))
    wrong = str((row.count(color) + 1) % (MAX_COUNT + 1))
    accuracy = AccuracyReward(require_format=True)
    texts = [reasoning_text(row, color), direct_text(truth), direct_text(wrong), f"{truth} </answer>"]
    prompts = [[{"role": "user", "content": "User: ... \nAssistant: <think>"}]] * len(texts)
    scores = accuracy(completions=[as_completion(t) for t in texts], prompts=prompts, solution=[truth] * len(texts))
    assert scores == [1.0, 1.0, 0.0, 0.0]
    assert lists_first_reward([as_completion(t) for t in texts]) == [1.0, 0.0, 0.0, 0.0]


def test_count_records_hold_the_bare_answer():
    records = count_records(seed=0, rows=20, salt="heldout")
    for record in records:
        assert record["solution"] in record["options"]
        assert record["question_type"] == f"count:{record['solution']}"
    assert count_records(seed=0, rows=20, salt="heldout")[3]["images"] == records[3]["images"]
    assert count_records(seed=1, rows=20, salt="heldout")[3]["images"] != records[3]["images"]


def test_probe_scores_every_mode_with_the_forced_prefix_counted(tiny_base_dir, tmp_path):
    from recipes.mini.aha_probe import MODES, greedy_scores

    aha_scenes.save_records(count_records(seed=0, rows=6, salt="heldout"), tmp_path / "heldout")
    results = greedy_scores(tiny_base_dir, tmp_path / "heldout", batch=3)
    assert set(results) == set(MODES)
    assert results["describe"]["describes_first"] == 1.0
    assert results["direct"]["describes_first"] == 0.0
    assert all(e["completion"].startswith(MODES["direct"]) for e in results["direct"]["examples"])
    # The forced prefix is part of the completion: at least its tokens are counted.
    assert results["direct"]["mean_tokens"] >= 4


def test_lookup_answer_is_the_colour_right_of_the_only_shape_of_the_asked_colour():
    rng = random.Random(2)
    for _ in range(300):
        row, color, answer, _ = aha_scenes.lookup_item(rng)
        colors = [c for c, _ in row.cells]
        assert colors.count(color) == 1 and colors.index(color) < CELLS - 1
        assert answer == colors[colors.index(color) + 1]
    for record in aha_scenes.lookup_records(seed=0, rows=30, salt="heldout"):
        assert record["solution"] in record["options"]
        assert record["question"].split(" of the ")[1].split()[0] not in record["options"]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_stage_a_shares_at_the_extremes(share):
    records = stage_a_records(seed=1, rows=200, reasoning_share=share, describe_share=0.0)
    assert {r["question_type"] for r in records} == {"count_reasoned" if share else "count"}
