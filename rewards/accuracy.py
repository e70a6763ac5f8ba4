"""The paper's accuracy reward (three checks in order), an optional lenient mode, and format-gated accuracy.

How this differs from the paper's code, and why:

* The paper's regexes (`PAPER_ANSWER_PATTERN`, searched without DOTALL; `PAPER_LETTER_PATTERN`, via ``findall``) are
  replaced by `extract_answer` and `last_option_letter`, which give the same results (a property test checks them
  against the regexes) in linear time; ``re.search(PAPER_ANSWER_PATTERN, ...)`` is quadratic on a long line of
  ``<answer>`` with no closing tag.
* math-verify gets the ground truth as ``gold`` (its first argument, as its API asks); the paper passed the parsed
  completion first. The two orders differ only where math-verify is asymmetric: a relation against an interval
  (truth ``$x<3$``, answer ``$(-\\infty, 3)$`` passes here and failed in the paper; the reverse pair the other way).
* Check 2 (exact match) runs before check 3 (letter rule). One version of the paper's code ran the letter rule
  first inside the same ``try``, so an answer without a standalone letter raised ``IndexError`` and never reached
  the exact comparison; that bug is not reproduced.
* math-verify only sees completions up to `MATH_VERIFY_MAX_CHARS` characters (see there); longer ones fail check 1
  and still go through checks 2 and 3.
* A missing or empty ground truth gives ``None`` ("cannot judge"); the paper compared against ``""`` and paid 1.0
  for an empty answer.

What the paper's checks do with the current math-verify (0.9), kept as they are:

* math-verify's plain-number pattern needs whitespace, ``=`` or the start of the text before a number, so
  ``parse("<answer>2</answer>")`` finds nothing. Check 1 therefore never fires for a bare number or word as ground
  truth (``"2"``, ``"left"``): ``"<answer>2.0</answer>"`` scores 0.0 against ``"2"``. It fires for ground truths
  such as ``"$\\frac{1}{2}$"`` or ``"about 2 meters"``. The lenient mode adds a math-verify comparison of the bare
  answer with the bare truth, under which ``"2.0"`` matches ``"2"``.
* The letter rule takes the last letter ``findall`` returns; matches cannot share a delimiter, so in ``"A B"`` the
  ``B`` is not found and the letter is ``A``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from rewards._text import Completion, Prompt, as_list, at, completion_text
from rewards.format import format_ok

logger = logging.getLogger(__name__)

# The regexes of the paper's code, kept as the specification (tests compare against them).
PAPER_ANSWER_PATTERN = r"<answer>(.*?)</answer>"  # re.search, no flags: "." stops at "\n"
PAPER_LETTER_PATTERN = r"(^|\s|\[|\()([A-H])(\s|\]|\)|$)"  # re.findall, last match's letter

# math-verify's own regexes are super-linear (100K characters of "\boxed{" take ~1 s to parse, 20K characters of
# "\[" ~10 s), so longer completions skip check 1. The paper capped completions at 700 tokens; exceeding 100K
# characters needs more than 140 characters per token on average, beyond the whitespace and punctuation runs that
# make up the longest tokens of byte-level BPE vocabularies such as Qwen2's (not checked against Qwen2's file,
# which is not available offline here). Checks 2 and 3 still run on such completions.
MATH_VERIFY_MAX_CHARS = 100_000
# math-verify's defaults, which the paper used: 5 s per parse and per comparison. They rely on SIGALRM, which only
# the main thread may use; in any other thread math-verify runs without a timeout rather than raising.
MATH_VERIFY_TIMEOUT_SECONDS = 5

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
# The first "<answer>" of a line (the lookahead is atomic, so it is never retried further right), then the nearest
# "</answer>" on that line. If a line's first "<answer>" has no closing tag after it on the line, no later one has:
# so the first line where this matches holds the paper's first match, and each line is scanned a bounded number of
# times.
_FIRST_ANSWER_ON_LINE = re.compile(r"^(?=([^\n]*?<answer>))\1([^\n]*?)</answer>", re.MULTILINE)
# The letter rule works on the reversed text, where the paper's last match is found first. A candidate is a letter
# A-H whose original successor is whitespace, "]", ")" (or the end) and whose original predecessor is whitespace,
# "[", "(" (or the start); reversed, the successor comes first.
_LETTER_CANDIDATE = re.compile(r"[\s\])][A-H](?![^\s\[(])")
_LETTER_OR_SPACE_RUN = re.compile(r"[A-H\s]*")
_NOT_LETTER = re.compile(r"[^A-H]")
_NOT_SPACE = re.compile(r"\S")
_LETTER_PREDECESSOR = re.compile(r"[\s\[(]")
# Lenient mode: a bare option letter such as "B", "(b)", "[B]" or "B.".
_BARE_LETTER = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:]?")
_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]|_")

MODES = ("paper", "lenient")


def extract_answer(text: str) -> str | None:
    """The paper's ``re.search(PAPER_ANSWER_PATTERN, text).group(1)`` (``None`` if no match), in linear time.

    Example:
        >>> extract_answer("<think>hm</think><answer> left </answer><answer>right</answer>")
        ' left '
        >>> extract_answer("<answer>left\\n</answer>") is None
        True
    """
    first = text.find(_ANSWER_OPEN)
    if first == -1 or text.find(_ANSWER_CLOSE, first + len(_ANSWER_OPEN)) == -1:
        return None
    match = _FIRST_ANSWER_ON_LINE.search(text, text.rfind("\n", 0, first) + 1)
    return None if match is None else match.group(2)


def answer_text(text: str) -> str:
    """The paper's extracted answer: the first ``<answer>`` content, or the whole text if there is none, stripped.

    Example:
        >>> answer_text("<think>...</think><answer> (B) </answer>"), answer_text("  The answer is B. ")
        ('(B)', 'The answer is B.')
    """
    inner = extract_answer(text)
    return (text if inner is None else inner).strip()


def last_option_letter(text: str) -> str | None:
    """The paper's ``re.findall(PAPER_LETTER_PATTERN, text)[-1][1]`` (``None`` if nothing is found), in linear time.

    ``findall`` consumes the delimiter after each letter, so of letters one whitespace apart ("A B C") it finds only
    every other one, starting with the first. The last candidate letter is therefore found iff its chain of such
    neighbours has odd length; otherwise the letter before it is the last one found.

    Example:
        >>> last_option_letter("I pick (B)"), last_option_letter("A or C"), last_option_letter("A B")
        ('B', 'C', 'A')
        >>> last_option_letter("BAD") is None
        True
    """
    reversed_text = text[::-1]
    if not reversed_text:
        return None
    if "A" <= reversed_text[0] <= "H" and (
        len(reversed_text) == 1 or _LETTER_PREDECESSOR.match(reversed_text, 1) is not None
    ):
        last = 0
    else:
        candidate = _LETTER_CANDIDATE.search(reversed_text)
        if candidate is None:
            return None
        last = candidate.start() + 1
    # The chain: letters at even offsets from `last`, whitespace between them (strided slices keep this in C).
    run_end = _LETTER_OR_SPACE_RUN.match(reversed_text, last).end()
    letters, gaps = reversed_text[last:run_end:2], reversed_text[last + 1 : run_end : 2]
    not_letter, not_space = _NOT_LETTER.search(letters), _NOT_SPACE.search(gaps)
    chain = min(
        len(letters) if not_letter is None else not_letter.start(),
        (len(gaps) if not_space is None else not_space.start()) + 1,
    )
    # The chain's earliest letter must itself be a candidate: preceded (originally) by a delimiter or the start.
    predecessor = last + 2 * chain - 1
    if chain > 1 and predecessor < len(reversed_text) and not _LETTER_PREDECESSOR.match(reversed_text, predecessor):
        chain -= 1
    return reversed_text[last] if chain % 2 == 1 else reversed_text[last + 2]


def _math_verify_timeout() -> int | None:
    return MATH_VERIFY_TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def _parse(text: str) -> list:
    """math-verify's ``parse`` with its default extraction; any failure (or timeout) is an empty parse."""
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse(text, parsing_timeout=_math_verify_timeout())
    except (Exception, TimeoutException):
        logger.debug("math-verify could not parse a text of %d characters", len(text), exc_info=True)
        return []


def _verify(gold: list, target: list) -> bool:
    from math_verify import verify
    from math_verify.errors import TimeoutException

    try:
        return bool(verify(gold, target, timeout_seconds=_math_verify_timeout()))
    except (Exception, TimeoutException):
        logger.debug("math-verify could not compare", exc_info=True)
        return False


# Per-call memo: the G completions of a prompt share one truth, whose parse and lenient pattern are built once.
_Cache = dict[tuple[str, str], Any]


def _math_verify_agrees(gold_text: str, text: str, cache: _Cache) -> bool:
    """``verify(parse(gold_text), parse(text))``, skipping work that cannot change the verdict."""
    key = ("gold", gold_text)
    if key not in cache:
        cache[key] = _parse(gold_text)
    gold = cache[key]
    # verify() with an empty gold is False whatever the completion, so the completion need not be parsed.
    if not gold or len(text) > MATH_VERIFY_MAX_CHARS:
        return False
    target = _parse(text)
    return bool(target) and _verify(gold, target)


def _split_solution(solution: str) -> tuple[str, str]:
    """(text math-verify parses as gold, ground truth compared as a string).

    A bare truth is wrapped in ``<answer>`` tags, as the paper stored it; a solution that already carries the tags
    (the paper's own data format) is used as it is, its truth being the tag content.
    """
    inner = extract_answer(solution)
    if inner is not None:
        return solution, inner.strip()
    return f"{_ANSWER_OPEN}{solution}{_ANSWER_CLOSE}", solution.strip()


def _normalize(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form used by the lenient mode.

    Example:
        >>> _normalize("  The LEFT-hand side, of_it. ")
        'the lefthand side ofit'
    """
    return " ".join(_NOT_WORD_OR_SPACE.sub("", text.casefold()).split())


def _normalized_equal_pattern(truth: str) -> re.Pattern[str] | None:
    """A pattern that fully matches ``answer.casefold().replace("_", "")`` iff ``_normalize(answer)`` equals
    ``_normalize(truth)``: the truth's word characters in order, with punctuation allowed anywhere and at least one
    whitespace character between words. Matching it is linear; normalizing a 1 MB answer would not be cheap."""
    words = _normalize(truth).split(" ")
    if words == [""]:
        return None
    within_word, between_words = r"[^\w\s]*", r"[^\w\s]*\s\W*"
    body = between_words.join(within_word.join(re.escape(char) for char in word) for word in words)
    return re.compile(rf"\W*{body}\W*")


def _normalized_equal(answer: str, truth: str, cache: _Cache) -> bool:
    key = ("lenient", truth)
    if key not in cache:
        cache[key] = _normalized_equal_pattern(truth)
    pattern = cache[key]
    return pattern is not None and pattern.fullmatch(answer.casefold().replace("_", "")) is not None


def _option_letter_points_at_truth(answer: str, truth: str, options: Any) -> bool:
    if not isinstance(options, Sequence) or isinstance(options, str):
        return False
    match = _BARE_LETTER.fullmatch(answer)
    if match is None:
        return False
    index = ord(match.group(1).upper()) - ord("A")
    if index >= len(options) or not isinstance(options[index], str):
        return False
    return _normalize(options[index]) == _normalize(truth)


class AccuracyReward:
    """1.0 when a completion's answer is the ground truth (dataset column ``solution``), else 0.0.

    ``mode="paper"`` (the default) applies exactly the paper's three checks, in order, stopping at the first that
    passes:

    1. math-verify on the whole completion: ``verify(parse("<answer>" + truth + "</answer>"), parse(completion))``
       (parse failures and timeouts count as "no");
    2. the answer (the first ``<answer>…</answer>`` on one line, or the whole completion when there is none,
       stripped) equals the truth exactly, case included;
    3. the last standalone capital letter A–H of the answer (after start, whitespace, ``[`` or ``(``; before
       whitespace, ``]``, ``)`` or the end) equals the truth.

    ``mode="lenient"`` adds three checks: the answer equals the truth ignoring case, punctuation and whitespace;
    the answer is a bare option letter (``B``, ``(B)``, ``b.``) naming the option equal to the truth, when the
    dataset has an ``options`` column (the options in displayed order); math-verify finds the bare answer equal to
    the bare truth (so ``"2.0"`` matches ``"2"``).

    ``require_format=True`` (format-gated accuracy) gives 0.0 whenever `rewards.format.format_reward` would.

    A missing, non-string or empty ``solution`` gives ``None`` ("cannot judge"). Never raises. See the module
    docstring for where this differs from the paper's code.

    Example:
        >>> accuracy_reward(["<think>...</think><answer>left</answer>", "<answer>Left</answer>", "I think (B)"],
        ...                 solution=["left", "left", "B"])
        [1.0, 0.0, 1.0]
        >>> AccuracyReward(mode="lenient")(["<answer>Left.</answer>", "(A)"], solution=["left", "left"],
        ...                                options=[["right", "left"], ["left", "right"]])
        [1.0, 1.0]
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
        cache: _Cache = {}
        options = kwargs.get("options")
        return [
            self._score(completion, at(solution, i), at(prompts, i), at(options, i), cache)
            for i, completion in enumerate(as_list(completions))
        ]

    def _score(
        self, completion: Completion, solution: Any, prompt: Prompt, options: Any, cache: _Cache
    ) -> float | None:
        if not isinstance(solution, str):
            return None
        gold_text, truth = _split_solution(solution)
        if not truth:
            return None
        try:
            if self.require_format and not format_ok(completion, prompt):
                return 0.0
            return 1.0 if self._correct(completion_text(completion), gold_text, truth, options, cache) else 0.0
        except Exception:  # a reward must not stop training; the checks above are not expected to raise
            logger.warning("accuracy check failed; scoring 0.0", exc_info=True)
            return 0.0

    def _correct(self, text: str, gold_text: str, truth: str, options: Any, cache: _Cache) -> bool:
        if _math_verify_agrees(gold_text, text, cache):
            return True
        answer = answer_text(text)
        if answer == truth or last_option_letter(answer) == truth:
            return True
        if self.mode != "lenient":
            return False
        if _normalized_equal(answer, truth, cache):
            return True
        if _option_letter_points_at_truth(answer, truth, options):
            return True
        return _math_verify_agrees(truth, answer, cache)


accuracy_reward = AccuracyReward()
