"""SAT → experiment-neutral chat records (`data_prep.schema`), streamed, reproducible, and safe on bad rows.

Usage::

    python -m data_prep.sat --input array/SAT --output data/sat_paper --limit 15000 --multi-image skip   # the paper
    python -m data_prep.sat --input SAT_train.parquet --output data/sat_all --num-proc 2

``--input`` is a hub id (streamed with `datasets`), a parquet file, or a folder of parquet files (the files whose
name holds the split as a word, e.g. ``SAT_train.parquet`` or ``train-00000-of-00004.parquet``, or every parquet file
when none does). ``image_bytes`` may hold raw encoded bytes or ``{bytes, path}`` image structs.

What it writes: a `datasets` dataset at ``--output`` (``load_from_disk``) with `RECORD_FEATURES` columns, one record
per good source row, in source order. Each row's options are shuffled by an RNG seeded with (``--seed``, row index),
so the result does not depend on batching or ``--num-proc``. Ids are ``"<source>:<split>:<row index>"`` with the row
index counted in the source split (``<source>`` is the hub id, or the local file/folder name without ``.parquet``).
Images keep the source's encoded bytes. ``--limit N`` limits the rows *read*: ``--limit 15000 --multi-image skip``
is the paper's "single-image rows among the first 15,000 train rows". ``--num-proc P`` decode-checks images in P
worker processes; they take ~1-2 s to start and pay off only for large images on idle cores.

``<output>/prep_report.json`` records rows read / written / skipped by reason, the arguments, and a content
fingerprint (SHA-256 over the written records, images included, in order): same input and seed, same fingerprint.

Bad rows are skipped and counted by the first reason that applies, in this order: ``question_empty``,
``options_missing``, ``options_invalid`` (an empty or null option), ``answer_not_in_options``, ``image_missing``,
``multi_image`` (only with ``--multi-image skip``), ``image_undecodable`` (every image is decoded to check it, at
reduced scale for JPEG). A missing or unreadable source, or an output path that already holds something, stops
with a message and exit code 2; the output folder appears only when complete (it is written to a hidden sibling
folder and renamed).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import multiprocessing
import random
import re
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageFile

from data_prep.schema import RECORD_FEATURES, make_record

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image_bytes", "question", "answers", "correct_answer")
OPTIONAL_COLUMNS = ("question_type",)
SKIP_REASONS = (
    "question_empty",
    "options_missing",
    "options_invalid",
    "answer_not_in_options",
    "image_missing",
    "multi_image",
    "image_undecodable",
)
MULTI_IMAGE_MODES = ("keep", "skip")
REPORT_NAME = "prep_report.json"
BATCH_ROWS = 64  # rows per read / conversion batch: bounds memory and the work handed to one process
READ_BUFFER_BYTES = 8 << 20  # read column chunks through a buffer (no pre-buffering): huge files still stream
LOG_EVERY_ROWS = 10_000
MAX_SHARD_BYTES = 500 << 20  # like `Dataset.save_to_disk`'s default shard size
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PrepError(Exception):
    """A problem with the arguments or the input that the user must fix; the message says what and how."""


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


def image_decodes(data: bytes) -> bool:
    """True when ``data`` decodes completely as an image (JPEGs are decoded at reduced scale, which still reads
    every byte of the compressed data, so truncation is caught)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft("RGB", (1, 1))
            image.load()
        return True
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError, ...)
        return False


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
    """Every check but decoding: ``(skip reason or None, the row's image bytes)``."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        return "question_empty", []
    options = row.get("answers")
    if not isinstance(options, (list, tuple)) or len(options) == 0:
        return "options_missing", []
    if not all(isinstance(o, str) and o.strip() for o in options):
        return "options_invalid", []
    answer = row.get("correct_answer")
    if not isinstance(answer, str) or answer not in options:
        return "answer_not_in_options", []
    raw_images = row.get("image_bytes")
    if not isinstance(raw_images, (list, tuple)) or len(raw_images) == 0:
        return "image_missing", []
    images = [image_bytes_of(value) for value in raw_images]
    if any(data is None for data in images):
        return "image_missing", []
    if len(images) > 1 and multi_image == "skip":
        return "multi_image", []
    return None, images


def build_record(row: dict, images: list[bytes], row_index: int, *, source_name: str, split: str, seed: int) -> dict:
    """The record of a row that passed every check."""
    question_type = row.get("question_type")
    return make_record(
        record_id=f"{source_name}:{split}:{row_index}",
        question=row["question"],
        options=shuffled_options(list(row["answers"]), seed, row_index),
        solution=row["correct_answer"],
        question_type=question_type if isinstance(question_type, str) else "unknown",
        images=[{"bytes": data, "path": None} for data in images],
    )


def convert_row(
    row: dict, row_index: int, *, source_name: str, split: str, seed: int, multi_image: str = "keep"
) -> tuple[dict | None, str | None]:
    """One SAT row → ``(record, None)``, or ``(None, reason)`` when the row must be skipped (see `SKIP_REASONS`)."""
    reason, images = check_row(row, multi_image)
    if reason is None and not _decode_flags([images])[0]:
        reason = "image_undecodable"
    if reason is not None:
        return None, reason
    return build_record(row, images, row_index, source_name=source_name, split=split, seed=seed), None


def _decode_flags(image_lists: list[list[bytes]]) -> list[bool]:
    """For each row's images: do they all decode? (The expensive part; runs in worker processes if asked.)"""
    with _strict_image_loading():
        return [all(image_decodes(data) for data in images) for images in image_lists]


@contextmanager
def _strict_image_loading() -> Iterator[None]:
    """Make sure PIL refuses truncated images even if another library relaxed it for the process."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def update_fingerprint(digest: hashlib._Hash, record: dict) -> None:
    """Feed one record's content (text fields as canonical JSON, then every image's bytes) into ``digest``."""
    text = {key: value for key, value in record.items() if key != "images"}
    payload = json.dumps(text, sort_keys=True, ensure_ascii=False).encode()
    digest.update(len(payload).to_bytes(8, "little") + payload)
    for image in record["images"]:
        digest.update(len(image["bytes"]).to_bytes(8, "little") + image["bytes"])


# --------------------------------------------------------------------------------------------------------------
# Sources: hub id, parquet file, folder of parquet files → batches of row dicts
# --------------------------------------------------------------------------------------------------------------


class Source:
    """An opened input: ``name`` (used in record ids), ``files`` (local parquet files, if any), ``batches()``."""

    def __init__(self, name: str, files: list[Path] | None = None, hub_dataset=None):
        self.name = name
        self.files = files or []
        self._hub_dataset = hub_dataset

    def batches(self, batch_rows: int) -> Iterator[list[dict]]:
        if self._hub_dataset is not None:
            for batch in self._hub_dataset.iter(batch_size=batch_rows):
                keys = list(batch)
                yield [dict(zip(keys, values, strict=True)) for values in zip(*(batch[k] for k in keys), strict=True)]
            return
        for path in self.files:
            reader = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
            columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in reader.schema_arrow.names]
            try:
                for batch in reader.iter_batches(batch_size=batch_rows, columns=columns):
                    yield batch.to_pylist()
            finally:
                reader.close()


def _split_files(folder: Path, split: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    token = re.compile(rf"(?<![a-z0-9]){re.escape(split.lower())}(?![a-z0-9])")
    matching = [p for p in files if token.search(str(p.relative_to(folder)).lower())]
    return matching or files


def _check_parquet(path: Path) -> None:
    try:
        with pq.ParquetFile(path) as reader:
            names = reader.schema_arrow.names
    except Exception as err:
        raise PrepError(
            f"cannot read {path} as parquet ({err}). Check that it is a complete parquet file (re-download it if "
            "it was cut short)."
        ) from err
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise PrepError(
            f"{path} lacks the SAT column(s) {', '.join(missing)} (it has: {', '.join(names)}). "
            f"A SAT file needs the columns {', '.join(REQUIRED_COLUMNS)} (and usually question_type)."
        )


def open_source(source: str, split: str) -> Source:
    """Resolve ``source`` (local file, local folder, or hub id) and check it can be read; raise `PrepError` if not."""
    path = Path(source).expanduser()
    if path.is_file():
        _check_parquet(path)
        return Source(path.name.removesuffix(".parquet"), files=[path])
    if path.is_dir():
        files = _split_files(path, split)
        if not files:
            raise PrepError(
                f"the folder {path} holds no .parquet files. Point --input at a SAT parquet file or folder."
            )
        for file in files:
            _check_parquet(file)
        logger.info("reading %d parquet file(s) from %s: %s", len(files), path, ", ".join(f.name for f in files))
        return Source(path.name, files=files)
    if path.suffix == ".parquet" or not HUB_ID.match(source):
        raise PrepError(
            f"the input {source!r} does not exist. Pass an existing parquet file or folder, or a hub id such as "
            "array/SAT."
        )
    return _open_hub(source, split)


def _open_hub(source: str, split: str) -> Source:
    from datasets import load_dataset

    try:
        dataset = load_dataset(source, split=split, streaming=True)
    except Exception as err:
        raise PrepError(
            f"the input {source!r} is not a local file or folder, and loading it from the Hugging Face hub (split "
            f"{split!r}) failed: {err}. Check the id, the split and your network (offline mode: HF_HUB_OFFLINE / "
            "HF_DATASETS_OFFLINE), or download the parquet files and pass the file or folder with --input."
        ) from err
    # The card may declare image_bytes as images; read the encoded bytes, never decoded PIL images.
    dataset = dataset.decode(False)
    if dataset.column_names is not None:
        missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
        if missing:
            raise PrepError(
                f"the hub dataset {source!r} (split {split!r}) lacks the SAT column(s) {', '.join(missing)} "
                f"(it has: {', '.join(dataset.column_names)}). Is it a SAT-format dataset?"
            )
    return Source(source, hub_dataset=dataset)


# --------------------------------------------------------------------------------------------------------------
# Output: Arrow shards written as records arrive, then the `save_to_disk` layout
# --------------------------------------------------------------------------------------------------------------


class _ShardWriter:
    """Writes records to Arrow shards in ``folder`` with bounded memory; `close` gives `load_from_disk`'s layout."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.shards: list[Path] = []
        self._writer = None
        self._shard_bytes = 0

    def write(self, records: list[dict]) -> None:
        from datasets.arrow_writer import ArrowWriter

        if not records:
            return
        if self._writer is None or self._shard_bytes >= MAX_SHARD_BYTES:
            self._finish_shard()
            self.shards.append(self.folder / f"shard-{len(self.shards):05d}.arrow")
            self._writer = ArrowWriter(features=RECORD_FEATURES, path=str(self.shards[-1]))
        self._writer.write_batch({key: [r[key] for r in records] for key in RECORD_FEATURES})
        self._shard_bytes += sum(len(i["bytes"]) for r in records for i in r["images"])

    def _finish_shard(self) -> None:
        if self._writer is not None:
            self._writer.finalize()
            self._writer.close()
            self._writer = None
            self._shard_bytes = 0

    def close(self, fingerprint: str) -> None:
        """Finish the last shard and write the files `datasets.load_from_disk` reads (as `save_to_disk` does)."""
        from datasets import DatasetInfo
        from datasets.arrow_writer import ArrowWriter

        self._finish_shard()
        if not self.shards:  # no good rows: still a valid, empty dataset with the right features
            self.shards.append(self.folder / "shard-00000.arrow")
            with ArrowWriter(features=RECORD_FEATURES, path=str(self.shards[0])) as writer:
                writer.finalize()
        names = []
        for i, shard in enumerate(self.shards):
            name = f"data-{i:05d}-of-{len(self.shards):05d}.arrow"
            shard.rename(self.folder / name)
            names.append(name)
        DatasetInfo(
            description="SAT rows converted by data_prep.sat; see prep_report.json", features=RECORD_FEATURES
        ).write_to_directory(str(self.folder))
        state = {
            "_data_files": [{"filename": name} for name in names],
            "_fingerprint": fingerprint[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _holds_something(path: Path) -> bool:
    """True when ``path`` exists and is not an empty directory (an empty directory may be replaced)."""
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


class _InProcess:
    """The part of `ProcessPoolExecutor` used below, running each call at once in this process."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


def _finish(
    first: int, rows: list[dict], checks: list[tuple[str | None, list[bytes]]], decodable: Future, params: dict
) -> list[tuple[dict | None, str | None]]:
    flags = iter(decodable.result())
    results = []
    for offset, (row, (reason, images)) in enumerate(zip(rows, checks, strict=True)):
        if reason is None and not next(flags):
            reason = "image_undecodable"
        results.append((None if reason else build_record(row, images, first + offset, **params), reason))
    return results


def _converted_batches(
    batches: Iterator[list[dict]], multi_image: str, record_params: dict, num_proc: int
) -> Iterator[list[tuple[dict | None, str | None]]]:
    """Convert batches in order: ``(record, None)`` or ``(None, reason)`` per row.

    The cheap checks and the records are made here; image decoding, the costly part, runs here too or in
    ``num_proc`` worker processes that get only image bytes and send back one flag per row. At most 2·num_proc
    batches are in flight, so reading never runs far ahead of decoding and memory stays flat.
    """
    pool = ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("spawn")) if num_proc > 1 else None
    with pool or _InProcess() as executor:
        pending: deque = deque()
        first = 0
        for rows in batches:
            checks = [check_row(row, multi_image) for row in rows]
            decodable = executor.submit(_decode_flags, [images for reason, images in checks if reason is None])
            pending.append((first, rows, checks, decodable))
            first += len(rows)
            if len(pending) >= 2 * num_proc:
                yield _finish(*pending.popleft(), record_params)
        while pending:
            yield _finish(*pending.popleft(), record_params)


def _limited(batches: Iterator[list[dict]], limit: int | None) -> Iterator[list[dict]]:
    seen = 0
    for rows in batches:
        if limit is not None and seen + len(rows) >= limit:
            yield rows[: limit - seen]
            return
        seen += len(rows)
        yield rows


def convert(
    source: str,
    output: str | Path,
    *,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    multi_image: str = "keep",
    num_proc: int = 1,
) -> dict:
    """Convert the SAT rows of ``source`` into records saved at ``output``; return the report (also saved there).

    Raises `PrepError` (and leaves everything that existed untouched) for bad arguments, a missing or unreadable
    source, or an ``output`` that already holds something.
    """
    if multi_image not in MULTI_IMAGE_MODES:
        raise PrepError(f"multi_image must be one of {', '.join(MULTI_IMAGE_MODES)}; got {multi_image!r}")
    if limit is not None and limit < 1:
        raise PrepError(f"limit must be at least 1 (or None for every row); got {limit}")
    if num_proc < 1:
        raise PrepError(f"num_proc must be at least 1; got {num_proc}")
    output = Path(output).expanduser()
    if _holds_something(output):
        raise PrepError(f"the output path {output} already exists. Choose a new --output or delete it first.")
    opened = open_source(source, split)

    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    writer = _ShardWriter(work)
    record_params = {"source_name": opened.name, "split": split, "seed": seed}
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    digest = hashlib.sha256()
    rows_read = rows_written = 0
    next_log = LOG_EVERY_ROWS
    start = time.perf_counter()
    try:
        batches = _limited(opened.batches(BATCH_ROWS), limit)
        checked = _read_checked(batches, source)
        for results in _converted_batches(checked, multi_image, record_params, num_proc):
            records = []
            for record, reason in results:
                rows_read += 1
                if record is None:
                    skipped[reason] += 1
                    continue
                update_fingerprint(digest, record)
                records.append(record)
            writer.write(records)
            rows_written += len(records)
            if rows_read >= next_log:
                logger.info("read %d rows, wrote %d", rows_read, rows_written)
                next_log += LOG_EVERY_ROWS
        fingerprint = digest.hexdigest()
        writer.close(fingerprint)
        report = {
            "source": source,
            "source_name": opened.name,
            "source_files": [str(f) for f in opened.files],
            "split": split,
            "limit": limit,
            "seed": seed,
            "multi_image": multi_image,
            "num_proc": num_proc,
            "rows_read": rows_read,
            "rows_written": rows_written,
            "rows_skipped": rows_read - rows_written,
            "skipped_by_reason": skipped,
            "fingerprint": fingerprint,
            "seconds": round(time.perf_counter() - start, 3),
        }
        (work / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if _holds_something(output):  # appeared while we were converting: never clobber it
            raise PrepError(f"the output path {output} appeared during the conversion; choose a new --output.")
        work.replace(output)
    except BaseException:
        writer.abort()
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.debug("wrote %d of %d rows to %s", rows_written, rows_read, output)
    return report


def _read_checked(batches: Iterator[list[dict]], source: str) -> Iterator[list[dict]]:
    """Turn read failures in the middle of the source (corrupt pages, lost connection) into a `PrepError`."""
    rows = 0
    try:
        for batch in batches:
            yield batch
            rows += len(batch)
    except (OSError, ValueError, RuntimeError) as err:  # pyarrow's errors derive from these
        raise PrepError(
            f"reading {source!r} failed after {rows} rows: {err}. Nothing was written; check or re-download the "
            "input and run again."
        ) from err


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
        default=1,
        help="processes for the image decoding checks (default: 1); helps with large images on idle cores only",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = convert(
            args.input,
            args.output,
            split=args.split,
            limit=args.limit,
            seed=args.seed,
            multi_image=args.multi_image,
            num_proc=args.num_proc,
        )
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reasons = ", ".join(f"{k}={v}" for k, v in report["skipped_by_reason"].items() if v) or "none"
    print(
        f"wrote {report['rows_written']} records to {args.output} (read {report['rows_read']}, skipped "
        f"{report['rows_skipped']}: {reasons}) in {report['seconds']:.1f} s; fingerprint {report['fingerprint'][:16]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
