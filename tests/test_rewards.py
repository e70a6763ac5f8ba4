"""Table-driven tests of the rewards: the paper's verdicts and quirks, TRL's call contract, the registry, pickling.

Property-based tests (equivalence with the paper's regexes, robustness on generated inputs) live in
`test_rewards_properties.py`.
"""

from __future__ import annotations

import pickle
import threading

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from rewards import (
    DEFAULT_WEIGHTS,
    REFLECTION_PHRASES,
    REWARD_NAMES,
    AccuracyReward,
    LengthReward,
    accuracy_reward,
    format_reward,
    get_reward_funcs,
    length_reward,
    reflection_reward,
)
from rewards.accuracy import MATH_VERIFY_MAX_CHARS

# The paper's two prompts, as TRL passes them to rewards (conversational, with an image part) and as plain strings.
BASE_TEXT = (
    "A conversation between User and Assistant. ...\nUser: Is the chair left or right of the table? \n"
    "Assistant: Let me solve this step by step.\n<think>"
)
INSTRUCT_TEXT = (
    "Is the chair left or right of the table?  Output the thinking process in <think> </think> and final answer "
    "(option) in <answer> </answer> tags."
)
BASE_CONV = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": BASE_TEXT}]}]
INSTRUCT_CONV = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCT_TEXT}]}]
# The paper's own code built the base prompt as a bare list of parts.
BASE_PARTS = [{"type": "image"}, {"type": "text", "text": "<image>" + BASE_TEXT}]


def conv(text: str | None) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------------------------------------------------- format

FORMAT_CASES = [
    # (completion, prompt, expected, why)
    ("<think>The chair is left.</think><answer>left</answer>", None, 1.0, "instruct shape"),
    ("<think>a</think>\n\n <answer>left</answer>", INSTRUCT_CONV, 1.0, "whitespace between the blocks"),
    ("<think>line 1\nline 2</think><answer>two\nlines</answer>", None, 1.0, "newlines inside the tags"),
    ("<think></think><answer></answer>", None, 1.0, "empty blocks still match"),
    ("<think>a</think> so <answer>left</answer>", None, 0.0, "text between the blocks"),
    ("<think>a</think><answer>left</answer>\n", None, 0.0, "trailing newline: full match fails"),
    (" <think>a</think><answer>left</answer>", None, 0.0, "leading space"),
    ("<think>a</think><answer>left", None, 0.0, "unclosed answer"),
    ("<answer>left</answer>", None, 0.0, "no think block"),
    ("<think>a</answer></think><answer>b</answer>", None, 1.0, "tags inside a block are just text"),
    ("<think>a<answer>b</answer>", None, 0.0, "no closing think"),
    ("", None, 0.0, "empty completion"),
    (None, None, 0.0, "None completion"),
    # Base model: the completion starts inside the think block.
    ("The chair is left.</think>\n<answer>left</answer>", BASE_CONV, 1.0, "base, conversational prompt"),
    ("The chair is left.</think>\n<answer>left</answer>", BASE_TEXT, 1.0, "base, string prompt"),
    ("The chair is left.</think>\n<answer>left</answer>", BASE_TEXT + " \n", 1.0, "base, trailing whitespace"),
    ("The chair is left.</think>\n<answer>left</answer>", BASE_PARTS, 1.0, "base, paper's list-of-parts prompt"),
    ("The chair is left.</think>\n<answer>left</answer>", INSTRUCT_CONV, 0.0, "same text, instruct prompt"),
    ("The chair is left.</think>\n<answer>left</answer>", INSTRUCT_TEXT, 0.0, "same text, instruct string"),
    ("The chair is left.</think>\n<answer>left</answer>", None, 0.0, "same text, no prompt"),
    ("<think>x</think><answer>left</answer>", BASE_CONV, 1.0, "base, model repeats <think>: still one match"),
    ("<answer>left</answer>", BASE_CONV, 0.0, "base, no closing think"),
]


@pytest.mark.parametrize("completion, prompt, expected, why", FORMAT_CASES, ids=[c[3] for c in FORMAT_CASES])
def test_format_reward_table(completion, prompt, expected, why):
    assert format_reward([completion], prompts=[prompt]) == [expected]
    assert format_reward([conv(completion)], prompts=[prompt]) == [expected]


def test_format_reward_decides_per_example_from_prompts():
    completion = "left side</think><answer>left</answer>"
    rewards = format_reward(
        [completion, completion, completion],
        prompts=[BASE_CONV, INSTRUCT_CONV, BASE_TEXT],
        completion_ids=[[1], [2], [3]],
        trainer_state=object(),
        solution=["left"] * 3,
    )
    assert rewards == [1.0, 0.0, 1.0]


# -------------------------------------------------------------------------------------------------------- accuracy

ACCURACY_CASES = [
    # (completion, solution, paper verdict, lenient verdict, why)
    ("<think>The chair is left.</think><answer>left</answer>", "left", 1.0, 1.0, "exact answer in tags"),
    ("<answer>  left \t</answer>", "left", 1.0, 1.0, "the tag content is stripped"),
    ("<answer>Left</answer>", "left", 0.0, 1.0, "exact match is case-sensitive"),
    ("<answer>left.</answer>", "left", 0.0, 1.0, "punctuation"),
    ("left", "left", 1.0, 1.0, "no tags: the whole completion is the answer"),
    ("  left\n", "left", 1.0, 1.0, "whole-completion fallback is stripped"),
    ("The chair is on the left", "left", 0.0, 0.0, "whole-completion fallback needs an exact match"),
    ("<answer>right</answer> <answer>left</answer>", "left", 0.0, 0.0, "only the first answer tag counts"),
    ("<answer>\nleft\n</answer>", "left", 0.0, 0.0, "a tag across lines is no match (no DOTALL): whole text"),
    ("<answer>right\n</answer><answer>left</answer>", "left", 1.0, 1.0, "first match on one line"),
    ("<think>...</think><answer>(B)</answer>", "B", 1.0, 1.0, "letter rule: (B) gives B"),
    ("<answer>[C]</answer>", "C", 1.0, 1.0, "letter rule: [C]"),
    ("I think the answer is B", "B", 1.0, 1.0, "letter rule on the whole completion"),
    ("A or C", "C", 1.0, 1.0, "letter rule takes the last letter"),
    ("A B", "B", 0.0, 0.0, "findall quirk: the shared space hides B, the last letter found is A"),
    ("<answer>B.</answer>", "B", 0.0, 1.0, "'B.' is no standalone letter (lenient: punctuation ignored)"),
    ("<answer>(I)</answer>", "I", 0.0, 1.0, "letters stop at H"),
    ("<answer>2</answer>", "2", 1.0, 1.0, "exact number"),
    ("<answer>2.0</answer>", "2", 0.0, 1.0, "'<answer>2</answer>' has no math-verify parse: lenient compares"),
    ("<answer> 0.5 </answer>", "$\\frac{1}{2}$", 1.0, 1.0, "math-verify: LaTeX truth, decimal answer"),
    ("So it is 1/2", "$\\frac{1}{2}$", 1.0, 1.0, "math-verify reads the whole completion"),
    ("It is 2 m away", "about 2 meters", 1.0, 1.0, "math-verify: truth with a spaced number"),
    ("<answer>3</answer>", "2", 0.0, 0.0, "wrong number"),
    ("<answer>left</answer>", "<answer>left</answer>", 1.0, 1.0, "solution in the paper's own tagged format"),
    ("", "left", 0.0, 0.0, "empty completion"),
    (None, "left", 0.0, 0.0, "None content"),
]


@pytest.mark.parametrize(
    "completion, solution, paper, lenient, why", ACCURACY_CASES, ids=[c[4] for c in ACCURACY_CASES]
)
def test_accuracy_reward_table(completion, solution, paper, lenient, why):
    assert accuracy_reward([completion], solution=[solution]) == [paper]
    assert accuracy_reward([conv(completion)], solution=[solution], prompts=[INSTRUCT_CONV]) == [paper]
    assert AccuracyReward(mode="lenient")([completion], solution=[solution]) == [lenient]


@pytest.mark.parametrize("solution", [None, "", "   ", 3, ["left"]])
def test_accuracy_cannot_judge_without_a_truth(solution):
    assert accuracy_reward(["<answer>left</answer>"], solution=[solution]) == [None]


def test_accuracy_without_solution_column_returns_none_per_completion():
    assert accuracy_reward(["<answer>left</answer>", "left"]) == [None, None]
    assert accuracy_reward(["left", "left"], solution=["left"]) == [1.0, None]  # a short column


def test_accuracy_accepts_every_trl_keyword():
    rewards = accuracy_reward(
        prompts=[INSTRUCT_CONV],
        completions=[conv("<answer>left</answer>")],
        completion_ids=[[1, 2, 3]],
        trainer_state=object(),
        log_extra=lambda *a: None,
        log_metric=lambda *a: None,
        solution=["left"],
        options=[["left", "right"]],
        question_type=["relation"],
        images=[[]],
    )
    assert rewards == [1.0]


LENIENT_OPTION_CASES = [
    # (answer, options, expected)
    ("(B)", ["right", "left"], 1.0),
    ("b", ["right", "left"], 1.0),
    ("B.", ["right", "left"], 1.0),
    ("A", ["right", "left"], 0.0),  # points at the wrong option
    ("C", ["right", "left"], 0.0),  # no such option
    ("(B)", None, 0.0),  # no options column
    ("(B) right", ["right", "left"], 0.0),  # not a bare letter
]


@pytest.mark.parametrize("answer, options, expected", LENIENT_OPTION_CASES)
def test_lenient_option_letters(answer, options, expected):
    lenient = AccuracyReward(mode="lenient")
    kwargs = {} if options is None else {"options": [options]}
    assert lenient([f"<answer>{answer}</answer>"], solution=["left"], **kwargs) == [expected]
    assert accuracy_reward([f"<answer>{answer}</answer>"], solution=["left"], **kwargs) == [0.0]  # paper: never


def test_format_gated_accuracy():
    gated = AccuracyReward(require_format=True)
    completions = ["left", "<think>it is left</think><answer>left</answer>", "it is left</think><answer>left</answer>"]
    assert accuracy_reward(completions, solution=["left"] * 3) == [1.0, 1.0, 1.0]
    assert gated(completions, solution=["left"] * 3, prompts=[INSTRUCT_CONV] * 3) == [0.0, 1.0, 0.0]
    # Under the base prompt "<think>" is prepended: a completion that repeats it still has the paper's shape.
    assert gated(completions, solution=["left"] * 3, prompts=[BASE_CONV] * 3) == [0.0, 1.0, 1.0]
    assert gated(["<think>x</think><answer>right</answer>"], solution=["left"]) == [0.0]  # right shape, wrong answer
    assert gated(["left"], solution=[None]) == [None]


def test_accuracy_in_a_worker_thread_matches_the_main_thread():
    # math-verify's timeouts use SIGALRM, which only the main thread may set: elsewhere they must be switched off.
    completions = ["<answer> 0.5 </answer>", "<answer> 0.7 </answer>", "<answer>left</answer>"]
    solutions = ["$\\frac{1}{2}$", "$\\frac{1}{2}$", "left"]
    results, errors = [], []

    def work():
        try:
            results.append(accuracy_reward(completions, solution=solutions))
        except BaseException as err:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []
    assert results == [accuracy_reward(completions, solution=solutions)] == [[1.0, 0.0, 1.0]]


def test_math_verify_only_sees_completions_up_to_the_bound():
    short = "<answer> 0.5 </answer>"
    padded = "x" * MATH_VERIFY_MAX_CHARS + " " + short
    assert accuracy_reward([short, padded], solution=["$\\frac{1}{2}$"] * 2) == [1.0, 0.0]
    # Checks 2 and 3 still run on long completions.
    assert accuracy_reward(["x" * MATH_VERIFY_MAX_CHARS + "<answer>left</answer>"], solution=["left"]) == [1.0]


def test_accuracy_reward_rejects_unknown_mode():
    with pytest.raises(ValueError, match="paper.*lenient"):
        AccuracyReward(mode="strict")


# ---------------------------------------------------------------------------------------------------------- length


def word_tokenizer() -> Tokenizer:
    """A whitespace word-level tokenizer built on the spot (no download): one token per word."""
    vocab = {"[UNK]": 0, "<think>": 1, "</think>": 2, "<answer>": 3, "</answer>": 4, "left": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


class FakeProcessor:
    """Stands in for a `transformers` processor: the text tokenizer is its ``tokenizer`` attribute."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def test_length_counts_trl_completion_ids():
    rewards = length_reward(["a b c", conv("x")], completion_ids=[[11, 12, 13, 14], [15]], trainer_state=None)
    assert rewards == pytest.approx([0.004, 0.001])
    assert all(isinstance(r, float) for r in rewards)


def test_length_scale_and_empty_ids():
    assert LengthReward(scale=0.01)(["", "b"], completion_ids=[[], [1, 2, 3]]) == pytest.approx([0.0, 0.03])


@pytest.mark.parametrize("wrap", ["tokenizers", "transformers", "processor"])
def test_length_falls_back_to_the_given_tokenizer(wrap):
    from transformers import PreTrainedTokenizerFast

    tokenizer = word_tokenizer()
    if wrap != "tokenizers":
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    if wrap == "processor":
        tokenizer = FakeProcessor(tokenizer)
    reward = LengthReward(tokenizer=tokenizer)
    completions = ["<think> one two </think> <answer> left </answer>", conv("left"), conv(None)]
    assert reward(completions) == pytest.approx([0.007, 0.001, 0.0])
    # TRL's ids win when present; a missing entry falls back to the tokenizer.
    assert reward(completions, completion_ids=[[1, 2], None, [3]]) == pytest.approx([0.002, 0.001, 0.001])


def test_length_without_ids_or_tokenizer_cannot_judge():
    assert length_reward(["some text", conv("x")]) == [None, None]


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "0.001", None, True])
def test_length_rejects_bad_scales(scale):
    with pytest.raises(ValueError, match="scale"):
        LengthReward(scale=scale)


# ------------------------------------------------------------------------------------------------------ reflection

REFLECTION_CASES = [
    ("<think>The chair is left. Wait, the image is mirrored.</think><answer>right</answer>", 1.0),
    ("WAIT. Let me re-check.", 1.0),
    ("hmm", 1.0),
    ("Hmmm, not sure.", 1.0),
    ("Let me\nverify the depth.", 1.0),
    ("I should double-check the distance.", 1.0),
    ("On second thought, it is closer.", 1.0),
    ("However, the table is in front.", 1.0),  # counted even when it is not a correction (documented limit)
    ("<think>The chair is left of the table.</think><answer>left</answer>", 0.0),
    ("I await the results while waiting.", 0.0),  # whole words only
    ("A mistaken identity.", 0.0),
    ("", 0.0),
    (None, 0.0),
]


@pytest.mark.parametrize("completion, expected", REFLECTION_CASES)
def test_reflection_reward_table(completion, expected):
    assert reflection_reward([completion]) == [expected]
    assert reflection_reward(completions=[conv(completion)], prompts=[BASE_CONV], solution=["x"]) == [expected]


@pytest.mark.parametrize("phrase", REFLECTION_PHRASES)
def test_every_reflection_phrase_is_detected(phrase):
    assert reflection_reward([f"So the chair is left. {phrase.upper()}, the table.", f"x{phrase}x"]) == [1.0, 0.0]


def test_reflection_mean_is_the_fraction_of_reflective_completions():
    rewards = reflection_reward(["Wait, no.", "left", "Actually right.", "right"])
    assert sum(rewards) / len(rewards) == 0.5


# -------------------------------------------------------------------------------------------------------- registry


def test_registry_names_and_default_weights():
    assert REWARD_NAMES == ("accuracy", "format", "length", "reflection")
    assert dict(DEFAULT_WEIGHTS) == {"accuracy": 1.0, "format": 1.0, "length": 1.0, "reflection": 0.0}


def test_get_reward_funcs_builds_only_the_requested_rewards_in_order():
    funcs, weights = get_reward_funcs(["format", "accuracy"])
    assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward"]
    assert weights == [1.0, 1.0]
    funcs, weights = get_reward_funcs("reflection")
    assert [f.__name__ for f in funcs] == ["reflection_reward"] and weights == [0.0]


def test_get_reward_funcs_all_names_have_stable_log_names():
    funcs, weights = get_reward_funcs(list(REWARD_NAMES))
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "format_reward", "length_reward", "reflection_reward"]
    assert weights == [1.0, 1.0, 1.0, 0.0]


def test_get_reward_funcs_weights_override_defaults():
    _, weights = get_reward_funcs(["accuracy", "format", "reflection"], weights=[2, 0.5, 0.1])
    assert weights == [2.0, 0.5, 0.1] and all(isinstance(w, float) for w in weights)


def test_get_reward_funcs_weight_count_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"2 reward names.*3 weights"):
        get_reward_funcs(["accuracy", "format"], weights=[1.0, 1.0, 1.0])


def test_unknown_reward_name_lists_every_valid_name():
    with pytest.raises(ValueError) as info:
        get_reward_funcs(["accuracy", "acuracy"])
    assert not isinstance(info.value, KeyError)
    assert "'acuracy'" in str(info.value)
    for name in REWARD_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"names": ["accuracy"], "length_sclae": 0.1}, "length_sclae"),
        ({"names": []}, "no reward names"),
        ({"names": ["format", "format"]}, "more than once"),
        ({"names": ["accuracy"], "accuracy_mode": "strict"}, "accuracy mode"),
        ({"names": ["length"], "length_scale": "big"}, "length scale"),
        ({"names": ["accuracy"], "weights": ["heavy"]}, "weights must be numbers"),
    ],
)
def test_get_reward_funcs_rejects_bad_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_reward_funcs(**kwargs)


def test_get_reward_funcs_passes_parameters():
    tokenizer = word_tokenizer()
    (accuracy, length), _ = get_reward_funcs(
        ["accuracy", "length"],
        accuracy_mode="lenient",
        accuracy_requires_format=True,
        length_scale=0.5,
        tokenizer=tokenizer,
    )
    assert (accuracy.mode, accuracy.require_format) == ("lenient", True)
    assert accuracy(["<think>x</think><answer>Left</answer>", "Left"], solution=["left"] * 2) == [1.0, 0.0]
    assert length(["left left"]) == [1.0]
    assert length.tokenizer is tokenizer


# -------------------------------------------------------------------------------------------------------- pickling

PICKLE_BATCH = {
    "prompts": [BASE_CONV, INSTRUCT_CONV, BASE_TEXT, None],
    "completions": [
        conv("left.</think><answer>left</answer>"),
        conv("<think>Wait, mirrored.</think><answer>(B)</answer>"),
        "It is 0.5 away</think><answer> 0.5 </answer>",
        conv(None),
    ],
    "completion_ids": [[1, 2, 3], [4], [5, 6], []],
    "solution": ["left", "B", "$\\frac{1}{2}$", "left"],
    "options": [["left", "right"], ["right", "left"], ["0.5", "1"], ["left", "right"]],
}


def all_reward_variants() -> list:
    variants = [format_reward, accuracy_reward, length_reward, reflection_reward]
    variants += get_reward_funcs(list(REWARD_NAMES), tokenizer=word_tokenizer())[0]
    variants += get_reward_funcs(["accuracy"], accuracy_mode="lenient", accuracy_requires_format=True)[0]
    variants.append(LengthReward(scale=0.01, tokenizer=word_tokenizer()))
    return variants


def reward_id(reward) -> str:
    return repr(reward) if isinstance(reward, (AccuracyReward, LengthReward)) else reward.__name__


@pytest.mark.parametrize("reward", all_reward_variants(), ids=reward_id)
def test_every_reward_pickles_with_the_same_scores(reward):
    restored = pickle.loads(pickle.dumps(reward))
    assert restored.__name__ == reward.__name__
    expected = reward(**PICKLE_BATCH)
    assert restored(**PICKLE_BATCH) == expected
    assert len(expected) == 4 and all(r is None or isinstance(r, float) for r in expected)
