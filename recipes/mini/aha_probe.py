"""The aha task's premise check: the same model, greedy, forced to answer at once vs made to list the shapes first.

    python -m recipes.mini.aha_probe --model OUT/seed0/stage_a --records OUT/seed0/data/heldout

For every held-out count question the model is decoded greedily three ways, from the same prompt (`base_short`):

* ``free`` — as it likes (what sampling with the base prompt would mostly do, at temperature 0);
* ``direct`` — the completion is forced to start with ``" </think><answer>"``: it must answer at once;
* ``describe`` — the completion is forced to start with the listing mark (``" Let me list the shapes:"``).

Each is scored by the project's accuracy reward, format-gated (the forced prefix counts as part of the completion),
and summarised with the mean completion length in tokens and the share of completions that list before answering.
The premise holds when ``describe`` is clearly more accurate than ``direct``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from data_prep.files import write_atomic
from data_prep.fixtures.aha_scenes import REASONING_MARK, describes_first

MODES = {"free": "", "direct": " </think><answer>", "describe": REASONING_MARK}
MAX_NEW_TOKENS = 48


def greedy_scores(
    model_dir: str | Path, records_dir: str | Path, modes: dict[str, str] = MODES, batch: int = 100, samples=None
) -> dict[str, dict]:
    """Per mode: accuracy (format-gated), mean completion tokens, share that lists first, and a few examples."""
    from datasets import load_from_disk
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from recipes.shared.data import to_prompts
    from recipes.shared.prompts import CHAT_TEMPLATES, get_template, render
    from rewards.accuracy import AccuracyReward

    processor = AutoProcessor.from_pretrained(model_dir)
    template = get_template("base_short")
    # The role-free base prompt is rendered with the plain chat template, as the recipes render it.
    processor.chat_template = CHAT_TEMPLATES[template.chat_template]
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    records = load_from_disk(str(records_dir))
    if samples:
        records = records.select(range(min(samples, len(records))))
    dataset = to_prompts(records, template)
    accuracy = AccuracyReward(require_format=True)
    tokenizer = processor.tokenizer
    results = {}
    for mode, prefix in modes.items():
        correct = tokens = listed = 0
        examples = []
        for first in range(0, len(dataset), batch):
            rows = dataset.select(range(first, min(first + batch, len(dataset))))
            texts = [render(processor, p) + prefix for p in rows["prompt"]]
            inputs = processor(
                text=texts,
                images=list(rows["images"]),
                padding=True,
                padding_side="left",
                return_tensors="pt",
                add_special_tokens=False,
            )
            with torch.no_grad():
                out = model.generate(
                    **inputs,
                    do_sample=False,
                    max_new_tokens=MAX_NEW_TOKENS,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    disable_compile=True,
                )
            new = out[:, inputs["input_ids"].shape[1] :]
            decoded = [prefix + t for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            prefix_tokens = len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
            lengths = [prefix_tokens + int((row != tokenizer.pad_token_id).sum()) for row in new]
            completions = [[{"role": "assistant", "content": t}] for t in decoded]
            scores = accuracy(completions=completions, prompts=list(rows["prompt"]), solution=list(rows["solution"]))
            correct += sum(s == 1.0 for s in scores)
            tokens += sum(lengths)
            listed += sum(describes_first(t) for t in decoded)
            shown = zip(decoded[:3], rows["solution"][:3], strict=True)
            examples += [{"completion": t, "solution": s} for t, s in shown]
        n = len(dataset)
        results[mode] = {
            "accuracy": correct / n,
            "mean_tokens": tokens / n,
            "describes_first": listed / n,
            "n": n,
            "examples": examples[:3],
        }
    return results


def lists_first_reward(completions, **kwargs) -> list[float]:
    """A monitor (weight 0): 1.0 for a completion that lists the shapes before answering, so TRL logs the share.

    Example:
        >>> lists_first_reward([[{"role": "assistant", "content": " Let me list the shapes: red circle 1."}]])
        [1.0]
    """
    from rewards._text import completion_text

    return [float(describes_first(completion_text(c))) for c in completions]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None, help="write the scores as JSON here")
    args = parser.parse_args(argv)
    results = greedy_scores(args.model, args.records, samples=args.samples)
    for mode, r in results.items():
        print(
            f"{mode:9s} accuracy {100 * r['accuracy']:5.1f}%  tokens {r['mean_tokens']:5.1f}  "
            f"lists first {100 * r['describes_first']:5.1f}%  e.g. {r['examples'][0]['completion']!r}"
        )
    if args.output:
        write_atomic(args.output, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
