"""The one definition of the records that `data_prep` writes and the recipes read.

A record is experiment-neutral: the user turn holds the image part(s) and the question with its options, the
assistant turn holds the bare correct answer. Prompt templates of particular experiments (base-model, instruct,
SFT) are applied by the recipes (`recipes.shared.prompts`), never here.

Columns
-------
``id``            stable source row id, ``"<source>:<split>:<row index>"`` (e.g. ``"array/SAT:train:42"``)
``messages``      ``[{"role": "user", "content": [{"type": "image", "text": None}, ..., {"type": "text", "text": U}]},
                  {"role": "assistant", "content": [{"type": "text", "text": answer}]}]``
``images``        list of `datasets.Image` values: the source's encoded bytes, or a lossless PNG resized to the
                  training bounds (`data_prep.images`) when the source image is outside them
``solution``      the correct answer, one of ``options``
``options``       the candidate answers, in the (seeded, shuffled) order shown in the question
``question``      the source question, before options were appended

``U`` is the user text exactly as the paper's SAT conversion wrote it (`user_text`): ``"<image> Answer in natural
language. {question} Choose between the following options: {a}, {b} or {c}"``.
``question_type`` the source's question type
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Features

# The special tokens of the Qwen-VL tokenizers (the same fourteen in Qwen2-VL, Qwen2.5-VL and Qwen3-VL), in
# Qwen2-VL's order. Text holding one is tokenized as that control token, not as text: a question with
# ``<|image_pad|>`` adds an image slot with no image (training fails hours later on "Image features and image tokens
# do not match"), one with ``<|im_end|>`` ends the turn early. Data prep and the evaluation refuse such text.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def record_features() -> Features:
    """The `datasets` features of a record (what `data_prep.sat` writes and the recipes load)."""
    # Imported here, not at the top: `datasets` (with pandas and pyarrow, about a second) is not needed by the
    # modules that read only the special tokens or the prompt text (the tiny model builder, prompts, rewards).
    from datasets import Features, Image, List, Value

    content_part = {"type": Value("string"), "text": Value("string")}
    message = {"role": Value("string"), "content": List(content_part)}
    return Features(
        {
            "id": Value("string"),
            "messages": List(message),
            "images": List(Image()),
            "solution": Value("string"),
            "options": List(Value("string")),
            "question": Value("string"),
            "question_type": Value("string"),
        }
    )


def __getattr__(name: str) -> Any:
    """``RECORD_FEATURES``, built on first use (see `record_features`)."""
    if name == "RECORD_FEATURES":
        return record_features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The literal text the paper's SAT conversion put before every question (it stood for the image in LLaVA-style data;
# Qwen2-VL reads it as plain text). Records keep it, as the paper's conversion wrote it; `recipes.shared.prompts`
# decides what each prompt does with it (the paper's templates keep it, the "_clean" ones drop it).
IMAGE_PLACEHOLDER = "<image>"
SAT_USER_TEXT = (
    IMAGE_PLACEHOLDER + " Answer in natural language. {question} Choose between the following options: {options}"
)


def format_options(options: list[str]) -> str:
    """Join options the way the paper did: ``"a, b or c"``.

    Example:
        >>> format_options(["left", "right"])
        'left or right'
        >>> format_options(["1", "2", "3"])
        '1, 2 or 3'
        >>> format_options(["yes"])
        'yes'
    """
    if len(options) <= 1:
        return "".join(options)
    return ", ".join(options[:-1]) + " or " + options[-1]


def user_text(question: str, options: list[str]) -> str:
    """The user turn's text for a SAT question with its (already ordered) options, as the paper's conversion wrote it.

    Example:
        >>> user_text("Is it red?", ["yes", "no"])
        '<image> Answer in natural language. Is it red? Choose between the following options: yes or no'
    """
    return SAT_USER_TEXT.format(question=question, options=format_options(options))


def make_record(
    record_id: str, question: str, options: list[str], solution: str, question_type: str, images: list
) -> dict:
    """Build one record; ``images`` are `datasets.Image`-encodable values (``{"bytes": ..., "path": None}``)."""
    content = [{"type": "image", "text": None} for _ in images]
    content.append({"type": "text", "text": user_text(question, options)})
    return {
        "id": record_id,
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": solution}]},
        ],
        "images": images,
        "solution": solution,
        "options": list(options),
        "question": question,
        "question_type": question_type,
    }


def prompt_text(messages: list[dict]) -> str:
    """The user turn's text part of a record's ``messages`` (what the prompt templates wrap)."""
    user = next(m for m in messages if m["role"] == "user")
    return "".join(part["text"] for part in user["content"] if part["type"] == "text")


def num_images(messages: list[dict]) -> int:
    user = next(m for m in messages if m["role"] == "user")
    return sum(part["type"] == "image" for part in user["content"])


def special_tokens_in(text: str, tokens: Iterable[str] = SPECIAL_TOKENS) -> list[str]:
    """The special tokens (of ``tokens``) that ``text`` contains, in ``tokens``' order.

    Example:
        >>> special_tokens_in("How many <|image_pad|> chairs?<|im_end|>")
        ['<|im_end|>', '<|image_pad|>']
        >>> special_tokens_in("How many chairs? <image>")
        []
    """
    return [token for token in dict.fromkeys(tokens) if token and token in text]
