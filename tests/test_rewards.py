"""Table-driven tests of the rewards: the paper's verdicts and quirks, TRL's call contract, the registry, pickling.

Property-based tests (equivalence with the paper's regexes, robustness on generated inputs) live in
`test_rewards_properties.py`.
"""

from __future__ import annotations

import pickle
import re
import sys
import threading
from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers

from recipes.shared.args import RecipeArguments
from rewards import (
    DEFAULT_WEIGHTS,
    REFLECTION_PHRASES,
    REWARD_NAMES,
    AccuracyReward,
    LengthReward,
    accuracy_reward,
    build_reward,
    format_reward,
    get_reward_funcs,
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
    # (completion, solution, the paper's verdict, why)
    ("<think>The chair is left.</think><answer>left</answer>", "left", 1.0, "exact answer in tags"),
    ("<answer>  left \t</answer>", "left", 1.0, "the tag content is stripped"),
    ("<answer>Left</answer>", "left", 0.0, "exact match is case-sensitive"),
    ("<answer>left.</answer>", "left", 0.0, "punctuation"),
    ("left", "left", 1.0, "no tags: the whole completion is the answer"),
    ("  left\n", "left", 1.0, "whole-completion fallback is stripped"),
    ("The chair is on the left", "left", 0.0, "whole-completion fallback needs an exact match"),
    ("<answer>right</answer> <answer>left</answer>", "left", 0.0, "only the first answer tag counts"),
    ("<answer>\nleft\n</answer>", "left", 0.0, "a tag across lines is no match (no DOTALL): whole text"),
    ("<answer>right\n</answer><answer>left</answer>", "left", 1.0, "first match on one line"),
    ("<think>...</think><answer>(B)</answer>", "B", 1.0, "letter rule: (B) gives B"),
    ("<answer>[C]</answer>", "C", 1.0, "letter rule: [C]"),
    ("I think the answer is B", "B", 1.0, "letter rule on the whole completion"),
    ("A or C", "C", 1.0, "letter rule takes the last letter"),
    ("A B", "B", 0.0, "findall quirk: the shared space hides B, the last letter found is A"),
    ("<answer>B.</answer>", "B", 0.0, "'B.' is no standalone letter"),
    ("<answer>(I)</answer>", "I", 0.0, "letters stop at H"),
    ("<answer>2</answer>", "2", 1.0, "exact number"),
    ("<answer>2.0</answer>", "2", 0.0, "'<answer>2</answer>' has no math-verify parse"),
    ("<answer> 0.5 </answer>", "$\\frac{1}{2}$", 1.0, "math-verify: LaTeX truth, decimal answer"),
    ("So it is 1/2", "$\\frac{1}{2}$", 1.0, "math-verify reads the whole completion"),
    ("It is 2 m away", "about 2 meters", 1.0, "math-verify: truth with a spaced number"),
    ("<answer>3</answer>", "2", 0.0, "wrong number"),
    ("<answer>left</answer>", "<answer>left</answer>", 1.0, "solution in the paper's own tagged format"),
    ("", "left", 0.0, "empty completion"),
    (None, "left", 0.0, "None content"),
]


@pytest.mark.parametrize("completion, solution, paper, why", ACCURACY_CASES, ids=[c[3] for c in ACCURACY_CASES])
def test_accuracy_reward_table(completion, solution, paper, why):
    assert accuracy_reward([completion], solution=[solution]) == [paper]
    assert accuracy_reward([conv(completion)], solution=[solution], prompts=[INSTRUCT_CONV]) == [paper]
    # None of these cases is one where math-verify's argument order matters (see ORDER_CASES).
    assert AccuracyReward(mode="gold_first")([completion], solution=[solution]) == [paper]


ORDER_CASES = [
    # (completion, truth, the paper's order: verify(parse(completion), parse(truth)), the truth first)
    ("The interval is $(-\\infty, 3)$", "$x<3$", 0.0, 1.0),
    ("So $x<3$", "$(-\\infty, 3)$", 1.0, 0.0),
    ("<answer> 0.5 </answer>", "$\\frac{1}{2}$", 1.0, 1.0),
]


@pytest.mark.parametrize("completion, truth, paper, gold_first", ORDER_CASES)
def test_math_verify_argument_order_is_the_papers(completion, truth, paper, gold_first):
    # math-verify is asymmetric between relations and intervals: the paper parsed the completion as `gold`.
    from math_verify import parse, verify

    assert float(verify(parse(completion), parse(f"<answer>{truth}</answer>"))) == paper  # the paper's call
    assert accuracy_reward([completion], solution=[truth]) == [paper]
    assert AccuracyReward(mode="gold_first")([completion], solution=[truth]) == [gold_first]


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


def test_option_letters_are_not_mapped_to_option_texts():
    # The paper compares a letter with the truth only when the truth is a letter: "(B)" never means "left".
    assert accuracy_reward(["<answer>(B)</answer>"], solution=["left"], options=[["right", "left"]]) == [0.0]


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


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_accuracy_reward_rejects_unknown_mode(mode):
    with pytest.raises(ValueError, match="paper.*gold_first"):
        AccuracyReward(mode=mode)


# ---------------------------------------------------------------------------------------------------------- length


def word_tokenizer():
    """A whitespace word-level `transformers` tokenizer built on the spot (no download): one token per word."""
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<think>": 1, "</think>": 2, "<answer>": 3, "</answer>": 4, "left": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")


class Holder:
    """Holds a tokenizer as its ``tokenizer`` attribute, as a `transformers` processor does."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def test_length_counts_the_retokenized_text_without_eos(tiny_base_dir):
    # The paper: len(processor.tokenizer(decoded completion)["input_ids"]) * 0.001. TRL's ids of a finished
    # completion end with EOS, which decoding drops: it must not be counted.
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_base_dir)
    tokenizer = processor.tokenizer
    texts = ["The chair is left.</think>\n<answer>left</answer>", "It is right", ""]
    ids = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in texts]  # as TRL passes them
    expected = [0.001 * len(tokenizer(text)["input_ids"]) for text in texts]
    for reward in (LengthReward(processor), get_reward_funcs("length", tokenizer=tokenizer)[0][0]):
        rewards = reward([conv(text) for text in texts], completion_ids=ids, trainer_state=None)
        assert rewards == pytest.approx(expected) and expected[0] > 0.005 and rewards[2] == 0.0
        assert all(isinstance(r, float) for r in rewards)


def test_length_scale_and_processor_tokenizers():
    completions = ["<think> one two </think> <answer> left </answer>", conv("left"), conv(None)]
    assert LengthReward(word_tokenizer())(completions) == pytest.approx([0.007, 0.001, 0.0])
    assert LengthReward(Holder(word_tokenizer()), scale=0.01)(completions) == pytest.approx([0.07, 0.01, 0.0])


def test_length_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer=processor.tokenizer"):
        LengthReward(None)
    with pytest.raises(ValueError, match="tokenizer"):
        get_reward_funcs(["accuracy", "length"])


def test_length_scale_is_defined_once():
    # The registry's default is the paper's; every paper and tiny config that uses the length reward (the paper's
    # ablation) sets the same value. The mini experiment's ablations choose their own scale for their short answers.

    from recipes.shared.cli import CONFIG_DIR
    from rewards.length import DEFAULT_LENGTH_SCALE

    assert DEFAULT_LENGTH_SCALE == 0.001
    options = RecipeArguments(reward_funcs=["length"], length_scale=None)
    assert get_reward_funcs(options, tokenizer=word_tokenizer())[0][0].scale == 0.001
    for path in [*CONFIG_DIR.glob("paper/*.yaml"), *CONFIG_DIR.glob("tiny/*.yaml")]:
        config = yaml.safe_load(path.read_text()) or {}
        if "length" in (config.get("reward_funcs") or []):
            assert config.get("length_scale", DEFAULT_LENGTH_SCALE) == DEFAULT_LENGTH_SCALE, path


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "0.001", None, True])
def test_length_rejects_bad_scales(scale):
    with pytest.raises(ValueError, match="scale"):
        LengthReward(word_tokenizer(), scale=scale)


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


def test_the_papers_rewards_are_registered_with_their_weights_and_documented():
    import rewards

    assert {"accuracy": 1.0, "format": 1.0, "length": 1.0, "reflection": 0.0}.items() <= DEFAULT_WEIGHTS.items()
    for name in REWARD_NAMES:  # the package docstring names every registered reward
        assert f"``{name}``" in rewards.__doc__, name


def test_every_registered_reward_builds_from_default_options_with_a_log_name():
    funcs, weights = get_reward_funcs(RecipeArguments(reward_funcs=list(REWARD_NAMES)), tokenizer=word_tokenizer())
    assert [f.__name__ for f in funcs][:4] == [
        "accuracy_reward",
        "format_reward",
        "length_reward",
        "reflection_reward",
    ]
    assert weights == [DEFAULT_WEIGHTS[name] for name in REWARD_NAMES]


class Recording:
    """Parsed options that record which of them a reward builder reads."""

    def __init__(self, options):
        self._options, self.read = options, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._options, name)


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_every_parameter_a_builder_reads_is_a_recipe_option(name):
    # A builder reading a misspelt option would silently get the default: every name it reads must be a field that
    # the YAML and the command line can set.
    options = Recording(RecipeArguments(reward_funcs=[name]))
    build_reward(name, options, word_tokenizer())
    assert options.read <= set(RecipeArguments.__dataclass_fields__), options.read


def test_get_reward_funcs_builds_only_the_requested_rewards_in_order():
    funcs, weights = get_reward_funcs(["format", "accuracy"])
    assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward"]
    assert weights == [1.0, 1.0]
    funcs, weights = get_reward_funcs("reflection")
    assert [f.__name__ for f in funcs] == ["reflection_reward"] and weights == [0.0]


def test_get_reward_funcs_weights_override_defaults():
    _, weights = get_reward_funcs(["accuracy", "format", "reflection"], weights=[2, 0.5, 0.1])
    assert weights == [2.0, 0.5, 0.1] and all(isinstance(w, float) for w in weights)


def test_get_reward_funcs_weight_count_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"2 reward names.*3 weights"):
        get_reward_funcs(["accuracy", "format"], weights=[1.0, 1.0, 1.0])


def test_unknown_reward_name_lists_every_valid_name_and_the_dotted_form():
    with pytest.raises(ValueError) as info:
        get_reward_funcs(["accuracy", "acuracy"])
    assert not isinstance(info.value, KeyError)
    assert "'acuracy'" in str(info.value) and "package.module:function" in str(info.value)
    for name in REWARD_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "options, weights, message",
    [
        ([], None, "no reward names"),
        (["format", "format"], None, "more than once"),
        (RecipeArguments(reward_funcs=["accuracy"], accuracy_mode="lenient"), None, "accuracy mode"),
        (RecipeArguments(reward_funcs=["length"], length_scale="big"), None, "length scale"),
        (["accuracy"], ["heavy"], "weights must be numbers"),
        (["format", "rewards.format:format_reward"], None, "rewards/format_reward/mean"),
    ],
)
def test_get_reward_funcs_rejects_bad_requests(options, weights, message):
    with pytest.raises(ValueError, match=message):
        get_reward_funcs(options, weights, tokenizer=word_tokenizer())


def test_get_reward_funcs_reads_each_rewards_parameters_from_the_options():
    tokenizer = word_tokenizer()
    options = RecipeArguments(
        reward_funcs=["accuracy", "length"],
        accuracy_mode="gold_first",
        accuracy_requires_format=True,
        length_scale=0.5,
    )
    (accuracy, length), weights = get_reward_funcs(options, tokenizer=Holder(tokenizer))
    assert (accuracy.mode, accuracy.require_format) == ("gold_first", True) and weights == [1.0, 1.0]
    assert accuracy(["<think>x</think><answer>left</answer>", "left"], solution=["left"] * 2) == [1.0, 0.0]
    assert length(["left left"]) == [1.0]
    assert length.tokenizer is tokenizer


# ---------------------------------------------------------------------------------------------- dotted paths

USER_REWARDS = """
from rewards import completion_text

def says_left(completions, **kwargs):
    return [1.0 if "left" in completion_text(c) else 0.0 for c in completions]

class Scaled:
    __name__ = "scaled_reward"

    def __call__(self, completions, **kwargs):
        return [2.0 for _ in completions]

scaled = Scaled()
nameless = type("Nameless", (), {"__call__": lambda self, completions, **kw: [0.0] * len(completions)})()
"""


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """An importable package of the user's own, ``user_pkg.rewards``, outside the repository."""
    package = tmp_path / "user_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rewards.py").write_text(USER_REWARDS)
    (package / "broken.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_pkg"
    for module in ("user_pkg", "user_pkg.rewards", "user_pkg.broken"):
        sys.modules.pop(module, None)


@pytest.mark.parametrize("spec", ["user_pkg.rewards:says_left", "user_pkg.rewards.says_left"])
def test_a_dotted_path_names_any_importable_reward(user_package, spec):
    funcs, weights = get_reward_funcs(["accuracy", spec])
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "says_left"] and weights == [1.0, 1.0]
    assert funcs[1]([conv("it is left"), "right"]) == [1.0, 0.0]


def test_a_dotted_path_may_name_a_reward_object_with_a_fixed_name(user_package):
    (scaled,), _ = get_reward_funcs(["user_pkg.rewards:scaled"], weights=[0.5])
    assert scaled.__name__ == "scaled_reward" and scaled(["x"]) == [2.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nowhere_pkg.mod:func", "no module 'nowhere_pkg' on the Python path; valid names: accuracy"),
        ("user_pkg.rewards:says_right", "user_pkg.rewards has no 'says_right'; valid names: accuracy"),
        ("user_pkg.broken:func", "importing user_pkg.broken failed: No module named 'not_installed_anywhere'"),
        ("user_pkg.rewards:Scaled", "not a reward function"),
        ("user_pkg.rewards:nameless", "has no __name__"),
        ("user_pkg.rewards", "has no 'rewards'"),
    ],
)
def test_a_dotted_path_that_cannot_be_a_reward_says_why(user_package, spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_reward_funcs(["accuracy", spec])


def test_a_bad_reward_is_refused_at_parse_time_before_anything_loads(tmp_path):
    from recipes import grpo_base
    from recipes.shared.cli import CONFIG_DIR, validate_parsed
    from recipes.shared.errors import RecipeError

    argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tmp_path / "none")]
    argv += ["--dataset_path", str(tmp_path / "none"), "--output_dir", str(tmp_path / "run")]
    for extra, message in [
        (["--reward_funcs", "accuracy", "fromat", "reflection"], "unknown reward name 'fromat'"),
        (["--reward_weights", "1", "1"], "3 reward names"),
    ]:
        parsed = grpo_base.make_parser().parse_args_and_config([*argv, *extra])
        with pytest.raises(RecipeError, match=message):
            validate_parsed(*parsed)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ README, "Add a reward"

README = Path(__file__).resolve().parent.parent / "README.md"


def add_a_reward_section() -> tuple[str, str, str]:
    """(file name, Python code, YAML) of the README's "Add a reward" section, as a reader copies them."""
    text = README.read_text()
    section = text[text.index("### Add a reward") :]
    section = section[: section.index("\n## ")]
    python = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    config = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    filename = python.splitlines()[0].removeprefix("# ").strip()
    return filename, python, config


@pytest.fixture
def readme_reward(tmp_path, monkeypatch):
    filename, python, config = add_a_reward_section()
    (tmp_path / filename).write_text(python)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield yaml.safe_load(config)
    sys.modules.pop(filename.removesuffix(".py"), None)


def test_the_readmes_add_a_reward_section_works_as_written(readme_reward):
    options = RecipeArguments(reward_funcs=readme_reward["reward_funcs"])
    funcs, weights = get_reward_funcs(options, readme_reward["reward_weights"], tokenizer=word_tokenizer())
    assert weights == readme_reward["reward_weights"]
    reward = funcs[-1]
    assert reward.__name__ == "short_reward"
    completions = [conv("<think>short</think><answer>left</answer>"), conv("x" * 401), "left"]
    assert reward(completions=completions, prompts=[BASE_CONV] * 3, solution=["left"] * 3) == [1.0, 0.0, 1.0]
    assert pickle.loads(pickle.dumps(reward))(completions=completions) == [1.0, 0.0, 1.0]


@pytest.mark.slow
def test_the_readmes_reward_trains_and_is_logged(readme_reward, tiny_base_dir, sat_records_dir, tmp_path):
    from recipes import grpo_base
    from recipes.shared.cli import CONFIG_DIR

    config = yaml.safe_load((CONFIG_DIR / "tiny/grpo_base.yaml").read_text())
    config.update(readme_reward)  # the section's two YAML lines, in a shipped config
    path = tmp_path / "my_config.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["--config", str(path), "--model_name_or_path", str(tiny_base_dir), "--dataset_path", str(sat_records_dir)]
    argv += ["--output_dir", str(tmp_path / "run"), "--report_to", "none", "--max_steps", "1"]
    trainer = grpo_base.main(*grpo_base.make_parser().parse_args_and_config(argv))
    entry = trainer.state.log_history[0]
    assert "rewards/short_reward/mean" in entry and "rewards/accuracy_reward/mean" in entry
    assert trainer.args.reward_weights == [1.0, 1.0, 0.0, 0.5]


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
    variants = [format_reward, accuracy_reward, reflection_reward]
    variants += get_reward_funcs(list(REWARD_NAMES), tokenizer=word_tokenizer())[0]
    variants.append(
        build_reward("accuracy", RecipeArguments(accuracy_mode="gold_first", accuracy_requires_format=True))
    )
    variants.append(LengthReward(Holder(word_tokenizer()), scale=0.01))
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
