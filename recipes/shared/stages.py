"""A launcher's stages: each a command in its own process, side by side where it may, its whole output in a log.

    python -m recipes.shared.stages --logs DIR [--preload MODULES]  NAME TITLE AFTER N WORD1 ... WORDN  [NAME ...]

A stage is a command of N words that starts once the stages named in AFTER (comma-separated, ``-`` for none) have
succeeded. Its stdout and stderr go to ``DIR/NAME.log``, which ends with ``== <seconds> s, exit status <S>``. The
console gets one line per stage, in the order given: its title, its wall-clock seconds and its log. A stage that fails
stops the others; the console shows the end of its log, and its exit status becomes this command's (128 + N for a
stage killed by signal N, as a shell reports it).

Warm stages (``--preload``). A Python process spends about 8 s of a 2-core CPU importing torch, torchvision and
transformers before it does anything (and about 2 s tearing them down at its exit), and a launcher whose stages run
one after another (build a model, train it, evaluate it) pays that at every stage. With ``--preload``, this process
imports those modules once, and a stage whose command is ``PYTHON -m MODULE ...`` or ``PYTHON SCRIPT.py ...``, where
PYTHON is the interpreter running this file, runs in a child forked from it: still a process of its own (its own exit
status, signals, memory and global state, freed at its end), running the module as ``python`` would (``__main__``,
``sys.argv``, ``sys.path[0]``, ``atexit``). Only the imports are shared. This process imports and forks, nothing
else: it starts no thread (if an import did, the stages start cold) and computes nothing.

What may be preloaded: modules whose import leaves nothing that a child's exit removes. Each child runs the exit
handlers it inherits, so a module that makes a temporary folder at import and removes it at exit (W&B's media folder,
which TRL's trainers import) would lose that folder for every later stage: such modules are imported by each stage
itself. Any other command (another interpreter, a shell script) runs as given (``exec``), and so does every stage off
Linux, where forking a process that imported these libraries is not safe (macOS).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import runpy
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TAIL_LINES = 30


@dataclass
class Stage:
    name: str
    title: str
    after: list[str]
    command: list[str]
    log: Path = field(init=False)
    pid: int | None = None
    began: float = 0.0
    seconds: float | None = None
    status: int | None = None
    target: tuple[str, str] | None = None  # warm: ("module", NAME) or ("path", SCRIPT)


def parse_plan(words: list[str]) -> list[Stage]:
    """``NAME TITLE AFTER N WORD1..WORDN``, repeated: the stages, each after stages listed before it."""
    stages: list[Stage] = []
    while words:
        if len(words) < 4 or not words[3].isdigit() or len(words) < 4 + int(words[3]) or words[3] == "0":
            raise ValueError(f"a stage is NAME TITLE AFTER N and N command words; got {words[:5]}")
        name, title, after, count = words[0], words[1], words[2], int(words[3])
        names = [stage.name for stage in stages]
        waits = [] if after == "-" else after.split(",")
        if name in names or not name.replace("_", "").isalnum():
            raise ValueError(f"stage name {name!r} is repeated or not a plain word")
        unknown = [w for w in waits if w not in names]
        if unknown:
            raise ValueError(f"stage {name!r} waits for {unknown}, which are not stages listed before it")
        stages.append(Stage(name, title, waits, words[4 : 4 + count]))
        words = words[4 + count :]
    return stages


def warm_target(command: list[str]) -> tuple[str, str] | None:
    """``("module", NAME)`` or ``("path", SCRIPT)`` when ``command`` is this interpreter running Python; else None."""
    if not sys.platform.startswith("linux") or len(command) < 2:
        return None
    program = shutil.which(command[0])
    if program is None or os.path.abspath(program) != os.path.abspath(sys.executable):
        return None
    if command[1] == "-m" and len(command) >= 3:
        return "module", command[2]
    if command[1].endswith(".py") and not command[1].startswith("-"):
        return "path", command[1]
    return None


def preload(modules: list[str]) -> bool:
    """Import ``modules`` here, once, for the warm stages' children; False when the stages should start cold."""
    try:
        for module in modules:
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a stage that needs the module reports the error, in its log, when it runs
        return False
    return threading.active_count() == 1


def _run_child(stage: Stage) -> None:
    """In the forked child: the stage's output to its log, then its command; exits, never returns.

    The child stays in the launcher's process group: whatever stops the launcher's group (Ctrl-C, a job system, a
    harness's ``killpg``) stops every stage with it, even this process killed by SIGKILL."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    point_output_at(stage.log)
    target = stage.target
    if target is None:
        try:
            os.execvp(stage.command[0], stage.command)
        except OSError as err:
            print(f"error: cannot run {stage.command[0]}: {err}", file=sys.stderr)
            os._exit(127)
    sys.argv = [target[1], *stage.command[3 if target[0] == "module" else 2 :]]
    if target[0] == "module":
        sys.modules.pop(target[1], None)  # run afresh as __main__, as `python -m` does; what it imported stays
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(target[1]))
        runpy.run_path(target[1], run_name="__main__")
    raise SystemExit(0)  # as `python` ends: atexit handlers run (W&B finishes its run), the status is 0


def start(stage: Stage) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    stage.began = time.monotonic()
    pid = os.fork()
    if pid == 0:
        # Nothing between here and the top of this program catches an exception: the child ends as `python` would.
        _run_child(stage)
    stage.pid = pid


def exit_status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def stop(stages: list[Stage]) -> None:
    for stage in stages:
        if stage.pid is not None and stage.status is None:
            try:
                os.kill(stage.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def point_output_at(path: Path) -> None:
    """File descriptors 1 and 2 (so C libraries' output too) to a new ``path``."""
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr into ``path`` for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    point_output_at(path)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(stages: list[Stage], logs: Path, preloads: list[str] | None = None) -> int:
    """Run the stages; print their account; the exit status of the first that failed, or 0."""
    logs.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        stage.log = logs / f"{stage.name}.log"
    by_name = {stage.name: stage for stage in stages}

    def start_ready(warm_too: bool) -> None:
        for stage in stages:
            if stage.pid is None and all(by_name[name].status == 0 for name in stage.after):
                if warm_too or stage.target is None:
                    start(stage)

    # The cold stages that can start do (they run while this process imports), then the preloads are imported, once.
    for stage in stages:
        stage.target = warm_target(stage.command) if preloads is not None else None
    start_ready(warm_too=False)
    if any(stage.target for stage in stages):
        began = time.monotonic()
        with output_to(logs / "imports.log"):  # what the libraries print on import (DeepSpeed's accelerator line)
            preloaded = preload(preloads or [])
        # What is imported stays as it is: the children's garbage collections leave it alone (their pages stay shared,
        # and a child's exit takes ~0.5 s instead of ~2 s), as the `gc` module's documentation advises before forking.
        gc.freeze()
        if preloaded:
            title = f"{len(preloads or [])} Python libraries, imported once for the stages"
            print(f"  {title:<52} {time.monotonic() - began:6.1f} s   {relative(logs / 'imports.log')}", flush=True)
        else:
            for stage in stages:
                stage.target = None
    shown = 0
    while True:
        start_ready(warm_too=True)
        running = [stage for stage in stages if stage.pid is not None and stage.status is None]
        if not running:
            return 0
        pid, wait_status = os.wait()
        stage = next((s for s in running if s.pid == pid), None)
        if stage is None:
            continue
        stage.status = exit_status(wait_status)
        stage.seconds = time.monotonic() - stage.began
        with open(stage.log, "a") as log:
            log.write(f"== {stage.seconds:.1f} s, exit status {stage.status}\n")
        while shown < len(stages) and stages[shown].status == 0:
            done = stages[shown]
            print(f"  {done.title:<52} {done.seconds:6.1f} s   {relative(done.log)}", flush=True)
            shown += 1
        if stage.status != 0:
            stop(stages)
            tail = stage.log.read_text(errors="replace").splitlines()[-TAIL_LINES - 1 : -1]
            print(f"  {stage.title:<52} FAILED (exit status {stage.status}) after {stage.seconds:.1f} s", flush=True)
            print(f"\n--- the last {TAIL_LINES} lines of {stage.log}:", *tail, "---", sep="\n", flush=True)
            print(
                f"error: {stage.title} failed (exit status {stage.status}); its whole output: {stage.log}",
                file=sys.stderr,
            )
            return stage.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--logs", type=Path, required=True, help="the folder of the stages' logs (NAME.log each)")
    parser.add_argument(
        "--preload",
        default=None,
        help="comma-separated modules to import once for the Python stages (none given: every stage starts cold)",
    )
    parser.add_argument("plan", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        stages = parse_plan(args.plan)
    except ValueError as err:
        parser.error(str(err))

    def interrupted(signum, _frame):  # a kill of this process alone: the stages stop too
        stop(stages)
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    preloads = None if args.preload is None else [m for m in args.preload.split(",") if m]
    return run(stages, args.logs, preloads)


if __name__ == "__main__":
    sys.exit(main())
