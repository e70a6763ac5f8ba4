"""What made an output: one record per output folder, checked before anything there is reused, written or deleted.

Every writer of this repository — a recipe run, a CV-Bench evaluation, a stage of a mini experiment, a launcher —
keeps in the folder it writes a record, ``provenance.json``, with one entry per output it holds (``"."`` for the
folder itself; a launcher or a mini experiment keeps one entry per experiment or stage):

* ``kind``: what wrote it (``recipe-run``, ``cvbench-eval``, ``mini-stage``, ...);
* ``defined_by``: everything that makes the result what it is (settings, seed, hashes of weights, data, configs);
* ``state``: ``running`` until the writer finished, then ``finished``;
* ``owns``: every path (relative to the folder) the writer created — the only paths it may ever delete.

Before writing, a writer `inspect`s the entry: ``empty`` (nothing there, or nothing but files it can leave alone),
``same`` (same kind and definition: reuse or resume), ``different`` (each difference named: refuse, or replace when
told to), ``foreign`` (files but no record: never ours, never deleted; the user is told to choose another folder).
Deleting (`delete_owned`) removes exactly the owned paths, after `guard_output` has proved the folder is not, does
not contain and does not lie inside an input, the home folder or the repository.

The shell launchers use the same code: ``python -m recipes.shared.provenance inspect|record|delete FOLDER ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.files import write_atomic
from recipes.shared.errors import RecipeError

RECORD = "provenance.json"
LOCK = ".provenance.lock"
WRITER_LOCK = ".writer.lock"
ABOUT = "what made the outputs in this folder (recipes/shared/provenance.py); reused or deleted only as it says"
REPO_ROOT = Path(__file__).resolve().parents[2]
UNSET = "(unset)"  # how a definition lacking a setting shows it
_THREAD_LOCK = threading.Lock()


class ProvenanceError(RecipeError):
    """An output folder that cannot be used as asked; the message says what was found and what to do."""


# --- definitions -----------------------------------------------------------------------------------------------------


def flat_items(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": leaf}``, so that a difference deep in a definition is named precisely.

    Example:
        >>> flat_items({"seed": 0, "stage_a": {"steps": 600, "config": {"sha256": "ab"}}})
        {'seed': 0, 'stage_a.steps': 600, 'stage_a.config.sha256': 'ab'}
    """
    if not isinstance(value, dict):
        return {prefix: value}
    items: dict[str, Any] = {}
    for key, inner in value.items():
        items.update(flat_items(inner, f"{prefix}.{key}" if prefix else str(key)))
    return items


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def digest(value: Any) -> str:
    """SHA-256 (hex) of a definition's canonical JSON: the same values give the same digest on every machine.

    Example:
        >>> digest({"b": 1, "a": [2]}) == digest({"a": [2], "b": 1})
        True
    """
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def changed(
    stored: dict[str, Any], current: dict[str, Any], neutral: Iterable[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``(name, stored value, current value)`` for every setting (`flat_items` name) that differs, by name; a
    setting one side lacks has the value `UNSET` there; names in ``neutral`` are ignored.

    Example:
        >>> changed({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "c": 2, "d": None})
        [('a.b', 1, 2), ('d', '(unset)', None)]
    """
    old, new = flat_items(stored), flat_items(current)
    skip = set(neutral)
    keys = sorted(k for k in old.keys() | new.keys() if k not in skip)
    return [(k, old.get(k, UNSET), new.get(k, UNSET)) for k in keys if old.get(k, UNSET) != new.get(k, UNSET)]


def differences(
    stored: dict[str, Any], current: dict[str, Any], neutral: Iterable[str] = (), show: Callable[[Any], str] = _show
) -> list[str]:
    """``name: <stored> there, <current> now`` for every setting that differs (`changed`), each value as ``show``
    writes it.

    Example:
        >>> differences({"seed": 0, "steps": 600}, {"seed": 1, "steps": 600, "rows": 8})
        ['rows: (unset) there, 8 now', 'seed: 0 there, 1 now']
    """
    return [f"{k}: {show(a)} there, {show(b)} now" for k, a, b in changed(stored, current, neutral)]


# --- the record ------------------------------------------------------------------------------------------------------


def read(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The entries recorded in ``folder`` (empty when there is no record); an unreadable record is an error."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        entries = record["entries"]
        if not isinstance(entries, dict):
            raise TypeError("entries is not a mapping")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ProvenanceError(
            f"{path} is unreadable ({err}): nothing in {folder} can be reused or deleted safely. Choose another "
            "output folder."
        ) from None
    return entries


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One updater of the record at a time, across threads and processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(folder / LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def sole_writer(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder`` for one writer (``what``, e.g. "a CV-Bench evaluation") until the block ends.

    A second writer is refused at once with a clear error instead of mixing its outputs with the first one's. The
    lock is the kernel's (``flock``): it is released when the holder exits, however it exits.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / WRITER_LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvenanceError(
                f"{folder} is being written by another process ({what}): wait for it to finish, or choose "
                "another output folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _relative(folder: Path, path: str | Path) -> str:
    """``path`` relative to ``folder``; a path outside it can never be owned."""
    path = Path(path)
    absolute = path if path.is_absolute() else folder / path
    try:
        rel = Path(os.path.normpath(absolute)).relative_to(os.path.normpath(folder))
    except ValueError:
        raise ProvenanceError(f"{path} lies outside {folder}: a writer owns only paths inside its folder") from None
    if str(rel) in (".", RECORD, LOCK, WRITER_LOCK):
        raise ProvenanceError(f"{path}: the folder itself and its record cannot be owned")
    return str(rel)


def record(folder: str | Path, name: str = ".", *, owns: Iterable[str | Path] = (), **fields: Any) -> dict[str, Any]:
    """Create or update the entry ``name`` atomically: ``fields`` replace their values, ``owns`` adds paths."""
    folder = Path(folder)
    with _locked(folder):
        entries = read(folder)
        entry = entries.setdefault(name, {"owns": [], "created": _now()})
        entry.update(fields)
        entry["owns"] = sorted(set(entry.get("owns", [])) | {_relative(folder, p) for p in owns})
        entry["updated"] = _now()
        write_atomic(folder / RECORD, json.dumps({"about": ABOUT, "entries": entries}, indent=2) + "\n")
    return entry


def start(folder: str | Path, kind: str, defined_by: dict[str, Any], name: str = ".", **fields: Any) -> dict:
    """Record that ``kind`` defined by ``defined_by`` is being written (state ``running``)."""
    return record(folder, name, kind=kind, defined_by=defined_by, state="running", **fields)


def finish(folder: str | Path, name: str = ".", owns: Iterable[str | Path] = (), **fields: Any) -> dict:
    """Record that the entry's output is complete (state ``finished``), with the last paths it wrote."""
    return record(folder, name, owns=owns, state="finished", finished_at=_now(), **fields)


@dataclass
class Verdict:
    """What a folder holds for an entry, compared with what is about to be written."""

    state: str  # "empty" | "same" | "different" | "foreign"
    entry: dict[str, Any] | None = None
    changes: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # files no entry of the record owns

    @property
    def finished(self) -> bool:
        return bool(self.entry) and self.entry.get("state") == "finished"


def unowned(folder: str | Path, entries: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The top-level names in ``folder`` that no entry of its record owns (the record and lock aside)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries = read(folder) if entries is None else entries
    owned_top = {Path(p).parts[0] for e in entries.values() for p in e.get("owns", [])}
    own = (RECORD, LOCK, WRITER_LOCK)
    return sorted(p.name for p in folder.iterdir() if p.name not in own and p.name not in owned_top)


def inspect(
    folder: str | Path,
    kind: str,
    defined_by: dict[str, Any],
    name: str = ".",
    neutral: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> Verdict:
    """Compare what ``folder`` holds for entry ``name`` with ``kind``/``defined_by``; reads, never writes.

    Files named in ``ignore`` (top-level names, e.g. a log the user keeps there) do not make a folder foreign.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ProvenanceError(f"{folder} is a file, not a folder: choose another output folder")
    entries = read(folder)
    stray = [n for n in unowned(folder, entries) if n not in set(ignore)]
    entry = entries.get(name)
    if entry is None:
        return Verdict("foreign" if stray and not entries else "empty", None, [], stray)
    changes = differences(entry.get("defined_by", {}), defined_by, neutral)
    if entry.get("kind") != kind:
        changes.insert(0, f"kind: {entry.get('kind')} there, {kind} now")
    return Verdict("different" if changes else "same", entry, changes, stray)


# --- deleting --------------------------------------------------------------------------------------------------------


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def guard_output(folder: str | Path, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse an output folder that is, contains or lies inside an input, the home folder, the repository or ``/``.

    Inputs that are hub ids (no local path of that name) are ignored.
    """
    out = _real(folder)
    protected = {"the home folder": _real(Path.home()), "the repository": REPO_ROOT, "the file system root": Path("/")}
    for item in inputs:
        if item and Path(str(item)).expanduser().exists():
            protected[f"the input {item}"] = _real(str(item))
    for what, path in protected.items():
        if out == path or out in path.parents:
            raise ProvenanceError(f"output folder {folder} is or contains {what}: choose an output folder of its own")
        if what.startswith("the input") and path in out.parents:
            raise ProvenanceError(f"output folder {folder} lies inside {what}: choose an output folder outside it")


def delete_owned(
    folder: str | Path, name: str = ".", inputs: Iterable[str | Path | None] = (), dry_run: bool = False
) -> list[Path]:
    """Delete exactly the paths entry ``name`` owns (then drop the entry); nothing else in ``folder`` is touched.

    With ``dry_run`` nothing is deleted: the paths that would be are returned (after the same checks).
    """
    folder = Path(folder)
    guard_output(folder, inputs)
    if dry_run:
        owned = read(folder).get(name, {}).get("owns", [])
        return [
            folder / _relative(folder, rel) for rel in owned if (folder / rel).exists() or (folder / rel).is_symlink()
        ]
    with _locked(folder):
        entries = read(folder)
        entry = entries.get(name)
        if entry is None:
            return []
        removed = []
        for rel in entry.get("owns", []):
            path = folder / _relative(folder, rel)
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                continue
            removed.append(path)
        del entries[name]
        write_atomic(folder / RECORD, json.dumps({"about": ABOUT, "entries": entries}, indent=2) + "\n")
    return removed


def delete_nested(folder: str | Path, kinds: Iterable[str], inputs: Iterable[str | Path | None] = ()) -> list[Path]:
    """Delete the outputs recorded in the sub-folders of ``folder`` whose every entry is of one of ``kinds``.

    For outputs derived from what ``folder`` holds (e.g. the CV-Bench evaluation kept inside a run folder): when
    that is replaced, they describe something gone. Each sub-folder loses exactly what its entries own; it is
    removed only if nothing else (no file of the user's) is left in it.
    """
    folder, kinds = Path(folder), set(kinds)
    removed: list[Path] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()) if folder.is_dir() else []:
        entries = read(sub) if (sub / RECORD).is_file() else {}
        if not entries or any(e.get("kind") not in kinds for e in entries.values()):
            continue
        for name in list(entries):
            removed += delete_owned(sub, name, inputs)
        if {p.name for p in sub.iterdir()} <= {RECORD, LOCK, WRITER_LOCK}:
            shutil.rmtree(sub)
            removed.append(sub)
    return removed


# --- command line (for the shell launchers) --------------------------------------------------------------------------


def _definition(pairs: list[str]) -> dict[str, str]:
    definition = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ProvenanceError(f"--define {pair!r}: expected KEY=VALUE")
        definition[key] = value
    return definition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.shared.provenance", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    look = sub.add_parser("inspect", help="print the entry's state (empty|same|different|foreign), then differences")
    rec = sub.add_parser("record", help="create or update an entry")
    rm = sub.add_parser("delete", help="delete exactly the paths the entry owns")
    for command in (look, rec, rm):
        command.add_argument("folder")
        command.add_argument("--name", default=".")
    for command in (look, rec):
        command.add_argument("--kind", required=command is look)
        command.add_argument("--define", action="append", default=[], metavar="KEY=VALUE")
    look.add_argument("--ignore", action="append", default=[], metavar="NAME")
    look.add_argument("--unowned", action="store_true", help="then an 'unowned: NAME' line per name no entry owns")
    rec.add_argument("--state", choices=("running", "finished"))
    rec.add_argument("--owns", action="append", default=[], metavar="PATH")
    rm.add_argument("--input", action="append", default=[], metavar="PATH", help="a path that must not be touched")
    rm.add_argument("--all", action="store_true", help="every entry of the record, not only --name")
    rm.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            verdict = inspect(args.folder, args.kind, _definition(args.define), args.name, ignore=args.ignore)
            print(verdict.state + (" finished" if verdict.finished else ""))
            for line in verdict.changes or verdict.foreign:
                print(f"  {line}")
            if args.unowned:
                for line in verdict.foreign:
                    print(f"  unowned: {line}")
        elif args.command == "record":
            fields: dict[str, Any] = {}
            if args.kind:
                fields["kind"] = args.kind
            if args.define:
                fields["defined_by"] = _definition(args.define)
            if args.state:
                fields["state"] = args.state
            record(args.folder, args.name, owns=args.owns, **fields)
        else:
            guard_output(args.folder, args.input)  # also when the record is empty: a refused folder says so
            names = sorted(read(args.folder)) if args.all else [args.name]
            for name in names:
                for path in delete_owned(args.folder, name, args.input, dry_run=args.dry_run):
                    print(path)
    except ProvenanceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
