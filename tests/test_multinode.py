"""Running past one node: each node's command per layout, the names they pass, and a requeued run that resumes.

Layouts (launch/README.md, "Layouts"): N nodes data parallel; the last node serving generation with TRL's
`trl vllm-serve` and the others training in TRL's server mode; one ablation arm per node; and the requeue path
(``REQUEUE=1``, set by the Slurm examples). ``DRY_RUN=1`` prints the command a node would run, so every node of a
layout is checked on one CPU machine. Every option name a launcher passes is parsed by the real parser that will read
it (accelerate's, the recipe's TrlParser, TRL's `vllm-serve` arguments), so a misspelled or renamed option fails
here. Slurm itself cannot run here: its two commands the batch scripts call (``scontrol``, ``srun``) are small
stand-ins that run each node's task in turn, which is enough to check what each node is told to run and that the
time-limit signal requeues the job. The requeue itself is a real run: killed after a checkpoint, rerun with the same
command, it resumes from the newest complete checkpoint and leaves every earlier file as it was (hashed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from accelerate.commands.launch import launch_command_parser
from fixtures.files import tree_hashes
from test_launchers import SETTINGS, commands, flag, launch, refused
from transformers import TrainerState
from trl import GRPOConfig, ModelConfig, SFTConfig, TrlParser
from trl.scripts.vllm_serve import ScriptArguments as ServeArguments
from trl.scripts.vllm_serve import build_command

from recipes import grpo_base
from recipes.shared import provenance
from recipes.shared.args import RecipeArguments
from recipes.shared.cli import REPO_ROOT
from recipes.shared.run_folder import definition

LAUNCH = REPO_ROOT / "launch"
MULTINODE = LAUNCH / "run_multinode.sh"
ABLATIONS = LAUNCH / "run_ablations.sh"
SLURM = LAUNCH / "slurm_multinode.sbatch"
SLURM_ABLATIONS = LAUNCH / "slurm_ablations.sbatch"
PAPER = REPO_ROOT / "recipes" / "configs" / "paper"
TINY = REPO_ROOT / "recipes" / "configs" / "tiny"
# Every option a recipe reads: its own, TRL's GRPO or SFT configuration (with transformers'), ModelConfig's.
KNOWN = {f.name for cls in (RecipeArguments, GRPOConfig, SFTConfig, ModelConfig) for f in fields(cls)}


def node(rank: int, *args: str, cwd: Path, **env: str) -> list[str]:
    """The one command node ``rank`` would run (DRY_RUN; DDP_BACKEND set, so no GPU probe)."""
    result = launch(MULTINODE, *args, cwd=cwd, DRY_RUN="1", DDP_BACKEND="nccl", NODE_RANK=str(rank), **env)
    assert result.returncode == 0, result.stderr
    (command,) = commands(result.stdout)
    return command


def recipe_part(command: list[str]) -> list[str]:
    """What accelerate hands to the recipe: everything after the script."""
    return command[next(i for i, a in enumerate(command) if a.endswith(".py")) + 1 :]


# ----- N nodes, data parallel ---------------------------------------------------------------------------------------


def test_every_node_of_a_data_parallel_layout_joins_one_world_with_a_long_collective_timeout(tmp_path):
    env = {"NNODES": "4", "MASTER_ADDR": "node01", "MASTER_PORT": "29555"}
    for rank in range(4):
        command = node(rank, "grpo_base", "--per_device_train_batch_size", "2", cwd=tmp_path, **env)
        assert command[:2] == ["accelerate", "launch"]
        assert flag(command, "--num_machines") == "4" and flag(command, "--machine_rank") == str(rank)
        assert flag(command, "--num_processes") == "32"
        assert flag(command, "--main_process_ip") == "node01" and flag(command, "--main_process_port") == "29555"
        assert flag(command, "--ddp_timeout") == "3600"  # not transformers' 1800 s: see DDP_TIMEOUT in the script
        assert "--resume_from_checkpoint" not in command and "--vllm_mode" not in command
        assert command[-2:] == ["--per_device_train_batch_size", "2"]  # the user's overrides last: they win
    assert flag(node(0, cwd=tmp_path, DDP_TIMEOUT="7200", **env), "--ddp_timeout") == "7200"


# ----- the last node serves generation, the others train -------------------------------------------------------------


def test_the_last_node_serves_the_model_the_trainers_train_at_their_image_bounds(tmp_path):
    config = PAPER / "grpo_base_vllm.yaml"
    settings = yaml.safe_load(config.read_text())
    env = {"NNODES": "3", "MASTER_ADDR": "node01", "VLLM_NODES": "1", "VLLM_HOST": "node03", "VLLM_PORT": "8123"}
    args = ("recipes/grpo_base.py", str(config), "--per_device_train_batch_size", "4")
    for rank in (0, 1):
        command = node(rank, *args, cwd=tmp_path, **env)
        # Two trainer nodes: one world of 16 processes that does not include the server node.
        assert flag(command, "--num_machines") == "2" and flag(command, "--machine_rank") == str(rank)
        assert flag(command, "--num_processes") == "16" and flag(command, "--main_process_ip") == "node01"
        recipe = recipe_part(command)
        assert flag(recipe, "--use_vllm") == "true" and flag(recipe, "--vllm_mode") == "server"
        assert flag(recipe, "--vllm_server_host") == "node03" and flag(recipe, "--vllm_server_port") == "8123"
        assert float(flag(recipe, "--vllm_server_timeout")) >= 600  # a vLLM start with CUDA graphs takes minutes

    server = node(2, *args, cwd=tmp_path, **env)
    assert server[:2] == ["trl", "vllm-serve"]
    assert flag(server, "--model") == settings["model_name_or_path"] == "Qwen/Qwen2-VL-2B"
    assert flag(server, "--port") == "8123" and flag(server, "--host") == "0.0.0.0"
    bounds = json.loads(flag(server, "--mm-processor-kwargs"))
    assert bounds == {"min_pixels": settings["min_pixels"], "max_pixels": settings["max_pixels"]}

    # Overrides of the model and the bounds reach the server too: it must generate with what the trainers train.
    server = node(2, *args, "--model_name_or_path", "/models/mine", "--max_pixels=200704", cwd=tmp_path, **env)
    assert flag(server, "--model") == "/models/mine"
    assert json.loads(flag(server, "--mm-processor-kwargs"))["max_pixels"] == 200704


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["sft_baseline"], {"NNODES": "2", "VLLM_HOST": "n2"}, "the SFT baseline generates nothing"),
        (["grpo_base"], {"NNODES": "1", "VLLM_HOST": "n2"}, "leaves none to train"),
        (["grpo_base"], {"NNODES": "2"}, "needs VLLM_HOST"),
        (["grpo_base", "--vllm_server_host", "x"], {"NNODES": "2", "VLLM_HOST": "n2"}, "set VLLM_HOST instead"),
        (["grpo_base", "--vllm-mode=colocate"], {"NNODES": "2", "VLLM_HOST": "n2"}, "--vllm_mode is set by"),
        (["grpo_base"], {"NNODES": "2", "VLLM_HOST": "n2", "VLLM_GPU_MEMORY_UTILIZATION": "90"}, "a fraction"),
        (["grpo_base"], {"NNODES": "2", "VLLM_HOST": "n2", "VLLM_PORT": "0"}, "VLLM_PORT='0'"),
    ],
)
def test_a_server_layout_that_cannot_work_is_refused_with_the_fix(args, env, message, tmp_path):
    env = {"VLLM_NODES": "1", "MASTER_ADDR": "n1", "DRY_RUN": "1", "DDP_BACKEND": "nccl"} | env
    refused(launch(MULTINODE, *args, cwd=tmp_path, **env), message)


def test_every_option_name_the_launcher_passes_is_one_its_reader_knows(tmp_path):
    """accelerate's own parser reads the launch options, the recipe's TrlParser reads the recipe's (with the real
    paper config), TRL's `vllm-serve` reads the server's; what it does not know goes on to `vllm serve` as is."""
    config = PAPER / "grpo_base_vllm.yaml"
    env = {"NNODES": "2", "MASTER_ADDR": "node01", "VLLM_NODES": "1", "VLLM_HOST": "node02", "REQUEUE": "1"}
    out = {"OUTPUT_DIR": str(tmp_path / "run")}
    trainer = node(0, "grpo_base", str(config), cwd=tmp_path, **env, **out)

    launch_args = launch_command_parser().parse_args(trainer[2:])  # exits on an option accelerate does not have
    assert launch_args.num_machines == 1 and launch_args.machine_rank == 0
    recipe_args = recipe_part(trainer)
    passed = {a[2:].split("=")[0] for a in recipe_args if a.startswith("--")}
    assert passed <= KNOWN | {"config"}, passed - KNOWN
    # Parsed as the recipe will parse them (on this CPU: no NCCL process group, so without --ddp_backend nccl).
    at = recipe_args.index("--ddp_backend")
    on_cpu = [*recipe_args[:at], *recipe_args[at + 2 :], "--use_cpu", "true"]
    _, training, _ = grpo_base.make_parser().parse_args_and_config(on_cpu)
    assert (training.vllm_mode, training.vllm_server_host, training.ddp_timeout) == ("server", "node02", 3600)
    assert training.resume_from_checkpoint == "last"

    server = node(1, "grpo_base", str(config), cwd=tmp_path, **env, **out)
    serve_args, rest = TrlParser(ServeArguments).parse_args_and_config(server[2:], return_remaining_strings=True)
    assert serve_args.model == "Qwen/Qwen2-VL-2B" and serve_args.port == 8000
    assert rest[0] == "--mm-processor-kwargs"  # vLLM's option (vLLM is not installed here to parse it)
    assert build_command(serve_args, rest)[-2:] == rest  # handed on to `vllm serve` unchanged

    # The NCCL setting the launcher exports is one torch reads (its ProcessGroupNCCL header, when installed).
    header = Path(torch.__file__).parent / "include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp"
    if header.is_file():
        assert '"TORCH_NCCL_ASYNC_ERROR_HANDLING"' in header.read_text()


def test_where_processes_meet_is_not_part_of_what_a_run_is(tmp_path):
    """A requeued job may land on other nodes: its server host, port and timeouts must not make its own run folder
    look like another run's (which the recipe would refuse to resume)."""
    base = ["--config", str(TINY / "grpo_base.yaml"), "--use_cpu", "true", "--output_dir", str(tmp_path)]
    moved = ["--ddp_timeout", "7200", "--vllm_server_host", "node07", "--vllm_server_port", "8001"]
    moved += ["--vllm_server_timeout", "900", "--vllm_group_port", "51300"]
    first = definition(*grpo_base.make_parser().parse_args_and_config(base))
    assert definition(*grpo_base.make_parser().parse_args_and_config([*base, *moved])) == first
    # ... while what it trains still is (the control).
    assert definition(*grpo_base.make_parser().parse_args_and_config([*base, "--beta", "0.1"])) != first


# ----- requeue: resume, never start over, never retrain a finished run ----------------------------------------------


def test_requeue_resumes_the_newest_complete_checkpoint_and_refuses_what_would_start_over(tmp_path):
    command = node(0, "grpo_base", cwd=tmp_path, REQUEUE="1", OUTPUT_DIR=str(tmp_path / "run"))
    assert flag(recipe_part(command), "--resume_from_checkpoint") == "last"
    assert flag(recipe_part(command), "--output_dir") == str(tmp_path / "run")
    for args, message in [
        (["--overwrite_output_dir", "true"], "never replace its own run"),
        (["--resume_from_checkpoint", "x"], "resumes from the newest complete checkpoint by itself"),
    ]:
        result = launch(MULTINODE, "grpo_base", *args, cwd=tmp_path, DRY_RUN="1", DDP_BACKEND="nccl", REQUEUE="1")
        refused(result, message)


# ----- one ablation arm per node ------------------------------------------------------------------------------------


def arms(result: subprocess.CompletedProcess) -> list[str]:
    """The experiments a dry run of run_ablations.sh trains, in order."""
    assert result.returncode == 0, result.stderr
    return [flag(c, "--output_dir").rsplit("/", 1)[1] for c in commands(result.stdout) if "run_8gpu.sh" in " ".join(c)]


@pytest.mark.parametrize("nodes", [2, 4])
def test_each_node_trains_and_evaluates_its_own_arms_and_only_one_pass_writes_the_report(nodes, tmp_path):
    out = tmp_path / "suite"
    suite = ["grpo_base", "grpo_instruct", "sft_baseline", "grpo_base_length"]
    seen = []
    for rank in range(nodes):
        result = launch(ABLATIONS, cwd=tmp_path, DRY_RUN="1", OUT=str(out), NNODES=str(nodes), NODE_RANK=str(rank))
        mine = arms(result)
        assert mine == suite[rank::nodes]
        evaluated = [
            flag(c, "--model_name_or_path") for c in commands(result.stdout) if "recipes/eval_cvbench.py" in c
        ]
        assert evaluated == [str(out / exp) for exp in mine]
        assert "recipes.compare" not in result.stdout and "NNODES=1 on one node" in result.stdout
        seen += mine
        for command in commands(result.stdout):  # each arm's training options are options of its recipe
            if "launch/run_8gpu.sh" in command:
                assert {a[2:] for a in command[4:] if a.startswith("--")} <= KNOWN, command
    assert sorted(seen) == sorted(suite)  # every arm on exactly one node
    final = launch(ABLATIONS, cwd=tmp_path, DRY_RUN="1", OUT=str(out))
    assert "recipes.compare" in final.stdout and not out.exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "env, message",
    [
        ({"NNODES": "2", "TINY": "1"}, "TINY=1 runs every arm on this machine"),
        ({"NNODES": "2", "FRESH": "1"}, "FRESH=1 deletes what the other nodes are writing"),
        ({"NNODES": "5", "NODE_RANK": "4"}, "has no arm"),
        ({"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK=2 must be in 0..1"),
    ],
)
def test_arm_per_node_settings_that_cannot_work_are_refused(env, message, tmp_path):
    out = tmp_path / "suite"
    refused(launch(ABLATIONS, cwd=tmp_path, DRY_RUN="1", OUT=str(out), **env), message)
    assert not out.exists()


# ----- the Slurm examples, with stand-ins for Slurm's scontrol and srun ----------------------------------------------

STAND_INS = {
    "scontrol": """#!/usr/bin/env bash
# Slurm's scontrol, as the batch scripts use it: the allocation's host names, and requeue (logged).
if [[ "$1 $2" == "show hostnames" ]]; then
  for ((i = 1; i <= SLURM_NNODES; i++)); do printf 'node%02d\\n' "$i"; done
elif [[ "$1" == requeue ]]; then
  echo "requeue $2" >>"$STAND_IN_LOG"
fi
""",
    "srun": """#!/usr/bin/env bash
# Slurm's srun, as the batch scripts use it: the step's task once per node (of --nodelist, else all), in turn, with
# the node's SLURM_NODEID within the step; each task's output in its own file.
nodes=()
while [[ "$1" == --* ]]; do
  [[ "$1" != --nodelist=* ]] || IFS=, read -r -a nodes <<<"${1#--nodelist=}"
  shift
done
[[ ${#nodes[@]} -gt 0 ]] || for ((i = 1; i <= SLURM_NNODES; i++)); do nodes+=("$(printf 'node%02d' "$i")"); done
echo "srun ${nodes[*]}" >>"$STAND_IN_LOG"
sleep "${STAND_IN_SLEEP:-0}"
for i in "${!nodes[@]}"; do
  SLURM_NODEID=$i SLURMD_NODENAME=${nodes[$i]} "$@" >"$STAND_IN_DIR/task-${nodes[$i]}.out" 2>&1 || exit $?
done
""",
}


def slurm_env(tmp_path: Path, nodes: int, **env: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    full = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    full.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", SLURM_JOB_ID="4242", SLURM_NNODES=str(nodes))
    full.update(SLURM_JOB_NODELIST=f"node[01-{nodes:02d}]", SLURM_SUBMIT_DIR=str(REPO_ROOT))
    full.update(STAND_IN_LOG=str(tmp_path / "slurm.log"), STAND_IN_DIR=str(tmp_path))
    full["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{full['PATH']}"
    full.update(env)
    return full


def task(tmp_path: Path, host: str) -> list[str]:
    (command,) = [shlex.split(line) for line in (tmp_path / f"task-{host}.out").read_text().splitlines()]
    return command


def test_the_slurm_example_gives_every_node_its_role(tmp_path):
    env = slurm_env(tmp_path, 3, DRY_RUN="1", DDP_BACKEND="nccl", VLLM_NODES="1")
    args = ["recipes/grpo_base.py", "recipes/configs/paper/grpo_base_vllm.yaml", "--per_device_train_batch_size", "4"]
    result = subprocess.run(["bash", str(SLURM), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for rank, host in enumerate(["node01", "node02"]):
        command = task(tmp_path, host)
        assert flag(command, "--machine_rank") == str(rank) and flag(command, "--num_machines") == "2"
        assert flag(command, "--main_process_ip") == "node01"
        recipe = recipe_part(command)
        assert flag(recipe, "--vllm_server_host") == "node03"
        assert flag(recipe, "--resume_from_checkpoint") == "last"  # every start of the job resumes
    assert task(tmp_path, "node03")[:2] == ["trl", "vllm-serve"]


def test_the_slurm_example_requeues_itself_when_warned_of_its_time_limit(tmp_path):
    env = slurm_env(tmp_path, 2, DRY_RUN="1", DDP_BACKEND="nccl", STAND_IN_SLEEP="30")
    process = subprocess.Popen(
        ["bash", str(SLURM), "grpo_base"], env=env, cwd=tmp_path, start_new_session=True, stderr=subprocess.PIPE
    )
    log = tmp_path / "slurm.log"
    try:
        deadline = time.monotonic() + 60
        while not (log.is_file() and "srun" in log.read_text()):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 sends 5 minutes before the limit
        while "requeue" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
    assert "requeue 4242" in log.read_text().splitlines()
    assert "requeueing job 4242" in stderr.decode()


def test_a_requeued_job_whose_run_is_finished_starts_nothing_and_a_new_job_on_it_is_refused(tmp_path):
    run = tmp_path / "run"
    provenance.start(run, "recipe-run", {"recipe": {"seed": 1}})  # what a recipe records, then finishes
    provenance.finish(run)
    before = tree_hashes(run)
    env = slurm_env(tmp_path, 2, DDP_BACKEND="nccl", OUTPUT_DIR=str(run), SLURM_RESTART_COUNT="1")
    result = subprocess.run(["bash", str(SLURM), "grpo_base"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0 and "finished already" in result.stderr, result.stderr
    assert not (tmp_path / "slurm.log").exists()  # no step was started
    env.pop("SLURM_RESTART_COUNT")
    result = subprocess.run(["bash", str(SLURM), "grpo_base"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2 and "holds a finished run" in result.stderr, result.stderr
    assert tree_hashes(run) == before


def test_the_ablation_example_checks_every_nodes_share_before_it_starts(tmp_path):
    env = slurm_env(tmp_path, 5, OUT=str(tmp_path / "suite"))  # 5 nodes for a suite of 4 arms
    result = subprocess.run(["bash", str(SLURM_ABLATIONS)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2 and "NODE_RANK=4 has no arm" in result.stderr
    assert not (tmp_path / "slurm.log").exists()  # nothing was started


# ----- a real run, killed and requeued ------------------------------------------------------------------------------


def complete(checkpoint: Path) -> bool:
    """Written to the end: the trainer writes trainer_state.json last."""
    return (checkpoint / "trainer_state.json").is_file()


@pytest.mark.slow
def test_a_requeued_run_resumes_from_its_newest_complete_checkpoint_and_keeps_every_earlier_file(
    tiny_base_dir, sat_records_dir, tmp_path
):
    """`REQUEUE=1 bash launch/run_multinode.sh ...` (what every node of the Slurm example runs), killed with SIGKILL
    once a checkpoint is complete, then the same command again, as a requeued job runs it."""
    from test_launch import free_port, offline_env

    out = tmp_path / "run"
    args = ["grpo_base", str(TINY / "grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)]
    args += ["--dataset_path", str(sat_records_dir), "--report_to", "none", "--max_steps", "40"]
    args += ["--save_steps", "2", "--save_total_limit", "100", "--model_save_steps", "2", "--seed", "3"]
    env = offline_env(GPUS_PER_NODE="1", MASTER_PORT=str(free_port()), OUTPUT_DIR=str(out), REQUEUE="1")

    # 1. The first start, killed like a preempted job once checkpoint-4 is complete.
    process = subprocess.Popen(
        ["bash", str(MULTINODE), *args],
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600  # a hang guard, not a speed check
        while not complete(out / "checkpoint-4"):
            assert process.poll() is None, "the run ended before its checkpoint-4"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        # Every process of the run, as Slurm kills a job's: torch's launcher starts each rank in a session of its own.
        ranks = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        for rank in ranks:
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.kill()
        psutil.wait_procs(ranks, timeout=30)
        process.wait()
    assert not (out / "model.safetensors").exists(), "killed too late: the run had finished"
    saved = sorted((p for p in out.glob("checkpoint-*") if complete(p)), key=lambda p: int(p.name.split("-")[1]))
    newest = saved[-1]
    before = tree_hashes(out)
    kept = {path: digest for path, digest in before.items() if path.startswith(tuple(f"{p.name}/" for p in saved))}
    snapshots = [f"models/step-{step}/" for step in range(2, int(newest.name.split("-")[1]) + 1, 2)]
    kept |= {path: digest for path, digest in before.items() if path.startswith(tuple(snapshots))}
    assert any(path.startswith("models/") for path in kept)

    # 2. The requeued job: the same command resumes from the newest complete checkpoint and finishes the run.
    env["SLURM_RESTART_COUNT"] = "1"
    rerun = subprocess.run(["bash", str(MULTINODE), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-4000:]
    assert re.search(rf"resuming from \S*{re.escape(str(newest))}\b", log), log[-4000:]
    assert "starting fresh" not in log
    state = TrainerState.load_from_json(str(out / "trainer_state.json"))
    assert state.global_step == 40
    steps = [entry["step"] for entry in state.log_history if "loss" in entry]
    assert steps == list(range(1, 41))  # one history: the steps before the kill, then the resumed ones, once each
    after = tree_hashes(out)
    assert {path: after.get(path) for path in kept} == kept  # every checkpoint and snapshot written before: intact
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["training"]["ddp_timeout"] == 3600

    # 3. Requeued again after the end: finished already, nothing touched. A first start on it is refused.
    again = subprocess.run(["bash", str(MULTINODE), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "finished already" in again.stderr, again.stderr
    env.pop("SLURM_RESTART_COUNT")
    first = subprocess.run(["bash", str(MULTINODE), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 2 and "holds a finished run" in first.stderr, first.stderr
    assert tree_hashes(out) == after
