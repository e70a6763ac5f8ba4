"""SAT → experiment-neutral chat records (`data_prep.schema`), streamed, reproducible, and safe on bad rows.

Usage::

    python -m data_prep.sat --input array/SAT --output data/sat_paper --limit 15000 --multi-image skip   # the paper
    python -m data_prep.sat --input SAT_train.parquet --output data/sat_all --num-proc 2

``--input`` is a hub id (streamed with `datasets`), a parquet file, or a folder of parquet files (the files whose
path holds ``--split`` as a word, e.g. ``SAT_train.parquet`` or ``train-00000-of-00004.parquet``; when none does,
the error lists the files and the words that tell them apart). ``image_bytes`` may hold raw encoded bytes or
``{bytes, path}`` image structs. Column types are checked against SAT's schema first (``question``,
``correct_answer`` and ``question_type`` strings, ``answers`` a list of strings, ``image_bytes`` a list of encoded
images).

What it writes: a `datasets` dataset at ``--output`` (``load_from_disk``) with `RECORD_FEATURES` columns, one record
per good source row, in source order, built with ``Dataset.from_generator`` and ``save_to_disk`` in a hidden sibling
folder that is renamed into place when complete (a killed run's hidden folder is removed by the next run). Each
row's options are shuffled by an RNG seeded with (``--seed``, row index), so the result does not depend on batching
or ``--num-proc``. Ids are ``"<source>:<split>:<row index>"`` with the row index counted in the source split
(``<source>`` is the hub id, or the local file/folder name without ``.parquet``).

Images are stored at the resolution the model sees (`data_prep.images`): an image whose Qwen2-VL ``smart_resize``
size at ``--min-pixels``/``--max-pixels``/``--image-factor`` (default: the paper's 3136 / 401408 / 28) differs from
its own size is resized to it (PIL bicubic, as the paper's transformers 4.49 did) and re-encoded losslessly as PNG
(`data_prep.images` says why PNG, and why the source's bytes would not do); every other image keeps the source's
bytes. So the trainer, vLLM and an evaluation at the processor's default bounds all see the same ``image_grid_thw``,
and the torchvision and the PIL processors the same pixels. ``--keep-original-images`` keeps every source image.

Options: ``--limit N`` limits the rows *read* (``--limit 15000 --multi-image skip`` is the paper's "single-image rows
among the first 15,000 train rows"). ``--max-prompt-tokens`` (default 1024, the paper's prompt limit, which counted
image tokens too) skips rows whose prompt would be longer: image tokens at the bounds + the user text's tokens +
`TEMPLATE_TOKENS` for the recipes' prompt template; the text is counted with ``--tokenizer`` when given, else
over-estimated at one token per 2 UTF-8 bytes (`TextTokenCounter`). ``--num-proc P`` checks, resizes and encodes
images in P threads (default: the cores this process may use). A progress bar shows on a terminal.

Speed and memory (``python benchmarks/bench_sat_prep.py``: 5,000 rows of 512x384 JPEG, every image fitted to
504x392): nearly all the time goes to Pillow, per image ~3.7 ms resizing, ~3.3 ms encoding, ~0.6 ms decoding
(cProfile), ~49 s of CPU in all, so ~25 s on two idle cores is the floor for these exact pixels (the former code:
~71 s of CPU, one core). Threads, not processes: Pillow releases the GIL while it decodes, resizes and encodes (a
Python loop in another thread keeps ~90% of its speed meanwhile), so threads use the cores without the start-up and
memory of spawned worker processes, which each import `datasets` again (~2 s of CPU, ~150 MB); measured, threads
were as fast (34.0 / 40.5 s against 37.5 / 44.9 s for 1,500 rows, interleaved runs, load ~6). The former ~1 GB
peak was torch, imported through qwen_vl_utils for ``smart_resize``, whose arithmetic `data_prep.images` now does.
At most 2·P batches of `BATCH_ROWS` rows are in flight, so the memory the process holds does not grow with the
rows; its RSS also counts the pages of the arrow cache that ``save_to_disk`` maps while it copies it (file-backed
pages, which the kernel drops when it needs the memory).

``<output>/prep_report.json`` records rows read / written / skipped by reason, the arguments, the hub revision
read (``--revision``, default the pin in `data_prep.sources`; null for local files), the image bounds and how many
images were resized, a content fingerprint (SHA-256 over the written records, images included, in order: same
input and options, same fingerprint), and ``bytes``: the written rows' images as read and as stored, their ratio,
the input files and the output folder (also logged).

Bad rows are skipped and counted by the first reason that applies, in this order: ``question_empty``,
``options_missing``, ``options_invalid`` (an empty or null option), ``options_duplicate`` (two options equal once
stripped), ``answer_not_in_options``, ``special_tokens`` (the question or an option holds one of the model's
special tokens, e.g. ``<|image_pad|>`` or ``<|im_end|>``: `data_prep.schema.SPECIAL_TOKENS`), ``image_missing``,
``multi_image`` (only with ``--multi-image skip``),
``image_undecodable`` (every image is decoded to check it, at reduced scale for JPEG), ``image_aspect_ratio`` (one
side over 200 times the other: Qwen2-VL's processor refuses it), ``prompt_too_long``. Bad arguments, a missing or
unreadable source, columns of the wrong type, an output path that holds something or cannot be created, and a
conversion that would write no record stop with ``error: ...`` and exit code 2, leaving nothing behind.

Where things live: reading and schema checks in `data_prep.sat_source`, the output folder in `data_prep.sat_output`,
image sizing in `data_prep.images`; this module holds the per-row functions, the conversion loop and the command.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import random
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from data_prep import hub
from data_prep.files import write_atomic
from data_prep.images import (
    IMAGE_FACTOR,
    MAX_PIXELS,
    MIN_PIXELS,
    check_bounds,
    encode_png,
    fit_image,
    fitted_size,
    image_tokens,
    load_checked,
    strict_loading,
)
from data_prep.sat_output import check_output, publish, work_folder
from data_prep.sat_source import PrepError, Source, limited, open_source, read_checked
from data_prep.schema import RECORD_FEATURES, make_record, prompt_text, special_tokens_in

logger = logging.getLogger(__name__)

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
MULTI_IMAGE_MODES = ("keep", "skip")
REPORT_NAME = "prep_report.json"
# The paper's trainer cut prompts to their last 1,024 tokens, image tokens included (its max_prompt_length).
PAPER_MAX_PROMPT_TOKENS = 1024
# The records hold the user text only; the recipes wrap it in a prompt template. The longest one (the base-model
# template: ~60 tokens of instructions, the three vision markers and `<image>`) adds about 70 tokens; allow 96.
TEMPLATE_TOKENS = 96
# Without a tokenizer, text is counted as one token per 2 UTF-8 bytes. Qwen2's tokenizer averages about 4 bytes a
# token on English (1 per digit), so this over-counts ordinary questions about twofold: an ordinary SAT row stays far
# inside the budget, and a 100,000-character question is still skipped. Pass --tokenizer for exact counts.
ESTIMATE_BYTES_PER_TOKEN = 2
BATCH_ROWS = 64  # rows per read / conversion batch: bounds memory and the work handed to one process
LOG_EVERY_ROWS = 10_000  # progress log lines when no progress bar shows (not a terminal)


# --------------------------------------------------------------------------------------------------------------
# Per-example functions (pure)
# --------------------------------------------------------------------------------------------------------------


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
    """Qwen2-VL's resize bounds the images are stored at, and whether originals are kept regardless."""

    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    factor: int = IMAGE_FACTOR
    keep_original: bool = False


def inspect_image(data: bytes, bounds: ImageBounds) -> tuple[str | None, bytes | None, int]:
    """``(skip reason or None, the bytes to store instead (None: keep ``data``), image tokens at the bounds)``.

    The image is opened once: decoded in full and resized when it is outside the bounds, else only checked.
    """
    try:
        with strict_loading(), Image.open(io.BytesIO(data)) as image:
            try:
                size = fitted_size(image.width, image.height, bounds.min_pixels, bounds.max_pixels, bounds.factor)
            except ValueError:  # smart_resize refuses aspect ratios beyond 200:1
                size = None
            if size is None or bounds.keep_original or size == image.size:
                load_checked(image)
                replacement = None
            else:
                image.load()
                replacement = encode_png(fit_image(image, bounds.min_pixels, bounds.max_pixels, bounds.factor))
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError, ...)
        return "image_undecodable", None, 0
    if size is None:
        return "image_aspect_ratio", None, 0
    return None, replacement, image_tokens(*size, bounds.min_pixels, bounds.max_pixels, bounds.factor)


def inspect_row_images(images: list[bytes], bounds: ImageBounds) -> tuple[str | None, list[bytes | None], int]:
    """One row's images: ``(skip reason or None, replacement bytes per image (None: unchanged), image tokens)``."""
    results = [inspect_image(data, bounds) for data in images]
    for reason in ("image_undecodable", "image_aspect_ratio"):  # the row's reason: the first in SKIP_REASONS order
        if any(r == reason for r, _, _ in results):
            return reason, [], 0
    return None, [stored for _, stored, _ in results], sum(tokens for _, _, tokens in results)


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


@dataclass
class _Tally:
    """What the conversion saw, filled in as records are generated."""

    rows_read: int = 0
    rows_written: int = 0
    images_resized: int = 0
    source_image_bytes: int = 0  # the encoded images of the rows written, as read
    stored_image_bytes: int = 0  # ... and as stored
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    finished: bool = False


# --------------------------------------------------------------------------------------------------------------
# Conversion: batches → records, image work in this thread or in worker threads
# --------------------------------------------------------------------------------------------------------------


class _InProcess:
    """The part of `ThreadPoolExecutor` used below, running each call at once in the calling thread."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


def _inspect_batch(image_lists: list[list[bytes]], bounds: ImageBounds) -> list[tuple[str | None, list, int]]:
    """`inspect_row_images` for each row of a batch (the costly part: runs in a worker thread if asked)."""
    return [inspect_row_images(images, bounds) for images in image_lists]


@dataclass(frozen=True)
class _Settings:
    source_name: str
    split: str
    seed: int
    multi_image: str
    bounds: ImageBounds
    max_prompt_tokens: int
    count_text_tokens: TextTokenCounter


def _finish(
    first: int, rows: list[dict], checks: list[tuple[str | None, list[bytes]]], inspected: Future, settings: _Settings
) -> list[tuple[dict | None, str | None, int, int]]:
    """``(record, None, images resized, source image bytes)`` or ``(None, reason, 0, 0)`` for each row of a batch,
    in order."""
    results: list[tuple[dict | None, str | None, int, int]] = []
    image_results = iter(inspected.result())
    kept: list[tuple[int, dict, int]] = []  # (position in results, record, image tokens)
    params = {"source_name": settings.source_name, "split": settings.split, "seed": settings.seed}
    for offset, (row, (reason, images)) in enumerate(zip(rows, checks, strict=True)):
        if reason is None:
            reason, replacements, tokens = next(image_results)
        if reason is not None:
            results.append((None, reason, 0, 0))
            continue
        stored = [new if new is not None else old for old, new in zip(images, replacements, strict=True)]
        record = build_record(row, stored, first + offset, **params)
        kept.append((len(results), record, tokens))
        results.append((record, None, sum(new is not None for new in replacements), sum(map(len, images))))
    text_tokens = settings.count_text_tokens([prompt_text(record["messages"]) for _, record, _ in kept])
    for (position, _, tokens), text in zip(kept, text_tokens, strict=True):
        if tokens + text + TEMPLATE_TOKENS > settings.max_prompt_tokens:
            results[position] = (None, "prompt_too_long", 0, 0)
    return results


def _converted_batches(
    batches: Iterator[list[dict]], settings: _Settings, num_proc: int
) -> Iterator[list[tuple[dict | None, str | None, int, int]]]:
    """Convert batches in order (see `_finish`).

    The cheap checks and the records are made here; image decoding, resizing and encoding, the costly part, run
    here too or in ``num_proc`` worker threads (Pillow releases the GIL while it decodes, resizes and encodes, so
    threads use the cores without the start-up and memory of worker processes; see the module docstring), which
    get only image bytes and give back a reason, the resized bytes (if any) and a token count per row. At most
    2·num_proc batches are in flight, so reading never runs far ahead of the image work and memory stays flat.
    """
    pool = ThreadPoolExecutor(num_proc, thread_name_prefix="sat-images") if num_proc > 1 else None
    with pool or _InProcess() as executor:
        pending: deque = deque()
        first = 0
        for rows in batches:
            checks = [check_row(row, settings.multi_image) for row in rows]
            inspected = executor.submit(
                _inspect_batch, [images for reason, images in checks if reason is None], settings.bounds
            )
            pending.append((first, rows, checks, inspected))
            first += len(rows)
            if len(pending) >= 2 * num_proc:
                yield _finish(*pending.popleft(), settings)
        while pending:
            yield _finish(*pending.popleft(), settings)


def _generate_records(
    opened: Source, source: str, limit: int | None, settings: _Settings, num_proc: int, tally: _Tally
) -> Iterator[dict]:
    """The records to save, in source order; fills ``tally`` as it goes (the generator of `Dataset.from_generator`)."""
    total = opened.num_rows()
    total = limit if total is None else min(total, limit or total)
    next_log = LOG_EVERY_ROWS
    batches = read_checked(limited(opened.batches(BATCH_ROWS), limit), source)
    with tqdm(total=total, unit=" rows", desc="converting SAT", disable=None) as bar:
        for results in _converted_batches(batches, settings, num_proc):
            for record, reason, resized, source_bytes in results:
                tally.rows_read += 1
                if record is None:
                    tally.skipped[reason] += 1
                    continue
                update_fingerprint(tally.digest, record)
                tally.rows_written += 1
                tally.images_resized += resized
                tally.source_image_bytes += source_bytes
                tally.stored_image_bytes += sum(len(image["bytes"]) for image in record["images"])
                yield record
            bar.update(len(results))
            bar.set_postfix(written=tally.rows_written, refresh=False)
            if bar.disable and tally.rows_read >= next_log:
                logger.info("read %d rows, wrote %d", tally.rows_read, tally.rows_written)
                next_log += LOG_EVERY_ROWS
    tally.finished = True


def _save(records: Callable[[], Iterator[dict]], work: Path, tally: _Tally) -> Path:
    """Save the generated records with `datasets` (arrow cache in ``work/cache``); return the saved folder."""
    import datasets
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # our own bar counts the rows; theirs would only repeat it
    try:
        dataset = Dataset.from_generator(
            records,
            features=RECORD_FEATURES,
            cache_dir=str(work / "cache"),
            fingerprint=uuid.uuid4().hex,  # a fresh cache entry every run; also spares hashing the generator
        )
        logger.info("saving %d records", len(dataset))
        dataset.save_to_disk(str(work / "dataset"))
    except (DatasetGenerationError, ValueError) as err:
        if tally.finished and tally.rows_written == 0:
            return work / "dataset"  # nothing to save: the caller reports it
        if isinstance(err, DatasetGenerationError) and err.__cause__ is not None:
            raise err.__cause__ from None  # the conversion's own error (a PrepError, say), not the wrapper
        raise
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return work / "dataset"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which a container or `taskset` may restrict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sizes(tally: _Tally, opened: Source, saved: Path) -> dict:
    """What the conversion stored against what it read, in bytes (the report's ``bytes``)."""
    output = sum(path.stat().st_size for path in saved.rglob("*") if path.is_file())
    return {
        "source_images": tally.source_image_bytes,
        "stored_images": tally.stored_image_bytes,
        "stored_vs_source_images": round(tally.stored_image_bytes / max(tally.source_image_bytes, 1), 3),
        "source_files": sum(path.stat().st_size for path in opened.files) if opened.files else None,
        "output": output,
    }


def _log_sizes(sizes: dict) -> None:
    source_files = sizes["source_files"]
    logger.info(
        "stored images: %.1f MB for %.1f MB of source images (x%.2f); output %.1f MB%s",
        sizes["stored_images"] / 1e6,
        sizes["source_images"] / 1e6,
        sizes["stored_vs_source_images"],
        sizes["output"] / 1e6,
        "" if source_files is None else f" for {source_files / 1e6:.1f} MB of input files",
    )


def convert(
    source: str,
    output: str | Path,
    *,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    multi_image: str = "keep",
    num_proc: int | None = None,
    max_prompt_tokens: int = PAPER_MAX_PROMPT_TOKENS,
    tokenizer: str | None = None,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    image_factor: int = IMAGE_FACTOR,
    keep_original_images: bool = False,
    revision: str | None = None,
) -> dict:
    """Convert the SAT rows of ``source`` into records saved at ``output``; return the report (also saved there).

    ``num_proc`` threads do the image work (default: `available_cores`). Raises `PrepError` (and leaves everything
    that existed untouched) for bad arguments, a missing or unreadable source, an ``output`` that already holds
    something or cannot be created, or no record to write.
    """
    num_proc = available_cores() if num_proc is None else num_proc
    if multi_image not in MULTI_IMAGE_MODES:
        raise PrepError(f"multi_image must be one of {', '.join(MULTI_IMAGE_MODES)}; got {multi_image!r}")
    if limit is not None and limit < 1:
        raise PrepError(f"limit must be at least 1 (or None for every row); got {limit}")
    if num_proc < 1:
        raise PrepError(f"num_proc must be at least 1; got {num_proc}")
    if max_prompt_tokens < 1:
        raise PrepError(f"max_prompt_tokens must be at least 1; got {max_prompt_tokens}")
    try:
        check_bounds(min_pixels, max_pixels, image_factor)
    except ValueError as err:
        raise PrepError(f"{err}. Fix --min-pixels / --max-pixels / --image-factor.") from err
    output = Path(output).expanduser()
    check_output(output)
    opened = open_source(source, split, revision)
    settings = _Settings(
        source_name=opened.name,
        split=split,
        seed=seed,
        multi_image=multi_image,
        bounds=ImageBounds(min_pixels, max_pixels, image_factor, keep_original_images),
        max_prompt_tokens=max_prompt_tokens,
        count_text_tokens=TextTokenCounter(tokenizer),
    )

    tally = _Tally()
    start = time.perf_counter()
    # Strict loading is switched on once, here, for the whole conversion: the image threads' own switches then only
    # ever restore "strict", so none of them can find truncated images allowed by another thread's restore.
    with work_folder(output) as work, strict_loading():
        records = _generate_records(opened, source, limit, settings, num_proc, tally)
        try:
            saved = _save(lambda: records, work, tally)
        finally:
            records.close()
        if tally.rows_written == 0:
            reasons = ", ".join(f"{k}={v}" for k, v in tally.skipped.items() if v) or "the source has no rows"
            raise PrepError(
                f"no record to write: all {tally.rows_read} rows read were skipped ({reasons}). Nothing was written; "
                "check the input (the skip reasons are listed in data_prep/sat.py) and run again."
            )
        report = {
            "source": source,
            "source_name": opened.name,
            "source_files": [str(f) for f in opened.files],
            "revision": opened.revision,  # the hub revision read (data_prep/sources.py); None for local files
            "split": split,
            "limit": limit,
            "seed": seed,
            "multi_image": multi_image,
            "num_proc": num_proc,
            "max_prompt_tokens": max_prompt_tokens,
            "prompt_tokens_counted_with": settings.count_text_tokens.description,
            "template_tokens_allowed": TEMPLATE_TOKENS,
            "images": {
                "min_pixels": min_pixels,
                "max_pixels": max_pixels,
                "factor": image_factor,
                "keep_original": keep_original_images,
                "resized": tally.images_resized,
            },
            "rows_read": tally.rows_read,
            "rows_written": tally.rows_written,
            "rows_skipped": tally.rows_read - tally.rows_written,
            "skipped_by_reason": tally.skipped,
            "fingerprint": tally.digest.hexdigest(),
            "bytes": _sizes(tally, opened, saved),
            "seconds": round(time.perf_counter() - start, 3),
        }
        _log_sizes(report["bytes"])
        write_atomic(saved / REPORT_NAME, json.dumps(report, indent=2) + "\n")
        publish(saved, output)
    logger.debug("wrote %d of %d rows to %s", tally.rows_written, tally.rows_read, output)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.sat",
        description="Convert SAT (hub id, parquet file or folder) into chat records saved with datasets.",
    )
    parser.add_argument("--input", required=True, help="hub id (array/SAT), a parquet file, or a folder of them")
    parser.add_argument("--output", required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument("--split", default="train", help="source split (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N rows of the split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the option shuffling (default: 0)")
    parser.add_argument(
        "--multi-image", choices=MULTI_IMAGE_MODES, default="keep", help="keep or skip rows with several images"
    )
    parser.add_argument(
        "--num-proc",
        type=int,
        default=None,
        help=f"threads for the image checks, resizing and encoding (default: the available cores, here "
        f"{available_cores()})",
    )
    parser.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=PAPER_MAX_PROMPT_TOKENS,
        help=f"skip rows whose prompt (image tokens, text, template) would exceed this (default: "
        f"{PAPER_MAX_PROMPT_TOKENS}, the paper's limit)",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer (model folder or hub id) that counts the prompt's text tokens; default: an over-estimate",
    )
    parser.add_argument(
        "--min-pixels", type=int, default=MIN_PIXELS, help=f"images' minimum area (default: {MIN_PIXELS})"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"images' maximum area (default: {MAX_PIXELS})"
    )
    parser.add_argument(
        "--image-factor", type=int, default=IMAGE_FACTOR, help=f"image sides' multiple (default: {IMAGE_FACTOR})"
    )
    parser.add_argument(
        "--keep-original-images",
        action="store_true",
        help="store every image as in the source, even those outside the bounds",
    )
    parser.add_argument(
        "--revision",
        default=None,
        help="hub revision (branch, tag or 40-hex commit) of a hub --input; default: the pin in data_prep/sources.py",
    )
    parser.add_argument(
        "--push_to_hub",
        metavar="REPO",
        default=None,
        help="then publish the records with a dataset card (data_prep/hub.py)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.push_to_hub and (problem := hub.push_problem(args.push_to_hub)):  # before hours of conversion
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        report = convert(
            args.input,
            args.output,
            split=args.split,
            limit=args.limit,
            seed=args.seed,
            multi_image=args.multi_image,
            num_proc=args.num_proc,
            max_prompt_tokens=args.max_prompt_tokens,
            tokenizer=args.tokenizer,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            image_factor=args.image_factor,
            keep_original_images=args.keep_original_images,
            revision=args.revision,
        )
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reasons = ", ".join(f"{k}={v}" for k, v in report["skipped_by_reason"].items() if v) or "none"
    print(
        f"wrote {report['rows_written']} records to {args.output} (read {report['rows_read']}, skipped "
        f"{report['rows_skipped']}: {reasons}; {report['images']['resized']} images resized; stored images "
        f"x{report['bytes']['stored_vs_source_images']:.2f} the source's bytes) in {report['seconds']:.1f} s; "
        f"fingerprint {report['fingerprint'][:16]}"
    )
    if args.push_to_hub:
        command = ["python", "-m", "data_prep.sat", *(sys.argv[1:] if argv is None else argv)]
        try:
            print(f"pushed to {hub.push_folder(args.output, args.push_to_hub, command)}")
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
