"""The paper's CV-Bench scorer (`score_response`) and a stricter companion (`score_response_strict`).

The paper's evaluation scripts (``src/eval/evaluate_Qwen2_VL_CVBench*.py``) take the text inside the first
``<answer>…</answer>`` (`rewards.answers.PAPER_EVAL_ANSWER_PATTERN`: trimmed, newlines allowed around it; the whole
response when there is none or it is empty), parse it with math-verify (LaTeX, expression and string extraction,
the strings being the letters A–F as ``A``, ``a``, ``(A)``, ``(a)`` plus the row's choice texts) and count it
correct when ``verify(gold=[choice.lower(), choice, "A", "a", "(a)", "(A)"], target=parsed)`` holds for the gold
letter and its choice text. The extraction and the math-verify calls are the ones the accuracy reward uses.

Where it differs from the paper's scripts: responses longer than `MATH_VERIFY_MAX_CHARS` are not parsed (they score
as wrong), and unusable input (a gold answer that is not one of the row's choices, a non-string response) is wrong
instead of an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rewards.answers import MATH_VERIFY_MAX_CHARS, first_answer, parse_math, verify_math

__all__ = [
    "LETTERS",
    "MATH_VERIFY_MAX_CHARS",
    "extract_answer",
    "gold_option",
    "paper_verdict",
    "score_response",
    "score_response_strict",
]

logger = logging.getLogger(__name__)

LETTERS = "ABCDEF"
# The strings the paper's string extraction looks for, before the row's own choice texts.
_LETTER_STRINGS = (*LETTERS, *LETTERS.lower(), *(f"({c})" for c in LETTERS.lower()), *(f"({c})" for c in LETTERS))


def extract_answer(response: str) -> str | None:
    """The paper's ``re.search(r"<answer>\\s*(.*?)\\s*</answer>", response).group(1)``, or None (linear time).

    Example:
        >>> extract_answer("<think>...</think><answer> (B) </answer>"), extract_answer("B")
        ('(B)', None)
        >>> extract_answer("<answer>A\\nB</answer> <answer>\\nC\\n</answer>")
        'C'
    """
    return first_answer(response, trim=True)


def gold_option(choices: Any, answer: Any) -> tuple[str, str] | None:
    """The gold letter and its choice text, from ``answer`` ("(B)"; a bare "B" is accepted too); None when the
    answer does not name one of ``choices`` (a data error).

    Example:
        >>> gold_option(["left", "right"], "(B)"), gold_option(["left", "right"], "(C)")
        (('B', 'right'), None)
    """
    if not isinstance(answer, str) or isinstance(choices, str) or not isinstance(choices, Sequence):
        return None
    if not all(isinstance(c, str) for c in choices):
        return None
    letter = answer.strip().removeprefix("(").removesuffix(")")
    if len(letter) != 1 or letter not in LETTERS or LETTERS.index(letter) >= len(choices):
        return None
    return letter, choices[LETTERS.index(letter)]


def _extraction_config(choices: Sequence[str]) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig

    return [
        LatexExtractionConfig(),
        ExprExtractionConfig(),
        StringExtractionConfig(strings=_LETTER_STRINGS + tuple(choices)),
    ]


def paper_verdict(response: str, choices: Sequence[str], answer: str) -> tuple[bool, list]:
    """The paper's verdict and math-verify's parse of the answer text; (False, []) for unusable input."""
    try:
        gold = gold_option(choices, answer)
        if gold is None or not isinstance(response, str):
            return False, []
        letter, choice = gold
        # The paper falls back to the whole response when there is no <answer> block or it is empty.
        parsed = parse_math(extract_answer(response) or response, _extraction_config(choices))
        golds = [choice.lower(), choice, letter, letter.lower(), f"({letter})".lower(), f"({letter})"]
        return verify_math(golds, parsed), parsed
    except Exception:  # a scorer never stops an evaluation: unusable input is simply wrong
        logger.debug("scoring failed", exc_info=True)
        return False, []


def score_response(response: str, choices: list[str], answer: str) -> bool:
    """Whether ``response`` answers the CV-Bench row (``choices``, ``answer`` like "(B)"), as the paper scored it.

    The text inside the first ``<answer>…</answer>`` (trimmed; the whole response when there is none) is parsed by
    math-verify with LaTeX, expression and string extraction, the strings being the letters A–F as ``A``, ``a``,
    ``(A)``, ``(a)`` plus the row's choice texts; it is correct when math-verify matches it with the gold letter in
    any of those forms or the gold choice text (as written or lowercased).

    Which option a text names is math-verify's choice, in this order: one after "final answer is"; the last one
    within 50 characters after the word "answer" ("The answer is (B)" counts); one at the very start of the text
    ("A or B" reads as A); otherwise the last one named ("I think A or B" reads as B). Matching the choice text is
    case-sensitive on the response side ("RIGHT" and "Right" do not match "right"). Never raises.

    Example:
        >>> score_response("<think>...</think><answer>(B)</answer>", ["left", "right"], "(B)")
        True
        >>> score_response("The answer is right", ["left", "right"], "(B)")
        True
        >>> LR = ["left", "right"]
        >>> score_response("A or B", LR, "(B)"), score_response("I think A or B", LR, "(B)")
        (False, True)
        >>> score_response("<answer>RIGHT</answer>", ["left", "right"], "(B)")
        False
    """
    return paper_verdict(response, choices, answer)[0]


def _normalize(text: str) -> str:
    return " ".join(text.strip().removesuffix(".").split()).casefold()


def score_response_strict(response: str, choices: list[str], answer: str) -> bool:
    """A stricter companion score (reported separately, never in place of the paper's): the answer text — the first
    ``<answer>`` block, or the whole response when there is none — names the gold option and nothing else: ``B``,
    ``(B)``, the choice text, or ``(B) choice``, ignoring case, spacing and a final period.

    Example:
        >>> score_response_strict("<answer>(B) right</answer>", ["left", "right"], "(B)")
        True
        >>> score_response_strict("The answer is (B)", ["left", "right"], "(B)")
        False
    """
    try:
        gold = gold_option(choices, answer)
        if gold is None or not isinstance(response, str):
            return False
        letter, choice = gold
        extracted = extract_answer(response)
        text = _normalize(response if extracted is None else extracted)
        accepted = {letter, f"({letter})", choice, f"({letter}) {choice}"}
        return bool(text) and text in {_normalize(a) for a in accepted}
    except Exception:
        logger.debug("strict scoring failed", exc_info=True)
        return False
