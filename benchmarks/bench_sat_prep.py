"""Benchmark `data_prep.sat`: conversion speed and peak memory at two dataset sizes (a script, not a test).

Usage::

    python benchmarks/bench_sat_prep.py [--rows 2000 20000] [--num-proc 1] [--image-size 112] [--workdir DIR]

For each size it writes a synthetic SAT parquet (`data_prep.synthetic`, 112 px JPEGs, ~15% two-image rows), then
converts it with ``python -m data_prep.sat`` in a fresh process and prints rows/s (rows read / the conversion's own
seconds, imports excluded) and two memory figures of that process:

- ``peak RSS``: ``wait4``'s ``ru_maxrss``. It includes file-backed pages: `Dataset.save_to_disk` reads the arrow cache
  that ``Dataset.from_generator`` wrote through a memory map, so this grows with the data by up to the cache's size
  (page cache the kernel can drop at any time, not memory the process holds).
- ``peak anon``: the largest ``RssAnon`` of ``/proc/<pid>/status`` seen while it runs (sampled every 10 ms; Linux):
  the heap the process really holds. Streaming conversion keeps it about the same for both sizes.

With ``--num-proc P`` > 1 the figures are the parent's only (workers hold one batch each). ``--image-size 500``
exercises the resize path (500 is not a multiple of 28: every image is resized to 504 x 504 and stored as PNG).
Takes ~30 s on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_prep.synthetic import write_synthetic


def anon_rss_mib(pid: int) -> float:
    """The process's anonymous resident memory in MiB (0 when it cannot be read)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def convert_in_subprocess(parquet: Path, output: Path, num_proc: int) -> tuple[dict, float, float, float]:
    """Run the converter CLI in a fresh process; return its report, wall seconds, peak RSS and peak anon in MiB."""
    command = [sys.executable, "-m", "data_prep.sat", "--input", str(parquet), "--output", str(output)]
    command += ["--num-proc", str(num_proc)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    peak_anon = 0.0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, anon_rss_mib(process.pid))
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"conversion of {parquet} failed with exit code {process.returncode}")
    report = json.loads((output / "prep_report.json").read_text())
    return report, seconds, usage.ru_maxrss / 1024, peak_anon  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000], help="dataset sizes to convert")
    parser.add_argument("--num-proc", type=int, default=1, help="--num-proc of the converter")
    parser.add_argument("--image-size", type=int, default=112, help="side of the synthetic images in pixels")
    parser.add_argument("--workdir", default=None, help="where to write the data (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print("   rows  parquet MB  generate s  convert s   rows/s  process s  peak RSS MiB  peak anon MiB  resized")
        for rows in args.rows:
            parquet = Path(tmp) / f"sat_{rows}.parquet"
            start = time.perf_counter()
            write_synthetic("sat", rows=rows, seed=0, output=parquet, image_size=args.image_size)
            generate = time.perf_counter() - start
            output = Path(tmp) / f"records_{rows}"
            report, wall, peak, anon = convert_in_subprocess(parquet, output, args.num_proc)
            rate = report["rows_read"] / report["seconds"]
            size = parquet.stat().st_size / 1e6
            seconds = report["seconds"]
            resized = report["images"]["resized"]
            print(
                f"{rows:>7} {size:>11.1f} {generate:>11.1f} {seconds:>10.1f} {rate:>8.0f} {wall:>10.1f} {peak:>13.0f}"
                f" {anon:>14.0f} {resized:>8}"
            )


if __name__ == "__main__":
    main()
