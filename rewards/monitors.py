"""Logged-only monitors: rewards meant to run with weight 0, so TRL charts them without changing training.

`reflection_reward` tracks the paper's "aha moment": the paper reports self-reflection appearing during RL on the base
model (the model stops, questions its reasoning and re-checks it, as DeepSeek-R1-Zero's "Wait, ... let's reevaluate")
and shows it with example responses; it publishes no phrase list or counter. `REFLECTION_PHRASES` is ours: the words
such re-checking responses use. Its mean over a batch is the fraction of completions that contain one.

Limits: it is a lexical proxy. "however", "actually" and "mistake" often appear without any self-correction
("However, the chair is on the left"), and a model can reflect in words not on the list, so the absolute level means
little; the trend during training is the signal, as in the paper's curves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards._text import Completion, as_list, completion_text

# Matched case-insensitively as whole words; the spaces inside a phrase match any run of whitespace.
REFLECTION_PHRASES: tuple[str, ...] = (
    "wait",
    "but wait",
    "hmm",
    "hmmm",
    "actually",
    "however",
    "mistake",
    "reconsider",
    "on second thought",
    "re-evaluate",
    "reevaluate",
    "re-check",
    "recheck",
    "double-check",
    "double check",
    "let me verify",
    "let me check",
)


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A whole-word pattern for a lowercase phrase that starts with its first word as a literal.

    The word-boundary check sits after the first word (a fixed-width lookbehind) rather than in front of it, so `re`
    can jump between occurrences of the literal instead of trying every position: one search stays fast on 1 MB.
    """
    first, *rest = phrase.split()
    pattern = re.escape(first) + rf"(?<!\w.{{{len(first)}}})"
    pattern += "".join(r"\s+" + re.escape(word) for word in rest)
    return re.compile(pattern + r"(?!\w)", re.DOTALL)


_PHRASE_PATTERNS = tuple(_phrase_pattern(phrase.lower()) for phrase in REFLECTION_PHRASES)


def has_self_reflection(text: str) -> bool:
    """Whether ``text`` contains one of `REFLECTION_PHRASES` as whole words, ignoring case.

    Example:
        >>> has_self_reflection("Wait, the chair is behind the table."), has_self_reflection("I await results.")
        (True, False)
    """
    lowered = text.lower()
    return any(pattern.search(lowered) is not None for pattern in _PHRASE_PATTERNS)


def reflection_reward(completions: Sequence[Completion], **kwargs: Any) -> list[float | None]:
    """1.0 when a completion contains a self-reflection phrase (`REFLECTION_PHRASES`), else 0.0.

    Meant as a monitor with weight 0: TRL logs its mean, the fraction of completions that show self-reflection (the
    paper's "aha moment" signal), without it affecting the advantages. Never raises; extra keyword arguments are
    ignored.

    Example:
        >>> reflection_reward(["<think>Left. Hmm, let me re-check the image.</think><answer>right</answer>",
        ...                    [{"role": "assistant", "content": "<think>Left.</think><answer>left</answer>"}]])
        [1.0, 0.0]
    """
    return [1.0 if has_self_reflection(completion_text(completion)) else 0.0 for completion in as_list(completions)]
