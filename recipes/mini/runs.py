"""Stages of the mini experiments, keyed by what defines them: nothing made with another seed or config is reused.

`launch/mini_r1.sh` (`recipes.mini.r1`) and `launch/mini_ablations.sh` (`recipes.mini.ablations`) describe their work
as `Stage`s — building the model and data, stage A, each stage-B arm — each with the folders it writes, the commands
that write them and what defines it (seed, config file and a hash of its values, steps, options, and the definition
of every stage it builds on). Each stage is one entry of ``<seed folder>/provenance.json``
(`recipes.shared.provenance`, kind ``mini-stage``): its definition, whether it finished, and the paths it owns (its
folders and its log). Before
anything runs, every stage is checked against it:

* recorded with the same definition and finished, folders present: **done already**, skipped;
* recorded with the same definition but unfinished (killed): its owned paths are deleted and it runs again;
* recorded with another definition: **refused** before anything runs, naming each difference and how to redo it
  (``REDO=1``: then exactly its owned paths are deleted and it runs again), start over or use another ``OUT``;
* its folders exist with no record of them (an older launcher, another program, the user): **refused**, always —
  they are never reused nor deleted;
* not recorded and its folders absent: it runs.

`run_stages` runs the stages in a pool of ``jobs`` processes at a time (a stage waits for the stages it builds on),
each command's output going to ``<seed folder>/logs/<stage>.log``; the record gets each stage's wall-clock and CPU
seconds (the CPU time of the commands' own processes, from ``os.wait4``, so it does not depend on what else runs).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.shared import provenance
from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

KIND = "mini-stage"
RECORD = provenance.RECORD
LOGS = "logs"
LOG_TAIL_LINES = 40


class StageError(RecipeError):
    """A stage that cannot run (its folders were made with other settings) or that failed; the message has the fix."""


def config_definition(path: str | Path) -> dict[str, str]:
    """A config file as part of a definition: its path and the hash of its values, so that changing a setting is
    noticed (and editing a comment is not: it defines nothing)."""
    import yaml

    values = yaml.safe_load(Path(path).read_text())
    return {"path": str(path), "values_sha256": provenance.digest(values)}


@dataclass
class Stage:
    """One unit of work of a run: ``commands`` write ``folders``; ``defined_by`` says what makes its result."""

    name: str
    home: Path  # the seed folder: its provenance.json and logs/ hold this stage's record and output
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


# --- the record ---------------------------------------------------------------------------------------------------


def owned_paths(stage: Stage) -> list[str]:
    """What a stage owns in its home's record: its folders and its log (relative to the home)."""
    return [str(path.relative_to(stage.home)) for path in (*stage.folders, stage.log)]


def _relative(path: Path, home: Path) -> str:
    try:
        return str(path.relative_to(home))
    except ValueError:
        return str(path)


def _has_files(folder: Path) -> bool:
    return folder.exists() and (not folder.is_dir() or any(folder.iterdir()))


def plan(stages: Sequence[Stage], start_over: str, redo_changed: bool = False) -> dict[str, str]:
    """Each stage's fate — ``"done"`` (skipped) or ``"run"`` — checked against the records before anything runs.

    ``start_over`` says how to redo those stages or start over (the launcher's ``REDO=1``, ``FRESH=1``, ``OUT``).
    Raises `StageError` naming every stage whose folders were made with other settings (nothing is changed), unless
    ``redo_changed``: then those stages run again (their owned paths are deleted first). Folders no record owns are
    refused in any case: they are not this experiment's, so they are neither reused nor deleted.
    """
    fates: dict[str, str] = {}
    problems: list[str] = []
    strangers: list[str] = []
    for home in dict.fromkeys(stage.home for stage in stages):
        if provenance.inspect(home, KIND, {}, name="").state == "foreign":
            strangers.append(f"{home} holds files but no {RECORD} saying what made them")
    for stage in stages:
        verdict = provenance.inspect(stage.home, KIND, stage.defined_by, name=stage.name)
        present = [f for f in stage.folders if _has_files(f)]
        where = f"{stage.home}: {stage.name} ({', '.join(_relative(f, stage.home) for f in present)})"
        if verdict.entry is None:
            if present:
                strangers.append(f"{where} holds files but {RECORD} has no record of what made them")
            fates[stage.key] = "run"
        elif verdict.state == "different" and present:
            problems.append(f"{where} was made with other settings:\n    " + "\n    ".join(verdict.changes))
            fates[stage.key] = "run"
        elif verdict.state == "same" and verdict.finished and len(present) == len(stage.folders):
            fates[stage.key] = "done"
        else:
            fates[stage.key] = "run"
    if strangers:
        raise StageError(
            "files of unknown origin (another program, an older launcher, another seed copied in?) are in the way, "
            "and are neither reused nor deleted:\n  " + "\n  ".join(dict.fromkeys(strangers)) + "\nNothing was "
            "changed. Choose another output folder (OUT=<new folder>), or move those files away."
        )
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


def claim_outputs(folder: Path, name: str, kind: str, files: Sequence[str], **fields: Any) -> None:
    """Record that entry ``name`` owns ``files`` (in ``folder``), before it writes them; one that exists and is not
    the entry's already is somebody else's: refused, never overwritten."""
    owned = provenance.read(folder).get(name, {}).get("owns", [])
    theirs = [f for f in files if (folder / f).exists() and f not in owned]
    if theirs:
        raise StageError(
            f"{', '.join(str(folder / f) for f in theirs)} exists and {RECORD} does not say this experiment wrote it: "
            "move it away or choose another output folder (OUT=<new folder>)"
        )
    provenance.record(folder, name, kind=kind, owns=[f for f in files if f not in owned], **fields)


def start_over(homes: Sequence[Path], kinds: Sequence[str] = (KIND,), ignore: Sequence[str] = ()) -> list[Path]:
    """Delete exactly what the records of ``homes`` say their entries (of ``kinds``) own; anything else stays.

    Refused (nothing deleted) when a home holds files but no record (names in ``ignore`` aside), or entries of
    another kind (another program's outputs).
    """
    for home in homes:
        entries = provenance.read(home)
        if not entries and set(provenance.unowned(home, entries)) - set(ignore):
            raise StageError(
                f"{home} holds files but no {RECORD} saying what made them: they are not this experiment's, and "
                "nothing there is deleted. Choose another output folder (OUT=<new folder>)."
            )
        others = sorted({str(e.get("kind")) for e in entries.values()} - set(kinds))
        if others:
            raise StageError(f"{home} holds outputs of {', '.join(others)}: choose another output folder")
    removed = []
    for home in homes:
        for name in list(provenance.read(home)):
            removed += provenance.delete_owned(home, name)
    return removed


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


def run_stage(stage: Stage) -> dict[str, float]:
    """Delete what the stage's entry owns (an earlier, unfinished or redone attempt), run its commands, record it as
    finished (with its timings)."""
    provenance.delete_owned(stage.home, stage.name)
    provenance.start(stage.home, KIND, stage.defined_by, stage.name, owns=owned_paths(stage))
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
    provenance.finish(stage.home, stage.name, **timings)
    return timings


def run_stages(stages: Sequence[Stage], jobs: int, start_over: str, redo_changed: bool = False) -> dict[str, str]:
    """Check every stage against its record, then run those not done already, ``jobs`` at a time, in list order as
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
    running: dict[str, threading.Thread] = {}
    failures: list[BaseException] = []
    wake = threading.Condition()

    def work(stage: Stage) -> None:
        try:
            timings = run_stage(stage)
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
    """Each recorded stage's ``seconds``, ``cpu_seconds`` and ``state`` from ``home/provenance.json``."""
    return {
        name: {k: entry.get(k) for k in ("seconds", "cpu_seconds", "state")}
        for name, entry in provenance.read(home).items()
        if entry.get("kind") == KIND
    }
