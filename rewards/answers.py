"""Reading an answer out of a response, as the paper did: shared by the accuracy reward and the CV-Bench scorer.

The paper's code used three regexes, kept here as the specification (property tests compare against them):

* `PAPER_ANSWER_PATTERN`, ``<answer>(.*?)</answer>`` (its GRPO accuracy reward);
* `PAPER_EVAL_ANSWER_PATTERN`, ``<answer>\\s*(.*?)\\s*</answer>`` (its CV-Bench scripts: the block's content, trimmed,
  may be preceded and followed by newlines);
* `PAPER_LETTER_PATTERN`, the last standalone capital letter A–H found by ``re.findall`` (its reward's letter rule).

The letter rule runs the paper's ``findall`` itself: it is linear (1 MB in ~0.2 s). The two answer regexes are not:
``re.search`` backtracks over every ``<answer>`` and every whitespace run, so ``"<answer>" * 1250`` (10,000
characters) takes 0.3 s and ``"<answer>" + " " * 1000 + "x" + " " * 1000`` takes 6 s with the evaluation's pattern
(measured). No length cap fixes that: a cap low enough to bound those times (about 1,000 characters) is shorter than
an ordinary 1,024-token response. `first_answer` therefore gives the same group as either regex in linear time (the
property tests check equality on generated inputs).

math-verify is called through `parse_math` and `verify_math`, which apply the paper's timeouts where they can work
(they use SIGALRM: main thread only), turn failures into "no", and skip texts longer than `MATH_VERIFY_MAX_CHARS`.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

PAPER_ANSWER_PATTERN = r"<answer>(.*?)</answer>"  # re.search, no flags: "." stops at "\n"
PAPER_EVAL_ANSWER_PATTERN = r"<answer>\s*(.*?)\s*</answer>"  # re.search, no flags
PAPER_LETTER_PATTERN = r"(^|\s|\[|\()([A-H])(\s|\]|\)|$)"  # re.findall, the last match's letter

# math-verify's own regexes are super-linear (100K characters of "\boxed{" take ~0.5 s to parse, 20K characters of
# "\[" ~10 s), so longer texts are not given to it: they count as "no parse". The paper capped completions at 700
# tokens (1,024 at evaluation); 100K characters needs more than 100 characters per token on average, beyond the
# whitespace and punctuation runs that make up the longest tokens of byte-level BPE vocabularies such as Qwen2's.
MATH_VERIFY_MAX_CHARS = 100_000
# math-verify's defaults, which the paper used: 5 s per parse and per comparison.
MATH_VERIFY_TIMEOUT_SECONDS = 5

_OPEN, _CLOSE = "<answer>", "</answer>"
_CLOSING_TAG = re.compile(re.escape(_CLOSE))
_SPACES = re.compile(r"\s*")
_LETTER = re.compile(PAPER_LETTER_PATTERN)


def _space_run_start(text: str, end: int, floor: int) -> int:
    """Where the run of whitespace that ends at ``end`` starts (not before ``floor``)."""
    while end > floor and text[end - 1].isspace():
        end -= 1
    return end


def first_answer(text: str, trim: bool = False) -> str | None:
    """The group of the paper's first ``<answer>…</answer>`` match, or None: `PAPER_ANSWER_PATTERN` by default,
    `PAPER_EVAL_ANSWER_PATTERN` with ``trim=True``. Linear time.

    An opening tag can only pair with the first closing tag after it (its content cannot cross a newline, and a
    closing tag is never part of whitespace), so the openings between two closing tags are candidates for the second
    one only, and the first of them that reaches it without a newline in its content is the regex's match.

    Example:
        >>> first_answer("<think>hm</think><answer> left </answer><answer>right</answer>")
        ' left '
        >>> first_answer("<answer>left\\n</answer>"), first_answer("<answer>left\\n</answer>", trim=True)
        (None, 'left')
        >>> first_answer("<answer>A\\nB</answer> <answer>\\n C </answer>", trim=True)
        'C'
    """
    floor = 0  # openings before this belong to an earlier closing tag
    for close in _CLOSING_TAG.finditer(text):
        end = close.start()
        # The content must not cross a newline; with trim=True the whitespace before the closing tag (and after
        # the opening tag) may.
        content_end = _space_run_start(text, end, floor) if trim else end
        newline = text.rfind("\n", floor, content_end)
        lowest = floor
        if newline != -1:
            # trim=True: an opening followed only by whitespace up to that newline still qualifies.
            after = _space_run_start(text, newline, floor) if trim else newline + 1
            lowest = max(floor, after - len(_OPEN))
        opening = text.find(_OPEN, lowest, end)
        if opening != -1:
            start = opening + len(_OPEN)
            if trim:
                start = _SPACES.match(text, start, end).end()
                return text[start : max(start, content_end)]
            return text[start:end]
        floor = close.end()
    return None


def answer_text(text: str) -> str:
    """The accuracy reward's answer: the first ``<answer>`` content (`PAPER_ANSWER_PATTERN`), or the whole text if
    there is none, stripped.

    Example:
        >>> answer_text("<think>...</think><answer> (B) </answer>"), answer_text("  The answer is B. ")
        ('(B)', 'The answer is B.')
    """
    inner = first_answer(text)
    return (text if inner is None else inner).strip()


def last_option_letter(text: str) -> str | None:
    """The paper's ``re.findall(PAPER_LETTER_PATTERN, text)[-1][1]``, or None when nothing is found.

    ``findall`` consumes the delimiter after each letter, so of letters one space apart ("A B") it finds only every
    other one: the last letter found in "A B" is A.

    Example:
        >>> last_option_letter("I pick (B)"), last_option_letter("A or C"), last_option_letter("A B")
        ('B', 'C', 'A')
        >>> last_option_letter("BAD") is None
        True
    """
    last = collections.deque(_LETTER.finditer(text), maxlen=1)  # findall's last match without keeping the others
    return last[0].group(2) if last else None


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread may set; elsewhere it runs without one.
    return MATH_VERIFY_TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def parse_math(text: str, extraction_config: Sequence[Any] | None = None) -> list:
    """math-verify's ``parse`` (its default extraction unless ``extraction_config`` is given); a failure, a timeout
    or a text longer than `MATH_VERIFY_MAX_CHARS` gives the empty parse.

    Example:
        >>> parse_math("The answer is $\\\\frac{1}{2}$")[1]
        '\\\\frac{1}{2}'
    """
    from math_verify import parse
    from math_verify.errors import TimeoutException

    if len(text) > MATH_VERIFY_MAX_CHARS:
        return []
    kwargs = {} if extraction_config is None else {"extraction_config": list(extraction_config)}
    try:
        return parse(text, parsing_timeout=_timeout(), **kwargs)
    except (Exception, TimeoutException):  # TimeoutException is not an Exception subclass
        logger.debug("math-verify could not parse a text of %d characters", len(text), exc_info=True)
        return []


def verify_math(gold: list, target: list) -> bool:
    """math-verify's ``verify(gold, target)``; empty parses, failures and timeouts give False.

    Example:
        >>> verify_math(parse_math("$0.5$"), parse_math("$\\\\frac{1}{2}$")), verify_math([], parse_math("$1$"))
        (True, False)
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    if not gold or not target:  # verify() is False with an empty side whatever the other holds
        return False
    try:
        return bool(verify(gold, target, timeout_seconds=_timeout()))
    except (Exception, TimeoutException):
        logger.debug("math-verify could not compare", exc_info=True)
        return False
