"""The launchers' stage runner (`recipes/shared/stages.py`) as the quickstart uses it, on small real commands.

Each test starts the runner as its own Python (it forks), with stages that are modules of a package written in the
test's folder: what a stage sees (its process, ``__name__``, ``sys.argv``, ``atexit``) is what it writes down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes.shared.cli import REPO_ROOT
from recipes.shared.stages import parse_plan

STAGE_MODULE = """
import atexit, json, os, sys, time
from pathlib import Path

from stagepkg import heavy


def main():
    out = Path(sys.argv[1])
    seen = {"pid": os.getpid(), "ppid": os.getppid(), "name": __name__, "argv": sys.argv[1:],
            "preloaded": heavy.IMPORTED_BY != os.getpid(), "began": time.time()}
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    print("to stdout")
    print("to stderr", file=sys.stderr)
    if sys.argv[2:3] == ["sleep"]:
        time.sleep(float(sys.argv[3]))
    seen["ended"] = time.time()
    (out / "seen.json").write_text(json.dumps(seen))
    if sys.argv[2:3] == ["exit"]:
        sys.exit(int(sys.argv[3]))
    if sys.argv[2:3] == ["raise"]:
        raise RuntimeError("the stage broke")


if __name__ == "__main__":
    main()
"""


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "stagepkg").mkdir()
    (tmp_path / "stagepkg" / "__init__.py").write_text("")
    (tmp_path / "stagepkg" / "step.py").write_text(STAGE_MODULE)
    (tmp_path / "stagepkg" / "heavy.py").write_text("import os\nIMPORTED_BY = os.getpid()\n")  # torch's stand-in
    return tmp_path


def stage(name: str, after: str, *command: str) -> list[str]:
    return [name, f"stage {name}", after, str(len(command)), *command]


def module_stage(name: str, after: str, out: Path, *args: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    return stage(name, after, sys.executable, "-m", "stagepkg.step", str(out), *args)


def run_stages(workdir: Path, *plan: list[str], cold: bool = False, wait: bool = True):
    argv = [sys.executable, "-m", "recipes.shared.stages", "--logs", str(workdir / "logs")]
    argv += [] if cold else ["--preload", "json,stagepkg.heavy"]
    argv += [word for words in plan for word in words]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(workdir), str(REPO_ROOT)])}
    runner = subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    if not wait:
        return runner
    stdout, stderr = runner.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, runner.returncode, stdout, stderr), runner.pid


def shim(workdir: Path) -> Path:
    """A wrapper that starts this interpreter: the runner starts its stages as given (cold)."""
    path = workdir / "python-shim"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


def seen(folder: Path) -> dict:
    return json.loads((folder / "seen.json").read_text())


def test_a_warm_stage_is_its_own_process_run_as_python_runs_a_module(workdir):
    result, runner = run_stages(workdir, module_stage("one", "-", workdir / "one", "a", "b c"))
    assert result.returncode == 0, result.stdout + result.stderr
    one = seen(workdir / "one")
    assert one["name"] == "__main__" and one["argv"] == [str(workdir / "one"), "a", "b c"]
    assert one["preloaded"]  # imported once by the runner before it forked
    assert one["ppid"] == runner and one["pid"] != runner
    assert (workdir / "one" / "atexit").read_text() == "ran"
    log = (workdir / "logs" / "one.log").read_text().splitlines()
    assert log[:2] == ["to stdout", "to stderr"] and log[-1].endswith("s, exit status 0")
    imports, line = result.stdout.splitlines()
    assert imports.startswith("  2 Python libraries, imported once for the stages") and imports.endswith(
        "logs/imports.log"
    )
    assert line.startswith("  stage one") and line.endswith(" s   logs/one.log")


def test_cold_and_other_interpreters_run_the_command_as_given(workdir):
    result, _ = run_stages(workdir, module_stage("one", "-", workdir / "one"), cold=True)
    assert result.returncode == 0, result.stderr
    assert not seen(workdir / "one")["preloaded"] and seen(workdir / "one")["name"] == "__main__"
    assert "imported once" not in result.stdout
    result, _ = run_stages(workdir, stage("two", "-", str(shim(workdir)), "-m", "stagepkg.step", str(workdir / "one")))
    assert result.returncode == 0, result.stderr
    assert not seen(workdir / "one")["preloaded"]  # not this interpreter: started as given


def test_a_stage_waits_for_the_stages_it_names_and_the_account_keeps_the_given_order(workdir):
    plan = [
        module_stage("slow", "-", workdir / "slow", "sleep", "2.5"),
        module_stage("fast", "-", workdir / "fast"),
        module_stage("after", "slow,fast", workdir / "after"),
    ]
    result, _ = run_stages(workdir, *plan)
    assert result.returncode == 0, result.stderr
    assert seen(workdir / "fast")["ended"] < seen(workdir / "slow")["ended"]  # side by side
    assert seen(workdir / "after")["began"] >= seen(workdir / "slow")["ended"]
    assert [line.split()[1] for line in result.stdout.splitlines()[1:]] == ["slow", "fast", "after"]


@pytest.mark.parametrize("how, status", [("exit", 5), ("raise", 1)])
def test_a_failed_stage_stops_the_others_shows_its_log_and_keeps_its_exit_status(workdir, how, status):
    plan = [
        module_stage("long", "-", workdir / "long", "sleep", "60"),
        module_stage("bad", "-", workdir / "bad", how, "5"),
        module_stage("never", "bad", workdir / "never"),
    ]
    result, _ = run_stages(workdir, *plan)
    assert result.returncode == status, result.stdout + result.stderr
    assert f"stage bad{' ' * 40}" in result.stdout and f"FAILED (exit status {status})" in result.stdout
    assert "to stderr" in result.stdout and (how != "raise" or "RuntimeError: the stage broke" in result.stdout)
    assert f"its whole output: {workdir / 'logs' / 'bad.log'}" in result.stderr
    assert not (workdir / "never" / "seen.json").exists()
    assert_stopped(workdir / "long")


def assert_stopped(out: Path) -> None:
    """The stage writing to ``out`` is gone, before its end."""
    deadline = time.time() + 10
    while time.time() < deadline and running(out):
        time.sleep(0.1)
    assert not running(out) and not (out / "seen.json").exists()


def running(out: Path) -> bool:
    return subprocess.run(["pgrep", "-f", f"stagepkg.step {out}"], capture_output=True).returncode == 0


def test_a_stage_killed_by_a_signal_reports_it_as_a_shell_does(workdir):
    result, _ = run_stages(workdir, stage("killed", "-", "sh", "-c", "kill -9 $$"))
    assert result.returncode == 128 + signal.SIGKILL
    assert "FAILED (exit status 137)" in result.stdout


@pytest.mark.parametrize("how", ["runner", "group"])
def test_stopping_the_runner_stops_its_stages(workdir, how):
    """SIGTERM to the runner alone, or SIGKILL to its process group (what a harness or a job system sends)."""
    (workdir / "cold").mkdir()
    cold = stage("cold", "-", str(shim(workdir)), "-m", "stagepkg.step", str(workdir / "cold"), "sleep", "60")
    runner = run_stages(workdir, cold, module_stage("long", "-", workdir / "long", "sleep", "60"), wait=False)
    logs = [workdir / "logs" / "cold.log", workdir / "logs" / "long.log"]
    deadline = time.time() + 60
    while time.time() < deadline and not all(log.exists() and "to stderr" in log.read_text() for log in logs):
        time.sleep(0.1)
    if how == "runner":
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    else:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    assert_stopped(workdir / "long")
    assert_stopped(workdir / "cold")


@pytest.mark.parametrize(
    "words, message",
    [
        (["a", "title", "-", "x", "true"], "a stage is NAME TITLE AFTER N"),
        (["a", "title", "-", "3", "true"], "a stage is NAME TITLE AFTER N"),
        (["a", "t", "b", "1", "true"], "waits for ['b'], which are not stages listed before it"),
        (["a", "t", "-", "1", "true", "a", "t", "-", "1", "true"], "repeated"),
    ],
)
def test_a_malformed_plan_is_refused(words, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_plan(words)


@pytest.mark.slow  # builds, trains and evaluates the tiny model twice
def test_warm_stages_write_what_cold_ones_write(tmp_path, sat_records_dir, cvbench_parquet):
    """The quickstart's own Python stages (model, 2 GRPO steps, evaluation), with shared imports and without."""
    outputs = {}
    for mode in ("warm", "cold"):
        out = tmp_path / mode
        plan = [
            stage("model", "-", sys.executable, "-m", "data_prep.fixtures.tiny_model", "--output", str(out / "tiny")),
            stage(
                "train",
                "model",
                *[sys.executable, "recipes/grpo_base.py", "--config", "recipes/configs/tiny/grpo_base.yaml"],
                *["--model_name_or_path", str(out / "tiny"), "--dataset_path", str(sat_records_dir)],
                *["--output_dir", str(out / "run"), "--max_steps", "2", "--report_to", "none"],
            ),
            stage(
                "eval",
                "train",
                *[sys.executable, "recipes/eval_cvbench.py", "--config", "recipes/configs/eval/tiny.yaml"],
                *["--model_name_or_path", str(out / "run"), "--dataset", str(cvbench_parquet)],
                *["--output_dir", str(out / "eval"), "--limit", "8"],
            ),
        ]
        argv = [sys.executable, "-m", "recipes.shared.stages", "--logs", str(out / "logs")]
        argv += ["--preload", "torch,torchvision,transformers,datasets,accelerate,deepspeed,peft"] * (mode == "warm")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        result = subprocess.run(argv + sum(plan, []), cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert ("imported once" in result.stdout) == (mode == "warm")
        outputs[mode] = {
            "model": (out / "tiny" / "model.safetensors").read_bytes(),
            "trained": (out / "run" / "model.safetensors").read_bytes(),
            "log": [
                {k: v for k, v in entry.items() if not any(clock in k for clock in ("time", "per_second"))}
                for entry in json.loads((out / "run" / "trainer_state.json").read_text())["log_history"]
            ],
            "predictions": (out / "eval" / "predictions.jsonl").read_text(),
        }
    assert outputs["warm"] == outputs["cold"]
