"""The shell launchers as a user runs them: bad input refused before anything runs, results keyed by what made them.

Every test runs the real script with bash. ``DRY_RUN=1`` prints the commands a launcher would run and writes nothing;
the refusal tests check the exit code (2), the message and that nothing was executed or written. The provenance
tests start from what a real run leaves behind: a run killed right after it began (fast), or finished (marked slow),
and hash every file before and after.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.files import tree_hashes

from recipes.shared.cli import REPO_ROOT
from recipes.shared.prompts import EVAL_TEMPLATES, TEMPLATES

LAUNCH = REPO_ROOT / "launch"
QUICKSTART = LAUNCH / "quickstart.sh"
ABLATIONS = LAUNCH / "run_ablations.sh"
RUN_8GPU = LAUNCH / "run_8gpu.sh"
MULTINODE = LAUNCH / "run_multinode.sh"
SLURM = LAUNCH / "slurm_multinode.sbatch"
# Every variable a launcher reads: the caller's own values must not leak into a test.
SETTINGS = ("NUM_GPUS", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "GPUS_PER_NODE", "ZERO", "DS_CONFIG")
SETTINGS += ("ACCELERATE_CONFIG", "OUTPUT_DIR", "RUN_NAME", "DDP_BACKEND", "DRY_RUN", "PYTHON", "LAUNCH_USAGE")
SETTINGS += ("SEED", "OUT", "ROWS", "EVAL_ROWS", "FRESH", "SUITE", "TINY", "GROUP", "EXPERIMENTS", "MAX_STEPS")
SETTINGS += ("EVAL_LIMIT", "EVAL_MAX_NEW_TOKENS", "EVAL_ARGS", "CVBENCH", "SAT_DATA", "BASE_MODEL", "INSTRUCT_MODEL")
SETTINGS += ("DUMP_TRAJECTORIES", "WANDB_DIR", "WANDB_RUN_GROUP", "SLURM_JOB_NODELIST", "SLURM_NNODES")
SETTINGS += ("VLLM_NODES", "VLLM_HOST", "VLLM_PORT", "VLLM_TP", "VLLM_SERVER_TIMEOUT", "VLLM_GPU_MEMORY_UTILIZATION")
SETTINGS += ("REQUEUE", "DDP_TIMEOUT", "SLURM_RESTART_COUNT", "SLURM_JOB_ID", "TORCH_NCCL_ASYNC_ERROR_HANDLING")
SUITES = {
    ("paper", "paper"): ["grpo_base", "grpo_instruct", "sft_baseline", "grpo_base_length"],
    ("paper", "tiny"): ["grpo_base", "grpo_instruct", "sft_baseline", "grpo_base_length"],
    ("losses", "paper"): ["grpo_base"]
    + [f"grpo_base_{v}" for v in ("dr_grpo", "dapo", "bnpo", "gspo", "clip_higher")],
    ("losses", "tiny"): ["grpo_base"] + [f"grpo_base_{v}" for v in ("dr_grpo", "dapo", "bnpo", "gspo", "clip_higher")],
    ("families", "paper"): ["grpo_instruct"]
    + [f"grpo_instruct_{m}" for m in ("qwen2_5_vl_3b", "qwen2_5_vl_7b", "qwen3_vl_2b", "qwen3_vl_4b")],
    ("families", "tiny"): ["grpo_instruct", "grpo_instruct_qwen2_5_vl", "grpo_instruct_qwen3_vl"],
}


snapshot = functools.partial(tree_hashes, times=True)  # a file rewritten with the same bytes counts


def launch(script: Path, *args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run a launcher offline with only the given settings, this interpreter's tools first on PATH."""
    full = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    full.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline")
    full.update(TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHON=sys.executable)
    full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', '')}"
    full.update(env)
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, cwd=cwd, env=full, timeout=timeout
    )


def commands(stdout: str) -> list[list[str]]:
    """The commands a dry run printed (one per line, shell-quoted), without the step headers."""
    return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("==")]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def refused(result: subprocess.CompletedProcess, *message: str) -> None:
    """Exit 2, an error naming what was wrong, the usage line, and nothing on stdout (no command printed or run)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "Usage: " in result.stderr, result.stderr
    for part in message:
        assert part in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not result.stdout.strip(), result.stdout


def owns_something(out: Path) -> bool:
    try:
        entries = json.loads((out / "provenance.json").read_text())["entries"].values()
    except (OSError, ValueError, KeyError):
        return False
    return any((out / path).exists() for entry in entries for path in entry["owns"])


def kill_after_record(script: Path, out: Path, cwd: Path, **env: str) -> None:
    """Start a real run into ``out`` and kill it (its whole process group) once a path its record owns exists."""
    full = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    full.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    full.update(PYTHON=sys.executable, OUT=str(out), **env)
    process = subprocess.Popen(
        ["bash", str(script)], cwd=cwd, env=full, start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not owns_something(out):
            assert process.poll() is None, "the launcher stopped before writing its record"
            assert time.monotonic() < deadline, "no record after 60 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ----- numbers are checked as numbers, before any arithmetic ---------------------------------------------------------

CASES = [
    (RUN_8GPU, "NUM_GPUS", {}),
    (MULTINODE, "GPUS_PER_NODE", {}),
    (MULTINODE, "NNODES", {"MASTER_ADDR": "node01"}),
    (MULTINODE, "NODE_RANK", {}),
    (MULTINODE, "MASTER_PORT", {}),
    (ABLATIONS, "NUM_GPUS", {}),
    (ABLATIONS, "SEED", {}),
    (ABLATIONS, "ROWS", {"TINY": "1"}),
    (ABLATIONS, "MAX_STEPS", {"TINY": "1"}),
    (ABLATIONS, "EVAL_LIMIT", {}),
    (QUICKSTART, "SEED", {}),
    (QUICKSTART, "ROWS", {}),
    (QUICKSTART, "EVAL_ROWS", {}),
]


@pytest.mark.parametrize("array", ["a", "PATH"])
@pytest.mark.parametrize("script, name, env", CASES, ids=[f"{s.name}-{n}" for s, n, _ in CASES])
def test_a_crafted_number_is_refused_and_never_executed(script, name, env, array, tmp_path):
    # Bash evaluates `[[ $x -gt 1 ]]` and `$((x))` as expressions: before this check, 'PATH[$(touch FILE)]' in
    # NNODES, NODE_RANK or GPUS_PER_NODE ran `touch` (with `set -u`, an unset name such as `a` stops it first).
    marker = tmp_path / "executed"
    value = f"{array}[$(touch {marker})]"
    out = tmp_path / "out"
    result = launch(script, cwd=tmp_path, DRY_RUN="1", DDP_BACKEND="nccl", OUT=str(out), **env, **{name: value})
    refused(result, f"{name}='{value}'", "whole number")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "1e3", "8 ", "0x8", "1234567890"])
def test_gpu_counts_must_be_positive_whole_numbers(value, tmp_path):
    refused(launch(RUN_8GPU, cwd=tmp_path, DRY_RUN="1", DDP_BACKEND="nccl", NUM_GPUS=value), "NUM_GPUS=")


def test_a_port_out_of_range_is_refused(tmp_path):
    refused(launch(MULTINODE, cwd=tmp_path, DRY_RUN="1", DDP_BACKEND="nccl", MASTER_PORT="70000"), "MASTER_PORT=70000")


def test_leading_zeros_are_read_as_decimal(tmp_path):
    result = launch(RUN_8GPU, cwd=tmp_path, DRY_RUN="1", DDP_BACKEND="nccl", NUM_GPUS="08")
    assert result.returncode == 0, result.stderr
    assert flag(commands(result.stdout)[0], "--num_processes") == "8"  # not an octal error, not 0


# ----- the first arguments: a recipe (name or path), a config, then only options ------------------------------------


@pytest.mark.parametrize("recipe", ["grpo_instruct", "recipes/grpo_instruct.py"])
def test_the_recipe_is_a_name_or_a_path(recipe, tmp_path):
    result = launch(RUN_8GPU, recipe, "--max_steps", "3", cwd=tmp_path, DRY_RUN="1", DDP_BACKEND="nccl")
    assert result.returncode == 0, result.stderr
    (command,) = commands(result.stdout)
    assert "recipes/grpo_instruct.py" in command
    assert flag(command, "--config") == "recipes/configs/paper/grpo_instruct.yaml"
    assert command[-2:] == ["--max_steps", "3"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["grpo_bse"], "'grpo_bse' is neither a recipe"),
        (["model.bin", "--max_steps", "3"], "'model.bin' is neither a recipe"),
        (["grpo_base", "typo"], "unexpected argument 'typo'"),
        (["recipes/grpo_base.py", "recipes/configs/paper/grpo_base.yaml", "5"], "unexpected argument '5'"),
        (["recipes/configs/paper/grpo_base.yaml", "recipes/configs/paper/grpo_base_length.yaml"], "unexpected"),
    ],
)
@pytest.mark.parametrize("script", [RUN_8GPU, MULTINODE], ids=lambda p: p.name)
def test_an_argument_that_is_no_recipe_config_or_option_is_refused(script, args, message, tmp_path):
    result = launch(script, *args, cwd=tmp_path, DRY_RUN="1", DDP_BACKEND="nccl")
    refused(result, message, f"bash launch/{script.name}")


def test_the_slurm_example_refuses_to_run_outside_an_allocation(tmp_path):
    refused(launch(SLURM, "grpo_base", cwd=tmp_path), "submit this file with sbatch")


# ----- the quickstart -----------------------------------------------------------------------------------------------


def test_quickstart_help_names_its_settings(tmp_path):
    result = launch(QUICKSTART, "-h", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("Usage: ", "SEED", "OUT", "ROWS", "EVAL_ROWS", "FRESH", "DRY_RUN", "provenance.json", "logs/"):
        assert name in result.stdout, name


def test_quickstart_keeps_each_seed_in_its_own_folder(tmp_path):
    seed = "918273"  # a folder no real run made
    out = REPO_ROOT / "outputs" / "quickstart" / f"seed{seed}"
    result = launch(QUICKSTART, "--max_steps", "2", cwd=tmp_path, DRY_RUN="1", SEED=seed)
    assert result.returncode == 0, result.stderr
    steps = commands(result.stdout)
    # The three inputs are built side by side, the records as soon as the raw SAT rows exist.
    assert [(c[2], flag(c, "--kind") if "--kind" in c else "") for c in steps[:4]] == [
        ("data_prep.fixtures.synthetic", "sat"),
        ("data_prep.fixtures.synthetic", "cvbench"),
        ("data_prep.fixtures.tiny_model", ""),
        ("data_prep.sat", ""),
    ]
    # One training process: the recipe itself, not accelerate's launcher starting a second Python.
    assert [c[1] for c in steps[4:]] == ["recipes/grpo_base.py", "recipes/eval_cvbench.py"]
    for command in steps[:-1]:
        assert flag(command, "--seed") == seed
        assert all(str(out) in arg for arg in command if arg.startswith(str(REPO_ROOT / "outputs")))
    training = steps[4]
    assert flag(training, "--output_dir") == str(out / "grpo_base")
    assert flag(training, "--resume_from_checkpoint") == "last" and training[-2:] == ["--max_steps", "2"]
    assert flag(steps[-1], "--model_name_or_path") == str(out / "grpo_base")
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "args, message",
    [
        (["10"], "unexpected argument '10'"),
        (["--seed", "3"], "set SEED=N instead"),
        (["--max_steps", "2", "--output_dir=elsewhere"], "set OUT=<folder> instead"),
        (["--model-name-or-path", "m"], "--model_name_or_path is set by this launcher"),
        (["--resume_from_checkpoint", "last"], "FRESH=1 starts over"),
    ],
)
def test_quickstart_refuses_arguments_it_sets_itself(args, message, tmp_path):
    out = tmp_path / "out"
    refused(launch(QUICKSTART, *args, cwd=tmp_path, OUT=str(out)), message)
    assert not out.exists()


@pytest.mark.parametrize("fresh", ["0", "1"])
def test_quickstart_refuses_a_folder_it_has_no_record_of_and_never_deletes_it(fresh, tmp_path):
    out = tmp_path / "old"
    (out / "grpo_base").mkdir(parents=True)
    (out / "grpo_base" / "model.safetensors").write_bytes(b"someone else's model")
    (out / "data").mkdir()
    (out / "data" / "sat.parquet").write_bytes(b"the user's data")
    before = tree_hashes(tmp_path)
    result = launch(QUICKSTART, cwd=tmp_path, OUT="old", FRESH=fresh)
    refused(result, f"{out} is not empty and has no provenance.json", "data, grpo_base", "OUT=<new folder>")
    assert "FRESH" not in result.stderr.splitlines()[0]  # FRESH=1 deletes only what a record lists: no way out here
    assert tree_hashes(tmp_path) == before


def test_quickstart_refuses_to_mix_seeds_in_one_folder(tmp_path):
    out = tmp_path / "qs"
    kill_after_record(QUICKSTART, out, tmp_path, SEED="0", ROWS="16", EVAL_ROWS="4")
    (out / "notes.txt").write_text("the user's notes, beside the run")
    before = tree_hashes(tmp_path)

    result = launch(QUICKSTART, cwd=tmp_path, OUT=str(out), SEED="1", ROWS="16", EVAL_ROWS="4")
    refused(result, f"{out} was made with other settings", "seed: 0 there, 1 now", "FRESH=1", "OUT=<new folder>")
    result = launch(QUICKSTART, "--max_steps", "3", cwd=tmp_path, OUT=str(out), SEED="0", ROWS="20", EVAL_ROWS="4")
    refused(result, "rows: 16 there, 20 now", "overrides: (none) there, --max_steps 3 now")
    assert tree_hashes(tmp_path) == before

    # The same settings match (the killed run's data would be reused), and FRESH=1 would delete what the record
    # owns (the quickstart's logs, at least), never the user's notes, and redo.
    result = launch(QUICKSTART, cwd=tmp_path, DRY_RUN="1", OUT=str(out), SEED="0", ROWS="16", EVAL_ROWS="4")
    assert result.returncode == 0, result.stderr
    result = launch(QUICKSTART, cwd=tmp_path, DRY_RUN="1", FRESH="1", OUT=str(out), SEED="1")
    assert result.returncode == 0, result.stderr
    (deleting,) = [line for line in result.stdout.splitlines() if line.startswith("FRESH=1: would delete")]
    owned = set(deleting.split()[5:])
    assert str(out / "logs") in owned and str(out / "notes.txt") not in owned
    assert owned <= {str(out / name) for name in ("sat_raw.parquet", "sat", "cvbench.parquet", "tiny-base", "logs")}
    assert flag(commands(result.stdout)[-2], "--seed") == "1"
    first = next(c for c in commands(result.stdout) if c[0] == sys.executable)
    assert flag(first, "--seed") == "1"  # what FRESH deletes is rebuilt, not reused
    assert tree_hashes(tmp_path) == before


@pytest.mark.slow
def test_quickstart_end_to_end_reruns_reuse_and_other_seeds_are_refused(tmp_path):
    settings = {"OUT": str(tmp_path / "qs"), "ROWS": "16", "EVAL_ROWS": "4"}
    result = launch(QUICKSTART, "--max_steps", "2", cwd=tmp_path, timeout=900, **settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "qs"
    run = out / "grpo_base"
    closing = result.stdout[result.stdout.rindex("Done (seed 0)") :]
    wandb_run = next((run / "wandb").glob("offline-run-*"))
    for line in (f"checkpoint:        {run}", f"W&B offline run:   {wandb_run}", f"{run}/eval_cvbench/summary.md"):
        assert line in closing, closing
    assert (run / "model.safetensors").is_file() and (run / "eval_cvbench" / "summary.md").is_file()
    assert "about 0" in closing and "not that it learns" in closing and "bash launch/mini_r1.sh" in closing
    assert "CV-Bench accuracy:" in closing and "training rewards:  step 1:" in closing
    # A short account (one line per stage, the numbers, where things are): the full output is in the logs.
    assert len(result.stdout.splitlines()) < 40 and not result.stderr.strip(), result.stdout + result.stderr
    for stage in ("sat", "cvbench", "model", "train", "eval"):
        assert f"logs/{stage}.log" in result.stdout and (out / "logs" / f"{stage}.log").stat().st_size > 0
    # The Python stages shared one import of torch and transformers (recipes/shared/stages.py).
    assert "7 Python libraries, imported once for the stages" in result.stdout
    assert "train_runtime" in (out / "logs" / "train.log").read_text()  # the trainer's own output is kept there
    assert list((run / "completions").glob("completions_*.parquet"))  # W&B's completions table still logged
    before = snapshot(out)

    # The same command again: everything is reused, nothing is retrained or re-evaluated.
    again = launch(QUICKSTART, "--max_steps", "2", cwd=tmp_path, timeout=900, **settings)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "GRPO on the base model: done already" in again.stdout and "evaluation: done already" in again.stdout
    changed = {k for k in snapshot(out).keys() | before.keys() if snapshot(out).get(k) != before.get(k)}
    assert changed <= {"provenance.json", ".provenance.lock"}  # the record's own timestamps, nothing else

    refused(launch(QUICKSTART, "--max_steps", "2", cwd=tmp_path, **settings, SEED="1"), "seed: 0 there, 1 now")

    # FRESH=1: exactly what the quickstart recorded making is deleted and rebuilt; the user's files stay.
    (out / "notes.txt").write_text("the user's notes")
    (out / "mine").mkdir()
    (out / "mine" / "weights.bin").write_bytes(b"the user's weights")
    users = {k: v for k, v in tree_hashes(out).items() if k.startswith(("notes.txt", "mine/"))}
    fresh = launch(QUICKSTART, "--max_steps", "2", cwd=tmp_path, timeout=900, FRESH="1", **settings)
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert "FRESH=1: deleted" in fresh.stdout and "done already" not in fresh.stdout
    assert {k: v for k, v in tree_hashes(out).items() if k.startswith(("notes.txt", "mine/"))} == users
    assert (run / "model.safetensors").stat().st_mtime_ns > before["grpo_base/model.safetensors"][1]


@pytest.mark.slow  # starts the real data-building stages
def test_quickstart_failure_shows_the_end_of_the_failing_log_and_keeps_its_exit_status(tmp_path):
    """A stage that fails: its log's last lines on the console, its exit status kept, the other stages stopped."""
    fake = tmp_path / "python"
    fake.write_text(
        f"#!/bin/sh\ncase \"$1 $2\" in '-m data_prep.fixtures.tiny_model') echo 'a line of the builder'; "
        "echo 'out of memory' >&2; "
        f'exit 7;; *) exec {sys.executable} "$@";; esac\n'
    )
    fake.chmod(0o755)
    out = tmp_path / "qs"
    result = launch(QUICKSTART, cwd=tmp_path, timeout=300, OUT=str(out), ROWS="8", EVAL_ROWS="2", PYTHON=str(fake))
    assert result.returncode == 7, result.stdout + result.stderr
    assert "tiny Qwen2-VL (base, random weights)" in result.stdout and "FAILED (exit status 7)" in result.stdout
    assert "a line of the builder" in result.stdout and "out of memory" in result.stdout
    assert f"its whole output: {out}/logs/model.log" in result.stderr
    assert "GRPO" not in result.stdout  # nothing after the failed stage ran


# ----- the ablation suites ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite, size", list(SUITES), ids=[f"{s}-{z}" for s, z in SUITES])
def test_each_suite_is_one_group_and_one_report_or_names_its_missing_configs(suite, size, tmp_path):
    out = tmp_path / "suite"
    env = {"SUITE": suite, "OUT": str(out), "DRY_RUN": "1", "SEED": "5", "TINY": "1" if size == "tiny" else "0"}
    result = launch(ABLATIONS, cwd=tmp_path, **env)
    experiments = SUITES[suite, size]
    missing = [f"recipes/configs/{size}/{e}.yaml" for e in experiments]
    missing = [m for m in missing if not (REPO_ROOT / m).is_file()]
    if missing:  # configs another change adds: until then the suite refuses clearly and writes nothing
        refused(result, f"suite {suite} ({size}) needs configs that do not exist: {' '.join(missing)}")
        assert not out.exists()
        return
    assert result.returncode == 0, result.stderr
    steps = commands(result.stdout)
    trainings = [c for c in steps if "--wandb_group" in c]
    # TINY: `python RECIPE --config CONFIG ...`; on GPUs: `bash launch/run_8gpu.sh RECIPE CONFIG ...`
    configs = [flag(c, "--config") if size == "tiny" else c[3] for c in trainings]
    assert configs == [f"recipes/configs/{size}/{e}.yaml" for e in experiments]
    group = f"ablations{'-tiny' if size == 'tiny' else ''}-{suite}-seed5"
    assert {flag(c, "--wandb_group") for c in trainings} == {group}
    assert {flag(c, "--seed") for c in trainings} == {"5"}
    (report,) = [c for c in steps if "recipes.compare" in c]
    assert report[3 : 3 + len(experiments)] == [str(out / e) for e in experiments]
    assert not out.exists()


def test_tiny_paper_suite_plan(tmp_path):
    out = tmp_path / "suite"
    result = launch(ABLATIONS, "--max_steps", "2", cwd=tmp_path, TINY="1", OUT="suite", DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    steps = commands(result.stdout)
    builds = [c for c in steps if c[1:3] == ["-m", "data_prep.fixtures.tiny_model"]]
    assert [(flag(c, "--output"), flag(c, "--variant")) for c in builds] == [
        (str(out / "data" / "tiny-base"), "base"),
        (str(out / "data" / "tiny-instruct"), "instruct"),
    ]
    evaluations = [c for c in steps if c[1] == "recipes/eval_cvbench.py"]  # `python recipes/eval_cvbench.py`
    prompts = {"grpo_base": "base", "grpo_instruct": "instruct", "sft_baseline": "instruct_no_reasoning"}
    for experiment, evaluation in zip(SUITES["paper", "tiny"], evaluations, strict=True):
        assert flag(evaluation, "--model_name_or_path") == str(out / experiment)
        assert flag(evaluation, "--prompt") == prompts.get(experiment, "base")
        # Not the YAML's bounds: the checkpoint's own saved processor (its training's, whatever overrode them).
        assert "--max_pixels" not in evaluation and "--min_pixels" not in evaluation
        assert flag(evaluation, "--limit") == "16"
    assert [c for c in steps if "--wandb_group" in c][0][-2:] == ["--max_steps", "2"]
    assert not out.exists()


def test_tiny_families_suite_builds_one_tiny_model_per_family(tmp_path):
    experiments = SUITES["families", "tiny"]
    if not all((REPO_ROOT / f"recipes/configs/tiny/{e}.yaml").is_file() for e in experiments):
        pytest.skip("the tiny family configs are not in this checkout yet")
    result = launch(ABLATIONS, cwd=tmp_path, SUITE="families", TINY="1", OUT="suite", DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    builds = [c for c in commands(result.stdout) if c[1:3] == ["-m", "data_prep.fixtures.tiny_model"]]
    assert [(c[c.index("--arch") + 1] if "--arch" in c else "qwen2_vl", flag(c, "--variant")) for c in builds] == [
        ("qwen2_vl", "instruct"),
        ("qwen2_5_vl", "instruct"),
        ("qwen3_vl", "instruct"),
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SUITE": "loss"}, "SUITE='loss' must be one of: paper losses families"),
        ({"EXPERIMENTS": "grpo_base ../../etc"}, "unknown experiment '../../etc'"),
        ({"EXPERIMENTS": "grpo_base_nope"}, "recipes/configs/paper/grpo_base_nope.yaml"),
        ({"TINY": "yes"}, "TINY='yes' must be one of: 0 1"),
        ({"FRESH": "true"}, "FRESH='true' must be one of: 0 1"),
    ],
)
def test_ablations_refuse_bad_settings(env, message, tmp_path):
    refused(launch(ABLATIONS, cwd=tmp_path, OUT="suite", **env), message)
    assert not (tmp_path / "suite").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["200"], "unexpected argument '200'"),
        (["--seed", "1"], "set SEED=N instead"),
        (["--wandb_group=x"], "set GROUP=<name> instead"),
    ],
)
def test_ablations_refuse_arguments_they_set_themselves(args, message, tmp_path):
    refused(launch(ABLATIONS, *args, cwd=tmp_path, OUT="suite", TINY="1"), message)
    assert not (tmp_path / "suite").exists()


@pytest.mark.slow  # a real run started and killed, then a dozen launches
def test_ablations_refuse_to_call_another_seeds_results_done(tmp_path):
    out = tmp_path / "suite"
    settings = {"TINY": "1", "ROWS": "16", "EVAL_ROWS": "2", "EXPERIMENTS": "grpo_base"}
    kill_after_record(ABLATIONS, out, tmp_path, **settings)
    before = tree_hashes(tmp_path)

    result = launch(ABLATIONS, cwd=tmp_path, OUT=str(out), SEED="1", **settings)
    refused(result, "seed: 42 there, 1 now", "group: ablations-tiny-paper-seed42 there", "FRESH=1")
    result = launch(ABLATIONS, cwd=tmp_path, OUT=str(out), **{**settings, "MAX_STEPS": "3"})
    refused(result, "max_steps: config there, 3 now")
    # Another suite's experiment folder appearing in OUT is not "done already" either.
    (out / "grpo_base_length").mkdir()
    (out / "grpo_base_length" / "model.safetensors").write_bytes(b"the user's model")
    mine = tree_hashes(tmp_path)
    for fresh in ("0", "1"):
        extended = {**settings, "EXPERIMENTS": "grpo_base grpo_base_length", "FRESH": fresh}
        result = launch(ABLATIONS, cwd=tmp_path, OUT=str(out), **extended)
        refused(result, f"{out / 'grpo_base_length'} exists but {out / 'provenance.json'} has no record of it")
    assert tree_hashes(tmp_path) == mine
    (out / "grpo_base_length" / "model.safetensors").unlink()
    (out / "grpo_base_length").rmdir()
    # Nor is the quickstart allowed to run in a suite's folder, nor to delete anything there.
    for fresh in ("0", "1"):
        result = launch(QUICKSTART, cwd=tmp_path, OUT=str(out), FRESH=fresh)
        refused(result, "another program's outputs (kind: launch/run_ablations.sh there, launch/quickstart.sh now)")
    assert tree_hashes(tmp_path) == before

    # The same settings match; adding an experiment to the suite is fine; FRESH=1 would delete what the record owns
    # (the tiny inputs it started building in data/) and redo.
    extended = {**settings, "EXPERIMENTS": "grpo_base grpo_base_length"}
    assert launch(ABLATIONS, cwd=tmp_path, OUT=str(out), DRY_RUN="1", **extended).returncode == 0
    result = launch(ABLATIONS, cwd=tmp_path, OUT=str(out), DRY_RUN="1", FRESH="1", SEED="1", **settings)
    assert result.returncode == 0, result.stderr
    assert f"FRESH=1: would delete (dry run) {out / 'data'}" in result.stdout
    assert tree_hashes(tmp_path) == before


def test_ablations_fresh_never_deletes_the_users_inputs(tmp_path, tiny_base_dir):
    """BASE_MODEL inside OUT, FRESH=1: refused before anything is deleted (the input would go with OUT's files)."""
    out = tmp_path / "suite"
    settings = {"TINY": "1", "ROWS": "16", "EVAL_ROWS": "2", "EXPERIMENTS": "grpo_base"}
    kill_after_record(ABLATIONS, out, tmp_path, **settings)
    model = out / "my-model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    before = tree_hashes(tmp_path)
    result = launch(ABLATIONS, cwd=tmp_path, OUT=str(out), FRESH="1", BASE_MODEL=str(model), **settings)
    refused(result, f"output folder {out} is or contains the input {model}")
    assert tree_hashes(tmp_path) == before


def test_ablation_overrides_reach_the_evaluation(tmp_path):
    """Pixel bounds, prompt template and chat template given for training reach every evaluation; EVAL_ARGS wins."""
    args = ("--max_pixels", "6272", "--min-pixels=3136", "--prompt_template", "base_clean")
    result = launch(ABLATIONS, *args, cwd=tmp_path, TINY="1", OUT="suite", DRY_RUN="1", EXPERIMENTS="grpo_base")
    assert result.returncode == 0, result.stderr
    (training,) = [c for c in commands(result.stdout) if "--wandb_group" in c]
    (evaluation,) = [c for c in commands(result.stdout) if c[1] == "recipes/eval_cvbench.py"]
    assert training[-5:] == list(args)
    assert (flag(evaluation, "--max_pixels"), flag(evaluation, "--min_pixels")) == ("6272", "3136")
    assert flag(evaluation, "--prompt") == "base_clean"
    eval_args = "--prompt base_short --batch_size 2"
    result = launch(ABLATIONS, *args, cwd=tmp_path, TINY="1", OUT="suite", DRY_RUN="1", EVAL_ARGS=eval_args)
    evaluation = [c for c in commands(result.stdout) if c[1] == "recipes/eval_cvbench.py"][0]
    assert evaluation[-4:] == eval_args.split() and "base_clean" not in evaluation
    assert not (tmp_path / "suite").exists()


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_each_training_prompt_template_reaches_the_evaluation_or_is_refused(template, tmp_path):
    result = launch(
        ABLATIONS, "--prompt_template", template, cwd=tmp_path, TINY="1", OUT="s", DRY_RUN="1", EXPERIMENTS="grpo_base"
    )
    if template == "sft" or template in EVAL_TEMPLATES:
        assert result.returncode == 0, result.stderr
        (evaluation,) = [c for c in commands(result.stdout) if c[1] == "recipes/eval_cvbench.py"]
        assert flag(evaluation, "--prompt") == ("instruct_no_reasoning" if template == "sft" else template)
        assert flag(evaluation, "--prompt") in EVAL_TEMPLATES
    else:
        refused(result, f"--prompt_template {template} has no CV-Bench template", 'EVAL_ARGS="--prompt NAME"')


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--limit", "5"], {}, "--limit is set by this launcher: an evaluation option: set EVAL_LIMIT=N instead"),
        (["--batch_size=4"], {}, 'set EVAL_ARGS="--batch_size N" instead'),
        (["--prompt", "base"], {}, "give the training's --prompt_template"),
        ([], {"EVAL_ARGS": "--output_dir elsewhere"}, "--output_dir is set by this launcher"),
        ([], {"EVAL_ARGS": "--limit 3"}, "set EVAL_LIMIT=N instead"),
        ([], {"EVAL_ARGS": "--dataset x.parquet"}, "set CVBENCH="),
    ],
)
def test_evaluation_options_go_where_they_act(args, env, message, tmp_path):
    refused(launch(ABLATIONS, *args, cwd=tmp_path, OUT="suite", TINY="1", **env), message)
    assert not (tmp_path / "suite").exists()


def test_launch_docs_derive_gradient_accumulation_instead_of_setting_it_per_gpu_count():
    """prompts_per_step fixes the global batch; a --gradient_accumulation_steps that contradicts it is refused, so
    no launch doc may tell users to set it by hand for their GPU count."""
    for doc in (ABLATIONS, RUN_8GPU, MULTINODE, LAUNCH / "README.md"):
        text = doc.read_text()
        assert "--gradient_accumulation_steps 2" not in text and "--gradient_accumulation_steps 8" not in text, doc


@pytest.mark.slow
def test_tiny_suite_end_to_end_then_done_already(tmp_path, tiny_base_dir, sat_records_dir, cvbench_parquet):
    out = tmp_path / "suite"
    settings = {"TINY": "1", "OUT": str(out), "EXPERIMENTS": "grpo_base", "MAX_STEPS": "1", "EVAL_ROWS": "2"}
    settings |= {"BASE_MODEL": str(tiny_base_dir), "SAT_DATA": str(sat_records_dir), "CVBENCH": str(cvbench_parquet)}
    result = launch(ABLATIONS, cwd=tmp_path, timeout=900, **settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "report.html").is_file() and (out / "grpo_base" / "eval_cvbench" / "summary.json").is_file()
    model = out / "grpo_base" / "model.safetensors"
    trained = model.stat().st_mtime_ns

    again = launch(ABLATIONS, cwd=tmp_path, timeout=900, **settings)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train grpo_base: done already" in again.stdout and "CV-Bench grpo_base: done already" in again.stdout
    assert model.stat().st_mtime_ns == trained
    refused(launch(ABLATIONS, cwd=tmp_path, **settings, SEED="1"), "seed: 42 there, 1 now")
    assert model.stat().st_mtime_ns == trained


@pytest.mark.parametrize("script", [QUICKSTART, ABLATIONS], ids=lambda p: p.name)
def test_an_out_that_is_a_file_is_refused(script, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    refused(launch(script, cwd=tmp_path, OUT="notes.txt", TINY="1"), "is a file, not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"
