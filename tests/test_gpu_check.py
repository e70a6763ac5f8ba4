"""The GPU self-check (launch/gpu_check.sh, benchmarks/gpu_check.py), on a CPU.

No GPU here: what is tested is everything that does not need one — the refusals (no driver, no CUDA, bad
arguments, a folder it did not make), the projection arithmetic, reading step times from a real run's
trainer_state.json, the report written atomically, stopping a stage that overruns its budget, and the whole stage
sequence with its GPU-only stages skipped and its tiny-model stages run for real on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
LAUNCHER = REPO_ROOT / "launch" / "gpu_check.sh"
HAS_DRIVER = Path("/proc/driver/nvidia/version").exists()


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()


def run(command: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


# --------------------------------------------------------------------------------------------------------------
# Refusals: exit 2, one clear line, nothing written
# --------------------------------------------------------------------------------------------------------------


def test_the_launcher_prints_its_usage():
    result = run(["bash", str(LAUNCHER), "-h"])
    assert result.returncode == 0
    assert "Usage: bash launch/gpu_check.sh" in result.stdout and "gpu_check.json" in result.stdout


@pytest.mark.skipif(HAS_DRIVER, reason="this machine has an NVIDIA driver")
def test_without_a_driver_the_launcher_stops_at_once_with_one_line(tmp_path):
    start = time.monotonic()
    result = run(["bash", str(LAUNCHER), "--workdir", str(tmp_path / "check")])
    assert result.returncode == 2
    assert time.monotonic() - start < 5  # before any Python starts
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no NVIDIA driver") and "quickstart" in lines[0]
    assert not (tmp_path / "check").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_cuda_the_check_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    # In process (torch is imported here already); the script's own start is run by the bad-argument tests below.
    assert gpu_check.main(["--workdir", str(tmp_path / "check")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "torch" in lines[0]
    assert captured.out == ""
    assert not (tmp_path / "check").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--budget", "5"], "--budget"),
        (["--budget", "five"], "--budget"),
        (["--train-rows", "7"], "--train-rows"),
        (["--hub", "sometimes"], "--hub"),
        (["--steps", "3"], "--steps"),
    ],
    ids=["budget-too-small", "budget-not-a-number", "rows-below-a-step", "hub-choice", "unknown-option"],
)
def test_bad_arguments_exit_2_naming_the_option(args, named, tmp_path):
    result = run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path / "check"), *args])
    assert result.returncode == 2
    assert "error:" in result.stderr and named in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "check").exists()


def test_a_folder_it_did_not_make_is_refused_and_left_untouched(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = run([sys.executable, str(SCRIPT), "--workdir", str(folder)])
    assert result.returncode == 2
    assert "error:" in result.stderr and "did not make" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------------------------
# Projection and row count
# --------------------------------------------------------------------------------------------------------------


def test_the_projection_is_steps_times_the_step_time():
    # The estimate: 15,000 x 127/175 single-image rows, 2 epochs of floor(rows / 8) steps.
    assert gpu_check.PAPER_ROWS_ESTIMATE == 10_886
    assert gpu_check.project_paper_run(80.0, 10_886) == {
        "steps": 2720,
        "step_seconds": 80.0,
        "seconds": 217_600.0,
        "hours": 60.44,
    }
    assert gpu_check.project_paper_run(30.0, 15_000)["steps"] == 3750
    assert gpu_check.project_paper_run(30.0, 15_007)["steps"] == 3750  # an incomplete last batch is dropped
    assert gpu_check.project_paper_run(1.5, 64, epochs=1, prompts_per_step=8) == {
        "steps": 8,
        "step_seconds": 1.5,
        "seconds": 12.0,
        "hours": 0.0,
    }


@pytest.mark.parametrize(("seconds", "rows"), [(0.0, 100), (-1.0, 100), (math.nan, 100), (math.inf, 100), (1.0, 7)])
def test_the_projection_refuses_impossible_inputs(seconds, rows):
    with pytest.raises(ValueError):
        gpu_check.project_paper_run(seconds, rows)


def test_the_row_count_comes_from_the_option_then_the_prep_report_then_the_estimate(sat_records_dir, tmp_path):
    report = sat_records_dir / "prep_report.json"
    written = json.loads(report.read_text())["rows_written"]

    assert gpu_check.resolve_train_rows(5000, report) == (5000, "--train-rows")
    rows, source = gpu_check.resolve_train_rows(None, report)
    assert rows == written and str(report) in source
    rows, source = gpu_check.resolve_train_rows(None, tmp_path / "absent.json")
    assert rows == 10_886 and source.startswith("estimate") and "15,000" in source
    broken = tmp_path / "prep_report.json"
    broken.write_text("{not json")
    assert gpu_check.resolve_train_rows(None, broken)[0] == 10_886


@pytest.mark.parametrize("has_vllm", [False, True], ids=["generate", "vllm"])
def test_the_training_stages_commands_parse_into_the_completions_per_step_they_are_measured_with(has_vllm, tmp_path):
    """The tokens/s figures multiply by completions per step: the stage commands must really generate that many."""
    from recipes.grpo_base import make_parser
    from recipes.shared.batch import derive_accumulation

    plan = gpu_check.Plan(tmp_path, budget=300.0, hub="auto", train_rows=10_886, train_rows_source="test", gpu="0")
    commands = gpu_check.stage_commands(plan, has_vllm=has_vllm)
    for stage, (run_dir, completions_per_step) in gpu_check.TRAIN_RUNS.items():
        if stage == "tiny_vllm" and not has_vllm:
            continue
        command = commands[stage][0]
        assert command[1] == "recipes/grpo_base.py"
        argv = [*command[2:], "--use_cpu", "true"]  # the paper config's bf16 is validated on this CPU this way
        parser = make_parser()
        script_args, args, _ = derive_accumulation(parser, argv, parser.parse_args_and_config(argv))
        assert args.output_dir == str(tmp_path / run_dir)
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps == completions_per_step, stage
        assert "wandb" not in args.report_to  # a check logs nowhere
        assert args.use_vllm == (stage == "tiny_vllm" or (stage == "paper_train" and has_vllm)), stage
        if stage == "paper_train":
            assert (script_args.prompts_per_step, args.num_generations, args.max_steps) == (
                8,
                8,
                gpu_check.PAPER_STEPS,
            )
            # The paper config itself, not a tiny stand-in.
            assert args.max_completion_length == 700 and args.top_k == 50 and args.beta == 0.04
        else:
            assert args.max_steps == gpu_check.TINY_STEPS
            assert args.max_completion_length == gpu_check.TINY_COMPLETION_TOKENS


# --------------------------------------------------------------------------------------------------------------
# Step times from a run's log history; nvidia-smi's memory; the report file
# --------------------------------------------------------------------------------------------------------------


def write_state(path: Path, history: list[dict]) -> Path:
    path.write_text(json.dumps({"global_step": len(history), "log_history": history}))
    return path


def test_step_times_and_token_rate_come_from_the_log_history(tmp_path):
    history = [
        {"step": 1, "step_time": 9.0, "completions/mean_length": 100.0, "loss": 0.1},
        {"step": 2, "step_time": 2.0, "completions/mean_length": 120.0},
        {"step": 3, "step_time": 3.0, "completions/mean_length": 80.0},
        {"step": 3, "train_runtime": 14.5, "train_loss": 0.1},  # the end-of-training summary: no step_time
    ]
    log = gpu_check.parse_step_log(write_state(tmp_path / "trainer_state.json", history), completions_per_step=8)
    assert log.step_seconds == [9.0, 2.0, 3.0]
    assert log.steady_step_seconds == 2.5  # the first step (warm-up) left out
    assert log.generated_tokens_per_second == (120 + 80) * 8 / 5.0
    assert log.summary()["step_seconds"] == [9.0, 2.0, 3.0]

    single = gpu_check.parse_step_log(write_state(tmp_path / "one.json", history[:1]), completions_per_step=64)
    assert single.steady_step_seconds == 9.0 and single.generated_tokens_per_second == 100 * 64 / 9.0


def test_a_log_history_without_step_times_is_an_error_that_says_so(tmp_path):
    state = write_state(tmp_path / "trainer_state.json", [{"step": 1, "loss": 0.1}])
    with pytest.raises(ValueError, match="no step_time"):
        gpu_check.parse_step_log(state, completions_per_step=8)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="cannot read the log history"):
        gpu_check.parse_step_log(tmp_path / "bad.json", completions_per_step=8)


def test_nvidia_smi_memory_lines_are_read_per_gpu():
    assert gpu_check.parse_nvidia_smi_memory("0, 1024\n1, 77000\n") == {"0": 1024, "1": 77000}
    assert gpu_check.parse_nvidia_smi_memory("No devices were found\n") == {}


def test_the_report_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "gpu_check.json"
    gpu_check.write_report(path, {"stages": {"env": {"status": "ok"}}})
    before = path.read_text()
    with pytest.raises(ValueError):
        gpu_check.write_report(path, {"stages": {"tiny_generate": {"seconds": math.nan}}})
    assert path.read_text() == before and json.loads(before)["stages"]["env"]["status"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json"]  # no temporary file left


# --------------------------------------------------------------------------------------------------------------
# Running stages: failures, the budget, the whole sequence on CPU
# --------------------------------------------------------------------------------------------------------------


def test_a_failing_command_stops_its_stage_with_its_last_line(tmp_path):
    fail = [
        sys.executable,
        "-c",
        "import sys; print('error: the data folder is missing', file=sys.stderr); sys.exit(2)",
    ]
    never = [sys.executable, "-c", f"open({str(tmp_path / 'ran')!r}, 'w')"]
    status, seconds, reason = gpu_check.run_commands([fail, never], tmp_path / "stage.log", 60, dict(os.environ))
    assert status == "failed" and reason == "exit 2: error: the data folder is missing"
    assert not (tmp_path / "ran").exists()
    assert "error: the data folder is missing" in (tmp_path / "stage.log").read_text()


def test_a_stage_over_its_budget_is_stopped_with_every_process_it_started(tmp_path):
    # The command starts a child of its own (as accelerate and vLLM do) and both would sleep for a minute.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(f'child={child.pid}', flush=True)\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    status, _, reason = gpu_check.run_commands(
        [[sys.executable, "-c", code]], tmp_path / "stage.log", 3, dict(os.environ)
    )
    assert status == "timeout" and "budget" in reason
    assert time.monotonic() - start < 30
    child = int(re.search(r"child=(\d+)", (tmp_path / "stage.log").read_text()).group(1))
    for _ in range(50):  # the orphaned child is reaped by init shortly after it is killed
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the stage's child process {child} survived the timeout")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine run bash launch/gpu_check.sh instead")
def test_the_stage_sequence_runs_the_tiny_stages_on_a_cpu_and_reports_them(tmp_path, capsys):
    """Every stage in order, as on a GPU: the tiny data and generate-GRPO stages for real, the others skipped."""
    plan = gpu_check.Plan(tmp_path, budget=600.0, hub="skip", train_rows=10_886, train_rows_source="test", gpu="0")
    report = gpu_check.run_check(plan, time.monotonic())
    stages = report["stages"]

    assert list(stages) == [
        "env",
        "tiny_data",
        "tiny_generate",
        "tiny_vllm",
        "tiny_eval_vllm",
        "paper_data",
        "paper_train",
        "paper_eval",
    ]
    assert stages["tiny_data"]["status"] == "ok", stages["tiny_data"]
    generate = stages["tiny_generate"]
    assert generate["status"] == "ok", Path(generate["log"]).read_text()[-3000:]
    speed = generate["speed"]
    assert len(speed["step_seconds"]) == gpu_check.TINY_STEPS and all(t > 0 for t in speed["step_seconds"])
    assert all(0 < n <= gpu_check.TINY_COMPLETION_TOKENS for n in speed["mean_completion_tokens"])
    assert speed["completions_per_step"] == 8 and speed["generated_tokens_per_second"] > 0
    if importlib.util.find_spec("vllm") is None:
        assert stages["tiny_vllm"]["status"] == "skipped" and "vLLM is not installed" in stages["tiny_vllm"]["reason"]
    for name in ("paper_data", "paper_train", "paper_eval"):
        assert stages[name]["status"] == "skipped" and "--hub skip" in stages[name]["reason"]
    assert report["projection"]["hours"] is None and "paper_train" in report["projection"]["reason"]
    assert report["environment"]["torch"] == torch.__version__ and report["environment"]["gpus"] == []

    on_disk = json.loads((tmp_path / "gpu_check.json").read_text())
    assert on_disk["stages"]["tiny_generate"]["speed"] == speed
    summary = gpu_check.format_summary(on_disk)
    assert "tiny_generate" in summary and "side by side" in summary and "paper run projection" in summary
