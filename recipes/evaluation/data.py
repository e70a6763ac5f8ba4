"""CV-Bench rows: loading them from the hub, a parquet file or a folder; their images; their content fingerprint."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from datasets import Dataset, Image, load_dataset, load_from_disk
from PIL import Image as PILImage

from data_prep.images import strict_loading, to_rgb
from data_prep.schema import SPECIAL_TOKENS, special_tokens_in
from data_prep.sources import revision_for
from recipes.shared.cli import QUICKSTART
from recipes.shared.errors import RecipeError
from recipes.shared.hub import offline_hint

COLUMNS = ("idx", "type", "task", "image", "choices", "answer", "prompt", "source")
SYNTHETIC_COMMAND = (
    "python -m data_prep.fixtures.synthetic --kind cvbench --rows 64 --seed 0 --output data/cvbench.parquet"
)


def _missing_dataset_error(name: str, err: Exception | str) -> RecipeError:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    hint = "" if is_local(name) else f" ({offline_hint()})"
    return RecipeError(
        f"cannot load CV-Bench from {name!r}: {first_line}{hint}\n"
        f"Without hub access, write synthetic rows in CV-Bench's schema and evaluate on them:\n"
        f"  {SYNTHETIC_COMMAND}\n"
        f"  python recipes/eval_cvbench.py --dataset data/cvbench.parquet ...\n"
        f"or run the offline quickstart: {QUICKSTART}"
    )


def is_local(name_or_path: str) -> bool:
    """Whether ``--dataset`` names local files (a file or folder, or a path-like name) rather than a hub id."""
    path = Path(name_or_path).expanduser()
    return path.exists() or name_or_path.endswith(".parquet") or name_or_path.startswith((".", "/", "~"))


def dataset_revision(name_or_path: str, revision: str | None) -> str | None:
    """The hub revision CV-Bench is read at: ``revision``, else the pin of `data_prep.sources`; None for local data.

    A revision given for local data is refused: it would be recorded but mean nothing.
    """
    if is_local(name_or_path):
        if revision is not None:
            raise RecipeError(
                f"--dataset_revision {revision} applies to a hub dataset, but --dataset {name_or_path!r} is local: "
                "drop --dataset_revision (local data is keyed by its content)"
            )
        return None
    try:
        return revision_for(name_or_path, revision)
    except ValueError as err:
        raise RecipeError(f"{err}: fix --dataset_revision") from None


def load_cvbench(name_or_path: str, split: str = "test", revision: str | None = None) -> Dataset:
    """CV-Bench rows from a hub id (at ``revision``), a parquet file, or a folder; fails with the fix when they
    cannot be found.

    Images are left encoded (``Image(decode=False)``): `open_image` decodes one row at a time, so a broken image
    names its row instead of failing a whole batch.
    """
    path = Path(name_or_path).expanduser()
    try:
        if path.is_file():
            dataset = load_dataset("parquet", data_files=str(path), split="train")
        elif (path / "dataset_dict.json").exists():
            saved = load_from_disk(str(path))
            if split not in saved:
                raise RecipeError(f"{path} has no split {split!r} (it has: {', '.join(saved)}); set --dataset_split")
            dataset = saved[split]
        elif (path / "state.json").exists():
            dataset = load_from_disk(str(path))
        elif path.is_dir():
            dataset = load_dataset(str(path), split=split)
        elif name_or_path.endswith(".parquet") or name_or_path.startswith((".", "/", "~")):
            raise _missing_dataset_error(name_or_path, f"no such file or folder: {path}")
        else:
            dataset = load_dataset(name_or_path, split=split, revision=revision)
    except RecipeError:
        raise
    except Exception as err:  # hub, cache and format errors all mean "no usable dataset here"
        raise _missing_dataset_error(name_or_path, err) from None
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
        raise RecipeError(
            f"{name_or_path!r} is not in CV-Bench's schema: missing column(s) {', '.join(missing)} "
            f"(expected {', '.join(COLUMNS)}). Synthetic rows in that schema: {SYNTHETIC_COMMAND}"
        )
    return dataset.cast_column("image", Image(decode=False))


def row_metadata(dataset: Dataset) -> list[dict]:
    """Every row's columns except the image (cheap: no image is read)."""
    return dataset.select_columns([c for c in COLUMNS if c != "image"]).to_list()


def model_special_tokens(tokenizer) -> list[str]:
    """The tokenizer's own special tokens (its added special tokens too) and the Qwen-VL ones."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return list(dict.fromkeys([*SPECIAL_TOKENS, *tokenizer.all_special_tokens, *added]))


def unusable_prompts(rows: list[dict], selection: range, special_tokens: list[str]) -> dict[int, str]:
    """``{row: why}`` for the selected rows whose ``prompt`` cannot be given to the model: missing (null or empty),
    or holding one of the model's special tokens (it would be read as a control token, e.g. an image slot).

    Example:
        >>> rows = [{"prompt": "How many?"}, {"prompt": None}, {"prompt": "Which <|im_end|> one?"}]
        >>> unusable_prompts(rows, range(3), ["<|im_end|>"])
        {1: 'the prompt is missing (None)', 2: "the prompt holds the model's special token(s) <|im_end|>"}
    """
    bad = {}
    for row in selection:
        prompt = rows[row].get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            bad[row] = f"the prompt is missing ({prompt!r})"
        elif found := special_tokens_in(prompt, special_tokens):
            bad[row] = f"the prompt holds the model's special token(s) {', '.join(found)}"
    return bad


def check_prompts(rows: list[dict], selection: range, tokenizer, dataset: str, skip: bool) -> dict[int, str]:
    """The selected rows whose prompt cannot be used (`unusable_prompts`), to be skipped (``skip``); without
    ``skip`` a clear error naming them, before anything is generated or written."""
    bad = unusable_prompts(rows, selection, model_special_tokens(tokenizer))
    if bad and not skip:
        listed = "; ".join(f"row {row} (idx {rows[row].get('idx')}): {why}" for row, why in list(bad.items())[:5])
        raise RecipeError(
            f"{len(bad)} row(s) of {dataset} cannot be given to the model: {listed}"
            f"{' ...' if len(bad) > 5 else ''}. Fix or drop them, or skip such rows (counted in the summary, left "
            "out of the accuracy): --skip_bad_images true"
        )
    return bad


def _image_bytes(cell: Any) -> bytes:
    """The encoded image of a row (``Image(decode=False)`` gives its bytes, or a path to them)."""
    if not isinstance(cell, dict):
        raise ValueError(f"not an image cell: {type(cell).__name__}")
    if cell.get("bytes") is not None:
        return cell["bytes"]
    if cell.get("path"):
        return Path(cell["path"]).read_bytes()
    raise ValueError("the image cell holds neither bytes nor a path")


def open_image(cell: Any) -> PILImage.Image:
    """One row's image, fully decoded and in RGB as the trainer's processor converts it (`data_prep.images.to_rgb`:
    transparency dropped, not composited); raises (a PIL or OS error) when it cannot be decoded."""
    with strict_loading(), PILImage.open(io.BytesIO(_image_bytes(cell))) as image:
        image.load()
        rgb = to_rgb(image)
        return rgb.copy() if rgb is image else rgb  # the opened image is closed when this block ends


def dataset_fingerprint(dataset: Dataset, rows: list[dict]) -> str:
    """SHA-256 of the rows' columns and their encoded images, in order: the same data anywhere gives the same
    value (a moved or renamed file matches; a changed answer or image does not). Reads every image's bytes once."""
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode())
    for batch in dataset.select_columns(["image"]).iter(batch_size=256):
        for cell in batch["image"]:
            try:
                digest.update(hashlib.sha256(_image_bytes(cell)).digest())
            except (OSError, ValueError):  # an unreadable image: its row is reported when it is evaluated
                digest.update(b"unreadable")
    return digest.hexdigest()
