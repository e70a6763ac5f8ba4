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


@pytest.mark.slow  # decodes three ways on every probe question
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


def test_text_only_lookup_rows_carry_the_scene_in_the_question_and_nothing_in_the_image():
    """Design 8: the listing the target starts with is the one given in the question, the answer is the colour right
    of the asked one in it, and the image is the same-size blank for every row (nothing to read from it)."""
    from io import BytesIO

    records = aha_scenes.lookup_text_records(seed=0, rows=40, salt="stage_a")
    blanks = {r["images"][0]["bytes"] for r in records}
    assert len(blanks) == 1
    picture = Image.open(BytesIO(blanks.pop()))
    assert picture.size == (28 * CELLS, 28) and picture.getcolors() and len(picture.getcolors()) == 1
    for record in records:
        given = record["question"].split(": ", 1)[1].split(". ", 1)[0]
        target = record["messages"][1]["content"][0]["text"]
        assert target.startswith(f"{aha_scenes.REASONING_MARK} {given}. </think><answer> ")
        colors = [item.split()[0] for item in given.split(", ")]
        asked = record["question"].split(" of the ")[1].split()[0]
        assert colors.count(asked) == 1
        assert record["solution"] == target and target.endswith(
            f"<answer> {colors[colors.index(asked) + 1]} </answer>"
        )
    assert aha_scenes.lookup_text_records(seed=0, rows=40, salt="stage_a")[7] == records[7]


def test_text_only_count_rows_tally_the_listing_given_in_the_question():
    """Design 8b: the target lists exactly the shapes the question gives, with a running count of the asked colour
    after every item that ends at the answer."""
    records = aha_scenes.count_text_records(seed=0, rows=60, salt="stage_a")
    assert Counter(r["question_type"] for r in records) == {"count_text": 60}
    for record in records:
        given = record["question"].split(": ", 1)[1].split(". ", 1)[0]
        asked = record["question"].split("How many ")[1].split()[0]
        target = record["messages"][1]["content"][0]["text"]
        items = [item.split() for item in target.split(":", 1)[1].split(".")[0].split(",")]
        assert ", ".join(f"{c} {k}" for c, k, _ in items) == given
        colors = [c for c, _, _ in items]
        assert [int(n) for _, _, n in items] == [colors[: i + 1].count(asked) for i in range(CELLS)]
        assert target.endswith(f"<answer> {colors.count(asked)} </answer>") and record["solution"] == target


def test_small_preset_keeps_minis_vision_and_widens_the_decoder(tmp_path):
    """Design 9's model: the same vision tower and head width as mini (the listing it learnt), a decoder with about
    four times the parameters (2.5M against 0.66M)."""
    from transformers import AutoModelForImageTextToText

    from data_prep.fixtures.tiny_model import PRESETS, build_tiny_model

    small, mini = PRESETS["small"], PRESETS["mini"]
    assert (small.vision_depth, small.vision_embed_dim) == (mini.vision_depth, mini.vision_embed_dim)
    assert small.hidden_size // small.num_attention_heads == mini.hidden_size // mini.num_attention_heads
    model = AutoModelForImageTextToText.from_pretrained(build_tiny_model(tmp_path / "small", preset="small"))
    decoder = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n)
    assert 2.0e6 < decoder < 3.5e6  # mini's decoder: 0.66M
    assert model.config.text_config.hidden_size == 256
