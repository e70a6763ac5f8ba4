"""The vLLM variants of the GRPO paper configs: the same experiment as their base config, generated with vLLM.

A vLLM config may differ from its base only in TRL's vLLM keys and in where the run goes (output_dir, run_name), so
switching generation backends can never change the paper's settings unnoticed; and it must parse, with the recipe's
own parser, into a GRPOConfig that turns vLLM on with the paper's sampling settings and without TRL's
importance-sampling weight (the paper's estimator; why: the configs' comment and tests/test_vllm_weights.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from trl import GRPOConfig

from recipes import grpo_base, grpo_instruct
from recipes.shared.cli import CONFIG_DIR

PAPER = CONFIG_DIR / "paper"
# The paper's GRPO experiments (the main result and its two GRPO ablations); other GRPO configs need no twin.
PAPER_GRPO = ("grpo_base", "grpo_base_length", "grpo_instruct")
VLLM_CONFIGS = sorted(PAPER.glob("*_vllm.yaml"))
RUN_LOCATION_KEYS = {"output_dir", "run_name"}
PARSERS = {"recipes/grpo_base.py": grpo_base.make_parser, "recipes/grpo_instruct.py": grpo_instruct.make_parser}


def base_of(config: Path) -> Path:
    return config.with_name(config.name.removesuffix("_vllm.yaml") + ".yaml")


def is_vllm_key(key: str) -> bool:
    return key == "use_vllm" or key.startswith("vllm_")


def header_command(config: Path) -> list[str]:
    """The command in the config's header comment (its second line), split into words."""
    return config.read_text().splitlines()[1].lstrip("# ").split()


def test_every_paper_grpo_experiment_has_a_vllm_variant_and_every_variant_a_base():
    assert {c.name for c in VLLM_CONFIGS} >= {f"{name}_vllm.yaml" for name in PAPER_GRPO}
    assert all(base_of(c).is_file() for c in VLLM_CONFIGS), "a _vllm config without its base config"


@pytest.mark.parametrize("config", VLLM_CONFIGS, ids=lambda p: p.stem)
def test_a_vllm_config_differs_from_its_base_only_in_vllm_keys_and_run_location(config):
    base = yaml.safe_load(base_of(config).read_text())
    variant = yaml.safe_load(config.read_text())

    assert not [k for k in base if is_vllm_key(k)], f"{base_of(config).name} already sets vLLM keys"
    added = set(variant) - set(base)
    assert added and all(is_vllm_key(k) for k in added), f"keys added that are not vLLM keys: {sorted(added)}"
    assert not set(base) - set(variant), f"keys of the base config missing: {sorted(set(base) - set(variant))}"
    changed = {k for k in base if base[k] != variant[k]}
    assert changed == RUN_LOCATION_KEYS, f"settings changed besides output_dir/run_name: {sorted(changed)}"
    # Its own folder and run name: a vLLM run never resumes from, or overwrites, a generate run.
    assert variant["output_dir"].endswith("_vllm") and "_vllm" in variant["run_name"]


@pytest.mark.parametrize("config", VLLM_CONFIGS, ids=lambda p: p.stem)
def test_a_vllm_config_parses_into_a_grpo_config_with_vllm_on_and_the_paper_sampling(config):
    command = header_command(config)
    assert command[:2] == ["bash", "launch/run_8gpu.sh"] and command[3] == f"recipes/configs/paper/{config.name}"
    parser = PARSERS[command[2]]()
    # The paper configs train in bf16 on GPUs; use_cpu lets transformers validate them on this CPU machine.
    _, args, model_args = parser.parse_args_and_config(["--config", str(config), "--use_cpu", "true"])

    assert isinstance(args, GRPOConfig)
    assert args.use_vllm is True and args.vllm_mode == "colocate" and args.vllm_tensor_parallel_size == 1
    assert 0.0 < args.vllm_gpu_memory_utilization <= 0.5  # training needs the rest of each GPU
    assert isinstance(args.vllm_enable_sleep_mode, bool)
    # The paper's sampling, handed by GRPOTrainer to vLLM; generation_kwargs would override it in colocate mode.
    assert (args.temperature, args.top_k, args.top_p, args.repetition_penalty) == (1.0, 50, 1.0, 1.0)
    assert args.min_p is None and args.generation_kwargs is None
    assert args.max_completion_length == 700 and args.vllm_max_model_length is None  # no completion cut short
    assert model_args.model_name_or_path.startswith("Qwen/Qwen2-VL-2B")


@pytest.mark.parametrize("config", VLLM_CONFIGS, ids=lambda p: p.stem)
def test_a_vllm_config_sets_every_vllm_default_that_changes_the_training(config):
    """TRL 1.16's vLLM defaults that would move the run away from the paper's, each set and pinned here."""
    variant = yaml.safe_load(config.read_text())
    parser = PARSERS[header_command(config)[2]]()
    _, args, _ = parser.parse_args_and_config(["--config", str(config), "--use_cpu", "true"])

    # TRL defaults the importance-sampling correction on; with top_k it weights completions by the top-k tail mass
    # (tests/test_vllm_weights.py). Off = the paper's on-policy loss. Written in the file, not left to the default.
    assert variant["vllm_importance_sampling_correction"] is False and not args.vllm_importance_sampling_correction
    # DeepSeek-V3.2's off-policy mask would read vLLM's processed log-probabilities as well.
    assert args.off_policy_mask_threshold is None
    # No guided decoding; vLLM's own model implementation (TRL's default, written out so a TRL change shows here).
    assert "vllm_structured_outputs_regex" in variant and args.vllm_structured_outputs_regex is None
    assert variant["vllm_model_impl"] == args.vllm_model_impl == "vllm"
    # The comment block states the choice and the audit; the README's differences section says it once more.
    text = config.read_text()
    for fact in ("processed_logprobs", "stop tokens", "guided decoding", "precision", "prefix caching"):
        assert fact in text, f"{config.name}: the vLLM audit does not mention {fact!r}"


@pytest.mark.parametrize("config", VLLM_CONFIGS, ids=lambda p: p.stem)
def test_a_vllm_config_parses_to_the_same_training_as_its_base(config):
    """Parsed, not just read: defaults and derived values (accumulation, precision) come out the same too."""
    parser = PARSERS[header_command(config)[2]]()
    cpu = ["--use_cpu", "true"]
    script_v, args_v, model_v = parser.parse_args_and_config(["--config", str(config), *cpu])
    script_b, args_b, model_b = parser.parse_args_and_config(["--config", str(base_of(config)), *cpu])

    assert script_v == script_b and model_v == model_b
    fields = set(args_b.to_dict()) - RUN_LOCATION_KEYS - {"logging_dir"}
    different = {f for f in fields if not is_vllm_key(f) and args_v.to_dict()[f] != args_b.to_dict()[f]}
    assert not different, f"training arguments differ: {sorted(different)}"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_installed_names_the_separate_environment(tiny_base_dir, sat_records_dir, tmp_path):
    from recipes.shared.errors import RecipeError

    argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)]
    argv += ["--dataset_path", str(sat_records_dir), "--output_dir", str(tmp_path / "run"), "--report_to", "none"]
    args = grpo_base.make_parser().parse_args_and_config([*argv, "--use_vllm", "true"])
    with pytest.raises(RecipeError, match="pip install --no-build-isolation -r requirements-gpu.txt"):
        grpo_base.main(*args)
    assert not (tmp_path / "run" / "model.safetensors").exists()
