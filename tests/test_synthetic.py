"""The synthetic data: the real datasets' exact schemas, decodable images, determinism, and answers that agree with
what is actually drawn (shapes are re-detected from the JPEG pixels, independently of the generator's geometry)."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Features, Image, List, Value
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from data_prep.fixtures import scenes
from data_prep.fixtures.questions import MINI_QUESTIONS
from data_prep.fixtures.synthetic import KINDS, main, synthetic_question, write_synthetic

NAME = re.compile(r"(red|green|blue|yellow|purple) (circle|square|triangle)")


# --------------------------------------------------------------------------------------------------------------
# Pixel re-detection: colour masks, connected components, shape kind from how much of its box a blob fills
# --------------------------------------------------------------------------------------------------------------


def color_masks(jpeg: bytes) -> dict[str, np.ndarray]:
    """One boolean mask per palette colour: pixels within a small distance of that colour."""
    pixels = np.asarray(PILImage.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int32)
    return {name: np.sqrt(((pixels - np.array(rgb)) ** 2).sum(axis=-1)) < 60 for name, rgb in scenes.COLORS.items()}


def blobs(mask: np.ndarray, min_pixels: int = 8) -> list[tuple[int, float]]:
    """4-connected components of ``mask``: (pixel count, fraction of its bounding box it fills), specks dropped."""
    seen = np.zeros_like(mask)
    found = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        stack, pixels = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(pixels) >= min_pixels:
            ys, xs = zip(*pixels, strict=True)
            box = (max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1)
            found.append((len(pixels), len(pixels) / box))
    return found


def kind_of(fill: float) -> str:
    """A blob's shape from its fill ratio: square ≈ 1, circle ≈ π/4, triangle ≈ 1/2."""
    return "square" if fill > 0.9 else "circle" if fill > 0.66 else "triangle"


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "the named shape is not visible"
    return float(xs.mean()), float(ys.mean())


def answer_from_pixels(question_type: str, question: str, images: list[bytes]) -> str | None:
    """Answer a question by looking only at the pixels (None for types this checker does not cover)."""
    masks = [color_masks(image) for image in images]
    names = NAME.findall(question)
    if question_type in ("left_right", "above_below"):
        (a_color, _), (b_color, _) = names[:2]
        (ax, ay), (bx, by) = centroid(masks[0][a_color]), centroid(masks[0][b_color])
        if question_type == "left_right":
            return "left" if ax < bx else "right"
        return "above" if ay < by else "below"
    if question_type in ("count", "Count"):
        color = re.search(r"How many (\w+) shapes", question)
        if color:
            return str(len(blobs(masks[0][color.group(1)])))
        kind = re.search(r"How many (\w+)s are", question).group(1)
        return str(sum(kind_of(fill) == kind for m in masks[0].values() for _, fill in blobs(m)))
    if question_type in ("closer", "Depth"):
        lowest = {c: np.nonzero(masks[0][c])[0].max() for c, _ in names[:2]}
        return " ".join(max(names[:2], key=lambda n: lowest[n[0]]))
    if question_type == "camera_movement":
        shifts = [centroid(masks[1][c])[0] - centroid(masks[0][c])[0] for c in scenes.COLORS if masks[0][c].sum() > 20]
        return "right" if np.mean(shifts) < 0 else "left"  # the scene moving left means the camera moved right
    if question_type == "object_movement":
        color = names[0][0]
        return "right" if centroid(masks[1][color])[0] > centroid(masks[0][color])[0] else "left"
    return None


# --------------------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------------------


def test_sat_file_has_sats_exact_columns_and_types(sat_parquet):
    schema = pq.read_schema(sat_parquet)
    assert schema.names == ["image_bytes", "question", "answers", "question_type", "correct_answer"]
    assert [schema.field(n).type for n in schema.names] == [
        pa.list_(pa.binary()),
        pa.string(),
        pa.list_(pa.string()),
        pa.string(),
        pa.string(),
    ]
    assert Features.from_arrow_schema(schema) == Features(
        {
            "image_bytes": List(Value("binary")),
            "question": Value("string"),
            "answers": List(Value("string")),
            "question_type": Value("string"),
            "correct_answer": Value("string"),
        }
    )


def test_cvbench_file_has_cvbenchs_exact_columns_and_types(cvbench_parquet):
    schema = pq.read_schema(cvbench_parquet)
    assert schema.names == ["idx", "type", "task", "image", "question", "choices", "answer", "prompt", "source"]
    assert schema.field("idx").type == pa.int64()
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("choices").type == pa.list_(pa.string())
    features = Features.from_arrow_schema(schema)  # the HF metadata in the file makes `image` an Image feature
    assert features["image"] == Image()


def test_cvbench_rows_are_consistent(cvbench_parquet):
    rows = pq.read_table(cvbench_parquet).to_pylist()
    assert [r["idx"] for r in rows] == list(range(len(rows)))
    assert {r["task"] for r in rows} == {"Count", "Relation", "Depth", "Distance"}
    for r in rows:
        assert r["type"] == ("2D" if r["task"] in ("Count", "Relation") else "3D")
        assert r["source"] in (("ADE20K", "COCO") if r["type"] == "2D" else ("Omni3D",))
        assert re.fullmatch(r"\([A-F]\)", r["answer"]) and "ABCDEF".index(r["answer"][1]) < len(r["choices"])
        assert len(set(r["choices"])) == len(r["choices"]) >= 2
        lettered = "\n".join(f"({'ABCDEF'[i]}) {c}" for i, c in enumerate(r["choices"]))
        assert r["prompt"] == f"{r['question']} Select from the following choices.\n{lettered}"


def test_every_image_decodes_at_the_default_size(sat_parquet, cvbench_parquet):
    sat = pq.read_table(sat_parquet).to_pylist()
    cv = pq.read_table(cvbench_parquet).to_pylist()
    images = [b for r in sat for b in r["image_bytes"]] + [r["image"]["bytes"] for r in cv]
    for data in images:
        image = PILImage.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.size, image.mode) == ("JPEG", (112, 112), "RGB")


def test_sat_has_one_image_for_static_and_two_for_motion_questions(sat_parquet):
    rows = pq.read_table(sat_parquet).to_pylist()
    for r in rows:
        motion = r["question_type"] in ("camera_movement", "object_movement")
        assert len(r["image_bytes"]) == (2 if motion else 1)
        assert r["correct_answer"] in r["answers"] and len(set(r["answers"])) == len(r["answers"])
    assert Counter(len(r["image_bytes"]) for r in rows).keys() == {1, 2}


# --------------------------------------------------------------------------------------------------------------
# Answers agree with the pixels
# --------------------------------------------------------------------------------------------------------------


def test_sat_answers_match_the_rendered_pixels(sat_parquet):
    checked = Counter()
    for r in pq.read_table(sat_parquet).to_pylist():
        seen = answer_from_pixels(r["question_type"], r["question"], r["image_bytes"])
        assert seen == r["correct_answer"], r["question"]
        checked[r["question_type"]] += 1
    assert set(checked) == {"left_right", "above_below", "count", "closer", "camera_movement", "object_movement"}


def test_cvbench_answers_match_the_rendered_pixels(cvbench_parquet):
    checked = Counter()
    for r in pq.read_table(cvbench_parquet).to_pylist():
        truth = r["choices"]["ABCDEF".index(r["answer"][1])]
        if r["task"] == "Relation":
            kind = "left_right" if "left" in r["choices"] else "above_below"
            seen = answer_from_pixels(kind, r["question"], [r["image"]["bytes"]])
        elif r["task"] == "Distance":
            continue  # world distances are checked on the scene geometry below
        else:
            seen = answer_from_pixels(r["task"], r["question"], [r["image"]["bytes"]])
        assert seen == truth, r["question"]
        checked[r["task"]] += 1
    assert set(checked) == {"Count", "Relation", "Depth"}


def test_cvbench_distance_answer_is_the_nearer_object_on_the_ground():
    for index in range(3, 80, 4):  # every 4th row is a Distance row
        q = synthetic_question("cvbench", 0, index)
        assert q.question_type == "Distance"
        (scene,) = q.scenes
        anchor, a, b = (scene.find(" ".join(n)) for n in NAME.findall(q.question))
        distances = {s.name: np.hypot(s.world_x - anchor.world_x, s.depth - anchor.depth) for s in (a, b)}
        assert q.answer == min(distances, key=distances.get)
        assert max(distances.values()) >= 1.5 * min(distances.values())


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["sat", "cvbench"]), seed=st.integers(0, 10**6), index=st.integers(0, 10**6))
def test_any_question_names_unique_shapes_and_offers_its_answer(kind, seed, index):
    q = synthetic_question(kind, seed, index)
    assert q.answer in q.options and len(set(q.options)) == len(q.options)
    for scene in q.scenes:
        for name in {" ".join(n) for n in NAME.findall(q.question)}:
            scene.find(name)  # raises unless exactly one shape has that name
            assert all(0 <= v < scene.size for v in scene.find(name).box)


# --------------------------------------------------------------------------------------------------------------
# Mini experiment kinds
# --------------------------------------------------------------------------------------------------------------


def shape_pixels(jpeg: bytes) -> np.ndarray:
    """The RGB values of the pixels that are clearly not background (the one shape of a mini scene)."""
    pixels = np.asarray(PILImage.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int32)
    far = np.sqrt(((pixels - np.array(scenes.BACKGROUND)) ** 2).sum(axis=-1)) > 60
    return pixels[far]


@pytest.mark.parametrize("kind", ["mini_shape", "mini_color"])
def test_mini_kinds_are_balanced_and_match_the_pixels(kind, tmp_path):
    rows = pq.read_table(write_synthetic(kind, rows=40, seed=0, output=tmp_path / "mini.parquet")).to_pylist()
    assert Counter(r["correct_answer"] for r in rows) == {"yes": 20, "no": 20}
    for r in rows:
        assert r["question"] == MINI_QUESTIONS[kind] and r["answers"] == ["yes", "no"] and r["question_type"] == kind
        (data,) = r["image_bytes"]
        assert PILImage.open(io.BytesIO(data)).size == (56, 56)
        masks = color_masks(data)
        color = max(("red", "blue"), key=lambda c: masks[c].sum())
        mask = masks[color]
        (blob,) = blobs(mask)  # exactly one shape
        ys, xs = np.nonzero(mask)
        assert 19 <= xs.max() - xs.min() + 1 <= 30  # radius 10-14 px
        seen = {"mini_shape": kind_of(blob[1]) == "triangle", "mini_color": color == "red"}[kind]
        assert ("yes" if seen else "no") == r["correct_answer"]


def test_out_of_distribution_shades_are_other_reds_and_blues_than_the_training_ones(tmp_path):
    """mini_color_shade asks the colour question about shades that no other kind draws: each shape is clearly red
    or blue (its answer), and clearly not the training red or blue."""
    rows = pq.read_table(write_synthetic("mini_color_shade", rows=40, seed=3, output=tmp_path / "ood.parquet"))
    rows = rows.to_pylist()
    assert Counter(r["correct_answer"] for r in rows) == {"yes": 20, "no": 20}
    shades = Counter()
    for r in rows:
        assert r["question"] == MINI_QUESTIONS["mini_color"]
        mean = shape_pixels(r["image_bytes"][0]).mean(axis=0)
        assert ("yes" if mean[0] > mean[2] else "no") == r["correct_answer"]  # reddish: yes; bluish: no
        nearest = min(scenes.SHADES, key=lambda name: np.abs(mean - scenes.SHADES[name]).sum())
        assert r["question_type"] == f"mini_color_shade:{nearest}"  # the shade drawn, for per-shade accuracy
        shades[nearest] += 1
        for trained in ("red", "blue"):  # far from both training colours (JPEG keeps flat colours within ~10)
            assert np.sqrt(((mean - np.array(scenes.COLORS[trained])) ** 2).sum()) > 60
    assert set(shades) == set(scenes.SHADES)  # dark and light, of both colours
    assert not set(scenes.SHADES) & set(scenes.COLORS)  # SAT/CV-Bench scenes never draw them


# --------------------------------------------------------------------------------------------------------------
# Determinism, atomic writes, arguments
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_seed_gives_a_byte_identical_file_and_another_seed_does_not(kind, tmp_path):
    first = write_synthetic(kind, rows=12, seed=5, output=tmp_path / "a.parquet").read_bytes()
    again = write_synthetic(kind, rows=12, seed=5, output=tmp_path / "b.parquet").read_bytes()
    other = write_synthetic(kind, rows=12, seed=6, output=tmp_path / "c.parquet").read_bytes()
    assert first == again
    assert first != other


def test_a_row_does_not_depend_on_how_many_rows_are_written(tmp_path):
    short = pq.read_table(write_synthetic("sat", rows=5, seed=1, output=tmp_path / "short.parquet"))
    long = pq.read_table(write_synthetic("sat", rows=150, seed=1, output=tmp_path / "long.parquet"))
    assert long.slice(0, 5).to_pylist() == short.to_pylist()


def test_image_size_option(tmp_path):
    rows = pq.read_table(write_synthetic("sat", rows=3, seed=0, output=tmp_path / "s.parquet", image_size=64))
    for images in rows.column("image_bytes").to_pylist():
        assert all(PILImage.open(io.BytesIO(b)).size == (64, 64) for b in images)


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temporary_one(tmp_path, monkeypatch):
    import data_prep.fixtures.synthetic as synthetic

    target = tmp_path / "sat.parquet"
    target.write_bytes(b"previous content")
    real_row = synthetic.synthetic_row

    def failing_row(kind, seed, index, image_size=None):
        if index == 150:
            raise RuntimeError("disk on fire")
        return real_row(kind, seed, index, image_size)

    monkeypatch.setattr(synthetic, "synthetic_row", failing_row)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_synthetic("sat", rows=200, seed=0, output=target)
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sat.parquet"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "satt"}, "valid kinds: sat, cvbench, mini_shape, mini_color, mini_color_shade"),
        ({"rows": 0}, "at least 1"),
        ({"image_size": 40}, "at least 56"),
    ],
)
def test_bad_arguments_name_the_valid_values(kwargs, message, tmp_path):
    args = {"kind": "sat", "rows": 2, "seed": 0, "output": tmp_path / "x.parquet", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        write_synthetic(**args)
    assert not Path(args["output"]).exists()


def test_cli_writes_the_file_and_exits_2_on_bad_arguments(tmp_path, capsys):
    out = tmp_path / "cv.parquet"
    assert main(["--kind", "cvbench", "--rows", "4", "--seed", "0", "--output", str(out)]) == 0
    assert pq.read_metadata(out).num_rows == 4
    assert main(["--kind", "nope", "--rows", "4", "--output", str(tmp_path / "n.parquet")]) == 2
    assert "valid kinds" in capsys.readouterr().err
