"""Stages of the mini experiments, keyed by what defines them: nothing made with another seed or config is reused.

`launch/mini_r1.sh` (`recipes.mini_r1`) and `launch/mini_ablations.sh` (`recipes.mini_ablations`) describe their work
as `Stage`s — building the model and data, stage A, each stage-B arm — each with the folders it writes, the commands
that write them and what defines it (seed, config file and a hash of its values, steps, options, and the definition
of every stage it builds on). ``<seed folder>/stamp.json`` records, per stage, that definition and whether the stage
finished. Before anything runs, every stage is checked against it:

* recorded with the same definition and finished, folders present: **done already**, skipped;
* recorded with the same definition but unfinished (killed): its folders are deleted and it runs again;
* recorded with another definition (or its folders exist with no record at all): **refused** before anything runs,
  naming each difference and how to start over (delete that stage's folders, ``FRESH=1``, or another ``OUT``);
* not recorded and its folders absent: it runs.

`run_stages` runs the stages in a pool of ``jobs`` processes at a time (a stage waits for the stages it builds on),
each command's output going to ``<seed folder>/logs/<stage>.log``; the stamp gets each stage's wall-clock and CPU
seconds (the CPU time of the commands' own processes, from ``os.wait4``, so it does not depend on what else runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.files import write_atomic

logger = logging.getLogger(__name__)

STAMP = "stamp.json"
LOGS = "logs"
LOG_TAIL_LINES = 40


class StageError(RuntimeError):
    """A stage that cannot run (its folders were made with other settings) or that failed; the message has the fix."""


def config_definition(path: str | Path) -> dict[str, str]:
    """A config file as part of a definition: its path and the hash of its values, so that changing a setting is
    noticed (and editing a comment is not: it defines nothing)."""
    import yaml

    values = yaml.safe_load(Path(path).read_text())
    canonical = json.dumps(values, sort_keys=True, default=str)
    return {"path": str(path), "values_sha256": hashlib.sha256(canonical.encode()).hexdigest()}


@dataclass
class Stage:
    """One unit of work of a run: ``commands`` write ``folders``; ``defined_by`` says what makes its result."""

    name: str
    home: Path  # the seed folder: its stamp.json and logs/ hold this stage's record and output
    folders: tuple[Path, ...]
    defined_by: dict[str, Any]
    commands: list[list[str]]
    after: tuple[str, ...] = ()  # keys (see `key`) of the stages whose results this one reads
    env: dict[str, str] = field(default_factory=dict)
    label: str = ""  # how progress lines name it, e.g. "seed 0 grpo"

    @property
    def key(self) -> str:
        return f"{self.home}::{self.name}"

    @property
    def log(self) -> Path:
        return self.home / LOGS / f"{self.name.replace('/', '_')}.log"


# --- the stamp ----------------------------------------------------------------------------------------------------


def read_stamp(home: Path) -> dict[str, Any]:
    path = home / STAMP
    if not path.is_file():
        return {}
    try:
        stamp = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StageError(f"{path} is unreadable ({err}): delete {home} to start over") from None
    return stamp.get("stages", {}) if isinstance(stamp, dict) else {}


def flat_items(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": leaf}``, so that a difference deep in an upstream definition is named precisely.

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


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: <stored> there, <current> now`` for every setting that differs.

    Example:
        >>> differences({"seed": 0, "steps": 600}, {"seed": 1, "steps": 600, "rows": 8})
        ['rows: (unset) there, 8 now', 'seed: 0 there, 1 now']
    """
    old, new = flat_items(stored), flat_items(current)
    return [
        f"{k}: {_show(old.get(k, '(unset)'))} there, {_show(new.get(k, '(unset)'))} now"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, "(unset)") != new.get(k, "(unset)")
    ]


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _relative(path: Path, home: Path) -> str:
    try:
        return str(path.relative_to(home))
    except ValueError:
        return str(path)


def _has_files(folder: Path) -> bool:
    return folder.exists() and (not folder.is_dir() or any(folder.iterdir()))


def plan(stages: Sequence[Stage], start_over: str, redo_changed: bool = False) -> dict[str, str]:
    """Each stage's fate — ``"done"`` (skipped) or ``"run"`` — checked against the stamps before anything runs.

    ``start_over`` says how to redo those stages or start over (the launcher's ``REDO=1``, ``FRESH=1``, ``OUT``).
    Raises `StageError` naming every stage whose folders were made with other settings (nothing is changed), unless
    ``redo_changed``: then those stages run again (their folders are deleted first).
    """
    fates: dict[str, str] = {}
    problems: list[str] = []
    stamps: dict[Path, dict[str, Any]] = {}
    for stage in stages:
        stored = stamps.setdefault(stage.home, read_stamp(stage.home)).get(stage.name)
        present = [f for f in stage.folders if _has_files(f)]
        where = f"{stage.home}: {stage.name} ({', '.join(_relative(f, stage.home) for f in present)})"
        if stored is None:
            if present:
                problems.append(
                    f"{where} holds files but {STAMP} has no record of the settings that made them (another seed, "
                    "config or an older version of this launcher?)"
                )
            fates[stage.key] = "run"
            continue
        changed = differences(stored.get("defined_by", {}), stage.defined_by)
        if changed and present:
            problems.append(f"{where} was made with other settings:\n    " + "\n    ".join(changed))
            fates[stage.key] = "run"
        elif not changed and stored.get("state") == "finished" and len(present) == len(stage.folders):
            fates[stage.key] = "done"
        else:
            fates[stage.key] = "run"
    # A stage made from a stage that runs again is made again: never a result of one model beside another's.
    for stage in stages:
        if fates[stage.key] == "done" and any(fates.get(k) == "run" for k in stage.after):
            fates[stage.key] = "run"
    if problems and not redo_changed:
        raise StageError(
            "these results were made with other settings than asked for now, and are not reused:\n  "
            + "\n  ".join(problems)
            + f"\nNothing was changed. {start_over}"
        )
    return fates


class StampBook:
    """The stamp files of the stages being run, updated atomically (one writer: this process, under a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def record(self, stage: Stage, **values: Any) -> None:
        with self.lock:
            path = stage.home / STAMP
            stamp = json.loads(path.read_text()) if path.is_file() else {}
            stamp.setdefault("about", "what made each stage's folders (recipes/mini_runs.py); reused only if equal")
            entry = stamp.setdefault("stages", {}).setdefault(stage.name, {})
            entry.update(values)
            write_atomic(path, json.dumps(stamp, indent=2) + "\n")


# --- running ------------------------------------------------------------------------------------------------------


def run_command(command: list[str], log: Path, env: dict[str, str]) -> tuple[int, float, float]:
    """Run ``command`` with its output appended to ``log``: (exit status, wall seconds, CPU seconds of the process)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
        # wait4 reaps this one child and returns its own resource usage (user + system CPU), unlike RUSAGE_CHILDREN,
        # which sums every child of this process, including the other stages running at the same time.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen, which would wait again
    return proc.returncode, time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_stage(stage: Stage, book: StampBook) -> dict[str, float]:
    """Delete the stage's folders, run its commands, record it as finished (with its timings) in the stamp."""
    for folder in stage.folders:
        if folder.is_dir():
            shutil.rmtree(folder)
        elif folder.exists():
            folder.unlink()
    stage.log.unlink(missing_ok=True)
    book.record(stage, defined_by=stage.defined_by, state="started")
    seconds = cpu = 0.0
    for command in stage.commands:
        status, wall, used = run_command(command, stage.log, stage.env)
        seconds, cpu = seconds + wall, cpu + used
        if status != 0:
            raise StageError(
                f"{stage.label or stage.name} failed (exit status {status}); its log, {stage.log}, ends with:\n"
                f"{_tail(stage.log)}"
            )
    timings = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2)}
    book.record(stage, state="finished", finished_at=time.strftime("%Y-%m-%d %H:%M:%S"), **timings)
    return timings


def run_stages(stages: Sequence[Stage], jobs: int, start_over: str, redo_changed: bool = False) -> dict[str, str]:
    """Check every stage against its stamp, then run those not done already, ``jobs`` at a time, in list order as
    soon as the stages they build on have finished. Stops at the first failure (the running stages finish)."""
    if jobs < 1:
        raise StageError(f"jobs must be at least 1, got {jobs}")
    fates = plan(stages, start_over, redo_changed)
    keys = {stage.key for stage in stages}
    for stage in stages:
        unknown = [k for k in stage.after if k not in keys]
        if unknown:
            raise StageError(f"{stage.name} builds on stages that are not part of this run: {unknown}")
    for stage in stages:
        if fates[stage.key] == "done":
            _say(f"{stage.label or stage.name}: done already ({', '.join(map(str, stage.folders))})")
    pending = [stage for stage in stages if fates[stage.key] == "run"]
    finished = {stage.key for stage in stages if fates[stage.key] == "done"}
    book = StampBook()
    running: dict[str, threading.Thread] = {}
    failures: list[BaseException] = []
    wake = threading.Condition()

    def work(stage: Stage) -> None:
        try:
            timings = run_stage(stage, book)
            took = f"{timings['seconds']:.0f} s (CPU {timings['cpu_seconds']:.0f} s)"
            _say(f"{stage.label or stage.name}: finished in {took}")
        except BaseException as err:  # noqa: BLE001 - reported by the scheduling thread
            failures.append(err)
        else:
            finished.add(stage.key)
        with wake:
            running.pop(stage.key, None)
            wake.notify_all()

    with wake:
        while pending or running:
            if failures and not running:
                break
            ready = next((s for s in pending if all(k in finished for k in s.after)), None)
            if ready is not None and not failures and len(running) < jobs:
                pending.remove(ready)
                _say(f"{ready.label or ready.name}: started (log: {ready.log})")
                thread = threading.Thread(target=work, args=(ready,), name=ready.name, daemon=True)
                running[ready.key] = thread
                thread.start()
                continue
            if not running:  # nothing runs and nothing can start: a stage builds on one that did not finish
                raise StageError(f"stages that cannot start: {', '.join(s.name for s in pending)}")
            wake.wait()
    if failures:
        error = failures[0]
        raise error if isinstance(error, StageError) else StageError(str(error))
    return fates


def stage_timings(home: Path) -> dict[str, dict[str, Any]]:
    """Each recorded stage's ``seconds``, ``cpu_seconds`` and ``state`` from ``home/stamp.json``."""
    return {
        name: {k: entry.get(k) for k in ("seconds", "cpu_seconds", "state")}
        for name, entry in read_stamp(home).items()
    }
