"""Benchmark `data_prep.sat`: speed, peak memory and output size, on images that need fitting and images that do not
(a script, not a test).

Usage::

    python benchmarks/bench_sat_prep.py [--rows 5000] [--images 112x112 512x384] [--num-proc P] [--workdir DIR]
                                        [--trees DIR ...] [--load-rows N]

For each image size it writes a synthetic SAT parquet (`data_prep.fixtures.synthetic` scenes, ~15% two-image rows; a
non-square size is the square scene cropped to it, re-encoded as JPEG), then converts it with
``python -m data_prep.sat`` in a fresh process, with the converter's own defaults unless ``--num-proc`` is given (so
the same command measures the tree before and after a change). 112x112 is a fixed point of the paper's bounds (the
source bytes are kept); 512x384, like most photographs and renders, is not (its sides are not multiples of 28), so
every image is fitted to 504x392 (``resized``: at prep by the former default, at load by the present one). It prints,
per size and tree, side by side:

- ``wall s`` / ``rows/s``: the whole process, imports included (what a user waits for), and rows read per second;
- ``conv s``: the conversion's own seconds (``prep_report.json``);
- ``cpu s``: the CPU time the process (and its children) used: on a shared machine a steadier figure than wall
  time, which other processes' load stretches;
- ``peak RSS`` / ``peak anon`` (MiB): the largest sum over the converter and its worker processes of their resident
  memory, and of its anonymous part (``RssAnon``: the heap they really hold, without file-backed pages such as the
  arrow cache that `datasets` maps), sampled every 20 ms;
- ``in MB`` / ``out MB`` / ``out/in``: the parquet's size against the saved dataset's.

``--trees`` converts with each given checkout of the repository in turn (``python -m data_prep.sat`` run from it, with
it on ``PYTHONPATH``), so one run measures before and after a change side by side, e.g. with a second checkout of
main made by ``git worktree add --detach ../base main``. Default: this checkout only.

Then, for this checkout, the cost moved to loading: the first ``--load-rows`` records of each conversion read through
the recipes' loader (`recipes.shared.data.fit_images`: images fitted as they are read), in a fresh process: ms per
image, and the process's RSS after a tenth of the rows and after all of them (memory must not grow with rows).

The load average is printed first: other processes on the machine slow everything down, so compare runs made at a
similar load. 5,000 rows of each size take about 1 min on 2 idle cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from data_prep.fixtures.scenes import encode_jpeg
from data_prep.fixtures.synthetic import SAT_FEATURES, write_synthetic


def parse_size(text: str) -> tuple[int, int]:
    """``"512x384"`` → ``(512, 384)``."""
    width, sep, height = text.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"an image size is WIDTHxHEIGHT, e.g. 512x384; got {text!r}")
    return int(width), int(height)


def write_source(rows: int, size: tuple[int, int], path: Path) -> Path:
    """A synthetic SAT parquet whose images are ``size`` (width, height) JPEGs."""
    width, height = size
    write_synthetic("sat", rows=rows, seed=0, output=path, image_size=max(width, height))
    if width == height:
        return path
    table = pq.read_table(path)
    cropped = [
        [encode_jpeg(Image.open(io.BytesIO(data)).crop((0, 0, width, height))) for data in images]
        for images in table.column("image_bytes").to_pylist()
    ]
    index = table.schema.get_field_index("image_bytes")
    table = table.set_column(index, "image_bytes", pa.array(cropped, type=SAT_FEATURES.arrow_schema.field(0).type))
    pq.write_table(table, path)
    return path


def tree_memory_mib(process: psutil.Process) -> tuple[float, float]:
    """The summed RSS and anonymous RSS (MiB) of ``process`` and its descendants (0 for those already gone)."""
    rss = anon = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    for member in members:
        try:
            status = Path(f"/proc/{member.pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        anon += int(fields.get("RssAnon", "0 kB").split()[0])
    return rss / 1024, anon / 1024


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that runs ``tree``'s code (offline)."""
    return {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def convert_in_subprocess(parquet: Path, output: Path, num_proc: int | None, tree: Path) -> dict:
    """Run ``tree``'s converter CLI in a fresh process; return its report and the measured figures."""
    command = [sys.executable, "-m", "data_prep.sat", "--input", str(parquet), "--output", str(output)]
    if num_proc is not None:
        command += ["--num-proc", str(num_proc)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=tree_env(tree), cwd=tree, stdout=subprocess.DEVNULL)
    watched = psutil.Process(process.pid)
    peak_rss = peak_anon = 0.0
    while process.poll() is None:
        rss, anon = tree_memory_mib(watched)
        peak_rss, peak_anon = max(peak_rss, rss), max(peak_anon, anon)
        time.sleep(0.02)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if process.returncode != 0:
        raise SystemExit(f"conversion of {parquet} failed with exit code {process.returncode}")
    report = json.loads((output / "prep_report.json").read_text())
    return {"report": report, "wall": wall, "cpu": cpu, "peak_rss": peak_rss, "peak_anon": peak_anon}


# Reads records as the recipes do and prints ms per image, RSS (MiB) after a tenth of the rows and after all of them.
LOAD_PROBE = """
import json, sys, time
from datasets import load_from_disk
from recipes.shared.data import fit_images
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
records = load_from_disk(sys.argv[1])
records = fit_images(records.select(range(min(int(sys.argv[2]), len(records)))), 3136, 401408)
images, early, start = 0, None, time.perf_counter()
for i, row in enumerate(records):
    images += sum(image.size[0] > 0 for image in row["images"])
    if i == len(records) // 10:
        early = rss()
print(json.dumps({"ms": 1000 * (time.perf_counter() - start) / images, "early": early, "late": rss()}))
"""


def load_in_subprocess(records: Path, rows: int, tree: Path) -> dict:
    """Read the first ``rows`` records with ``tree``'s loader in a fresh process: ms per image, RSS early and late."""
    command = [sys.executable, "-c", LOAD_PROBE, str(records), str(rows)]
    result = subprocess.run(command, env=tree_env(tree), cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5000], help="dataset sizes to convert")
    parser.add_argument(
        "--images", type=parse_size, nargs="+", default=[(112, 112), (512, 384)], help="image sizes, WIDTHxHEIGHT"
    )
    parser.add_argument("--num-proc", type=int, default=None, help="--num-proc of the converter (default: its own)")
    parser.add_argument("--workdir", default=None, help="where to write the data (default: a temporary folder)")
    here = Path(__file__).resolve().parents[1]
    parser.add_argument(
        "--trees", type=Path, nargs="+", default=[here], help="checkouts whose converter to run (default: this one)"
    )
    parser.add_argument("--load-rows", type=int, default=1000, help="records read through the loader (0: skip)")
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    for number, tree in enumerate(args.trees):
        where = [sys.executable, "-c", "import data_prep.sat as sat; print(sat.__file__)"]  # resolved as `-m` will be
        found = subprocess.run(where, env=tree_env(tree), cwd=tree, capture_output=True, text=True, check=True)
        print(f"tree {number}: {found.stdout.strip()}")
    header = (
        "images     rows tree  resized  wall s  conv s   cpu s  rows/s  peak RSS MiB  peak anon MiB  in MB  out MB"
        "  out/in"
    )
    print(header)
    loads = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in args.images:
            for rows in args.rows:
                label = f"{size[0]}x{size[1]}"
                parquet = write_source(rows, size, Path(tmp) / f"sat_{label}_{rows}.parquet")
                for number, tree in enumerate(args.trees):
                    output = Path(tmp) / f"records_{label}_{rows}_{number}"
                    figures = convert_in_subprocess(parquet, output, args.num_proc, tree)
                    report = figures["report"]
                    images = report["images"]
                    resized = images.get("resized", 0) or images.get("outside_bounds", 0)  # fitted here or at load
                    source, written = parquet.stat().st_size / 1e6, folder_bytes(output) / 1e6
                    print(
                        f"{label:<9} {rows:>6} {number:>4} {resized:>8} {figures['wall']:>7.1f}"
                        f" {report['seconds']:>7.1f} {figures['cpu']:>7.1f}"
                        f" {report['rows_read'] / figures['wall']:>7.0f} {figures['peak_rss']:>13.0f}"
                        f" {figures['peak_anon']:>14.0f} {source:>6.1f} {written:>7.1f} {written / source:>7.2f}"
                    )
                    if args.load_rows:
                        fitted_at = images.get("fitted", "prep")
                        loads.append((label, number, fitted_at, load_in_subprocess(output, args.load_rows, here)))
    if loads:
        print(f"loading {args.load_rows} records through recipes.shared.data.fit_images (this checkout)")
        print("images     tree  fitted at  ms/image  RSS MiB after 1/10  RSS MiB after all")
        for label, number, fitted_at, load in loads:
            print(
                f"{label:<9} {number:>5}  {fitted_at:<9} {load['ms']:>9.2f} {load['early']:>19.0f}"
                f" {load['late']:>18.0f}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
