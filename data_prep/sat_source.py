"""SAT sources for `data_prep.sat`: a hub id, a parquet file or a folder of parquet files, opened and checked
against SAT's schema (REFERENCE §2) before anything is converted, then read as batches of row dicts."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.sources import revision_for

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image_bytes", "question", "answers", "correct_answer")
OPTIONAL_COLUMNS = ("question_type",)
READ_BUFFER_BYTES = 8 << 20  # read column chunks through a buffer (no pre-buffering): huge files still stream
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PrepError(Exception):
    """A problem with the arguments or the input that the user must fix; the message says what and how."""


class Source:
    """An opened input: ``name`` (used in record ids), ``files`` (local parquet files, if any), ``revision`` (the
    hub revision read; None for local files), ``batches()``."""

    def __init__(self, name: str, files: list[Path] | None = None, hub_dataset=None, revision: str | None = None):
        self.name = name
        self.files = files or []
        self.revision = revision
        self._hub_dataset = hub_dataset

    def num_rows(self) -> int | None:
        """Rows in the local files (from their metadata), or None for a streamed hub dataset."""
        if self._hub_dataset is not None:
            return None
        return sum(pq.ParquetFile(path).metadata.num_rows for path in self.files)

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


def _is_text(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type)
    )


def _is_binary(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or pa.types.is_binary_view(arrow_type)
    )


def _list_value_type(arrow_type: pa.DataType) -> pa.DataType | None:
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return arrow_type.value_type
    if pa.types.is_list_view(arrow_type) or pa.types.is_large_list_view(arrow_type):
        return arrow_type.value_type
    return None


def _is_encoded_image(arrow_type: pa.DataType) -> bool:
    """Raw encoded bytes, or an image struct whose ``bytes`` field holds them (`datasets.Image`'s storage)."""
    if pa.types.is_struct(arrow_type):
        index = arrow_type.get_field_index("bytes")
        return index >= 0 and _is_binary(arrow_type.field(index).type)
    return _is_binary(arrow_type)


# What SAT's schema holds in each column (REFERENCE §2), as a check on the Arrow type and the words of the error.
COLUMN_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "image_bytes": (
        lambda t: (value := _list_value_type(t)) is not None and _is_encoded_image(value),
        "a list of encoded images (binary, or {bytes, path} structs)",
    ),
    "question": (_is_text, "a string"),
    "answers": (lambda t: (value := _list_value_type(t)) is not None and _is_text(value), "a list of strings"),
    "correct_answer": (_is_text, "a string"),
    "question_type": (_is_text, "a string"),
}


def check_column_types(schema: pa.Schema, where: str) -> None:
    """Raise `PrepError` naming the first SAT column whose type is not SAT's, and the type found.

    Example:
        >>> try:
        ...     check_column_types(pa.schema([("question", pa.int64())]), "x.parquet")
        ... except PrepError as err:
        ...     print(err)
        x.parquet: the column 'question' holds int64, but SAT's question is a string. Fix the column's type (or pass
        a SAT-format file) and run again.
    """
    for name, (matches, expected) in COLUMN_TYPES.items():
        if name in schema.names and not matches(schema.field(name).type):
            raise PrepError(
                f"{where}: the column {name!r} holds {schema.field(name).type}, but SAT's {name} is {expected}. "
                "Fix the column's type (or pass a SAT-format file) and run again."
            )


def _distinguishing_words(folder: Path, files: list[Path]) -> list[str]:
    """The words of the files' paths (below ``folder``) that not every file shares: the candidate split names."""
    words = [set(re.findall(r"[a-z]+", str(p.relative_to(folder).with_suffix("")).lower())) - {"of"} for p in files]
    shared = set.intersection(*words) if len(words) > 1 else set()
    return sorted(set().union(*words) - shared)


def _split_files(folder: Path, split: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    if not files:
        raise PrepError(f"the folder {folder} holds no .parquet files. Point --input at a SAT parquet file or folder.")
    token = re.compile(rf"(?<![a-z0-9]){re.escape(split.lower())}(?![a-z0-9])")
    matching = [p for p in files if token.search(str(p.relative_to(folder)).lower())]
    if not matching:
        names = ", ".join(str(p.relative_to(folder)) for p in files)
        splits = ", ".join(_distinguishing_words(folder, files)) or "none"
        raise PrepError(
            f"--split {split!r} matches none of the {len(files)} parquet file(s) in {folder} ({names}); the words "
            f"that tell them apart (split names): {splits}. Pass one of them with --split, or the file itself with "
            "--input."
        )
    return matching


def _check_parquet(path: Path) -> None:
    try:
        with pq.ParquetFile(path) as reader:
            schema = reader.schema_arrow
    except Exception as err:
        raise PrepError(
            f"cannot read {path} as parquet ({err}). Check that it is a complete parquet file (re-download it if "
            "it was cut short)."
        ) from err
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise PrepError(
            f"{path} lacks the SAT column(s) {', '.join(missing)} (it has: {', '.join(schema.names)}). "
            f"A SAT file needs the columns {', '.join(REQUIRED_COLUMNS)} (and usually question_type)."
        )
    check_column_types(schema, str(path))


def open_source(source: str, split: str, revision: str | None = None) -> Source:
    """Resolve ``source`` (local file, local folder, or hub id) and check it can be read; raise `PrepError` if not.

    A hub id is read at ``revision``, or at its pin in `data_prep.sources` when None; a revision given with a local
    input is refused (a local file has no revision: it would be recorded but mean nothing).
    """
    path = Path(source).expanduser()
    if revision is not None and (path.exists() or path.suffix == ".parquet"):
        raise PrepError(
            f"--revision {revision} applies to a hub dataset, but the input {source!r} is a local path: drop "
            "--revision (the report records the files' content fingerprint instead)"
        )
    if path.is_file():
        _check_parquet(path)
        return Source(path.name.removesuffix(".parquet"), files=[path])
    if path.is_dir():
        files = _split_files(path, split)
        for file in files:
            _check_parquet(file)
        logger.info("reading %d parquet file(s) from %s: %s", len(files), path, ", ".join(f.name for f in files))
        return Source(path.name, files=files)
    if path.suffix == ".parquet" or not HUB_ID.match(source):
        raise PrepError(
            f"the input {source!r} does not exist. Pass an existing parquet file or folder, or a hub id such as "
            "array/SAT."
        )
    try:
        revision = revision_for(source, revision)
    except ValueError as err:
        raise PrepError(f"{err}: fix --revision") from None
    return _open_hub(source, split, revision)


def _open_hub(source: str, split: str, revision: str | None) -> Source:
    from datasets import load_dataset

    try:
        dataset = load_dataset(source, split=split, streaming=True, revision=revision)
    except Exception as err:
        raise PrepError(
            f"the input {source!r} is not a local file or folder, and loading it from the Hugging Face hub (split "
            f"{split!r}, revision {revision}) failed: {err}. Check the id, the split, the revision and your network "
            "(offline mode: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), or download the parquet files and pass the file or "
            "folder with --input."
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
    if dataset.features is not None:
        check_column_types(dataset.features.arrow_schema, f"the hub dataset {source!r}")
    return Source(source, hub_dataset=dataset, revision=revision)


def limited(batches: Iterator[list[dict]], limit: int | None) -> Iterator[list[dict]]:
    seen = 0
    for rows in batches:
        if limit is not None and seen + len(rows) >= limit:
            yield rows[: limit - seen]
            return
        seen += len(rows)
        yield rows


def read_checked(batches: Iterator[list[dict]], source: str) -> Iterator[list[dict]]:
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
