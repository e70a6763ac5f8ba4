"""The GRPO loss variants: one config each, identical to the base config except where the variant says, and effective.

Each variant is written in TRL 1.16's own terms. GSPO and clip-higher change only how the importance ratio is
clipped, and with the paper's settings (one update per generation batch) that ratio is exactly 1, so they also split
each generation batch into 4 optimizer steps; the last test shows the difference that makes: the base config never
clips, those two do.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from recipes import grpo_base
from recipes.shared.batch import derive_accumulation
from recipes.shared.cli import CONFIG_DIR

# Completions per generation batch that give 4 optimizer steps per generation: 4 x (prompts per step x G).
OFF_POLICY = {"paper": 4 * 8 * 8, "tiny": 4 * 2 * 4}
# The intended changes, per variant and size, written out independently of the YAML files.
VARIANTS = {
    "dr_grpo": lambda size: {"loss_type": "dr_grpo", "scale_rewards": "none"},
    "dapo": lambda size: {"loss_type": "dapo"},
    "bnpo": lambda size: {"loss_type": "bnpo"},
    "gspo": lambda size: {
        "importance_sampling_level": "sequence",
        "epsilon": 3e-4,
        "epsilon_high": 4e-4,
        "generation_batch_size": OFF_POLICY[size],
    },
    "clip_higher": lambda size: {"epsilon_high": 0.28, "generation_batch_size": OFF_POLICY[size]},
}
NAMING = {"output_dir", "run_name"}
CASES = [(size, name) for size in ("paper", "tiny") for name in VARIANTS]
LENGTH = ("--reward_funcs", "accuracy", "format", "length", "reflection", "--reward_weights", "1", "1", "1", "0")


def config_path(size: str, name: str):
    return CONFIG_DIR / size / f"{name}.yaml"


def parse(size: str, name: str, *extra: str):
    """The recipe's own parser; bf16 paper configs are checked on this CPU machine with use_cpu."""
    cpu = ("--use_cpu", "true") if size == "paper" else ()
    return grpo_base.make_parser().parse_args_and_config(["--config", str(config_path(size, name)), *cpu, *extra])


def as_dict(parsed) -> dict:
    return {f.name: getattr(obj, f.name) for obj in parsed for f in dataclasses.fields(obj)}


@pytest.mark.parametrize("size, name", CASES, ids=[f"{s}/{n}" for s, n in CASES])
def test_variant_yaml_differs_from_the_base_yaml_only_in_its_keys(size, name):
    base = yaml.safe_load(config_path(size, "grpo_base").read_text())
    variant = yaml.safe_load(config_path(size, f"grpo_base_{name}").read_text())
    expected = VARIANTS[name](size)
    changed = {key for key in base.keys() | variant.keys() if base.get(key) != variant.get(key)}
    assert changed == expected.keys() | NAMING
    assert {key: variant[key] for key in expected} == expected
    assert variant["output_dir"].endswith(f"grpo_base_{name}") and name in variant["run_name"]


@pytest.mark.parametrize("size, name", CASES, ids=[f"{s}/{n}" for s, n in CASES])
def test_parsed_variant_differs_from_the_parsed_base_only_in_its_keys(size, name):
    # After TRL's own defaults and derivations: also what the YAML leaves unsaid is the same.
    base, variant = as_dict(parse(size, "grpo_base")), as_dict(parse(size, f"grpo_base_{name}"))
    expected = VARIANTS[name](size)
    derived = {"steps_per_generation"} if "generation_batch_size" in expected else set()
    changed = {key for key in base if base[key] != variant[key]}
    assert changed == expected.keys() | NAMING | derived
    assert {key: variant[key] for key in expected} == expected


@pytest.mark.parametrize("name", ["gspo", "clip_higher"])
def test_off_policy_variants_take_4_optimizer_steps_per_generation_batch_on_any_launch(name):
    # As the recipe's command line resolves it (prompts_per_step → gradient accumulation on this process count).
    def resolved(config: str):
        parser = grpo_base.make_parser()  # one per config: a parser keeps the defaults a YAML gave it
        argv = ["--config", str(config_path("paper", config)), "--use_cpu", "true"]
        return derive_accumulation(parser, argv, parser.parse_args_and_config(argv))[1]

    args = resolved(f"grpo_base_{name}")
    assert args.steps_per_generation == 4 * args.gradient_accumulation_steps
    base = resolved("grpo_base")
    assert base.steps_per_generation == base.gradient_accumulation_steps  # the paper: on-policy, one update


def clip_ratios(name: str, model_dir, data_dir, out_dir, *extra: str) -> list[float]:
    """The fraction of clipped tokens at each of 4 steps of a tiny variant (TRL's clip_ratio/region_mean)."""
    argv = ["--config", str(config_path("tiny", name)), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--max_steps", "4", "--save_steps", "100", "--max_completion_length", "48", *LENGTH, *extra]
    trainer = grpo_base.main(*grpo_base.make_parser().parse_args_and_config(argv))
    assert trainer.state.global_step == 4
    return [
        entry["clip_ratio/region_mean"] for entry in trainer.state.log_history if "clip_ratio/region_mean" in entry
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dr_grpo", "dapo", "bnpo"])
def test_loss_aggregation_variants_train(name, tiny_base_dir, sat_records_dir, tmp_path):
    assert len(clip_ratios(f"grpo_base_{name}", tiny_base_dir, sat_records_dir, tmp_path / "run")) == 4


@pytest.mark.slow
def test_clipping_acts_in_the_off_policy_variants_and_never_in_the_base(tiny_base_dir, sat_records_dir, tmp_path):
    # A large learning rate makes the policy move far within 4 steps. The base config regenerates before each update,
    # so its ratio is exactly 1 and nothing is clipped, whatever the rate: clip-higher alone would be a no-op there.
    fast = ("--learning_rate", "1e-2")
    base = clip_ratios("grpo_base", tiny_base_dir, sat_records_dir, tmp_path / "base", *fast)
    assert base == [0.0] * 4
    # Clip-higher and GSPO update 4 times per generation batch: updates 2-4 are off-policy and get clipped (GSPO's
    # narrow sequence-level range already at the tiny config's own rate).
    clip_higher = clip_ratios("grpo_base_clip_higher", tiny_base_dir, sat_records_dir, tmp_path / "clip", *fast)
    gspo = clip_ratios("grpo_base_gspo", tiny_base_dir, sat_records_dir, tmp_path / "gspo")
    for ratios in (clip_higher, gspo):
        assert ratios[0] == 0.0 and all(r > 0 for r in ratios[1:]), ratios
