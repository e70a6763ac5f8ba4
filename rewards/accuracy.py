"""The paper's accuracy reward (three checks in order), optionally gated on the format.

How this differs from the paper's code, and why:

* Answer extraction and the letter rule come from `rewards.answers` (the paper's regexes, the answer one computed in
  linear time with the same results; see there).
* Check 2 (exact match) runs before check 3 (letter rule), as in the paper's reward, which set the reward on an
  exact match before the letter rule could raise ``IndexError`` on an answer without a standalone letter.
* math-verify only sees completions up to `MATH_VERIFY_MAX_CHARS` characters; longer ones fail check 1 and still go
  through checks 2 and 3.
* A missing or empty ground truth gives ``None`` ("cannot judge"); the paper compared against ``""`` and paid 1.0
  for an empty answer.

What the paper's checks do with the current math-verify (0.9), kept as they are:

* math-verify's plain-number pattern needs whitespace, ``=`` or the start of the text before a number, so
  ``parse("<answer>2</answer>")`` finds nothing. Check 1 therefore never fires for a bare number or word as ground
  truth (``"2"``, ``"left"``): ``"<answer>2.0</answer>"`` scores 0.0 against ``"2"``. It fires for ground truths
  such as ``"$\\frac{1}{2}$"`` or ``"about 2 meters"``.
* math-verify's ``verify(gold, target)`` is not symmetric, and the paper passed the parsed *completion* as ``gold``.
  Mode ``"paper"`` keeps that order; mode ``"gold_first"`` passes the ground truth first, as math-verify's API asks.
  They differ where a relation meets an interval: truth ``$x<3$`` and answer ``$(-\\infty, 3)$`` fail in the paper's
  order and pass in the other; the reverse pair the other way round.
* The letter rule takes the last letter ``findall`` returns; matches cannot share a delimiter, so in ``"A B"`` the
  ``B`` is not found and the letter is ``A``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rewards._text import Completion, Prompt, as_list, at, completion_text
from rewards.answers import (
    MATH_VERIFY_MAX_CHARS,
    answer_text,
    first_answer,
    last_option_letter,
    parse_math,
    verify_math,
)
from rewards.format import format_ok

__all__ = ["MATH_VERIFY_MAX_CHARS", "MODES", "AccuracyReward", "accuracy_reward"]

logger = logging.getLogger(__name__)

MODES = ("paper", "gold_first")


def _split_solution(solution: str) -> tuple[str, str]:
    """(the text math-verify parses as the truth, the ground truth compared as a string).

    A bare truth is wrapped in ``<answer>`` tags, as the paper stored it; a solution that already carries the tags
    (the paper's own data format) is used as it is, its truth being the tag content.
    """
    inner = first_answer(solution)
    if inner is not None:
        return solution, inner.strip()
    return f"<answer>{solution}</answer>", solution.strip()


class AccuracyReward:
    """1.0 when a completion's answer is the ground truth (dataset column ``solution``), else 0.0.

    The paper's three checks, in order, stopping at the first that passes:

    1. math-verify on the whole completion: ``verify(parse(completion), parse("<answer>" + truth + "</answer>"))``
       in mode ``"paper"`` (the paper's argument order), the two parses swapped in mode ``"gold_first"``; parse
       failures and timeouts count as "no";
    2. the answer (the first ``<answer>…</answer>`` on one line, or the whole completion when there is none,
       stripped) equals the truth exactly, case included;
    3. the last standalone capital letter A–H of the answer (after start, whitespace, ``[`` or ``(``; before
       whitespace, ``]``, ``)`` or the end) equals the truth.

    ``require_format=True`` (format-gated accuracy) gives 0.0 whenever `rewards.format.format_reward` would.

    A missing, non-string or empty ``solution`` gives ``None`` ("cannot judge"). Never raises. See the module
    docstring for where this differs from the paper's code.

    Example:
        >>> accuracy_reward(["<think>...</think><answer>left</answer>", "<answer>Left</answer>", "I think (B)"],
        ...                 solution=["left", "left", "B"])
        [1.0, 0.0, 1.0]
        >>> accuracy_reward(["<answer>left</answer>"], solution=[None])
        [None]
    """

    __name__ = "accuracy_reward"

    def __init__(self, mode: str = "paper", require_format: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"accuracy mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        self.mode = mode
        self.require_format = bool(require_format)

    def __repr__(self) -> str:
        return f"AccuracyReward(mode={self.mode!r}, require_format={self.require_format})"

    def __call__(
        self,
        completions: Sequence[Completion],
        solution: Sequence[str | None] | str | None = None,
        prompts: Sequence[Prompt] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        truths: dict[str, list] = {}  # the G completions of a prompt share one truth: parse it once
        return [
            self._score(completion, at(solution, i), at(prompts, i), truths)
            for i, completion in enumerate(as_list(completions))
        ]

    def _score(self, completion: Completion, solution: Any, prompt: Prompt, truths: dict[str, list]) -> float | None:
        if not isinstance(solution, str):
            return None
        gold_text, truth = _split_solution(solution)
        if not truth:
            return None
        try:
            if self.require_format and not format_ok(completion, prompt):
                return 0.0
            if gold_text not in truths:
                truths[gold_text] = parse_math(gold_text)
            return 1.0 if self._correct(completion_text(completion), truths[gold_text], truth) else 0.0
        except Exception:  # a reward must not stop training; the checks above are not expected to raise
            logger.warning("accuracy check failed; scoring 0.0", exc_info=True)
            return 0.0

    def _correct(self, text: str, parsed_truth: list, truth: str) -> bool:
        # An empty parse of the truth makes check 1 False whatever the completion: skip parsing the completion.
        if parsed_truth:
            parsed = parse_math(text)
            pair = (parsed, parsed_truth) if self.mode == "paper" else (parsed_truth, parsed)
            if verify_math(*pair):
                return True
        answer = answer_text(text)
        return answer == truth or last_option_letter(answer) == truth


accuracy_reward = AccuracyReward()
