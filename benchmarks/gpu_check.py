"""The GPU self-check behind ``bash launch/gpu_check.sh``: environment, generate vs vLLM, paper-run wall time.

Usage::

    bash launch/gpu_check.sh [--workdir outputs/gpu_check] [--budget 300] [--hub auto|skip] [--train-rows N]

On a CUDA machine, within ``--budget`` seconds (default 300; stages that would start after it are skipped, and a
running stage is stopped when it runs out), each stage running the project's own commands in a subprocess on one
GPU (the first visible one):

``env``
    torch, CUDA, cuDNN, flash-attn, vLLM, transformers and TRL versions; each GPU's name and memory.
``tiny_data``
    the tiny Qwen2-VL (``python -m data_prep.fixtures.tiny_model --preset mini``: text head size 32, which every vLLM
    attention backend accepts) and synthetic SAT / CV-Bench rows (``data_prep.fixtures.synthetic``, ``data_prep.sat``
    at the tiny model's pixel bounds, so that vLLM and the trainer see the same image grid).
``tiny_generate``, ``tiny_vllm``
    3 GRPO steps of ``recipes/configs/tiny/grpo_base.yaml`` (8 completions of 128 tokens per step), completions from
    transformers' ``generate``, then from vLLM colocated; their step times side by side.
``tiny_eval_vllm``
    an 8-row evaluation with ``recipes/eval_cvbench.py --backend vllm``.
``paper_data``, ``paper_train``, ``paper_eval`` (only when the hub answers; ``--hub skip`` leaves them out)
    16 SAT rows streamed from ``array/SAT`` through ``data_prep.sat`` (the paper's single-image filter), 2 optimizer
    steps of the paper config on ``Qwen/Qwen2-VL-2B`` (8 prompts x 8 completions per step, gradient accumulation 8
    on one GPU; the ``_vllm`` config when vLLM is installed), then 8 CV-Bench rows with the untrained model.

Without vLLM the vLLM stages are skipped with the reason (install it into the same environment:
``pip install --no-build-isolation -r requirements-gpu.txt``). A failed stage is recorded with the last line of its
log and the next stage runs.

What is measured, and how:

* step time: TRL's ``step_time`` in the run's ``trainer_state.json`` log history (generation, forward and backward
  of one optimizer step, summed over gradient accumulation; the optimizer update itself is not in it). The first
  step includes warm-up (CUDA kernels, vLLM's graph capture), so the steady step time is the mean of the later steps.
* generated tokens/s: ``completions/mean_length`` x completions per step / step time, over the later steps: the
  whole step's throughput measured in generated tokens, not the generation engine's alone.
* peak GPU memory: the GPU's memory in use as ``nvidia-smi`` reports it (vLLM's reserved share, the CUDA context and
  the allocator's cache included), sampled every 0.5 s while the stage runs; ``baseline_mib`` is before any stage.
* projected wall time of the paper run: steps x the paper stage's steady step time, where steps = 2 epochs x
  floor(rows / 8 prompts per step) (TRL's sampler drops an incomplete last batch). Rows: ``--train-rows``, else
  ``rows_written`` of ``data/sat_paper/prep_report.json`` (the converted paper subset) when present, else an
  estimate, 10,886: 15,000 x 127K / 175K, the single-image share of SAT's whole train split (about 127K of 175K
  rows), assumed to hold among its first 15,000 rows. If all 15,000 were single-image: 3,750 steps.
  The projection is for one GPU, as measured; more GPUs split each step's generation and training, so it divided by
  the GPU count is a lower bound for them, not a measurement.

Everything goes to ``<workdir>/gpu_check.json`` (rewritten atomically after every stage) and a summary is printed.
Exit status: 0 when no stage failed, 1 when one did, 2 for bad arguments or when torch sees no CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata, util
from pathlib import Path
from typing import Any

from data_prep.files import write_atomic

logger = logging.getLogger("gpu_check")

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = ".gpu_check"  # marks a folder this script made, so it may replace its own stage folders there
REPORT_NAME = "gpu_check.json"
PAPER_PREP_REPORT = REPO_ROOT / "data" / "sat_paper" / "prep_report.json"

# The paper's schedule (REFERENCE section 1): 2 epochs, 8 prompts per optimizer step, 8 completions per prompt.
PAPER_EPOCHS = 2
PAPER_PROMPTS_PER_STEP = 8
PAPER_NUM_GENERATIONS = 8
PAPER_FIRST_ROWS = 15_000
# SAT's train split holds ~175K rows, ~127K of them single-image (REFERENCE section 2, from the dataset card).
PAPER_ROWS_ESTIMATE = round(PAPER_FIRST_ROWS * 127 / 175)
PAPER_ROWS_ESTIMATE_SOURCE = (
    f"estimate: {PAPER_FIRST_ROWS:,} x 127K/175K (SAT train's single-image share, assumed to hold among its first "
    f"{PAPER_FIRST_ROWS:,} rows); the exact count is rows_written in the prep_report.json of "
    "python -m data_prep.sat --input array/SAT --output data/sat_paper --limit 15000 --multi-image skip"
)

TINY_STEPS = 3
TINY_COMPLETIONS_PER_STEP = 8  # --per_device_train_batch_size 8, accumulation 1, one process
TINY_COMPLETION_TOKENS = 128
TINY_PIXELS = (3136, 12544)  # the tiny config's min/max_pixels = the tiny model's own processor bounds
PAPER_STEPS = 2
TINY_TRAIN_STAGES = ("tiny_generate", "tiny_vllm")
PAPER_MODEL = "Qwen/Qwen2-VL-2B"
EVAL_ROWS = 8
VLLM_MEMORY_SHARE_TINY = "0.2"
OOM_HINT = (
    "out of GPU memory: the paper config trains on one GPU here and needs ~50 GB for training (+16 GB for "
    "vLLM): an 80 GB card (launch/README.md, memory budget)"
)


class CheckError(RuntimeError):
    """A problem the user can fix before anything runs; printed as ``error: ...`` with exit status 2."""


# --------------------------------------------------------------------------------------------------------------
# Pure parts (tested on CPU): arguments, rows, log history, projection, report
# --------------------------------------------------------------------------------------------------------------


def positive_int(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bash launch/gpu_check.sh",
        description="Five-minute GPU self-check: environment, generate vs vLLM step times, paper-run projection.",
    )
    parser.add_argument(
        "--workdir",
        default="outputs/gpu_check",
        help="folder for the stages' data, models, logs and gpu_check.json (default: outputs/gpu_check); "
        "it must be empty, new, or a previous gpu_check folder (its stage folders are replaced)",
    )
    parser.add_argument(
        "--budget",
        type=positive_int(30),
        default=300,
        help="seconds for all stages together (default: 300); later stages are skipped once it is spent",
    )
    parser.add_argument(
        "--hub",
        choices=["auto", "skip"],
        default="auto",
        help="auto: run the Qwen/Qwen2-VL-2B stages when the Hugging Face hub answers; skip: never (default: auto)",
    )
    parser.add_argument(
        "--train-rows",
        type=positive_int(PAPER_PROMPTS_PER_STEP),
        default=None,
        help="rows of the converted paper dataset, for the projection (default: data/sat_paper/prep_report.json's "
        f"rows_written if present, else the estimate {PAPER_ROWS_ESTIMATE:,})",
    )
    return parser


def check_workdir(workdir: Path) -> None:
    """Refuse a folder that holds something this script did not make: its stage folders would be replaced."""
    if workdir.exists() and not workdir.is_dir():
        raise CheckError(f"--workdir {workdir} is a file, not a folder: choose another --workdir")
    if workdir.is_dir() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise CheckError(
            f"--workdir {workdir} holds files that gpu_check did not make (no {MARKER} marker); nothing was "
            "touched. Choose an empty or new folder: --workdir outputs/gpu_check_new"
        )


def resolve_train_rows(train_rows: int | None, prep_report: Path = PAPER_PREP_REPORT) -> tuple[int, str]:
    """The paper dataset's row count for the projection, and where it comes from."""
    if train_rows is not None:
        return train_rows, "--train-rows"
    if prep_report.is_file():
        try:
            rows = json.loads(prep_report.read_text())["rows_written"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("ignoring %s (no readable rows_written: %s); using the estimate", prep_report, err)
        else:
            if isinstance(rows, int) and rows >= PAPER_PROMPTS_PER_STEP:
                return rows, f"rows_written of {prep_report}"
            logger.warning("ignoring %s: rows_written=%r is not a row count", prep_report, rows)
    return PAPER_ROWS_ESTIMATE, PAPER_ROWS_ESTIMATE_SOURCE


def project_paper_run(
    step_seconds: float,
    train_rows: int,
    epochs: int = PAPER_EPOCHS,
    prompts_per_step: int = PAPER_PROMPTS_PER_STEP,
) -> dict[str, float | int]:
    """Wall time of the full run at ``step_seconds`` per optimizer step (TRL drops an incomplete last batch).

    Example:
        >>> project_paper_run(80.0, 10_886)
        {'steps': 2720, 'step_seconds': 80.0, 'seconds': 217600.0, 'hours': 60.44}
    """
    if not step_seconds > 0 or not math.isfinite(step_seconds):
        raise ValueError(f"step_seconds must be a positive number, not {step_seconds!r}")
    if train_rows < prompts_per_step:
        raise ValueError(f"{train_rows} rows do not fill one step of {prompts_per_step} prompts")
    steps = epochs * (train_rows // prompts_per_step)
    seconds = steps * step_seconds
    return {"steps": steps, "step_seconds": step_seconds, "seconds": seconds, "hours": round(seconds / 3600, 2)}


@dataclass
class StepLog:
    """What a run's log history says about its speed."""

    step_seconds: list[float]
    mean_completion_tokens: list[float]
    completions_per_step: int

    @property
    def steady(self) -> slice:
        # The first step pays for warm-up (kernels, vLLM's CUDA graphs); with a single step it is all there is.
        return slice(1, None) if len(self.step_seconds) > 1 else slice(0, None)

    @property
    def steady_step_seconds(self) -> float:
        times = self.step_seconds[self.steady]
        return sum(times) / len(times)

    @property
    def generated_tokens_per_second(self) -> float:
        tokens = sum(self.mean_completion_tokens[self.steady]) * self.completions_per_step
        return tokens / sum(self.step_seconds[self.steady])

    def summary(self) -> dict[str, Any]:
        return {
            "step_seconds": [round(t, 3) for t in self.step_seconds],
            "steady_step_seconds": round(self.steady_step_seconds, 3),
            "mean_completion_tokens": [round(n, 1) for n in self.mean_completion_tokens],
            "completions_per_step": self.completions_per_step,
            "generated_tokens_per_second": round(self.generated_tokens_per_second, 1),
        }


def parse_step_log(trainer_state: Path, completions_per_step: int) -> StepLog:
    """The step times and completion lengths of a run, from its ``trainer_state.json`` log history."""
    try:
        history = json.loads(trainer_state.read_text())["log_history"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read the log history of {trainer_state}: {err}") from None
    steps = [e for e in history if isinstance(e, dict) and "step_time" in e]
    if not steps:
        raise ValueError(f"{trainer_state} logs no step_time: did the run reach its first logged step?")
    missing = [e.get("step") for e in steps if "completions/mean_length" not in e]
    if missing:
        raise ValueError(f"{trainer_state}: steps {missing} log a step_time but no completions/mean_length")
    return StepLog(
        step_seconds=[float(e["step_time"]) for e in steps],
        mean_completion_tokens=[float(e["completions/mean_length"]) for e in steps],
        completions_per_step=completions_per_step,
    )


def read_run_speed(run_dir: Path, completions_per_step: int) -> StepLog:
    """`parse_step_log` on the run's most advanced trainer_state.json (its own, or its newest checkpoint's)."""
    from recipes.report.read import find_trainer_state
    from recipes.report.runlog import CompareError

    try:
        return parse_step_log(find_trainer_state(run_dir), completions_per_step)
    except CompareError as err:
        raise ValueError(str(err)) from None


def parse_nvidia_smi_memory(text: str) -> dict[str, int]:
    """``nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits`` output → {index: MiB}.

    Example:
        >>> parse_nvidia_smi_memory("0, 1024\\n1, 77000\\n")
        {'0': 1024, '1': 77000}
    """
    used: dict[str, int] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[1].isdigit():
            used[parts[0]] = int(parts[1])
    return used


def write_report(path: Path, report: dict[str, Any]) -> Path:
    """Serialise first, then replace the file at once: a report that cannot be written leaves the old one whole."""
    return write_atomic(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


def format_summary(report: dict[str, Any]) -> str:
    """The lines printed at the end: each stage's result, the side-by-side step times, the projection."""
    lines = [f"{'stage':<16} {'status':<8} {'seconds':>8}  {'peak MiB':>9}  {'steady step s':>13}  {'gen tok/s':>9}"]
    for name, stage in report["stages"].items():
        speed = stage.get("speed") or {}
        peak = stage.get("peak_gpu_mib")
        step, tokens = speed.get("steady_step_seconds"), speed.get("generated_tokens_per_second")
        lines.append(
            f"{name:<16} {stage['status']:<8} {_num(stage.get('seconds'), '.1f'):>8}  {_num(peak, 'd'):>9}  "
            f"{_num(step, '.2f'):>13}  {_num(tokens, '.0f'):>9}"
        )
        if stage.get("reason"):
            lines.append(f"{'':<16} {stage['reason']}")
    tiny = {k: (report["stages"].get(k, {}).get("speed") or {}).get("step_seconds") for k in TINY_TRAIN_STAGES}
    if any(tiny.values()):
        lines.append("tiny model, step times (s) side by side:")
        for name, times in tiny.items():
            lines.append(f"  {name:<14} " + (" ".join(f"{t:.2f}" for t in times) if times else "not measured"))
    projection = report.get("projection") or {}
    if projection.get("hours") is not None:
        lines.append(
            f"paper run projected on 1 GPU like this one: {projection['steps']:,} steps x "
            f"{projection['step_seconds']:.1f} s = {projection['hours']:.1f} h ({projection['generation']}; "
            f"{projection['train_rows']:,} rows: {projection['train_rows_source']}); on 8 GPUs at best "
            f"{projection['hours'] / 8:.1f} h (a bound, not a measurement)"
        )
    else:
        lines.append(f"paper run projection: {projection.get('reason', 'not computed')}")
    return "\n".join(lines)


def _num(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# --------------------------------------------------------------------------------------------------------------
# Running stages
# --------------------------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    status: str = "skipped"  # ok | failed | timeout | skipped
    seconds: float | None = None
    reason: str | None = None
    log: str | None = None
    peak_gpu_mib: int | None = None
    speed: dict[str, Any] | None = None


def last_line(log: Path) -> str:
    """The log's last non-empty line: for a recipe that fails, its ``error: ...`` or the exception."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_commands(
    commands: Sequence[Sequence[str]], log: Path, timeout: float, env: dict[str, str]
) -> tuple[str, float, str | None]:
    """Run ``commands`` one after another (stopping at the first failure) with their output in ``log``.

    Returns (status, seconds, reason). Each command runs in its own process group, so a timeout stops it and every
    process it started (accelerate workers, vLLM engines), and nothing else.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as out:
        for command in commands:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            remaining = timeout - (time.monotonic() - start)
            if remaining <= 0:
                return "timeout", time.monotonic() - start, f"out of time budget before: {' '.join(command[:4])}"
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env, start_new_session=True
            )
            try:
                code = process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                _stop_group(process)
                return "timeout", time.monotonic() - start, f"stopped after {timeout:.0f} s (the time budget)"
            if code != 0:
                out.flush()
                return "failed", time.monotonic() - start, f"exit {code}: {last_line(log)}"
    return "ok", time.monotonic() - start, None


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the command's process group, 15 s to exit, then SIGKILL to whatever is left of the group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            return
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass


class GpuMemoryPeak:
    """The highest memory in use on one GPU (nvidia-smi's view) while the ``with`` block runs, sampled every 0.5 s."""

    def __init__(self, gpu: str, interval: float = 0.5):
        self.gpu, self.interval = gpu, interval
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int | None:
        try:
            out = subprocess.run(
                ["nvidia-smi", f"--id={self.gpu}", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        used = parse_nvidia_smi_memory(out)
        return max(used.values()) if used else None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.sample()
            if value is not None:
                self.peak = value if self.peak is None else max(self.peak, value)
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuMemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def environment_report() -> dict[str, Any]:
    """Library versions and the GPUs torch sees (names, memory, compute capability)."""
    import torch

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "compute_capability": f"{props.major}.{props.minor}",
            }
        )
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "flash_attn": version("flash-attn"),
        "vllm": version("vllm"),
        "transformers": version("transformers"),
        "trl": version("trl"),
        "accelerate": version("accelerate"),
        "deepspeed": version("deepspeed"),
        "gpus": gpus,
    }


def hub_reachable(model: str = PAPER_MODEL) -> tuple[bool, str | None]:
    """Whether the Hugging Face hub answers for ``model`` (10 s at most), and why not."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(model, timeout=10)
    except Exception as err:  # any failure (network, auth, DNS) means: no hub stages, and says why
        return False, f"the hub did not answer for {model}: {type(err).__name__}: {str(err)[:200]}"
    return True, None


@dataclass
class Plan:
    workdir: Path
    budget: float
    hub: str
    train_rows: int
    train_rows_source: str
    gpu: str  # nvidia-smi id of the GPU the stages run on


def first_visible_gpu() -> str:
    """The GPU the stages use: the first of CUDA_VISIBLE_DEVICES (an index or UUID), else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def child_env(gpu: str, offline: bool) -> dict[str, str]:
    env = dict(os.environ)
    # One GPU for every stage, numbered as nvidia-smi numbers them (its memory is what GpuMemoryPeak samples).
    env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=gpu, TOKENIZERS_PARALLELISM="false")
    env.setdefault("WANDB_MODE", "disabled")
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def training_command(config: str, model: str, data: Path, output: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "recipes/grpo_base.py",
        "--config",
        config,
        "--model_name_or_path",
        model,
        "--dataset_path",
        str(data),
        "--output_dir",
        str(output),
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--log_completions",
        "false",
        *overrides,
    ]


def stage_commands(plan: Plan, has_vllm: bool) -> dict[str, list[list[str]]]:
    """Every stage's commands (the project's own entry points), keyed by stage name, in order."""
    w, py = plan.workdir, sys.executable
    tiny_model, tiny_data = w / "tiny-model", w / "tiny-sat"
    tiny_train = ["--max_steps", str(TINY_STEPS), "--max_completion_length", str(TINY_COMPLETION_TOKENS)]
    tiny_train += [
        "--per_device_train_batch_size",
        str(TINY_COMPLETIONS_PER_STEP),
        "--gradient_accumulation_steps",
        "1",
    ]
    tiny_config = "recipes/configs/tiny/grpo_base.yaml"
    paper_config = f"recipes/configs/paper/grpo_base{'_vllm' if has_vllm else ''}.yaml"
    backend = "vllm" if has_vllm else "hf"
    return {
        "tiny_data": [
            [
                py,
                "-m",
                "data_prep.fixtures.tiny_model",
                "--output",
                str(tiny_model),
                "--variant",
                "base",
                "--preset",
                "mini",
            ],
            [
                py,
                "-m",
                "data_prep.fixtures.synthetic",
                "--kind",
                "sat",
                "--rows",
                "32",
                "--output",
                str(w / "tiny-sat.parquet"),
            ],
            [py, "-m", "data_prep.sat", "--input", str(w / "tiny-sat.parquet"), "--output", str(tiny_data)]
            + ["--multi-image", "skip", "--min-pixels", str(TINY_PIXELS[0]), "--max-pixels", str(TINY_PIXELS[1])],
            [py, "-m", "data_prep.fixtures.synthetic", "--kind", "cvbench", "--rows", str(EVAL_ROWS)]
            + ["--output", str(w / "tiny-cvbench.parquet")],
        ],
        "tiny_generate": [training_command(tiny_config, str(tiny_model), tiny_data, w / "tiny_generate", *tiny_train)],
        "tiny_vllm": [
            training_command(
                tiny_config,
                str(tiny_model),
                tiny_data,
                w / "tiny_vllm",
                *tiny_train,
                *["--use_vllm", "true", "--vllm_mode", "colocate"],
                *["--vllm_gpu_memory_utilization", VLLM_MEMORY_SHARE_TINY],
            )
        ],
        "tiny_eval_vllm": [
            [py, "recipes/eval_cvbench.py", "--model_name_or_path", str(tiny_model)]
            + ["--dataset", str(w / "tiny-cvbench.parquet"), "--prompt", "base", "--backend", "vllm"]
            + [
                "--limit",
                str(EVAL_ROWS),
                "--batch_size",
                str(EVAL_ROWS),
                "--max_new_tokens",
                str(TINY_COMPLETION_TOKENS),
            ]
            + ["--min_pixels", str(TINY_PIXELS[0]), "--max_pixels", str(TINY_PIXELS[1])]
            + ["--vllm_gpu_memory_utilization", VLLM_MEMORY_SHARE_TINY, "--output_dir", str(w / "tiny_eval_vllm")]
        ],
        "paper_data": [
            [py, "-m", "data_prep.sat", "--input", "array/SAT", "--output", str(w / "paper-sat")]
            + ["--limit", "16", "--multi-image", "skip"]
        ],
        "paper_train": [
            training_command(
                paper_config,
                PAPER_MODEL,
                w / "paper-sat",
                w / "paper_train",
                *["--max_steps", str(PAPER_STEPS), "--prompts_per_step", str(PAPER_PROMPTS_PER_STEP)],
                *["--per_device_train_batch_size", str(PAPER_NUM_GENERATIONS)],
            )
        ],
        "paper_eval": [
            [py, "recipes/eval_cvbench.py", "--model_name_or_path", PAPER_MODEL, "--prompt", "base"]
            + ["--backend", backend, "--limit", str(EVAL_ROWS), "--batch_size", str(EVAL_ROWS)]
            + ["--output_dir", str(w / "paper_eval")]
        ],
    }


# Where each training stage writes its run, and how many completions one of its optimizer steps generates.
TRAIN_RUNS = {
    "tiny_generate": ("tiny_generate", TINY_COMPLETIONS_PER_STEP),
    "tiny_vllm": ("tiny_vllm", TINY_COMPLETIONS_PER_STEP),
    "paper_train": ("paper_train", PAPER_PROMPTS_PER_STEP * PAPER_NUM_GENERATIONS),
}
STAGE_OUTPUTS = {
    "tiny_data": ["tiny-model", "tiny-sat", "tiny-sat.parquet", "tiny-cvbench.parquet"],
    "paper_data": ["paper-sat"],
    "tiny_eval_vllm": ["tiny_eval_vllm"],
    "paper_eval": ["paper_eval"],
    **{stage: [run] for stage, (run, _) in TRAIN_RUNS.items()},
}
NEEDS = {  # a stage runs only when these stages succeeded
    "tiny_generate": ["tiny_data"],
    "tiny_vllm": ["tiny_data"],
    "tiny_eval_vllm": ["tiny_data"],
    "paper_train": ["paper_data"],
}


def run_check(plan: Plan, started: float) -> dict[str, Any]:
    """Run every stage in order, rewriting the report after each one; return the report."""
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": ["bash", "launch/gpu_check.sh", *sys.argv[1:]],
        "measured_on": "this machine's GPU (real measurements; estimates are marked as such)",
        "budget_seconds": plan.budget,
        "gpu": plan.gpu,
        "stages": {},
    }
    output = plan.workdir / REPORT_NAME
    stages: dict[str, StageResult] = {}

    def save() -> None:
        report["stages"] = {name: asdict(result) for name, result in stages.items()}
        write_report(output, report)

    env_start = time.monotonic()
    report["environment"] = environment_report()
    stages["env"] = StageResult(status="ok", seconds=round(time.monotonic() - env_start, 2))
    has_vllm = report["environment"]["vllm"] is not None and util.find_spec("vllm") is not None
    report["baseline_gpu_mib"] = GpuMemoryPeak(plan.gpu).sample()
    commands = stage_commands(plan, has_vllm)
    report["paper_config"] = commands["paper_train"][0][commands["paper_train"][0].index("--config") + 1]
    save()

    hub_ok, hub_reason = (False, "left out by --hub skip") if plan.hub == "skip" else hub_reachable()
    for name, stage_command_list in commands.items():
        result = StageResult()
        stages[name] = result
        remaining = plan.budget - (time.monotonic() - started)
        blocked = [need for need in NEEDS.get(name, []) if stages[need].status != "ok"]
        if "vllm" in name and not has_vllm:
            result.reason = "vLLM is not installed here: pip install --no-build-isolation -r requirements-gpu.txt"
        elif name.startswith("paper") and not hub_ok:
            result.reason = hub_reason
        elif blocked:
            result.reason = f"needs {', '.join(blocked)}, which did not succeed"
        elif remaining <= 0:
            result.reason = f"time budget of {plan.budget:.0f} s spent (raise it: --budget 900)"
        else:
            _run_stage(plan, name, stage_command_list, result, remaining, offline=name.startswith("tiny"))
        logger.info("[%s] %s%s", name, result.status, f": {result.reason}" if result.reason else "")
        save()

    report["projection"] = projection(plan, stages.get("paper_train"), has_vllm)
    save()
    return report


def _run_stage(plan: Plan, name: str, commands: list[list[str]], result: StageResult, timeout: float, offline: bool):
    for product in STAGE_OUTPUTS.get(name, []):
        path = plan.workdir / product
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    log = plan.workdir / "logs" / f"{name}.log"
    logger.info("[%s] running (log: %s)", name, log)
    with GpuMemoryPeak(plan.gpu) as memory:
        result.status, result.seconds, result.reason = run_commands(
            commands, log, timeout, child_env(plan.gpu, offline)
        )
    result.log, result.peak_gpu_mib = str(log), memory.peak
    if name == "paper_train" and result.status == "failed" and "out of memory" in log.read_text(errors="replace"):
        result.reason = f"{result.reason} ({OOM_HINT})"
    if result.status == "ok" and name in TRAIN_RUNS:
        run, completions = TRAIN_RUNS[name]
        try:
            result.speed = read_run_speed(plan.workdir / run, completions).summary()
        except ValueError as err:
            result.status, result.reason = "failed", f"the run finished but its speed is unreadable: {err}"


def projection(plan: Plan, paper: StageResult | None, has_vllm: bool) -> dict[str, Any]:
    base = {"train_rows": plan.train_rows, "train_rows_source": plan.train_rows_source, "gpus": 1}
    if paper is None or paper.status != "ok" or not paper.speed:
        why = paper.reason if paper is not None and paper.reason else "the paper_train stage did not run"
        return {**base, "hours": None, "reason": f"needs a measured paper_train step time ({why})"}
    result = project_paper_run(paper.speed["steady_step_seconds"], plan.train_rows)
    return {**base, **result, "generation": "vLLM colocated" if has_vllm else "transformers generate"}


def no_cuda_reason() -> str | None:
    """Why torch cannot use a CUDA GPU here, in one line; None when it can."""
    import torch

    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA: gpu_check measures the GPU path"
    if not torch.cuda.is_available():
        return (
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU (no driver, or CUDA_VISIBLE_DEVICES "
            "hides them): gpu_check needs one; on a CPU run bash launch/quickstart.sh"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    started = time.monotonic()
    workdir = Path(args.workdir).resolve()
    try:
        check_workdir(workdir)
        reason = no_cuda_reason()
        if reason is not None:
            raise CheckError(reason)
    except CheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by launch/gpu_check.sh; its stage folders are replaced on every run\n")
    rows, rows_source = resolve_train_rows(args.train_rows)
    plan = Plan(workdir, float(args.budget), args.hub, rows, rows_source, first_visible_gpu())
    report = run_check(plan, started)
    print(format_summary(report))
    print(f"report: {workdir / REPORT_NAME}")
    return 1 if any(s["status"] in ("failed", "timeout") for s in report["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
