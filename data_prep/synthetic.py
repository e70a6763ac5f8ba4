"""Synthetic data in the exact schemas of SAT and CV-Bench (and the mini experiment's one-shape scenes), offline.

Usage::

    python -m data_prep.synthetic --kind sat --rows 5000 --seed 0 --output data/sat.parquet [--image-size 112]

Scenes of circles, squares and triangles are drawn with PIL (`data_prep.scenes`) and every answer is computed from
the scene's geometry, so a model could learn it from the pixels. Row ``i`` depends only on (kind, seed, i): the same
seed gives a byte-identical file.

Kinds
-----
``sat``       SAT's columns (``image_bytes`` list of JPEG bytes, ``question``, ``answers``, ``question_type``,
              ``correct_answer``): left/right, above/below, counting, closer-to-the-camera, and (~15% of rows)
              two-image "did the camera / the object move left or right" questions.
``cvbench``   CV-Bench's columns (``idx``, ``type``, ``task``, ``image``, ``question``, ``choices``, ``answer``,
              ``prompt``, ``source``): Count and Relation (2D; source ADE20K/COCO), Depth and Distance (3D; Omni3D).
``mini_shape`` / ``mini_color``
              SAT's columns; 56×56 images holding one red or blue circle, square or triangle (radius 10–14 px) and
              the yes/no questions of the mini R1-Zero experiment, with exactly balanced answers (per pair of rows).
``mini_color_shade``
              the colour question of ``mini_color`` about shades of red and blue that no other kind draws
              (`data_prep.scenes.SHADES`: dark and light red, dark and light blue): the mini ablations'
              out-of-distribution held-out scenes. Its ``question_type`` names the shade drawn
              (``mini_color_shade:dark red``), so that accuracy can be broken down per shade.

How it differs from the real data: the real SAT and CV-Bench images are photographs or 3D renders, and their
questions name everyday objects; here objects are named by colour and kind ("the red circle"). This data exists to
run the pipeline end to end and to let tiny models learn something real; it says nothing about the paper's scores.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

from data_prep import scenes
from data_prep.scenes import Scene, Shape

logger = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 56  # the tiny Qwen2-VL processor's smallest accepted side (data_prep.tiny_model)
ROW_GROUP_SIZE = 100  # rows per parquet row group (as `datasets` does for image data)
LETTERS = "ABCDEF"
GAP = 4.0  # pixels kept between shapes whose relation is asked, so the answer is never a judgement call

SAT_FEATURES = Features(
    {
        "image_bytes": List(Value("binary")),
        "question": Value("string"),
        "answers": List(Value("string")),
        "question_type": Value("string"),
        "correct_answer": Value("string"),
    }
)
CVBENCH_FEATURES = Features(
    {
        "idx": Value("int64"),
        "type": Value("string"),
        "task": Value("string"),
        "image": Image(),
        "question": Value("string"),
        "choices": List(Value("string")),
        "answer": Value("string"),
        "prompt": Value("string"),
        "source": Value("string"),
    }
)

# SAT question types and their share of rows; the two motion types are the two-image rows (15% together).
SAT_QUESTION_WEIGHTS: dict[str, float] = {
    "left_right": 0.25,
    "above_below": 0.20,
    "count": 0.20,
    "closer": 0.20,
    "camera_movement": 0.075,
    "object_movement": 0.075,
}
CVBENCH_TASKS: dict[str, str] = {"Count": "2D", "Relation": "2D", "Depth": "3D", "Distance": "3D"}
MINI_QUESTIONS: dict[str, str] = {
    "mini_shape": "Is the shape a triangle? Answer yes or no.",
    "mini_color": "Is the shape red? Answer yes or no.",
    "mini_color_shade": "Is the shape red? Answer yes or no.",
}
# The out-of-distribution shades of the colour question: the answer is "yes" for the first pair.
SHADE_ANSWERS: dict[bool, tuple[str, str]] = {True: ("dark red", "light red"), False: ("dark blue", "light blue")}


@dataclass(frozen=True)
class Question:
    """A question about one or more scenes (one per image), with its options and the correct one."""

    scenes: tuple[Scene, ...]
    question: str
    options: list[str]
    answer: str
    question_type: str


# --------------------------------------------------------------------------------------------------------------
# Question generators: (rng, image size) -> Question. Each retries its scene until the asked relation is clear-cut.
# --------------------------------------------------------------------------------------------------------------

MAX_TRIES = 1000


def _pick_pair(rng: random.Random, make_scene: Callable[[], Scene], ok: Callable[[Scene, Shape, Shape], bool]):
    for _ in range(MAX_TRIES):
        scene = make_scene()
        a, b = rng.sample(scene.shapes, 2)
        if ok(scene, a, b):
            return scene, a, b
    raise RuntimeError("could not draw a scene satisfying the question's constraints")  # not reached in practice


def _x_apart(scene: Scene, a: Shape, b: Shape) -> bool:
    return abs(a.x - b.x) >= a.r + b.r + GAP


def _y_apart(scene: Scene, a: Shape, b: Shape) -> bool:
    return abs(a.y - b.y) >= a.r + b.r + GAP


def _relation_scene(rng: random.Random, size: int, axis: str) -> tuple[Scene, Shape, Shape]:
    """A flat scene and two shapes clearly apart along ``axis``, drawn last so nothing covers them."""
    scene, a, b = _pick_pair(
        rng, lambda: scenes.flat_scene(rng, size, rng.randint(2, 4)), _x_apart if axis == "x" else _y_apart
    )
    return scenes.draw_last(scene, [a.name, b.name]), a, b


def left_right_question(rng: random.Random, size: int) -> Question:
    scene, a, b = _relation_scene(rng, size, "x")
    return Question(
        (scene,),
        f"Is the {a.name} to the left or to the right of the {b.name}?",
        ["left", "right"],
        scenes.horizontal_relation(a, b),
        "left_right",
    )


def above_below_question(rng: random.Random, size: int) -> Question:
    scene, a, b = _relation_scene(rng, size, "y")
    return Question(
        (scene,),
        f"Is the {a.name} above or below the {b.name}?",
        ["above", "below"],
        scenes.vertical_relation(a, b),
        "above_below",
    )


def _count_scene(rng: random.Random, size: int) -> tuple[Scene, str, int]:
    """A scene of non-touching shapes, the counted phrase (e.g. ``"red shapes"``) and the true count."""
    scene = scenes.separated_scene(rng, size, rng.randint(1, 6))
    present = rng.random() < 0.85 and len(scene.shapes) > 0
    if rng.random() < 0.5:
        color = rng.choice(scene.shapes).color if present else rng.choice(list(scenes.COLORS))
        return scene, f"{color} shapes", scenes.count(scene, color=color)
    kind = rng.choice(scene.shapes).kind if present else rng.choice(scenes.SHAPES)
    return scene, f"{kind}s", scenes.count(scene, kind=kind)


def _number_options(rng: random.Random, truth: int, n: int) -> list[str]:
    """``n`` consecutive numbers (from 0 up) that include ``truth`` at a random position."""
    start = rng.randint(max(0, truth - n + 1), truth)
    return [str(v) for v in range(start, start + n)]


def count_question(rng: random.Random, size: int) -> Question:
    scene, phrase, truth = _count_scene(rng, size)
    return Question(
        (scene,), f"How many {phrase} are in the image?", _number_options(rng, truth, 4), str(truth), "count"
    )


def _depth_pair_ok(scene: Scene, a: Shape, b: Shape) -> bool:
    """The two shapes' bottoms differ clearly and no third shape touches either of them."""
    if abs(a.bottom - b.bottom) < 0.08 * scene.size:
        return False
    others = [s for s in scene.shapes if s is not a and s is not b]
    return all(scenes.boxes_apart(o, t, 1.0) for o in others for t in (a, b))


def closer_question(rng: random.Random, size: int) -> Question:
    scene, a, b = _pick_pair(rng, lambda: scenes.perspective_scene(rng, size, rng.randint(2, 4)), _depth_pair_ok)
    return Question(
        (scene,),
        f"Which is closer to the camera, the {a.name} or the {b.name}?",
        [a.name, b.name],
        scenes.closer_to_camera(a, b).name,
        "closer",
    )


def _motion_shift(rng: random.Random, size: int) -> int:
    """A sideways shift in pixels, 12–22% of the image, signed (positive = to the right)."""
    return round(rng.uniform(0.12, 0.22) * size) * rng.choice((-1, 1))


def camera_movement_question(rng: random.Random, size: int) -> Question:
    # The camera moving right makes the whole scene move left in the second image, and vice versa.
    shift = _motion_shift(rng, size)
    scene = scenes.flat_scene(rng, size, rng.randint(2, 4), x_room=(max(0, -shift), max(0, shift)))
    return Question(
        (scene, scenes.shifted(scene, shift)),
        "The first image was taken before the camera moved sideways and the second image after. "
        "Did the camera move to the left or to the right?",
        ["left", "right"],
        "left" if shift > 0 else "right",
        "camera_movement",
    )


def object_movement_question(rng: random.Random, size: int) -> Question:
    shift = _motion_shift(rng, size)
    scene = scenes.flat_scene(rng, size, rng.randint(2, 4), x_room=(max(0, -shift), max(0, shift)))
    target = rng.choice(scene.shapes)
    scene = scenes.draw_last(scene, [target.name])
    return Question(
        (scene, scenes.shifted(scene, shift, only=target.name)),
        f"Between the first and the second image, did the {target.name} move to the left or to the right?",
        ["left", "right"],
        "right" if shift > 0 else "left",
        "object_movement",
    )


SAT_GENERATORS: dict[str, Callable[[random.Random, int], Question]] = {
    "left_right": left_right_question,
    "above_below": above_below_question,
    "count": count_question,
    "closer": closer_question,
    "camera_movement": camera_movement_question,
    "object_movement": object_movement_question,
}


def cvbench_count_question(rng: random.Random, size: int) -> Question:
    scene, phrase, truth = _count_scene(rng, size)
    options = _number_options(rng, truth, rng.randint(4, 6))
    return Question((scene,), f"How many {phrase} are in the image?", options, str(truth), "Count")


def cvbench_relation_question(rng: random.Random, size: int) -> Question:
    axis = rng.choice("xy")
    scene, a, b = _relation_scene(rng, size, axis)
    if axis == "x":
        options, answer = ["left", "right"], scenes.horizontal_relation(a, b)
    else:
        options, answer = ["above", "below"], scenes.vertical_relation(a, b)
    rng.shuffle(options)
    question = (
        f"Considering the relative positions of the {a.name} and the {b.name} in the image provided, "
        f"where is the {a.name} located with respect to the {b.name}?"
    )
    return Question((scene,), question, options, answer, "Relation")


def cvbench_depth_question(rng: random.Random, size: int) -> Question:
    scene, a, b = _pick_pair(rng, lambda: scenes.perspective_scene(rng, size, rng.randint(2, 4)), _depth_pair_ok)
    return Question(
        (scene,),
        f"Which object is closer to the camera taking this photo, the {a.name} or the {b.name}?",
        [a.name, b.name],
        scenes.closer_to_camera(a, b).name,
        "Depth",
    )


def cvbench_distance_question(rng: random.Random, size: int) -> Question:
    for _ in range(MAX_TRIES):
        scene = scenes.perspective_scene(rng, size, rng.randint(3, 4))
        anchor, a, b = rng.sample(scene.shapes, 3)
        da, db = scenes.world_distance(anchor, a), scenes.world_distance(anchor, b)
        if max(da, db) >= 1.5 * min(da, db):
            break
    else:
        raise RuntimeError("could not draw a scene satisfying the question's constraints")
    return Question(
        (scene,),
        "Estimate the real-world distances between objects in this image. "
        f"Which object is closer to the {anchor.name}, the {a.name} or the {b.name}?",
        [a.name, b.name],
        (a if da < db else b).name,
        "Distance",
    )


CVBENCH_GENERATORS: dict[str, Callable[[random.Random, int], Question]] = {
    "Count": cvbench_count_question,
    "Relation": cvbench_relation_question,
    "Depth": cvbench_depth_question,
    "Distance": cvbench_distance_question,
}


def mini_question(kind: str, rng: random.Random, size: int, yes: bool) -> Question:
    """One shape (radius 10–14 px at 56 px, scaled with the image) whose answer to the kind's question is ``yes``."""
    scale = size / 56
    r = rng.uniform(10, 14) * scale
    shape_kind = rng.choice(scenes.SHAPES)
    color = rng.choice(("red", "blue"))
    if kind == "mini_shape":
        shape_kind = "triangle" if yes else rng.choice(("circle", "square"))
    elif kind == "mini_color":
        color = "red" if yes else "blue"
    elif kind == "mini_color_shade":
        color = rng.choice(SHADE_ANSWERS[yes])
    else:
        raise ValueError(f"unknown mini kind {kind!r}; valid kinds: {', '.join(MINI_QUESTIONS)}")
    shape = Shape(kind=shape_kind, color=color, x=rng.uniform(r, size - 1 - r), y=rng.uniform(r, size - 1 - r), r=r)
    answer = "yes" if yes else "no"
    # The shade is the question's sub-type, so that accuracy can be broken down per shade after conversion.
    question_type = f"{kind}:{color}" if kind == "mini_color_shade" else kind
    return Question((Scene(size, (shape,)),), MINI_QUESTIONS[kind], ["yes", "no"], answer, question_type)


# --------------------------------------------------------------------------------------------------------------
# Rows: (kind, seed, index) -> one row of the kind's schema. Pure functions of their arguments.
# --------------------------------------------------------------------------------------------------------------


def _rng(kind: str, seed: int, index: int, salt: str = "") -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so this is stable across processes and Python runs.
    return random.Random(f"{kind}:{seed}:{salt}:{index}")


def synthetic_question(kind: str, seed: int, index: int, image_size: int | None = None) -> Question:
    """The question (with its scenes) of row ``index`` of ``kind`` for ``seed``."""
    size = _check_args(kind, 1, image_size)
    rng = _rng(kind, seed, index)
    if kind == "sat":
        qtype = rng.choices(list(SAT_QUESTION_WEIGHTS), weights=list(SAT_QUESTION_WEIGHTS.values()))[0]
        return SAT_GENERATORS[qtype](rng, size)
    if kind == "cvbench":
        task = list(CVBENCH_TASKS)[index % len(CVBENCH_TASKS)]  # cycling keeps every task present in small files
        return CVBENCH_GENERATORS[task](rng, size)
    # Mini kinds: one "yes" and one "no" in every pair of rows (which comes first is random), so classes balance.
    yes_first = _rng(kind, seed, index // 2, salt="pair").random() < 0.5
    return mini_question(kind, rng, size, yes=(index % 2 == 0) == yes_first)


def synthetic_row(kind: str, seed: int, index: int, image_size: int | None = None) -> dict:
    """Row ``index`` of ``kind`` for ``seed``, in the kind's schema (images as JPEG bytes)."""
    q = synthetic_question(kind, seed, index, image_size)
    images = [scenes.render_jpeg(scene) for scene in q.scenes]
    if kind != "cvbench":
        return {
            "image_bytes": images,
            "question": q.question,
            "answers": q.options,
            "question_type": q.question_type,
            "correct_answer": q.answer,
        }
    dim = CVBENCH_TASKS[q.question_type]
    source = "Omni3D" if dim == "3D" else _rng(kind, seed, index, salt="source").choice(("ADE20K", "COCO"))
    letter = f"({LETTERS[q.options.index(q.answer)]})"
    return {
        "idx": index,
        "type": dim,
        "task": q.question_type,
        "image": {"bytes": images[0], "path": None},
        "question": q.question,
        "choices": q.options,
        "answer": letter,
        "prompt": cvbench_prompt(q.question, q.options),
        "source": source,
    }


def cvbench_prompt(question: str, choices: list[str]) -> str:
    """CV-Bench's ``prompt`` column: the question, then the lettered choices.

    Example:
        >>> print(cvbench_prompt("Which is closer?", ["lamp", "chair"]))
        Which is closer? Select from the following choices.
        (A) lamp
        (B) chair
    """
    lines = [f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    return f"{question} Select from the following choices.\n" + "\n".join(lines)


KINDS: dict[str, tuple[Features, int]] = {
    "sat": (SAT_FEATURES, 112),
    "cvbench": (CVBENCH_FEATURES, 112),
    "mini_shape": (SAT_FEATURES, 56),
    "mini_color": (SAT_FEATURES, 56),
    "mini_color_shade": (SAT_FEATURES, 56),
}


def _check_args(kind: str, rows: int, image_size: int | None) -> int:
    """Validate the arguments; return the image side to use."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a whole number of at least 1; got {rows!r}")
    size = KINDS[kind][1] if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image size must be a whole number of pixels, at least {MIN_IMAGE_SIZE} (the smallest side the tiny "
            f"Qwen2-VL processor accepts); got {image_size!r}"
        )
    return size


def write_synthetic(kind: str, rows: int, seed: int, output: str | Path, image_size: int | None = None) -> Path:
    """Write ``rows`` synthetic rows of ``kind`` to the parquet file ``output``; return its path.

    The file carries the `datasets` feature metadata (so ``load_dataset("parquet", ...)`` sees the real types, e.g.
    CV-Bench's ``image`` as an Image feature). It is written to a temporary file in the same folder and renamed
    into place, so ``output`` never holds a partial file.
    """
    _check_args(kind, rows, image_size)
    features = KINDS[kind][0]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.{os.getpid()}.tmp"
    schema = features.arrow_schema
    start = time.perf_counter()
    try:
        with pq.ParquetWriter(tmp, schema, write_statistics=False) as writer:
            for first in range(0, rows, ROW_GROUP_SIZE):
                batch = [
                    synthetic_row(kind, seed, i, image_size) for i in range(first, min(rows, first + ROW_GROUP_SIZE))
                ]
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("wrote %d %s rows to %s in %.1f s", rows, kind, output, time.perf_counter() - start)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description="Write synthetic rows in SAT's or CV-Bench's exact schema (or the mini experiment's) to parquet.",
    )
    parser.add_argument("--kind", required=True, help=f"one of: {', '.join(KINDS)}")
    parser.add_argument("--rows", type=int, required=True, help="number of rows (at least 1)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--output", required=True, help="the parquet file to write (replaced if it exists)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"image side in pixels, at least {MIN_IMAGE_SIZE} (default: 112 for sat/cvbench, 56 for mini kinds)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        path = write_synthetic(args.kind, args.rows, args.seed, args.output, args.image_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.rows} {args.kind} rows (seed {args.seed}) to {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
