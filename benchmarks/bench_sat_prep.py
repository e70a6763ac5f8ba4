"""Benchmark `data_prep.sat`: conversion speed and peak memory at two dataset sizes (a script, not a test).

Usage::

    python benchmarks/bench_sat_prep.py [--rows 2000 20000] [--num-proc 1] [--image-size 112] [--workdir DIR]

For each size it writes a synthetic SAT parquet (`data_prep.synthetic`, 112 px JPEGs, ~15% two-image rows), then
converts it with ``python -m data_prep.sat`` in a fresh process and prints rows/s and that process's peak RSS (from
``wait4``'s resource usage). Streaming conversion should show about the same peak RSS for both sizes. With
``--num-proc P`` > 1 the figure is the parent's only (workers hold one batch each). Takes ~30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_prep.synthetic import write_synthetic


def convert_in_subprocess(parquet: Path, output: Path, num_proc: int) -> tuple[dict, float, float]:
    """Run the converter CLI in a fresh process; return its report, wall seconds and peak RSS in MiB."""
    command = [sys.executable, "-m", "data_prep.sat", "--input", str(parquet), "--output", str(output)]
    command += ["--num-proc", str(num_proc)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"conversion of {parquet} failed with exit code {process.returncode}")
    report = json.loads((output / "prep_report.json").read_text())
    return report, seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000], help="dataset sizes to convert")
    parser.add_argument("--num-proc", type=int, default=1, help="--num-proc of the converter")
    parser.add_argument("--image-size", type=int, default=112, help="side of the synthetic images in pixels")
    parser.add_argument("--workdir", default=None, help="where to write the data (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print("   rows  parquet MB  generate s  convert s   rows/s  process s  peak RSS MiB")
        for rows in args.rows:
            parquet = Path(tmp) / f"sat_{rows}.parquet"
            start = time.perf_counter()
            write_synthetic("sat", rows=rows, seed=0, output=parquet, image_size=args.image_size)
            generate = time.perf_counter() - start
            report, wall, peak = convert_in_subprocess(parquet, Path(tmp) / f"records_{rows}", args.num_proc)
            rate = report["rows_read"] / report["seconds"]
            size = parquet.stat().st_size / 1e6
            seconds = report["seconds"]
            print(
                f"{rows:>7} {size:>11.1f} {generate:>11.1f} {seconds:>10.1f} {rate:>8.0f} {wall:>10.1f} {peak:>13.0f}"
            )


if __name__ == "__main__":
    main()
