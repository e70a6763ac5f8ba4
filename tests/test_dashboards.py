"""Dashboards: the tiny ablation suite end to end (launch/run_ablations.sh, TINY=1), W&B offline contents, callbacks.

The suite runs once per test session (about 2-3 minutes on 2 idle CPU cores: four 2-step trainings, four 8-row
CV-Bench evaluations, the report), on the session's tiny models and synthetic data, with W&B offline. Dumps are on
for the two base-model GRPO runs only, so the instruct run shows that they stay off unless asked for.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import load_from_disk

from recipes.callbacks import (
    PROMPT_ID_COLUMN,
    CompletionsTableCallback,
    TrlCompatibilityError,
    install_prompt_ids,
    latest_rollouts,
    trajectory_rows,
)
from recipes.cli import REPO_ROOT
from recipes.compare import read_wandb_offline

EXPERIMENTS = ("grpo_base", "grpo_instruct", "sft_baseline", "grpo_base_length")
GRPO = ("grpo_base", "grpo_instruct", "grpo_base_length")
DUMPED = ("grpo_base", "grpo_base_length")
STEPS = 2
GROUP = "dashboards-test"
SEED = 7
# What every GRPO step must log (TRL's names); the aha monitor is the weight-0 reflection reward.
GRPO_METRICS = (
    "rewards/accuracy_reward/mean",
    "rewards/format_reward/mean",
    "rewards/reflection_reward/mean",
    "reward",
    "reward_std",
    "completions/mean_length",
    "completions/min_length",
    "completions/max_length",
    "completions/clipped_ratio",
    "kl",
    "entropy",
)
SFT_METRICS = ("loss", "entropy")


def reward_names(experiment: str) -> list[str]:
    names = ["accuracy_reward", "format_reward"]
    if experiment == "grpo_base_length":
        names.append("length_reward")
    return [*names, "reflection_reward"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_base_dir, tiny_instruct_dir, sat_records_dir, cvbench_parquet):
    out = tmp_path_factory.mktemp("ablations")
    env = {
        **os.environ,
        "TINY": "1",
        "OUT": str(out),
        "SEED": str(SEED),
        "GROUP": GROUP,
        "MAX_STEPS": str(STEPS),
        "SAT_DATA": str(sat_records_dir),
        "CVBENCH": str(cvbench_parquet),
        "BASE_MODEL": str(tiny_base_dir),
        "INSTRUCT_MODEL": str(tiny_instruct_dir),
        "EVAL_LIMIT": "8",
        "EVAL_MAX_NEW_TOKENS": "8",
        "DUMP_TRAJECTORIES": " ".join(DUMPED),
        "PYTHON": sys.executable,
        "WANDB_MODE": "offline",
        "WANDB_DATA_DIR": str(out / "wandb-data"),  # W&B's artifact staging (the tables' images), kept out of $HOME
        "WANDB_CACHE_DIR": str(out / "wandb-cache"),
        "OMP_NUM_THREADS": "1",
    }
    for key in ("WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_PROJECT", "WANDB_DIR"):
        env.pop(key, None)
    # One prompt (4 completions) per GRPO step and 4 examples per SFT step: the smallest batches the configs allow.
    cmd = ["bash", str(REPO_ROOT / "launch/run_ablations.sh"), "--per_device_train_batch_size", "4"]
    result = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"run_ablations.sh failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return out


def test_the_gpu_suite_trains_through_the_launcher_and_evaluates_each_model_with_its_prompt(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path / "suite"), "SEED": "3", "NUM_GPUS": "8"}
    env.pop("TINY", None)
    cmd = ["bash", str(REPO_ROOT / "launch/run_ablations.sh"), "--max_steps", "5"]
    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    trainings = [line.split() for line in lines if line.startswith("bash launch/run_8gpu.sh")]
    evaluations = [line.split() for line in lines if "recipes/eval_cvbench.py" in line]
    out = tmp_path / "suite"
    recipes = {"grpo_instruct": "recipes/grpo_instruct.py", "sft_baseline": "recipes/sft_baseline.py"}
    models = {"grpo_instruct": "Qwen2-VL-2B-Instruct"}
    prompts = {"grpo_instruct": "instruct", "sft_baseline": "instruct_no_reasoning"}
    assert len(trainings) == len(evaluations) == len(EXPERIMENTS)
    for experiment, training, evaluation in zip(EXPERIMENTS, trainings, evaluations, strict=True):
        assert training[2:4] == [
            recipes.get(experiment, "recipes/grpo_base.py"),
            f"recipes/configs/paper/{experiment}.yaml",
        ]
        flags = dict(zip(training[4::2], training[5::2], strict=False))
        assert flags["--output_dir"] == str(out / experiment) and flags["--wandb_group"] == "suite-seed3"
        assert flags["--run_name"] == f"{experiment}-{models.get(experiment, 'Qwen2-VL-2B')}-seed3"
        assert flags["--max_steps"] == "5" and flags["--seed"] == "3"
        assert "--num_processes" in evaluation and evaluation[evaluation.index("--num_processes") + 1] == "8"
        assert evaluation[evaluation.index("--prompt") + 1] == prompts.get(experiment, "base")
        assert evaluation[evaluation.index("--model_name_or_path") + 1] == str(out / experiment)
        assert evaluation[evaluation.index("--max_pixels") + 1] == "401408"  # the training bound, not the default
    (compare_line,) = [line for line in lines if "recipes.compare" in line]
    assert all(str(out / experiment) in compare_line for experiment in EXPERIMENTS)
    assert f"--output {out / 'report.html'}" in compare_line


def log_history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "trainer_state.json").read_text())["log_history"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_run_logs_its_metrics_at_every_step(suite, experiment):
    run_dir = suite / experiment
    steps = [entry for entry in log_history(run_dir) if "train_runtime" not in entry]
    assert [entry["step"] for entry in steps] == list(range(1, STEPS + 1))
    expected = SFT_METRICS if experiment == "sft_baseline" else GRPO_METRICS
    for entry in steps:
        missing = [key for key in expected if entry.get(key) is None]
        assert not missing, f"{experiment} step {entry['step']} lacks {missing}"
    if experiment == "grpo_base_length":
        assert all(entry["rewards/length_reward/mean"] > 0 for entry in steps)
    summary = json.loads((run_dir / "eval_cvbench" / "summary.json").read_text())
    assert summary  # each model was evaluated where compare looks for it


def test_the_report_holds_every_run_and_its_cvbench_result(suite):
    page = (suite / "report.html").read_text()
    assert (suite / "report.png").read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in page
    metrics_table, cvbench_table = page.split("</table>")[:2]
    rows = [row for row in metrics_table.split("<tr>")[1:] if "</td>" in row]
    assert len(rows) == len(EXPERIMENTS)
    assert all(f"<td>{experiment}</td>" in cvbench_table for experiment in EXPERIMENTS)
    for experiment in EXPERIMENTS:
        (row,) = [row for row in rows if f"<td>{experiment}</td>" in row]
        assert "no CV-Bench summary" not in row
    (sft_row,) = [row for row in rows if "<td>sft_baseline</td>" in row]
    assert "not logged: accuracy reward" in sft_row


def test_trajectories_are_dumped_when_on_and_absent_when_off(suite, sat_records_dir):
    record_ids = set(load_from_disk(str(sat_records_dir))["id"])
    for experiment in DUMPED:
        files = sorted((suite / experiment / "trajectories").iterdir())
        assert [f.name for f in files] == [f"step-{s:06d}.jsonl" for s in range(1, STEPS + 1)]
        for step, path in enumerate(files, start=1):
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert len(rows) == 4  # one prompt x num_generations 4
            assert {row["prompt_id"] for row in rows} <= record_ids and len({row["prompt_id"] for row in rows}) == 1
            for row in rows:
                assert row["step"] == step and isinstance(row["completion"], str)
                assert list(row["rewards"]) == reward_names(experiment)
                assert isinstance(row["advantage"], float)
                judged = [row["rewards"][n] for n in reward_names(experiment) if n != "reflection_reward"]
                assert row["reward"] == pytest.approx(sum(judged))  # weights 1, the monitor 0
    for experiment in ("grpo_instruct", "sft_baseline"):
        assert not (suite / experiment / "trajectories").exists()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_offline_wandb_run_holds_group_tags_metrics_and_the_completions_table(suite, experiment):
    offline_runs = list((suite / experiment / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    run = read_wandb_offline(offline_runs[0])
    model = "tiny-instruct" if experiment == "grpo_instruct" else "tiny-base"
    assert run["run"]["group"] == GROUP
    assert set(run["run"]["tags"]) >= {f"experiment:{experiment}", f"model:{model}", f"seed:{SEED}"}
    assert run["run"]["name"] == f"{experiment}-{model}-seed{SEED}"

    logged = {}
    for row in run["history"]:
        if "train/global_step" in row:
            logged.setdefault(row["train/global_step"], set()).update(k for k, v in row.items() if v is not None)
    expected = SFT_METRICS if experiment == "sft_baseline" else GRPO_METRICS
    for step in range(1, STEPS + 1):
        missing = [key for key in expected if f"train/{key}" not in logged.get(step, set())]
        assert not missing, f"W&B step {step} of {experiment} lacks {missing}"

    tables = [a for a in run["artifacts"] if a["type"] == "run_table" and a["name"].endswith("-completions")]
    if experiment == "sft_baseline":
        assert not tables
        return
    assert tables, f"no completions table in the W&B run of {experiment}"
    assert all(any(f.startswith("media/images/") and f.endswith(".png") for f in t["files"]) for t in tables)
    table_files = sorted((offline_runs[0] / "files" / "media" / "table").glob("completions_*.table.json"))
    table = json.loads(table_files[-1].read_text())
    assert {"prompt", "completion", "advantage", "image", PROMPT_ID_COLUMN, *reward_names(experiment)} <= set(
        table["columns"]
    )
    prompt = table["data"][0][table["columns"].index("prompt")]
    assert prompt[-1]["content"].count("<image>") == 1  # the prompt as text, its image in the image column


# --- the callbacks on a stand-in of GRPOTrainer's buffer (no training) -----------------------------------------------


class StandInTrainer:
    """The attributes of TRL 1.16's GRPOTrainer that recipes.callbacks reads."""

    def __init__(self):
        self.reward_func_names = ["accuracy_reward", "format_reward", "reflection_reward"]
        self.reward_weights = torch.tensor([1.0, 1.0, 0.0])
        self.reward_funcs = [lambda completions, **kw: [1.0] * len(completions), len, len]
        self.reward_funcs[0].__name__ = "accuracy_reward"
        self.model = torch.nn.Linear(1, 1)
        image_prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
        self._logs = {
            "prompt": deque([image_prompt, image_prompt]),
            "completion": deque([[{"role": "assistant", "content": "<answer>left</answer>"}], "plain text"]),
            "rewards": {
                "accuracy_reward": deque([1.0, math.nan]),
                "format_reward": deque([1.0, 0.0]),
                "reflection_reward": deque([1.0, 0.0]),
            },
            "advantages": deque([0.7, -0.7]),
            "extra": {PROMPT_ID_COLUMN: deque(["old", "old", "sat:train:1", "sat:train:1"])},
            "images": deque(),
        }


def test_trajectory_rows_reuse_the_trainers_buffer():
    rows = trajectory_rows(StandInTrainer(), step=3)
    assert rows[0] == {
        "step": 3,
        "prompt_id": "sat:train:1",
        "completion": "<answer>left</answer>",
        "rewards": {"accuracy_reward": 1.0, "format_reward": 1.0, "reflection_reward": 1.0},
        "reward": 2.0,  # the weighted sum: the monitor has weight 0
        "advantage": 0.7,
    }
    assert rows[1]["rewards"]["accuracy_reward"] is None and rows[1]["reward"] == 0.0  # could not judge: null
    json.dumps(rows, allow_nan=False)


def test_a_trl_without_the_buffer_fails_with_the_fix():
    trainer = StandInTrainer()
    del trainer._logs
    with pytest.raises(TrlCompatibilityError, match=r"TRL 1\.16.*pip install"):
        latest_rollouts(trainer)


def test_prompt_ids_are_logged_through_trls_log_extra_and_rewards_are_unchanged():
    trainer = StandInTrainer()
    wrapper = install_prompt_ids(trainer)
    assert install_prompt_ids(trainer) is wrapper and trainer.reward_funcs[0] is wrapper
    assert wrapper.__name__ == "accuracy_reward"
    logged = {}
    rewards = wrapper(
        completions=["a", "b"], id=["x", "y"], log_extra=lambda column, values: logged.update({column: values})
    )
    assert rewards == [1.0, 1.0] and logged == {PROMPT_ID_COLUMN: ["x", "y"]}
    assert wrapper.train_calls == 1
    trainer.model.eval()
    wrapper(completions=["a"], id=["x"], log_extra=lambda *a: None)
    assert wrapper.train_calls == 1  # evaluation batches are not training samples


def test_the_completions_table_fix_makes_image_prompts_loggable_to_wandb():
    wandb = pytest.importorskip("wandb")
    trainer = StandInTrainer()
    raw = pd.DataFrame({"prompt": list(trainer._logs["prompt"])})
    with pytest.raises(TypeError, match="incompatible types"):
        wandb.Table(dataframe=raw)  # what TRL 1.16 hands W&B for image prompts

    class State:
        is_world_process_zero = True

    CompletionsTableCallback(trainer).on_log(None, State(), None, logs={})
    prompts = list(trainer._logs["prompt"])
    assert prompts[0] == [{"role": "user", "content": "<image>Where?"}]
    wandb.Table(dataframe=pd.DataFrame({"prompt": prompts}))
