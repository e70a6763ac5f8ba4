"""Dashboards: the tiny ablation suite end to end (launch/run_ablations.sh, TINY=1), W&B offline contents, callbacks.

The suite runs once per test session (about 2-3 minutes on 2 idle CPU cores: four 2-step trainings, four 8-row
CV-Bench evaluations, the report), on the session's tiny models and synthetic data, with W&B offline. Dumps are on
for the two base-model GRPO runs only, so the instruct run shows that they stay off unless asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from recipes import grpo_base, sft_baseline
from recipes.shared.callbacks import PROMPT_ID_COLUMN, trajectory_rows
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT, run_cli

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
    # The tiny configs' own batches (an override here would reach every training, and the paper SFT loss takes one
    # sequence per micro-batch).
    cmd = ["bash", str(REPO_ROOT / "launch/run_ablations.sh")]
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
        assert flags["--output_dir"] == str(out / experiment) and flags["--wandb_group"] == "ablations-paper-seed3"
        assert flags["--run_name"] == f"{experiment}-{models.get(experiment, 'Qwen2-VL-2B')}-seed3"
        assert flags["--max_steps"] == "5" and flags["--seed"] == "3"
        assert "--num_processes" in evaluation and evaluation[evaluation.index("--num_processes") + 1] == "8"
        assert evaluation[evaluation.index("--prompt") + 1] == prompts.get(experiment, "base")
        assert evaluation[evaluation.index("--model_name_or_path") + 1] == str(out / experiment)
        # No bounds given: the evaluation reads the ones each checkpoint saved (its training bounds), as the paper did.
        assert "--max_pixels" not in evaluation and "--min_pixels" not in evaluation
    (compare_line,) = [line for line in lines if "recipes.compare" in line]
    assert all(str(out / experiment) in compare_line for experiment in EXPERIMENTS)
    assert f"--output {out / 'report.html'}" in compare_line


def log_history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow  # uses the module's tiny ablation suite (about 100 s)
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


@pytest.mark.slow  # uses the module's tiny ablation suite (about 100 s)
def test_the_report_holds_every_run_and_its_cvbench_result(suite):
    page = (suite / "report.html").read_text()
    assert (suite / "report.png").read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in page
    metrics_table = page.split("</table>")[0]
    rows = [row for row in metrics_table.split("<tr>")[1:] if "</td>" in row]
    assert len(rows) == len(EXPERIMENTS)
    for experiment in EXPERIMENTS:
        (row,) = [row for row in rows if f"<td>{experiment}</td>" in row]
        # EVAL_LIMIT=8 of the 48 rows: each summary is shown, but marked and kept out of the means
        # (recipes.report.compare).
        assert "no CV-Bench summary" not in row and "--limit subset (8 of 48 rows)" in row
        assert f"CV-Bench summary of {experiment} — NOT COUNTED" in page
    (sft_row,) = [row for row in rows if "<td>sft_baseline</td>" in row]
    assert "not logged: accuracy reward" in sft_row


@pytest.mark.slow  # uses the module's tiny ablation suite (about 100 s)
def test_trajectories_are_dumped_when_on_and_absent_when_off(suite, sat_records_dir):
    record_ids = set(load_from_disk(str(sat_records_dir))["id"])
    for experiment in DUMPED:
        files = sorted((suite / experiment / "trajectories").iterdir())
        assert [f.name for f in files] == [f"step-{s:06d}.jsonl" for s in range(1, STEPS + 1)]
        for step, path in enumerate(files, start=1):
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert len(rows) == 8  # the tiny config's 8 completions: 2 prompts x num_generations 4
            prompts = [row["prompt_id"] for row in rows]
            assert set(prompts) <= record_ids and sorted(prompts.count(p) for p in set(prompts)) == [4, 4]
            for row in rows:
                assert row["step"] == step and isinstance(row["completion"], str)
                assert list(row["rewards"]) == reward_names(experiment)
                assert isinstance(row["advantage"], float)
                judged = [row["rewards"][n] for n in reward_names(experiment) if n != "reflection_reward"]
                assert row["reward"] == pytest.approx(sum(judged))  # weights 1, the monitor 0
    for experiment in ("grpo_instruct", "sft_baseline"):
        assert not (suite / experiment / "trajectories").exists()


@pytest.mark.slow  # uses the module's tiny ablation suite (about 100 s)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_offline_wandb_run_holds_the_completions_table_with_images(suite, experiment):
    """What W&B wrote in plain files (its binary .wandb record log is read by W&B only, through `wandb sync`)."""
    offline_runs = list((suite / experiment / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    files = offline_runs[0] / "files"
    table_files = sorted((files / "media" / "table").glob("completions_*.table.json"))
    if experiment == "sft_baseline":
        assert not table_files
        return
    assert table_files, f"no completions table in the W&B run of {experiment}"
    table = json.loads(table_files[-1].read_text())
    assert {"prompt", "completion", "advantage", "image", PROMPT_ID_COLUMN, *reward_names(experiment)} <= set(
        table["columns"]
    )
    row = table["data"][0]
    prompt = row[table["columns"].index("prompt")]
    assert isinstance(prompt[-1]["content"], str) and "<image>" in prompt[-1]["content"]  # image parts as text


@pytest.mark.slow  # uses the module's tiny ablation suite (about 100 s)
def test_the_completions_tables_carry_the_prompt_images(suite):
    """W&B stages each logged table, with its images, as artifact files under WANDB_DATA_DIR until `wandb sync`."""
    staged = [p for p in (suite / "wandb-data").rglob("*") if p.is_file()]
    pngs = {hashlib.sha256(p.read_bytes()).hexdigest() for p in staged if p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"}
    cells = []
    for path in staged:
        try:
            table = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(table, dict) and table.get("_type") == "table" and "image" in table.get("columns", []):
            cells += [cell for row in table["data"] for cell in row[table["columns"].index("image")]]
    assert cells, "no staged completions table with an image column"
    assert all(cell["_type"] == "image-file" and cell["path"].startswith("media/images/") for cell in cells)
    assert {cell["sha256"] for cell in cells} <= pngs  # every image a table shows was staged with it


@pytest.mark.slow
def test_a_wandb_run_gets_the_group_tags_name_and_every_metric(tiny_base_dir, sat_records_dir, tmp_path, monkeypatch):
    """Read through the live run's public attributes (transformers leaves the run open after training)."""
    wandb = pytest.importorskip("wandb")
    for key in ("WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)  # restored after the test: the recipes' set-up exports them
    wandb.teardown()  # settings an earlier W&B run of this test process read from its environment are dropped
    out = tmp_path / "grpo_base"
    argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)]
    argv += ["--dataset_path", str(sat_records_dir), "--output_dir", str(out), "--report_to", "wandb"]
    argv += ["--max_steps", str(STEPS), "--per_device_train_batch_size", "4", "--seed", str(SEED)]
    argv += ["--wandb_group", GROUP, "--num_completions_to_print", "1"]
    try:
        grpo_base.main(*grpo_base.make_parser().parse_args_and_config(argv))
        run = wandb.run
        assert run is not None and run.group == GROUP and run.name == "grpo_base-tiny"
        assert {"experiment:grpo_base", "model:tiny-base", f"seed:{SEED}"} <= set(run.tags)
        assert Path(run.dir).is_relative_to(out / "wandb")  # W&B's files inside the run's output folder
        summary = dict(run.summary)
        missing = [key for key in GRPO_METRICS if f"train/{key}" not in summary]
        assert not missing and summary["train/global_step"] == STEPS
        assert "completions" in summary  # TRL's table, logged through the compat fix
    finally:
        wandb.finish()


# --- trajectories and prompt ids: pure pieces ------------------------------------------------------------------------


def test_trajectory_rows_come_from_trls_completions_table():
    # One row of TRL's completions table (completions/completions_00003.parquet) as pyarrow reads it.
    table = [
        {
            "step": 3,
            "prompt": [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Q"}]}],
            "completion": [{"role": "assistant", "content": "<answer>left</answer>"}],
            "accuracy_reward": 1.0,
            "format_reward": 1.0,
            "reflection_reward": 1.0,
            PROMPT_ID_COLUMN: "sat:train:1",
            "advantage": 0.7,
        },
        {
            "step": 3,
            "completion": "plain text",
            "accuracy_reward": float("nan"),
            "format_reward": 0.0,
            "reflection_reward": 0.0,
            PROMPT_ID_COLUMN: "sat:train:1",
            "advantage": -0.7,
        },
    ]
    rows = trajectory_rows(table, ["accuracy_reward", "format_reward", "reflection_reward"], [1.0, 1.0, 0.0])
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


@pytest.mark.parametrize(
    ("module", "config", "extra", "expected"),
    [
        (grpo_base, "tiny/grpo_base.yaml", ("--log_completions", "false"), "set log_completions: true"),
        (sft_baseline, "tiny/sft_baseline.yaml", (), "needs a GRPO run"),
    ],
)
def test_trajectory_dumps_that_cannot_work_are_refused_while_parsing(
    module, config, extra, expected, tmp_path, capsys
):
    argv = ["--config", str(CONFIG_DIR / config), "--output_dir", str(tmp_path / "run"), "--dump_trajectories", "true"]
    with pytest.raises(SystemExit) as exit_:
        run_cli(module.main, module.make_parser(), [*argv, *extra], None)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and expected in err and "Traceback" not in err
