"""The recipes on the real TRL trainers, the real processor and the tiny model: configs, prompts, training, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from fixtures.cli import run_in_process
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from recipes import grpo_base, grpo_instruct, sft_baseline
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.prompts import TEMPLATES

PARSERS = {"grpo": grpo_base.make_parser, "sft": sft_baseline.make_parser}


def parser_for(config: Path):
    return PARSERS["sft" if config.stem.startswith("sft") else "grpo"]()


def parse_config(config: Path, *overrides: str):
    """Parse a shipped YAML; bf16 configs are checked on this CPU machine with use_cpu (bf16 is validated then)."""
    cpu = ["--use_cpu", "true"] if yaml.safe_load(config.read_text()).get("bf16") else []
    return parser_for(config).parse_args_and_config(["--config", str(config), *cpu, *overrides])


ALL_CONFIGS = sorted(c for c in CONFIG_DIR.glob("*/*.yaml") if c.parent.name != "eval")  # eval: its own parser


def test_there_is_a_config_per_experiment_and_size():
    names = {f"{c.parent.name}/{c.name}" for c in ALL_CONFIGS}
    for size in ("paper", "tiny"):
        for experiment in ("grpo_base", "grpo_base_length", "grpo_instruct", "sft_baseline"):
            assert f"{size}/{experiment}.yaml" in names


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_config_parses_with_its_recipe_parser(config):
    script_args, training_args, model_args = parse_config(config)
    assert model_args.model_name_or_path
    assert script_args.prompt_template in TEMPLATES
    header = config.read_text().splitlines()[:3]
    assert any(line.lstrip("# ").startswith(("bash ", "python ", "accelerate ")) for line in header), (
        f"{config}: the header comment must give the command that runs it"
    )


def test_a_misspelled_key_fails_parsing(tmp_path):
    config = yaml.safe_load((CONFIG_DIR / "tiny/grpo_base.yaml").read_text())
    config["learnig_rate"] = 1e-3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="learnig_rate"):
        grpo_base.make_parser().parse_args_and_config(["--config", str(bad)])


def tiny_args(module, config: str, model_dir, data_dir, out_dir, *extra: str):
    """Parse a shipped tiny config with the test's model, data and output folder (2 steps, no reporting)."""
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--max_steps", "2", "--save_steps", "100", *extra]
    return module.make_parser().parse_args_and_config(argv)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before, model) -> dict[str, bool]:
    return {name: not torch.equal(before[name], p.detach()) for name, p in model.named_parameters()}


def run_and_check_training(module, config, model_dir, data_dir, out_dir, *extra):
    """Train 2 steps through the recipe's `main`; return (trainer, before-weights)."""
    args = tiny_args(module, config, model_dir, data_dir, out_dir, *extra)
    initial = snapshot(AutoModelForImageTextToText.from_pretrained(model_dir))
    trainer = module.main(*args)
    assert trainer.state.global_step == 2
    # The saved model reloads with plain from_pretrained and equals the trained weights.
    reloaded = AutoModelForImageTextToText.from_pretrained(out_dir)
    trained = dict(trainer.model.named_parameters())
    for name, p in reloaded.named_parameters():
        assert torch.equal(p, trained[name].detach()), name
    AutoProcessor.from_pretrained(out_dir)
    return trainer, initial


# A random tiny model never answers correctly, so accuracy and format give every completion the same reward and GRPO
# has no signal. The length ablation's reward differs between completions that stop early and those that run to the
# limit, so the tests that check "every trainable parameter moved" use it.
LENGTH = ("--reward_funcs", "accuracy", "format", "length", "reflection", "--reward_weights", "1", "1", "1", "0")


@pytest.mark.slow
def test_grpo_base_paper_rewards_are_logged_and_the_model_saved(tiny_base_dir, sat_records_dir, tmp_path):
    trainer, _ = run_and_check_training(
        grpo_base, "tiny/grpo_base.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run"
    )
    logged = set().union(*(entry.keys() for entry in trainer.state.log_history))
    for name in ("accuracy_reward", "format_reward", "reflection_reward"):
        assert f"rewards/{name}/mean" in logged
    assert {"kl", "entropy", "completions/mean_length", "reward", "reward_std"} <= logged
    # The saved processor renders prompts the same way (the plain chat template is saved with it).
    assert AutoProcessor.from_pretrained(tmp_path / "run").chat_template == trainer.processing_class.chat_template


@pytest.mark.slow
def test_grpo_length_ablation_trains_every_parameter(tiny_base_dir, sat_records_dir, tmp_path):
    trainer, initial = run_and_check_training(
        grpo_base, "tiny/grpo_base_length.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run"
    )
    moved = changed(initial, trainer.model)
    assert all(moved.values()), [n for n, m in moved.items() if not m]
    entry = trainer.state.log_history[0]
    # 0.001 x the tokens of the re-tokenised decoded completion (as the paper counted): a random model's decoded
    # text may re-tokenise to more tokens than it generated, so only the sign is certain.
    assert entry["rewards/length_reward/mean"] > 0
    assert entry["reward_std"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("frozen", ["vision", "llm"])
def test_freeze_options_really_freeze(frozen, tiny_base_dir, sat_records_dir, tmp_path):
    trainer, initial = run_and_check_training(
        grpo_base,
        "tiny/grpo_base_length.yaml",
        tiny_base_dir,
        sat_records_dir,
        tmp_path / "run",
        f"--freeze_{frozen}",
        "true",
    )
    moved = changed(initial, trainer.model)
    vision = {n: m for n, m in moved.items() if ".visual." in n}
    rest = {n: m for n, m in moved.items() if ".visual." not in n}
    assert vision and rest
    if frozen == "vision":
        assert not any(vision.values()) and all(rest.values())
    else:
        assert all(vision.values()) and not any(rest.values())


@pytest.mark.slow
def test_grpo_instruct_trains(tiny_instruct_dir, sat_records_dir, tmp_path):
    trainer, initial = run_and_check_training(
        grpo_instruct, "tiny/grpo_instruct.yaml", tiny_instruct_dir, sat_records_dir, tmp_path / "run", *LENGTH
    )
    assert all(changed(initial, trainer.model).values())
    assert "rewards/accuracy_reward/mean" in trainer.state.log_history[0]


@pytest.mark.slow
def test_sft_baseline_answer_only_trains_on_the_answer_only(tiny_base_dir, sat_records_dir, tmp_path):
    trainer, initial = run_and_check_training(
        sft_baseline, "tiny/sft_baseline_answer_only.yaml", tiny_base_dir, sat_records_dir, tmp_path / "run"
    )
    assert all(changed(initial, trainer.model).values())
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    tokenizer = trainer.processing_class.tokenizer
    for ids, labels, row in zip(batch["input_ids"], batch["labels"], rows, strict=True):
        answer = row["solution"]
        assert tokenizer.decode(ids[labels != -100]).strip() == f"{answer}<|im_end|>"
    # The base weights got the instruct chat template, saved with the model.
    assert "<|im_start|>" in AutoProcessor.from_pretrained(tmp_path / "run").chat_template


def run_recipe(script: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / script), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=kwargs.pop("cwd", REPO_ROOT),
        **kwargs,
    )


@pytest.mark.slow
def test_dry_run_prints_rendered_prompts_and_does_not_train(tiny_base_dir, sat_records_dir, tmp_path):
    out = tmp_path / "run"
    result = run_recipe(
        "grpo_base.py",
        *("--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)),
        *("--dataset_path", str(sat_records_dir), "--output_dir", str(out), "--dry_run", "true"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("----- rendered prompt") == 2
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    assert vision + "<image>A conversation between User and Assistant." in result.stdout
    assert "Assistant: Let me solve this step by step.\n<think>" in result.stdout
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def test_no_arguments_offline_fails_fast_with_the_fix(tmp_path, capsys, monkeypatch):
    # The paper config: Qwen/Qwen2-VL-2B on data/sat_paper, neither of which exists offline (run from an empty dir).
    # In process; the real `python recipes/grpo_base.py` start is the dry-run test above.
    monkeypatch.chdir(tmp_path)
    err = fail_in_process(grpo_base, capsys)
    assert "bash launch/quickstart.sh" in err
    assert "python -m data_prep.sat --input array/SAT" in err
    assert not any(tmp_path.iterdir())  # nothing written


def fail_in_process(module, capsys, *argv: str) -> str:
    """Run a recipe's command line in this process (as `python recipes/<name>.py ARGV`); its exit must be 2."""
    code, err = run_in_process(module, list(argv), capsys, module.DEFAULT_CONFIG)
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_a_misspelled_key_on_the_command_line_of_a_recipe_is_reported_plainly(tmp_path, capsys):
    config = yaml.safe_load((CONFIG_DIR / "tiny/grpo_base.yaml").read_text())
    config["num_generation"] = 4
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    assert "num_generation" in fail_in_process(grpo_base, capsys, "--config", str(bad))


def test_missing_model_offline_names_the_quickstart(sat_records_dir, tmp_path, capsys):
    err = fail_in_process(
        grpo_base,
        capsys,
        "--dataset_path",
        str(sat_records_dir),
        "--output_dir",
        str(tmp_path / "o"),
        "--bf16",
        "false",
    )
    assert "Qwen/Qwen2-VL-2B" in err and "bash launch/quickstart.sh" in err


def test_unknown_reward_name_lists_the_valid_ones(tiny_base_dir, sat_records_dir, tmp_path, capsys):
    err = fail_in_process(
        grpo_base,
        capsys,
        *("--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)),
        *("--dataset_path", str(sat_records_dir), "--output_dir", str(tmp_path / "o"), "--report_to", "none"),
        *("--reward_funcs", "accuracy", "formatt", "--reward_weights", "1.0", "1.0"),
    )
    for name in ("accuracy", "format", "length", "reflection"):
        assert name in err


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_step_and_weights(tiny_base_dir, sat_records_dir, tmp_path):
    common = [
        *("--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)),
        *("--dataset_path", str(sat_records_dir), "--report_to", "none", "--max_steps", "6", "--save_steps", "2"),
        *LENGTH,
    ]
    straight = tmp_path / "straight"
    result = run_recipe("grpo_base.py", *common, "--output_dir", str(straight), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "recipes/grpo_base.py"), *common, "--output_dir", str(killed)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not (killed / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()

    result = run_recipe(
        "grpo_base.py", *common, "--output_dir", str(killed), "--resume_from_checkpoint", "last", timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((killed / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # Same data order and the same sampling after resumption: the resumed run ends where the straight one does.
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
