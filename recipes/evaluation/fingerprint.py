"""What an evaluation's predictions depend on, as a fingerprint: the model's files, the data, every setting that
changes a response. Predictions are resumed only under the same fingerprint.

The model is fingerprinted by content: SHA-256 of every file that loading it reads (weights, configs, processor and
tokenizer files; for a LoRA adapter folder, the adapter's files and its base model's). Retraining into the same
run folder therefore changes the fingerprint even when every file name, size and the configuration stay the same.
Cost: reading the weights once per evaluation run (about 4.4 GB for Qwen2-VL-2B in bf16; sha256 ran at ~320 MB/s
on this 2-core machine under load, 1-2 GB/s on a server with SHA extensions), on the main process only. A hub id
is resolved to its local snapshot (downloaded once, as loading it would) and fingerprinted the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from recipes.shared import provenance
from recipes.shared.errors import RecipeError
from recipes.shared.runs import MODEL_FILES, check_model_folder

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def local_model_folder(name_or_path: str, revision: str | None = None) -> Path:
    """The folder holding the model's files: the path itself, or a hub id's snapshot in the local cache (downloaded
    when missing and the hub is reachable). Refuses a local folder that is not a model or adapter folder."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and is_adapter(path):
            check_adapter_base(path)
        else:
            check_model_folder(str(path))
        return path.resolve()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=list(MODEL_FILES)))


def check_adapter_base(folder: Path) -> None:
    """Refuse, before anything is read or written, a LoRA adapter whose base model cannot be found: a local base
    that moved is named, a hub id must be loadable (cached, or the hub reachable)."""
    from recipes.shared.models import check_model_available  # the models module imports torch and transformers

    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        raise RecipeError(
            f"{folder / ADAPTER_CONFIG} is unreadable ({err}): is {folder} a complete adapter?"
        ) from None
    fix = f"set base_model_name_or_path in {folder / ADAPTER_CONFIG} to where the base model is now"
    if not base:
        raise RecipeError(f"the LoRA adapter in {folder} does not say which base model it was trained on: {fix}")
    if Path(base).expanduser().exists():
        return
    if Path(base).is_absolute() or base.startswith((".", "~")) or base.count("/") != 1:
        raise RecipeError(
            f"the LoRA adapter in {folder} was trained on the base model {base}, which does not exist (moved or "
            f"deleted?): put the base model back there, or {fix}"
        )
    try:
        check_model_available(base)
    except RecipeError as err:
        raise RecipeError(
            f"the LoRA adapter in {folder} was trained on {base!r}, which cannot be loaded: {err}"
        ) from None


def _files(folder: Path) -> list[Path]:
    return sorted({p for pattern in MODEL_FILES for p in folder.glob(pattern) if p.is_file()})


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_fingerprint(folder: Path, revision: str | None = None) -> dict[str, Any]:
    """``{"sha256": ..., "files": {name: {"bytes": n, "sha256": ...}}}`` over the files loading the model reads;
    an adapter's base model is included as ``"base"``."""
    start = time.perf_counter()
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(folder)}
    if not files:
        raise RecipeError(f"{folder} holds no model files ({', '.join(MODEL_FILES[:3])}, config.json, ...)")
    result: dict[str, Any] = {"files": files}
    if is_adapter(folder):
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if base:
            base_revision = json.loads((folder / ADAPTER_CONFIG).read_text()).get("revision")
            result["base"] = {"model": base, **model_fingerprint(local_model_folder(base, base_revision))}
    summary = json.dumps(result, sort_keys=True).encode()
    total = sum(f["bytes"] for f in files.values())
    logger.info(
        "fingerprinted %d model file(s), %.1f MB, in %.1f s", len(files), total / 1e6, time.perf_counter() - start
    )
    return {"sha256": hashlib.sha256(summary).hexdigest(), **result}


def run_key(
    model: dict[str, Any],
    dataset: dict[str, Any],
    prompt: dict[str, Any],
    generation: dict[str, Any],
    resolution: dict[str, Any],
) -> dict[str, Any]:
    """Everything a response depends on, with its own fingerprint (``"id"``, 16 hex digits).

    Not in it, on purpose: paths (a moved model or dataset with the same content matches), the row selection
    (``--limit``: rows are scored independently, so a longer run resumes a shorter one), batch size and process
    count (they do not change a greedy response, up to bf16 ties on GPUs).
    """
    key = {"model": model, "dataset": dataset, "prompt": prompt, "generation": generation, "resolution": resolution}
    return {"id": provenance.digest(key)[:16], **key}


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``setting: value there, value now`` for every setting of two run keys that differs (`provenance.differences`;
    per-file hashes are summarised by the model's overall hash).

    Example:
        >>> differences({"id": "a", "generation": {"max_new_tokens": 8}},
        ...             {"id": "b", "generation": {"max_new_tokens": 9}})
        ['generation.max_new_tokens: 8 there, 9 now']
    """
    names = provenance.flat_items(before).keys() | provenance.flat_items(now).keys()
    neutral = {k for k in names if k == "id" or ".files." in f".{k}"}
    return provenance.differences(before, now, neutral, show=_short)


def _short(value: Any, limit: int = 80) -> str:
    """A value as a message shows it: a text with line breaks (a rendered prompt) quoted, and long ones cut."""
    text = repr(value) if isinstance(value, str) and "\n" in value else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
