"""Recipe overhead: GRPO steps through `recipes/grpo_base.py` vs a bare `GRPOTrainer` with identical settings.

    python benchmarks/bench_recipe_overhead.py [--steps 20] [--repeats 2]

Both sides use the tiny model, the same converted synthetic SAT records, the same prompts, rewards and `GRPOConfig`
(the shipped tiny config); the bare side builds the trainer directly from the model path. Runs alternate
(bare, recipe, bare, recipe, …) in one process so machine noise hits both; the figure is the median per-step time
(TRL's `step_time`, first step excluded) and total `train` time, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from trl import GRPOTrainer  # noqa: E402

from data_prep.fixtures.synthetic import write_synthetic  # noqa: E402
from data_prep.fixtures.tiny_model import build_tiny_model  # noqa: E402
from data_prep.sat import convert  # noqa: E402
from recipes import grpo_base  # noqa: E402
from recipes.shared.cli import CONFIG_DIR
from recipes.shared.data import load_records, to_prompts  # noqa: E402
from recipes.shared.prompts import get_template, set_chat_template  # noqa: E402
from rewards import get_reward_funcs  # noqa: E402


def parse(model, data, out, steps):
    return grpo_base.make_parser().parse_args_and_config(
        [
            *("--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(model)),
            *("--dataset_path", str(data), "--output_dir", str(out), "--report_to", "none"),
            *("--max_steps", str(steps), "--save_strategy", "no", "--logging_steps", "1"),
        ]
    )


def step_times(trainer) -> list[float]:
    return [e["step_time"] for e in trainer.state.log_history if "step_time" in e][1:]


def run_recipe(model, data, out, steps):
    start = time.perf_counter()
    trainer = grpo_base.main(*parse(model, data, out, steps))
    return time.perf_counter() - start, step_times(trainer)


def run_bare(model, data, out, steps):
    script_args, training_args, _ = parse(model, data, out, steps)
    start = time.perf_counter()
    from transformers import AutoProcessor

    template = get_template(script_args.prompt_template)
    processor = AutoProcessor.from_pretrained(
        model, min_pixels=script_args.min_pixels, max_pixels=script_args.max_pixels, padding_side="left"
    )
    set_chat_template(processor, template)
    dataset = to_prompts(load_records(script_args), template)
    funcs, training_args.reward_weights = get_reward_funcs(
        script_args.reward_funcs, weights=training_args.reward_weights, tokenizer=processor.tokenizer
    )
    trainer = GRPOTrainer(
        model=str(model), reward_funcs=funcs, args=training_args, train_dataset=dataset, processing_class=processor
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return time.perf_counter() - start, step_times(trainer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "model", seed=0)
        write_synthetic("sat", rows=256, seed=0, output=tmp / "sat.parquet")
        convert(str(tmp / "sat.parquet"), tmp / "records", seed=0, multi_image="skip")
        results = {"bare": ([], []), "recipe": ([], [])}
        for r in range(args.repeats):
            for name, fn in (("bare", run_bare), ("recipe", run_recipe)):
                total, steps = fn(model, tmp / "records", tmp / f"{name}{r}", args.steps)
                results[name][0].append(total)
                results[name][1].extend(steps)
    print(f"{'':8}{'median step (s)':>17}{'median run (s)':>16}")
    med = {}
    for name, (totals, steps) in results.items():
        med[name] = (statistics.median(steps), statistics.median(totals))
        print(f"{name:8}{med[name][0]:17.4f}{med[name][1]:16.2f}")
    print(
        f"recipe/bare: step {med['recipe'][0] / med['bare'][0]:.3f}x, "
        f"whole run {med['recipe'][1] / med['bare'][1]:.3f}x ({args.steps} steps x {args.repeats} repeats)"
    )


if __name__ == "__main__":
    main()
