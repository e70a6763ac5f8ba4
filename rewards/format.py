"""The paper's format reward: a ``<think>…</think>`` block, then an ``<answer>…</answer>`` block, and nothing else.

The paper scored ``re.fullmatch(PAPER_FORMAT_PATTERN, text, re.DOTALL)``. That regex backtracks: on inputs such as
``"<think>" + "</think><answer>" * 60000`` (no closing tag) Python's `re` needs quadratic time. `matches_paper_format`
gives exactly the same verdicts in linear time (a property test checks it against the regex), so a runaway
completion cannot stall a training step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards._text import THINK_OPEN, Completion, Prompt, as_list, at, completion_text, prompt_opens_think

# The regex of the paper's code, matched with re.fullmatch and re.DOTALL. Kept as the specification (tests compare
# against it); `matches_paper_format` is what runs.
PAPER_FORMAT_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"

_ANSWER_CLOSE = "</answer>"
# Linear: it starts with a literal, and the whitespace runs that follow different "</think>" never overlap.
_THINK_THEN_ANSWER = re.compile(r"</think>\s*<answer>")


def matches_paper_format(text: str) -> bool:
    """Whether ``text`` fully matches `PAPER_FORMAT_PATTERN` (dot matches newline), in linear time.

    The full match exists iff ``text`` starts with ``<think>``, ends with ``</answer>``, and some ``</think>`` after
    the opening tag is followed by whitespace and an ``<answer>`` that ends before the final ``</answer>``. The
    leftmost such ``</think>`` has the leftmost ``<answer>``, so one search decides.

    Example:
        >>> matches_paper_format("<think>look</think>\\n<answer>left</answer>")
        True
        >>> matches_paper_format("<think>look</think> so <answer>left</answer>")
        False
    """
    if not (text.startswith(THINK_OPEN) and text.endswith(_ANSWER_CLOSE)):
        return False
    match = _THINK_THEN_ANSWER.search(text, len(THINK_OPEN))
    return match is not None and match.end() <= len(text) - len(_ANSWER_CLOSE)


def format_ok(completion: Completion, prompt: Prompt = None) -> bool:
    """The paper's format verdict for one completion, with ``<think>`` prepended when the prompt ends with it.

    Example:
        >>> format_ok("I see a chair.</think><answer>left</answer>", "...step by step.\\n<think>")
        True
        >>> format_ok("I see a chair.</think><answer>left</answer>", "Which side?")
        False
    """
    text = completion_text(completion)
    if prompt_opens_think(prompt):
        text = THINK_OPEN + text
    return matches_paper_format(text)


def format_reward(
    completions: Sequence[Completion], prompts: Sequence[Prompt] | None = None, **kwargs: Any
) -> list[float | None]:
    """1.0 when a completion has the paper's shape ``<think>…</think>`` (whitespace) ``<answer>…</answer>``, else 0.0.

    The whole completion must match (nothing before ``<think>`` or after ``</answer>``; anything, newlines
    included, inside the tags). When a prompt's text ends with ``<think>`` (the paper's base-model template, whose
    completion starts inside the think block), that completion is judged as ``"<think>" + completion``, as the
    paper did. The choice is made per example from ``prompts``; without prompts every completion is judged as it
    is (the instruct case). Conversational completions and plain strings are both accepted; ``None`` content is an
    empty completion. Extra keyword arguments (dataset columns, ``completion_ids``, ``trainer_state``) are ignored.

    Example:
        >>> format_reward(["<think>The chair is left.</think>\\n<answer>left</answer>", "left"])
        [1.0, 0.0]
        >>> base_prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q\\n<think>"}]}]
        >>> format_reward([[{"role": "assistant", "content": "It is left.</think> <answer>left</answer>"}]],
        ...               prompts=[base_prompt])
        [1.0]
    """
    completions = as_list(completions)
    return [1.0 if format_ok(completion, at(prompts, i)) else 0.0 for i, completion in enumerate(completions)]
