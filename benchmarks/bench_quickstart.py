"""Benchmark `launch/quickstart.sh`: wall-clock and CPU seconds of the whole quickstart, and of each stage (a script,
not a test).

Usage::

    python benchmarks/bench_quickstart.py [--trees DIR ...] [--cold] [--repeats 2] [--workdir DIR]

Each run is the README's command, ``bash launch/quickstart.sh``, with a fresh ``OUT`` and nothing else set (so the same
command measures the tree before and after a change). ``--trees`` runs it with each given checkout of the repository
in turn (its own ``launch/quickstart.sh``, with it on ``PYTHONPATH``), repeats alternating between trees, so one run
measures before and after side by side, e.g. with a second checkout made by ``git worktree add --detach ../base
main``. ``--cold`` adds, for this checkout, runs whose stages each start their own Python (``PYTHON`` set to a
wrapper that runs this interpreter: `recipes.shared.stages` shares imports only with its own interpreter), which is
what sharing the imports saves.

It prints per run the wall-clock seconds, the CPU seconds of the quickstart and everything it started, and each
stage's seconds as the quickstart's account gives them; then per tree the median wall time and its ratio to the first
tree's. The load average is printed first: other processes slow everything down, so compare runs made at a similar
load. A run takes about 35-60 s on 2 idle cores.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^  (.+?)\s{2,}(\d+\.\d) s\b")


def run_quickstart(tree: Path, out: Path, python: str | None) -> dict:
    """One quickstart in ``tree`` into ``out``: wall and CPU seconds, each stage's seconds, the exit status."""
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "SEED", "FRESH", "DRY_RUN", "PYTHON")}
    env.update(OUT=str(out), PYTHONPATH=os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    if python is not None:
        env["PYTHON"] = python
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    result = subprocess.run(["bash", str(tree / "launch/quickstart.sh")], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"error: the quickstart in {tree} failed (exit status {result.returncode}):\n{result.stderr[-2000:]}")
    stages = {m.group(1): float(m.group(2)) for line in result.stdout.splitlines() if (m := STAGE_LINE.match(line))}
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=Path, nargs="+", default=[HERE], help="checkouts to run (default: this one)")
    parser.add_argument("--cold", action="store_true", help="also this checkout with every stage its own Python")
    parser.add_argument("--repeats", type=int, default=2, help="runs per tree, alternating between trees")
    parser.add_argument("--workdir", type=Path, default=None, help="where the runs' OUT folders go (default: a temp)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    with tempfile.TemporaryDirectory() as scratch:
        wrapper = Path(scratch) / "python"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        variants = [(str(tree.resolve()), tree.resolve(), None) for tree in args.trees]
        for _, tree, _ in variants:  # each tree's quickstart must run that tree's code, not an installed copy
            env = {**os.environ, "PYTHONPATH": str(tree)}
            where = [sys.executable, "-c", "import recipes; print(recipes.__file__)"]
            found = subprocess.run(where, env=env, cwd=tree, capture_output=True, text=True, check=True).stdout
            if not Path(found.strip()).resolve().is_relative_to(tree):
                sys.exit(f"error: with {tree} on PYTHONPATH, recipes is imported from {found.strip()}")
        if args.cold:
            variants.append((f"{HERE} (cold stages)", HERE, str(wrapper)))
        print(f"load average {os.getloadavg()[0]:.2f}; {args.repeats} run(s) per tree; OUT folders in {workdir}")
        walls: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for repeat in range(args.repeats):
            for number, (label, tree, python) in enumerate(variants):
                figures = run_quickstart(tree, workdir / f"tree{number}-run{repeat}", python)
                walls[label].append(figures["wall"])
                stages = ", ".join(f"{name} {secs:.1f}" for name, secs in figures["stages"].items())
                print(f"{label}: wall {figures['wall']:.1f} s, CPU {figures['cpu']:.1f} s  [{stages}]", flush=True)
    first = statistics.median(walls[variants[0][0]])
    print("\nmedian wall s   vs first   tree")
    for label, values in walls.items():
        median = statistics.median(values)
        print(f"{median:13.1f}   {median / first:7.2f}x   {label}")


if __name__ == "__main__":
    main()
