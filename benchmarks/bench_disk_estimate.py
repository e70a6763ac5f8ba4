"""The disk estimate of recipes/shared/preflight.py against what real runs write, and the figure for the paper run.

    PYTHONPATH=$PWD python benchmarks/bench_disk_estimate.py            # ~3 min on 2 CPU cores, offline

Trains the tiny GRPO config for 2 steps three ways — one process, and 2 CPU ranks under real DeepSpeed ZeRO-2 and
ZeRO-3 (`NUM_GPUS=2 bash launch/run_8gpu.sh`, gloo) — with a resumable checkpoint and a model snapshot at each step,
and prints, per checkpoint and per snapshot, the estimated bytes (weights + optimizer state; the estimate leaves out
the few kB of configs, tokenizer, RNG and scheduler state) beside the bytes on disk. Then the paper config's estimate
on 8 GPUs under ZeRO-3 (Qwen2-VL-2B's shape counted on the meta device; 10,800 training rows assumed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")

from data_prep.fixtures.synthetic import write_synthetic  # noqa: E402
from data_prep.fixtures.tiny_model import build_tiny_model  # noqa: E402
from data_prep.sat import convert  # noqa: E402
from recipes import grpo_base  # noqa: E402
from recipes.shared.cli import CONFIG_DIR  # noqa: E402
from recipes.shared.preflight import count_parameters, estimate_disk, size  # noqa: E402

TINY = CONFIG_DIR / "tiny" / "grpo_base.yaml"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(work: Path, name: str, model: Path, data: Path, zero: int | None) -> tuple[Path, list[str]]:
    out = work / name
    args = ["--model_name_or_path", str(model), "--dataset_path", str(data), "--output_dir", str(out)]
    args += ["--report_to", "none", "--max_steps", "2", "--save_steps", "1", "--save_total_limit", "0"]
    args += ["--model_save_steps", "1", "--per_device_train_batch_size", "4", "--log_completions", "false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if zero is None:
        command = [sys.executable, str(REPO / "recipes" / "grpo_base.py"), "--config", str(TINY), *args]
    else:
        config = json.loads((REPO / f"zero{zero}.json").read_text())
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition even tiny tensors
        ds = work / f"zero{zero}_tiny.json"
        ds.write_text(json.dumps(config))
        env.update(NUM_GPUS="2", ZERO=str(zero), DS_CONFIG=str(ds), MASTER_PORT=str(port()), DDP_BACKEND="gloo")
        command = ["bash", str(REPO / "launch" / "run_8gpu.sh"), "recipes/grpo_base.py", str(TINY), *args]
    subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
    return out, args


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-disk-"))
    model, data = work / "tiny-base", work / "sat"
    build_tiny_model(model, variant="base", seed=0)
    write_synthetic("sat", rows=64, seed=0, output=work / "sat.parquet")
    convert(str(work / "sat.parquet"), data, seed=0, multi_image="skip")
    print(f"{'launch':<14}{'checkpoint: estimated':>24}{'on disk':>10}{'snapshot: estimated':>22}{'on disk':>10}")
    for name, zero in (("one process", None), ("ZeRO-2, 2 ranks", 2), ("ZeRO-3, 2 ranks", 3)):
        out, args = run(work, name.split(",")[0].replace(" ", "-"), model, data, zero)
        script_args, training_args, model_args = grpo_base.make_parser().parse_args_and_config(
            ["--config", str(TINY), *args]
        )
        if zero is not None:
            os.environ.update(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE=str(zero))
        estimate = estimate_disk(script_args, training_args, model_args, 64, count_parameters(model_args, script_args))
        os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        os.environ.pop("ACCELERATE_DEEPSPEED_ZERO_STAGE", None)
        checkpoint, snapshot = folder_bytes(out / "checkpoint-2"), folder_bytes(out / "models" / "step-2")
        per_snapshot = estimate.parts["snapshots"] / estimate.snapshots
        print(
            f"{name:<14}{size(estimate.checkpoint_bytes):>24}{size(checkpoint):>10}"
            f"{size(per_snapshot):>22}{size(snapshot):>10}"
        )
    print(f"outputs kept in {work}")


if __name__ == "__main__":
    main()
