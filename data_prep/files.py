"""File helpers shared by every package: the one way this repository writes a file that others read."""

from __future__ import annotations

import os
from pathlib import Path


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor: where creating ``path`` would begin.

    Example:
        >>> nearest_existing("/") == Path("/")
        True
    """
    ancestor = Path(path)
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Replace ``path`` with ``data`` all at once: readers and a kill see either the old file or the new one.

    The data goes to a temporary file in the same folder (same file system, so the rename is atomic), is flushed to
    disk, then renamed over ``path``; the temporary file is removed if anything fails. Text is written as UTF-8.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out" / "a.txt"
        >>> write_atomic(target, "hello").read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
