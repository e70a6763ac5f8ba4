"""Reward and CV-Bench scorer throughput on realistic completions, and the cost of 1 MB adversarial completions.

Scores 10,000 generated completions shaped like a GRPO run on SAT (instruct and base-model shapes, right and wrong
answers, with and without tags, numbers, option letters, self-reflection, truncated thinking) with every reward, in
TRL-sized batches, and with the paper's CV-Bench scorer (`rewards.cvbench.score_response`, the row's options as its
choices), and prints completions per second. Then times each on 1 MB completions built to make the paper's regexes
or math-verify super-linear, and on the longest completion math-verify still sees.

Times are CPU seconds of this process (`time.process_time`), which a busy shared machine inflates less than wall
time; both are printed for the throughput table.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/bench_rewards.py [--completions 10000] [--batch-size 64] [--seed 0]

Expected time: about a minute of CPU on 2 cores (longer in wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rewards import AccuracyReward, LengthReward, accuracy_reward, format_reward, reflection_reward
from rewards.answers import MATH_VERIFY_MAX_CHARS
from rewards.cvbench import score_response

BASE_PROMPT = [
    {
        "role": "user",
        "content": [
            {"type": "image"},
            {
                "type": "text",
                "text": "A conversation ...\nUser: {q} \nAssistant: Let me solve this step by step.\n<think>",
            },
        ],
    }
]
INSTRUCT_PROMPT = [
    {
        "role": "user",
        "content": [
            {"type": "image"},
            {"type": "text", "text": "{q}  Output the thinking process in <think> </think> and final answer ..."},
        ],
    }
]
OPTION_SETS = [
    ["left", "right"],
    ["yes", "no"],
    ["closer", "farther"],
    ["above", "below"],
    ["2", "3", "4"],
    ["1", "2", "5"],
    ["A", "B", "C", "D"],
    ["$\\frac{1}{2}$", "$\\frac{1}{3}$"],  # a few truths math-verify parses, so check 1 does real work
]
OPTION_WEIGHTS = [20, 20, 15, 15, 10, 10, 7, 3]
WORDS = (
    "the chair table lamp is to of left right near far from camera image object behind front above below "
    "so it appears that and looking at we see closer farther than person door window two three because"
).split()
REFLECTIONS = ["Wait,", "Hmm,", "Let me re-check.", "However,", "Actually,", "But wait,", "On second thought,"]


def reasoning(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(15, 120))]
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), rng.choice(REFLECTIONS))
    return " ".join(words) + "."


def answer_for(rng: random.Random, options: list[str], truth: str) -> str:
    roll = rng.random()
    if roll < 0.5:
        return truth
    if roll < 0.8:
        return rng.choice([o for o in options if o != truth])
    if roll < 0.85:
        return truth.upper()
    if roll < 0.9:
        return truth + ".0" if truth.isdigit() else truth + "."
    if roll < 0.95:
        return f"({'ABCD'[options.index(truth)]})"
    return f"The answer is {truth}"


def make_examples(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        options = rng.choices(OPTION_SETS, weights=OPTION_WEIGHTS)[0][:]
        rng.shuffle(options)
        truth = rng.choice(options)
        think, answer = reasoning(rng), answer_for(rng, options, truth)
        shape = rng.choices(["instruct", "base", "untagged", "bare", "truncated", "trailing"], [35, 35, 10, 8, 7, 5])[
            0
        ]
        prompt = BASE_PROMPT if shape == "base" else INSTRUCT_PROMPT
        text = {
            "instruct": f"<think>{think}</think>\n<answer>{answer}</answer>",
            "base": f" {think}</think>\n<answer> {answer} </answer>",
            "untagged": f"{think} So the answer is {answer}",
            "bare": answer,
            "truncated": f"<think>{think}",
            "trailing": f"<think>{think}</think><answer>{answer}</answer> I hope it is correct.",
        }[shape]
        examples.append(
            {
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": text}],
                "completion_ids": list(range(len(text) // 4 + 1)),
                "solution": truth,
                "options": options,
            }
        )
    return examples


def train_tokenizer(examples: list[dict]) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained on the spot (no download), for the length reward."""
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["[UNK]"], show_progress=False)
    tokenizer.train_from_iterator((e["completion"][0]["content"] for e in examples[:2000]), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")


class CVBenchScorer:
    """`score_response` over a reward batch: the completion as the response, the options as the row's choices."""

    __name__ = "score_response (CV-Bench)"

    def __call__(self, completions, solution, options, **kwargs) -> list[float]:
        scores = []
        for completion, truth, choices in zip(completions, solution, options, strict=True):
            text = completion[0]["content"] if isinstance(completion, list) else completion
            letter = "ABCDEF"[choices.index(truth)] if truth in choices else "A"
            scores.append(float(score_response(text, choices, f"({letter})")))
        return scores


def batches(examples: list[dict], size: int) -> list[dict]:
    out = []
    for start in range(0, len(examples), size):
        chunk = examples[start : start + size]
        out.append(
            {
                "prompts": [e["prompt"] for e in chunk],
                "completions": [e["completion"] for e in chunk],
                "completion_ids": [e["completion_ids"] for e in chunk],
                "solution": [e["solution"] for e in chunk],
                "options": [e["options"] for e in chunk],
                "trainer_state": None,
            }
        )
    return out


def adversarial_inputs() -> dict[str, str]:
    mb = 1_000_000
    return {
        "think+answer repeated, no close": "<think>" + "</think><answer>" * (mb // 16),
        "one line of <answer>, no close": "<answer>" * (mb // 8),
        "<answer> per line, close at end": "<answer>\n" * (mb // 9) + "</answer>",
        "nested tags": "<think><answer>" * (mb // 32) + "</answer></think>" * (mb // 34),
        "1 MB whitespace, well-formed": "<think>a</think>" + " " * mb + "<answer>x</answer>",
        "chain of letters 'A A A'": "A " * (mb // 2),
        "letter near misses 'A)A)'": "A)" * (mb // 2),
        "no letters": "x" * mb,
        "reflection near misses": "xwaitxhmmxactuallyxhoweverxmistakexreconsiderxre-checkxdoublexletxbutx"
        * (mb // 70),
        "\\boxed{ without end": "\\boxed{" * (mb // 7),
        "unicode": "é中\u2028𝔸" * (mb // 4),
        "punctuation then truth": "!" * mb + "left",
    }


def cpu_time(func: Callable, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        func()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64, help="completions per reward call (TRL: B×G)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    examples = make_examples(args.completions, args.seed)
    tokenizer = train_tokenizer(examples)
    rewards: dict[str, Callable] = {
        "format_reward": format_reward,
        "accuracy_reward (paper)": accuracy_reward,
        "accuracy_reward (gold_first)": AccuracyReward(mode="gold_first"),
        "accuracy_reward (format-gated)": AccuracyReward(require_format=True),
        "length_reward (re-tokenized, paper)": LengthReward(tokenizer),
        "reflection_reward": reflection_reward,
        "score_response (CV-Bench)": CVBenchScorer(),
    }
    batched = batches(examples, args.batch_size)
    accuracy_reward(**batched[0])  # import math-verify and sympy outside the timings

    print(f"{args.completions} completions, batches of {args.batch_size}")
    print(f"{'reward':38s} {'completions/s (CPU)':>20s} {'completions/s (wall)':>21s} {'mean':>7s}")
    for name, reward in rewards.items():
        start_cpu, start_wall, scores = time.process_time(), time.perf_counter(), []
        for batch in batched:
            scores += reward(**batch)
        cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
        mean = statistics.fmean(s for s in scores if s is not None)
        print(f"{name:38s} {len(scores) / cpu:20,.0f} {len(scores) / wall:21,.0f} {mean:7.3f}")

    print("\n1 MB adversarial completions: worst CPU time per reward (best of 3 runs; 1 for the tokenizer)")
    inputs = adversarial_inputs()
    for name, reward in rewards.items():
        times = {}
        for label, text in inputs.items():
            batch = {"prompts": [BASE_PROMPT], "completions": [text], "solution": ["left"], "options": [["left"]]}
            batch["completion_ids"] = [list(range(700))]
            repeat = 1 if "length" in name else 3  # the tokenizer takes seconds per MB: once is enough
            times[label] = cpu_time(lambda reward=reward, batch=batch: reward(**batch), repeat=repeat)
        worst = max(times, key=times.get)
        median = statistics.median(times.values())
        print(f"{name:38s} worst {times[worst] * 1000:8.1f} ms  ({worst}); median {median * 1000:.1f} ms")

    print(f"\nLongest completion math-verify still sees ({MATH_VERIFY_MAX_CHARS:,} characters), truth 1/2 in LaTeX:")
    for label, unit in [("\\boxed{ without end", "\\boxed{"), ("prose with numbers", "the 2 chairs and 3 lamps, ")]:
        text = (unit * (MATH_VERIFY_MAX_CHARS // len(unit) + 1))[:MATH_VERIFY_MAX_CHARS]
        seconds = cpu_time(lambda text=text: accuracy_reward([text], solution=["$\\frac{1}{2}$"]), repeat=1)
        print(f"  {label:28s} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
