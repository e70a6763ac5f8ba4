"""Where `data_prep.sat` writes: the output is checked before anything is read, built in a hidden sibling folder
locked while in use, and renamed into place when complete; the next run removes what a killed run left behind."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from data_prep.files import nearest_existing
from data_prep.sat_source import PrepError

logger = logging.getLogger(__name__)

WORK_PREFIX = ".sat-tmp-"  # hidden work folders: ".<output name>.sat-tmp-<random>", locked while in use
LOCK_NAME = ".lock"


def holds_something(path: Path) -> bool:
    """True when ``path`` exists and is not an empty directory (an empty directory may be replaced)."""
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def check_output(output: Path) -> None:
    """Raise `PrepError` unless ``output`` can be created: free (or an empty folder), inside a writable folder."""
    if holds_something(output):
        raise PrepError(f"the output path {output} already exists. Choose a new --output or delete it first.")
    ancestor = nearest_existing(output.parent)
    if not ancestor.is_dir():
        raise PrepError(f"cannot create {output}: {ancestor} is a file, not a folder. Choose another --output.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PrepError(f"cannot create {output}: the folder {ancestor} is read-only. Choose another --output.")


def clean_stale_work_folders(parent: Path) -> None:
    """Remove the hidden work folders that killed runs left in ``parent``: those whose lock nobody holds."""
    for folder in parent.glob(f".*{WORK_PREFIX}*"):
        lock_path = folder / LOCK_NAME
        if not folder.is_dir() or not lock_path.is_file():
            continue  # not ours, or being created right now
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the lock dies with its holder, even on SIGKILL
            except BlockingIOError:
                continue  # a running conversion
            logger.info("removing %s, left by an interrupted conversion", folder)
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def work_folder(output: Path) -> Iterator[Path]:
    """A new hidden sibling folder of ``output`` to build it in, locked while the block runs and removed after it
    whatever happens (`publish` what must stay). Stale work folders of killed runs are removed first."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_work_folders(output.parent)
        work = output.parent / f".{output.name}{WORK_PREFIX}{uuid.uuid4().hex[:8]}"
        work.mkdir()
    except OSError as err:
        raise PrepError(f"cannot create {output}: {err.strerror} ({err.filename}). Choose another --output.") from err
    try:
        with open(work / LOCK_NAME, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held until the end: tells later runs this folder is in use
            yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish(folder: Path, output: Path) -> None:
    """Rename the finished ``folder`` to ``output``, unless something appeared there meanwhile."""
    if holds_something(output):  # appeared while we were converting: never clobber it
        raise PrepError(f"the output path {output} appeared during the conversion; choose a new --output.")
    folder.replace(output)
