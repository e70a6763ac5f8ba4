"""Checks before the model loads (recipes/shared/preflight.py): W&B, hub pushing, disk; and the disk estimate's
figures.

The refusals are tested through the recipes' own `main`/`prepare` with the real parser, processor and data; the
estimate against the bytes a real tiny run writes (real TRL trainer, real checkpoints and snapshots).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.shapes import QWEN2_VL_2B
from transformers import Qwen2VLConfig

from recipes import grpo_base
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.errors import RecipeError
from recipes.shared.preflight import check_hub, check_wandb, count_parameters, estimate_disk, size
from recipes.shared.prepare import prepare

# Rows of the paper's SAT subset assumed for the figure (not measured here: no hub access). 10,800 rows give
# 1,350 steps an epoch at 8 prompts a step, 2,700 in 2 epochs: the ~27 checkpoints of REFERENCE.md's audit.
PAPER_ROWS = 10_800


def argv(model, data, out, *extra: str, config: str = "tiny/grpo_base.yaml") -> list[str]:
    args = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model), "--dataset_path", str(data)]
    return [*args, "--output_dir", str(out), *extra]


def parse(*args: str):
    return grpo_base.make_parser().parse_args_and_config(list(args))


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    """An environment where W&B has no key and no keyless mode: a fresh home, no WANDB_* variables."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


# --- W&B -------------------------------------------------------------------------------------------------------------


def test_wandb_without_a_key_is_refused_before_anything_loads(no_wandb_key, tiny_base_dir, sat_records_dir, tmp_path):
    out = tmp_path / "run"
    args = parse(*argv(tiny_base_dir, sat_records_dir, out, "--report_to", "wandb"))
    with pytest.raises(RecipeError) as err:
        grpo_base.main(*args)
    message = str(err.value)
    assert "\n" not in message and "no W&B API key" in message
    assert "wandb login" in message and "WANDB_MODE=offline" in message
    assert not out.exists()  # nothing written: not W&B's folder, not a resolved config


@pytest.mark.parametrize("how", ["offline", "disabled", "api_key", "netrc", "settings"])
def test_each_way_of_giving_wandb_what_it_needs_passes(how, no_wandb_key, monkeypatch):
    if how in ("offline", "disabled"):
        monkeypatch.setenv("WANDB_MODE", how)
    elif how == "api_key":
        monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    elif how == "netrc":
        no_wandb_key.mkdir(parents=True)
        (no_wandb_key / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
        (no_wandb_key / ".netrc").chmod(0o600)
    else:  # `wandb offline` writes this
        settings = no_wandb_key / ".config" / "wandb" / "settings"
        settings.parent.mkdir(parents=True)
        settings.write_text("[default]\nmode = offline\n")
    check_wandb(["wandb"])


def test_wandb_is_not_checked_when_not_reported_to(no_wandb_key):
    check_wandb(["none"])
    check_wandb([])


# --- hub pushing -----------------------------------------------------------------------------------------------------


def test_push_to_hub_offline_is_refused_before_anything_loads(tiny_base_dir, sat_records_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    args = parse(*argv(tiny_base_dir, sat_records_dir, out, "--report_to", "none", "--push_to_hub", "true"))
    with pytest.raises(RecipeError, match="HF_HUB_OFFLINE is on: unset HF_HUB_OFFLINE"):
        grpo_base.main(*args)
    assert not out.exists()


def test_push_to_hub_without_a_token_and_with_a_bad_name_is_refused(monkeypatch, tmp_path):
    from huggingface_hub import get_token

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = parse("--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--output_dir", str(tmp_path / "my run!"))[1]
    args.push_to_hub = True
    if get_token() is None:  # a machine with a saved login cannot show the first refusal
        with pytest.raises(RecipeError, match="no Hugging Face token was found: run `huggingface-cli login`"):
            check_hub(args)
    args.hub_token = "hf_" + "x" * 34
    with pytest.raises(RecipeError, match="'my run!' is not a valid hub repository name.*--hub_model_id"):
        check_hub(args)
    args.hub_model_id = "someone/visualthinker-grpo"
    check_hub(args)


# --- disk ------------------------------------------------------------------------------------------------------------


def test_a_run_the_disk_cannot_hold_is_refused_and_the_override_really_starts_it(
    tiny_base_dir, sat_records_dir, tmp_path
):
    # Ten million steps, a resumable checkpoint kept at each: more than any test machine's disk.
    huge = ("--max_steps", "10000000", "--save_steps", "1", "--save_total_limit", "0", "--report_to", "none")
    out = tmp_path / "run"
    with pytest.raises(RecipeError) as err:
        grpo_base.main(*parse(*argv(tiny_base_dir, sat_records_dir, out, *huge)))
    message = str(err.value)
    assert "\n" not in message and "10000000 steps" in message and "free" in message
    for option in ("save_total_limit", "model_save_steps", "save_only_model true", "--skip_disk_check true"):
        assert option in message
    assert not out.exists()
    # The override: every check after it passes, up to the processor and the prompts dataset.
    args = parse(*argv(tiny_base_dir, sat_records_dir, out, *huge, "--skip_disk_check", "true"))
    template, processor, dataset = prepare(*args)
    assert len(dataset) > 0 and processor is not None


def qwen2_vl_2b(tmp_path: Path) -> Path:
    folder = tmp_path / "qwen2-vl-2b-shape"
    Qwen2VLConfig(**QWEN2_VL_2B).save_pretrained(folder)
    return folder


def paper_estimate(tmp_path, monkeypatch, *extra: str):
    """The estimate for the paper config under ZeRO-3 (accelerate's DeepSpeed environment, as run_8gpu.sh sets it).

    The parameters are counted on the meta device from a config-only folder (no weights here; under ZeRO-3 the
    recipe counts them from the weights' safetensors headers or the hub's metadata). The DeepSpeed environment is
    set for the estimate only: training arguments parsed under it would switch this test process to ZeRO-3.
    """
    config = str(CONFIG_DIR / "paper/grpo_base.yaml")
    script_args, training_args, model_args = parse("--config", config, "--use_cpu", "true", *extra)
    model_args.model_name_or_path = str(qwen2_vl_2b(tmp_path))
    counts = count_parameters(model_args, script_args)
    training_args.gradient_accumulation_steps = 8  # prompts_per_step 8 on 1 process (8 GPUs: 1 each, same batch)
    with monkeypatch.context() as env:
        env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        env.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(REPO_ROOT / "zero3.json"))
        return estimate_disk(script_args, training_args, model_args, PAPER_ROWS, counts)


def test_the_paper_run_is_bounded_and_its_estimate_is_stated(tmp_path, monkeypatch):
    estimate = paper_estimate(tmp_path, monkeypatch)
    assert round(estimate.parameters / 1e9, 2) == 2.21 and estimate.trainable == estimate.parameters
    assert (estimate.steps, estimate.zero, estimate.checkpoint_every) == (2700, 3, 100)
    # 16-bit weights + fp32 master + two fp32 Adam moments per parameter; 3 checkpoints at the peak (limit 2 + 1).
    assert (estimate.weights_bytes, estimate.optimizer_bytes, estimate.checkpoints_kept) == (2, 12, 3)
    assert (estimate.snapshot_every, estimate.snapshots, estimate.snapshot_bytes) == (100, 27, 2)
    assert size(estimate.checkpoint_bytes) == "30.9 GB" and size(estimate.total) == "216.5 GB"
    unbounded = paper_estimate(tmp_path / "old", monkeypatch, "--save_total_limit", "0", "--model_save_steps", "0")
    assert unbounded.checkpoints_kept == 27 and size(unbounded.total) == "839.4 GB"  # the old configs' ~0.85 TB


@pytest.mark.slow
def test_the_estimate_matches_what_a_real_tiny_run_writes(tiny_base_dir, sat_records_dir, tmp_path):
    out = tmp_path / "run"
    extra = ("--report_to", "none", "--max_steps", "5", "--save_steps", "2", "--save_total_limit", "1")
    args = parse(*argv(tiny_base_dir, sat_records_dir, out, *extra, "--model_save_steps", "2"))
    counts = count_parameters(args[2], args[0])
    estimate = estimate_disk(*args, rows=10**6, counts=counts)
    grpo_base.main(*args)

    def weights_and_state(folder: Path) -> int:
        return sum(
            p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors" or p.name == "optimizer.pt"
        )

    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [p.name for p in checkpoints] == ["checkpoint-5"]  # save_total_limit 1
    actual = weights_and_state(checkpoints[0])
    assert abs(actual - estimate.checkpoint_bytes) / actual < 0.03
    snapshots = sorted((out / "models").glob("step-*"))
    assert [p.name for p in snapshots] == ["step-2", "step-4", "step-5"] and estimate.snapshots == 3
    written = sum(weights_and_state(p) for p in snapshots)
    assert abs(written - estimate.parts["snapshots"]) / written < 0.03
    assert estimate.parameters == sum(t.numel() for t in _load(out / "model.safetensors").values())


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def test_bad_model_save_options_are_refused_before_anything_loads(tiny_base_dir, sat_records_dir, tmp_path):
    for option, value, expected in (
        ("--model_save_dtype", "int8", "unknown model_save_dtype 'int8'"),
        ("--model_save_steps", "-5", "model_save_steps must be"),
    ):
        args = parse(*argv(tiny_base_dir, sat_records_dir, tmp_path / "run", "--report_to", "none", option, value))
        with pytest.raises(RecipeError, match=expected):
            grpo_base.main(*args)
        assert not (tmp_path / "run").exists()


def test_the_start_log_states_the_estimate(tiny_base_dir, sat_records_dir, tmp_path, caplog):
    args = parse(*argv(tiny_base_dir, sat_records_dir, tmp_path / "run", "--report_to", "none"))
    with caplog.at_level("INFO", logger="recipes.shared.preflight"):
        prepare(*args)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("disk: this run will write"))
    assert "30 steps" in line and "a checkpoint every 10 steps" in line and "free on" in line
    assert json.dumps(line)  # one printable line
