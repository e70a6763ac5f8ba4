"""The one definition of the records that `data_prep` writes and the recipes read.

A record is experiment-neutral: the user turn holds the image part(s) and the question with its options, the
assistant turn holds the bare correct answer. Prompt templates of particular experiments (base-model, instruct,
SFT) are applied by the recipes (`recipes.prompts`), never here.

Columns
-------
``id``            stable source row id, ``"<source>:<split>:<row index>"`` (e.g. ``"array/SAT:train:42"``)
``messages``      ``[{"role": "user", "content": [{"type": "image", "text": None}, ..., {"type": "text", "text": Q}]},
                  {"role": "assistant", "content": [{"type": "text", "text": answer}]}]``
``images``        list of `datasets.Image` values holding the source's encoded bytes (never re-encoded)
``solution``      the correct answer, one of ``options``
``options``       the candidate answers, in the (seeded, shuffled) order shown in the question
``question``      the source question, before options were appended
``question_type`` the source's question type
"""

from __future__ import annotations

from datasets import Features, Image, List, Value

CONTENT_PART = {"type": Value("string"), "text": Value("string")}
MESSAGE = {"role": Value("string"), "content": List(CONTENT_PART)}

RECORD_FEATURES = Features(
    {
        "id": Value("string"),
        "messages": List(MESSAGE),
        "images": List(Image()),
        "solution": Value("string"),
        "options": List(Value("string")),
        "question": Value("string"),
        "question_type": Value("string"),
    }
)

SAT_USER_TEXT = "Answer in natural language. {question} Choose between the following options: {options}"


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
    """The user turn's text for a SAT question with its (already ordered) options."""
    return SAT_USER_TEXT.format(question=question.strip(), options=format_options(options))


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
