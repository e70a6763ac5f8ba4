"""One SAT row → one record: the checks that skip a bad row (in `SKIP_REASONS` order), the option shuffle, the image
checks and token counts, and the content fingerprint. Pure functions; `data_prep.sat` documents the behaviour."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from dataclasses import dataclass

from PIL import Image

from data_prep.images import (
    IMAGE_FACTOR,
    MAX_PIXELS,
    MIN_PIXELS,
    encode_png,
    fit_image,
    fitted_size,
    image_tokens,
    load_checked,
    strict_loading,
)
from data_prep.sat_source import PrepError
from data_prep.schema import make_record, special_tokens_in

SKIP_REASONS = (
    "question_empty",
    "options_missing",
    "options_invalid",
    "options_duplicate",
    "answer_not_in_options",
    "special_tokens",
    "image_missing",
    "multi_image",
    "image_undecodable",
    "image_aspect_ratio",
    "prompt_too_long",
)
# The records hold the user text only; the recipes wrap it in a prompt template. The longest one (the base-model
# template: ~60 tokens of instructions, the three vision markers and `<image>`) adds about 70 tokens; allow 96.
TEMPLATE_TOKENS = 96
# Without a tokenizer, text is counted as one token per 2 UTF-8 bytes. Qwen2's tokenizer averages about 4 bytes a
# token on English (1 per digit), so this over-counts ordinary questions about twofold: an ordinary SAT row stays far
# inside the budget, and a 100,000-character question is still skipped. Pass --tokenizer for exact counts.
ESTIMATE_BYTES_PER_TOKEN = 2


def image_bytes_of(value: object) -> bytes | None:
    """The encoded bytes of one ``image_bytes`` element (raw bytes or a ``{bytes, path}`` struct), else None.

    Example:
        >>> image_bytes_of(b"abc"), image_bytes_of({"bytes": b"abc", "path": None}), image_bytes_of({"path": "x"})
        (b'abc', b'abc', None)
    """
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > 0:
        return bytes(value)
    return None


def shuffled_options(options: list[str], seed: int, row_index: int) -> list[str]:
    """The options in the order shown to the model: a permutation that depends only on (seed, row index).

    Example:
        >>> shuffled_options(["a", "b", "c"], 0, 7) == shuffled_options(["a", "b", "c"], 0, 7)
        True
        >>> sorted(shuffled_options(["a", "b", "c"], 1, 7))
        ['a', 'b', 'c']
    """
    order = list(options)
    # A string seed is hashed with SHA-512 by `random`: stable across processes, platforms and Python runs.
    random.Random(f"sat-options:{seed}:{row_index}").shuffle(order)
    return order


def check_row(row: dict, multi_image: str = "keep") -> tuple[str | None, list[bytes]]:
    """Every check that needs no image decoding: ``(skip reason or None, the row's image bytes)``.

    Example:
        >>> check_row({"question": "Q?", "answers": ["a", "a "], "correct_answer": "a", "image_bytes": [b"x"]})
        ('options_duplicate', [])
    """
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        return "question_empty", []
    options = row.get("answers")
    if not isinstance(options, (list, tuple)) or len(options) == 0:
        return "options_missing", []
    if not all(isinstance(o, str) and o.strip() for o in options):
        return "options_invalid", []
    if len({o.strip() for o in options}) < len(options):
        return "options_duplicate", []
    answer = row.get("correct_answer")
    if not isinstance(answer, str) or answer not in options:
        return "answer_not_in_options", []
    if any(special_tokens_in(text) for text in (question, *options)):
        return "special_tokens", []
    raw_images = row.get("image_bytes")
    if not isinstance(raw_images, (list, tuple)) or len(raw_images) == 0:
        return "image_missing", []
    images = [image_bytes_of(value) for value in raw_images]
    if any(data is None for data in images):
        return "image_missing", []
    if len(images) > 1 and multi_image == "skip":
        return "multi_image", []
    return None, images


@dataclass(frozen=True)
class ImageBounds:
    """Qwen2-VL's resize bounds the images are fitted to, and whether they are fitted now (``fit_at_prep``) or kept
    as in the source and fitted when the records are loaded (`data_prep.images.FitImages`)."""

    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    factor: int = IMAGE_FACTOR
    fit_at_prep: bool = False


def inspect_image(data: bytes, bounds: ImageBounds) -> tuple[str | None, bytes | None, int, bool]:
    """``(skip reason or None, the bytes to store instead (None: keep ``data``), image tokens at the bounds, whether
    the image is outside the bounds)``.

    The image is opened once and only checked (JPEG at reduced scale), unless it is outside the bounds and
    ``bounds.fit_at_prep``: then it is decoded in full, fitted and re-encoded as PNG.
    """
    try:
        with strict_loading(), Image.open(io.BytesIO(data)) as image:
            try:
                size = fitted_size(image.width, image.height, bounds.min_pixels, bounds.max_pixels, bounds.factor)
            except ValueError:  # smart_resize refuses aspect ratios beyond 200:1
                size = None
            outside = size is not None and size != image.size
            if outside and bounds.fit_at_prep:
                image.load()
                replacement = encode_png(fit_image(image, bounds.min_pixels, bounds.max_pixels, bounds.factor))
            else:
                load_checked(image)
                replacement = None
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError, ...)
        return "image_undecodable", None, 0, False
    if size is None:
        return "image_aspect_ratio", None, 0, False
    return None, replacement, image_tokens(*size, bounds.min_pixels, bounds.max_pixels, bounds.factor), outside


def inspect_row_images(images: list[bytes], bounds: ImageBounds) -> tuple[str | None, list[bytes | None], int, int]:
    """One row's images: ``(skip reason or None, replacement bytes per image (None: unchanged), image tokens,
    images outside the bounds)``."""
    results = [inspect_image(data, bounds) for data in images]
    for reason in ("image_undecodable", "image_aspect_ratio"):  # the row's reason: the first in SKIP_REASONS order
        if any(result[0] == reason for result in results):
            return reason, [], 0, 0
    return (
        None,
        [stored for _, stored, _, _ in results],
        sum(tokens for _, _, tokens, _ in results),
        sum(outside for _, _, _, outside in results),
    )


def build_record(row: dict, images: list[bytes], row_index: int, *, source_name: str, split: str, seed: int) -> dict:
    """The record of a row that passed every check, with the image bytes to store."""
    question_type = row.get("question_type")
    return make_record(
        record_id=f"{source_name}:{split}:{row_index}",
        question=row["question"],
        options=shuffled_options(list(row["answers"]), seed, row_index),
        solution=row["correct_answer"],
        question_type=question_type if isinstance(question_type, str) else "unknown",
        images=[{"bytes": data, "path": None} for data in images],
    )


class TextTokenCounter:
    """Counts the tokens of user texts: with a tokenizer when given, else the estimate of one token per
    `ESTIMATE_BYTES_PER_TOKEN` UTF-8 bytes.

    Example:
        >>> counter = TextTokenCounter()
        >>> counter(["Is the chair left of the table?", "x" * 100_000]), counter.description
        ([16, 50000], 'estimate: 1 token per 2 UTF-8 bytes')
    """

    def __init__(self, tokenizer: str | None = None):
        self._tokenizer = None
        self.description = f"estimate: 1 token per {ESTIMATE_BYTES_PER_TOKEN} UTF-8 bytes"
        if tokenizer is not None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(tokenizer)
            except Exception as err:  # transformers raises OSError, ValueError, ... for a bad name or folder
                raise PrepError(
                    f"cannot load the tokenizer {tokenizer!r} ({err}). Pass a local model or tokenizer folder (or a "
                    "hub id reachable from here) with --tokenizer, or leave it out to use the estimate."
                ) from err
            self.description = f"tokenizer: {tokenizer}"

    def __call__(self, texts: list[str]) -> list[int]:
        if self._tokenizer is None:
            return [math.ceil(len(text.encode("utf-8")) / ESTIMATE_BYTES_PER_TOKEN) for text in texts]
        if not texts:
            return []
        return [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]


def update_fingerprint(digest: hashlib._Hash, record: dict) -> None:
    """Feed one record's content (text fields as canonical JSON, then every image's bytes) into ``digest``."""
    text = {key: value for key, value in record.items() if key != "images"}
    payload = json.dumps(text, sort_keys=True, ensure_ascii=False).encode()
    digest.update(len(payload).to_bytes(8, "little") + payload)
    for image in record["images"]:
        digest.update(len(image["bytes"]).to_bytes(8, "little") + image["bytes"])
