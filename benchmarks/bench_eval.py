"""Benchmark CV-Bench evaluation throughput at batch sizes 1 and 8 on the tiny model (a script, not a test), and the
cost of the model fingerprint (SHA-256 of the weight files) that every evaluation run computes.

Usage::

    python benchmarks/bench_eval.py [--rows 48] [--max-new-tokens 64] [--batch-sizes 1 8] [--repeats 2] [--threads 1]
                                    [--hash-mb 512]

Builds the tiny base Qwen2-VL (`data_prep.fixtures.tiny_model`) and ``--rows`` synthetic CV-Bench rows, then runs the
whole evaluation (`recipes.eval_cvbench.main`: render, generate greedily, score, append predictions, summarize) into a
fresh output folder for each batch size, alternating the sizes ``--repeats`` times and keeping each size's best time
(the machine may be shared). The stock tiny model never emits its end token, so every row costs exactly
``--max-new-tokens`` decoding steps at every batch size. Prints examples/s per batch size and the ratio to the
first. One torch thread by default: the tiny model's matrices are too small to gain from more, and on two shared
cores a second thread mostly waits (``--threads 0`` measured 3-7x slower here). Then hashes a ``--hash-mb`` file of
random bytes the way `recipes.evaluation.fingerprint` hashes weights and projects the time for Qwen2-VL-2B's weights
(bf16 and fp32). Takes ~1 min on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")

import torch  # noqa: E402

from data_prep.fixtures.synthetic import write_synthetic  # noqa: E402
from data_prep.fixtures.tiny_model import build_tiny_model  # noqa: E402
from recipes.eval_cvbench import EvalArguments, main  # noqa: E402
from recipes.evaluation.fingerprint import file_sha256  # noqa: E402

QWEN2VL_2B_PARAMETERS = 2.21e9


def run_once(model: Path, data: Path, out: Path, batch_size: int, max_new_tokens: int, rows: int) -> float:
    """Seconds for one complete evaluation of ``rows`` rows into the empty folder ``out``."""
    args = EvalArguments(
        model_name_or_path=str(model),
        output_dir=str(out),
        dataset=str(data),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        limit=rows,
    )
    start = time.perf_counter()
    summary = main(args)
    seconds = time.perf_counter() - start
    assert summary["rows"]["scored"] == rows
    return seconds


def bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48, help="synthetic CV-Bench rows to evaluate")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="decoding steps per row")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to compare")
    parser.add_argument("--repeats", type=int, default=2, help="runs per batch size (the best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--workdir", default=None, help="where to write model and data (default: a temp folder)")
    parser.add_argument("--hash-mb", type=int, default=512, help="size of the file hashed for the fingerprint cost")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "tiny-base", variant="base", seed=0)
        data = write_synthetic("cvbench", rows=args.rows, seed=0, output=tmp / "cvbench.parquet")
        run_once(model, data, tmp / "warmup", 2, 4, 2)  # first-call costs (imports, caches) out of the timings
        best: dict[int, float] = {}
        for repeat in range(args.repeats):
            for size in args.batch_sizes:
                seconds = run_once(model, data, tmp / f"bs{size}-{repeat}", size, args.max_new_tokens, args.rows)
                best[size] = min(best.get(size, float("inf")), seconds)
        hash_rate = hash_throughput(tmp / "weights.bin", args.hash_mb)

    first = args.batch_sizes[0]
    print(
        f"{args.rows} synthetic CV-Bench rows, tiny Qwen2-VL, greedy, {args.max_new_tokens} new tokens per row, "
        f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print("batch size  seconds  examples/s  ratio")
    for size in args.batch_sizes:
        rate = args.rows / best[size]
        print(f"{size:10d}  {best[size]:7.2f}  {rate:10.2f}  {rate / (args.rows / best[first]):5.2f}x")
    print(
        f"model fingerprint: sha256 at {hash_rate:.0f} MB/s ({args.hash_mb} MB, page cache); Qwen2-VL-2B weights: ",
        end="",
    )
    for name, width in (("bf16", 2), ("fp32", 4)):
        size_mb = QWEN2VL_2B_PARAMETERS * width / 1e6
        print(f"{name} {size_mb / 1000:.1f} GB in {size_mb / hash_rate:.0f} s", end="; " if name == "bf16" else "\n")


def hash_throughput(path: Path, megabytes: int) -> float:
    """MB/s of SHA-256 over a file of random bytes, with the fingerprint's own function (best of 2)."""
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1 << 20))
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        file_sha256(path)
        best = min(best, time.perf_counter() - start)
    path.unlink()
    return megabytes * (1 << 20) / 1e6 / best


if __name__ == "__main__":
    bench()
