"""Property-based tests of the rewards.

1. The linear-time matchers give exactly the verdicts of the paper's regexes, on generated short inputs over an
   alphabet of tag fragments, delimiters, letters and (Unicode) whitespace.
2. No reward raises on anything TRL (or a broken dataset) could pass, and every output is a float in range or None.
3. 1 MB adversarial completions (the inputs that make the paper's regexes or math-verify super-linear) score
   correctly. Their speed is measured by ``benchmarks/bench_rewards.py``, not asserted here.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from fixtures.properties import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

from rewards import AccuracyReward, LengthReward, build_reward, get_reward_funcs
from rewards.answers import (
    PAPER_ANSWER_PATTERN,
    PAPER_EVAL_ANSWER_PATTERN,
    PAPER_LETTER_PATTERN,
    first_answer,
    last_option_letter,
)
from rewards.cvbench import score_response, score_response_strict
from rewards.format import PAPER_FORMAT_PATTERN, matches_paper_format

# Shared settings: no example database (nothing written into the repository), no per-example deadline (the first
# math-verify call imports sympy); the quick loop draws a fifth of the examples (tests/fixtures/properties.py).
FAST = settings(
    max_examples=examples(1500), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
ROBUST = settings(
    max_examples=examples(800), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Unicode whitespace that `\s` and str.strip() treat alike, and look-alikes that are not whitespace.
SPACES = [" ", "\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000"]
NOT_SPACES = ["\u200b", "\ufeff"]
TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<", ">", "/", "think", "answer", "<answer", "answer>"]
LETTERS = ["A", "B", "H", "I", "a", "x", "2", "(", ")", "[", "]", "."]

fragment_text = st.lists(st.sampled_from(TAGS + SPACES + NOT_SPACES + LETTERS), max_size=24).map("".join)
# Bias towards texts that start and end like a well-formed completion, so full matches are common.
shaped_text = st.tuples(
    st.sampled_from(["", "<think>"]), fragment_text, st.sampled_from(["", "</answer>", "</answer>\n"])
).map("".join)
letter_text = st.lists(st.sampled_from(SPACES[:4] + ["\xa0", "\x1c"] + LETTERS), max_size=30).map("".join)


# ------------------------------------------------------------------------------- 1. equivalence with the paper


@FAST
@given(st.one_of(fragment_text, shaped_text))
def test_format_matcher_equals_paper_regex(text):
    assert matches_paper_format(text) == (re.fullmatch(PAPER_FORMAT_PATTERN, text, re.DOTALL) is not None)


@FAST
@given(st.one_of(fragment_text, shaped_text))
def test_answer_extraction_equals_paper_regex(text):
    match = re.search(PAPER_ANSWER_PATTERN, text)
    assert first_answer(text) == (None if match is None else match.group(1))


@FAST
@given(st.one_of(fragment_text, shaped_text))
def test_evaluation_answer_extraction_equals_paper_regex(text):
    match = re.search(PAPER_EVAL_ANSWER_PATTERN, text)
    assert first_answer(text, trim=True) == (None if match is None else match.group(1))


@FAST
@given(letter_text)
def test_letter_rule_equals_paper_findall(text):
    found = re.findall(PAPER_LETTER_PATTERN, text)
    assert last_option_letter(text) == (found[-1][1] if found else None)


def test_generated_inputs_reach_both_verdicts():
    # Guards the equivalence tests against an alphabet that never produces a match.
    assert matches_paper_format("<think>\x1c</think>\u2028<answer>x</answer>")
    assert not matches_paper_format("<think></think>\u200b<answer></answer>")
    assert first_answer("<answer>\u2028</answer>") == "\u2028"
    assert first_answer("<answer>x<answer>\n B\x1c</answer>", trim=True) == "B"
    assert last_option_letter("\x1cB\xa0") == "B"


# --------------------------------------------------------------------------------------- 2. nothing ever raises


def word_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "left": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")


class SplitTokenizer:
    """A cheap stand-in with the `transformers` tokenizer call signature, so 1 MB inputs stay quick to count."""

    def __call__(self, texts: str | list[str]) -> dict[str, list]:
        return {"input_ids": texts.split() if isinstance(texts, str) else [text.split() for text in texts]}


REWARDS = (
    get_reward_funcs(["accuracy", "format", "length", "reflection"], tokenizer=SplitTokenizer())[0]
    + [build_reward("accuracy", SimpleNamespace(accuracy_mode="gold_first"))]
    + [AccuracyReward(mode="gold_first", require_format=True), AccuracyReward(require_format=True)]
)
# Generated inputs are short, so the robustness test runs a real `transformers` (Rust) tokenizer too.
ROBUST_REWARDS = [*REWARDS, LengthReward(word_tokenizer())]
BINARY = {"accuracy_reward", "format_reward", "reflection_reward"}

any_text = st.one_of(fragment_text, shaped_text, st.text(max_size=60))
completion = st.one_of(
    any_text,
    any_text.map(lambda t: [{"role": "assistant", "content": t}]),
    st.sampled_from(
        [
            None,
            [],
            [None],
            [{"role": "assistant"}],
            [{"role": "assistant", "content": None}],
            [{"role": "assistant", "content": [{"type": "text", "text": "<answer>B</answer>"}, {"type": "image"}]}],
            {"role": "assistant", "content": "left"},
            17,
            b"<answer>left</answer>",
        ]
    ),
)
prompt = st.one_of(
    st.none(),
    any_text,
    any_text.map(lambda t: t + "\n<think>"),
    any_text.map(
        lambda t: [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": t}]}]
    ),
    st.sampled_from([[], [{}], [{"type": "text", "text": None}], [{"role": "user", "content": None}], 3.5]),
)
solution = st.one_of(
    st.none(),
    st.sampled_from(["left", "B", "2", " 2", "$\\frac{1}{2}$", "about 2 meters", "(A)", "", "<answer>left</answer>"]),
    any_text,
    st.integers(),
)
options = st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=8), st.none()), max_size=4), st.text(max_size=4))
ids = st.one_of(st.none(), st.lists(st.integers(0, 1000), max_size=30), st.just("not ids"), st.integers())
example = st.tuples(completion, prompt, solution, options, ids)


def check_outputs(reward, out, n):
    assert isinstance(out, list) and len(out) == n
    for value in out:
        assert value is None or type(value) is float
        if value is not None and reward.__name__ in BINARY:
            assert value in (0.0, 1.0)
        if value is not None:
            assert value >= 0.0


@ROBUST
@given(st.lists(example, max_size=6))
def test_no_reward_raises_and_outputs_are_in_range(batch):
    columns = list(zip(*batch, strict=True)) if batch else [[], [], [], [], []]
    completions, prompts, solutions, options_col, ids_col = (list(column) for column in columns)
    for reward in ROBUST_REWARDS:
        out = reward(
            prompts=prompts,
            completions=completions,
            completion_ids=ids_col,
            trainer_state=None,
            solution=solutions,
            options=options_col,
            question_type=["x"] * len(batch),
        )
        check_outputs(reward, out, len(batch))
    # Columns may be missing or short.
    for reward in ROBUST_REWARDS:
        check_outputs(reward, reward(completions=completions), len(batch))
        check_outputs(reward, reward(completions=completions, solution=solutions[:1], prompts=prompts[:1]), len(batch))


@settings(max_examples=examples(300), deadline=None, database=None)
@given(st.lists(any_text, min_size=1, max_size=4))
def test_accuracy_without_solution_cannot_judge(texts):
    assert AccuracyReward()(texts) == [None] * len(texts)


# ------------------------------------------------------------------------------------ 3. 1 MB adversarial inputs

MB = 1_000_000
ADVERSARIAL = {
    "think then answer, no closing tag": "<think>" + "</think><answer>" * (MB // 16),
    "one line of <answer>, no closing tag": "<answer>" * (MB // 8),
    "<answer> per line, closed at the end": "<answer>\n" * (MB // 9) + "</answer>",
    "nested tags": "<think><answer>" * (MB // 32) + "</answer></think>" * (MB // 34),
    "whitespace run after </think>": "<think>a</think>" + " " * MB + "<answer>x</answer>",
    "chain of letters": "A " * (MB // 2),
    "letters in parentheses": "(A) " * (MB // 4),
    "reflection near misses": "awaitx " * (MB // 7),
    "\\boxed{ without end": "\\boxed{" * (MB // 7),
    "\\[ without end": "\\[" * (MB // 2),
    "unicode": "é中\u2028𝔸" * (MB // 4),
}
EXPECTED_FORMAT = {"whitespace run after </think>": 1.0}  # well-formed; every other one is not


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_megabyte_completions(name):
    text = ADVERSARIAL[name]
    batch = {
        "prompts": [None, "Q\n<think>"],
        "completions": [text, [{"role": "assistant", "content": text}]],
        "completion_ids": [None, list(range(700))],
        "solution": ["$\\frac{1}{2}$", "B"],  # a truth math-verify can parse, so the length bound is exercised
    }
    for reward in REWARDS:
        out = reward(**batch)
        check_outputs(reward, out, 2)
        if reward.__name__ == "format_reward":
            assert out == [EXPECTED_FORMAT.get(name, 0.0)] * 2
        if reward.__name__ == "accuracy_reward":
            assert out == [0.0, 0.0]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_shapes_agree_with_paper_regexes_when_small(name):
    text = ADVERSARIAL[name][:3000]
    assert matches_paper_format(text) == (re.fullmatch(PAPER_FORMAT_PATTERN, text, re.DOTALL) is not None)
    match = re.search(PAPER_ANSWER_PATTERN, text)
    assert first_answer(text) == (None if match is None else match.group(1))
    match = re.search(PAPER_EVAL_ANSWER_PATTERN, text[:2000])  # cubic on whitespace runs: kept short
    assert first_answer(text[:2000], trim=True) == (None if match is None else match.group(1))
    found = re.findall(PAPER_LETTER_PATTERN, text)
    assert last_option_letter(text) == (found[-1][1] if found else None)


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_megabyte_responses_are_scored_by_the_cvbench_scorer(name):
    text = ADVERSARIAL[name]
    assert score_response(text, ["left", "right"], "(B)") is False
    assert score_response_strict(text, ["left", "right"], "(B)") is False
