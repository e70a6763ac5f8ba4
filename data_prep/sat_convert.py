"""The conversion loop of `data_prep.sat`: source batches → records in source order (image work in worker threads),
saved with `datasets`, with the tally that becomes ``prep_report.json``."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from data_prep.sat_rows import (
    SKIP_REASONS,
    TEMPLATE_TOKENS,
    ImageBounds,
    TextTokenCounter,
    build_record,
    check_row,
    inspect_row_images,
    update_fingerprint,
)
from data_prep.sat_source import Source, limited, read_checked
from data_prep.schema import RECORD_FEATURES, prompt_text

logger = logging.getLogger(__name__)

BATCH_ROWS = 64  # rows per read / conversion batch: bounds memory and the work handed to one process
LOG_EVERY_ROWS = 10_000  # progress log lines when no progress bar shows (not a terminal)


@dataclass
class Tally:
    """What the conversion saw, filled in as records are generated."""

    rows_read: int = 0
    rows_written: int = 0
    images_outside_bounds: int = 0  # fitted at prep, or to fit when loaded
    source_image_bytes: int = 0  # the encoded images of the rows written, as read
    stored_image_bytes: int = 0  # ... and as stored
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    finished: bool = False


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
class Settings:
    source_name: str
    split: str
    seed: int
    multi_image: str
    bounds: ImageBounds
    max_prompt_tokens: int
    count_text_tokens: TextTokenCounter


def _finish(
    first: int, rows: list[dict], checks: list[tuple[str | None, list[bytes]]], inspected: Future, settings: Settings
) -> list[tuple[dict | None, str | None, int, int]]:
    """``(record, None, images outside the bounds, source image bytes)`` or ``(None, reason, 0, 0)`` for each row of
    a batch, in order."""
    results: list[tuple[dict | None, str | None, int, int]] = []
    image_results = iter(inspected.result())
    kept: list[tuple[int, dict, int]] = []  # (position in results, record, image tokens)
    params = {"source_name": settings.source_name, "split": settings.split, "seed": settings.seed}
    for offset, (row, (reason, images)) in enumerate(zip(rows, checks, strict=True)):
        if reason is None:
            reason, replacements, tokens, outside = next(image_results)
        if reason is not None:
            results.append((None, reason, 0, 0))
            continue
        stored = [new if new is not None else old for old, new in zip(images, replacements, strict=True)]
        record = build_record(row, stored, first + offset, **params)
        kept.append((len(results), record, tokens))
        results.append((record, None, outside, sum(map(len, images))))
    text_tokens = settings.count_text_tokens([prompt_text(record["messages"]) for _, record, _ in kept])
    for (position, _, tokens), text in zip(kept, text_tokens, strict=True):
        if tokens + text + TEMPLATE_TOKENS > settings.max_prompt_tokens:
            results[position] = (None, "prompt_too_long", 0, 0)
    return results


def _converted_batches(
    batches: Iterator[list[dict]], settings: Settings, num_proc: int
) -> Iterator[list[tuple[dict | None, str | None, int, int]]]:
    """Convert batches in order (see `_finish`).

    The cheap checks and the records are made here; image decoding, resizing and encoding, the costly part, run
    here too or in ``num_proc`` worker threads (Pillow releases the GIL while it decodes, resizes and encodes, so
    threads use the cores without the start-up and memory of worker processes; see the module docstring), which
    get only image bytes and give back per row a reason, the resized bytes (if any), a token count and the number
    of images outside the bounds. At most 2·num_proc batches are in flight, so reading never runs far ahead of the
    image work and memory stays flat.
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


def generate_records(
    opened: Source, source: str, limit: int | None, settings: Settings, num_proc: int, tally: Tally
) -> Iterator[dict]:
    """The records to save, in source order; fills ``tally`` as it goes (the generator of `Dataset.from_generator`)."""
    total = opened.num_rows()
    total = limit if total is None else min(total, limit or total)
    next_log = LOG_EVERY_ROWS
    batches = read_checked(limited(opened.batches(BATCH_ROWS), limit), source)
    with tqdm(total=total, unit=" rows", desc="converting SAT", disable=None) as bar:
        for results in _converted_batches(batches, settings, num_proc):
            for record, reason, outside, source_bytes in results:
                tally.rows_read += 1
                if record is None:
                    tally.skipped[reason] += 1
                    continue
                update_fingerprint(tally.digest, record)
                tally.rows_written += 1
                tally.images_outside_bounds += outside
                tally.source_image_bytes += source_bytes
                tally.stored_image_bytes += sum(len(image["bytes"]) for image in record["images"])
                yield record
            bar.update(len(results))
            bar.set_postfix(written=tally.rows_written, refresh=False)
            if bar.disable and tally.rows_read >= next_log:
                logger.info("read %d rows, wrote %d", tally.rows_read, tally.rows_written)
                next_log += LOG_EVERY_ROWS
    tally.finished = True


def save(records: Callable[[], Iterator[dict]], work: Path, tally: Tally) -> Path:
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


def sizes(tally: Tally, opened: Source, saved: Path) -> dict:
    """What the conversion stored against what it read, in bytes (the report's ``bytes``)."""
    output = sum(path.stat().st_size for path in saved.rglob("*") if path.is_file())
    return {
        "source_images": tally.source_image_bytes,
        "stored_images": tally.stored_image_bytes,
        "stored_vs_source_images": round(tally.stored_image_bytes / max(tally.source_image_bytes, 1), 3),
        "source_files": sum(path.stat().st_size for path in opened.files) if opened.files else None,
        "output": output,
    }


def log_sizes(sizes: dict) -> None:
    source_files = sizes["source_files"]
    logger.info(
        "stored images: %.1f MB for %.1f MB of source images (x%.2f); output %.1f MB%s",
        sizes["stored_images"] / 1e6,
        sizes["source_images"] / 1e6,
        sizes["stored_vs_source_images"],
        sizes["output"] / 1e6,
        "" if source_files is None else f" for {source_files / 1e6:.1f} MB of input files",
    )
