"""Reading text out of what TRL hands a reward: completions, prompts and per-example dataset columns.

TRL calls a reward as ``f(prompts=..., completions=..., completion_ids=..., trainer_state=..., **dataset_columns)``.
Completions are plain strings or conversational ``[{"role": "assistant", "content": str}]`` lists; prompts are plain
strings or lists of messages whose ``content`` is a string or a list of parts (``{"type": "image"}``,
``{"type": "text", "text": ...}``). Anything else (``None``, a missing key, a part whose text is ``None`` as
`datasets` stores image parts) reads as empty text: these helpers never raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Completion = str | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
Prompt = str | Sequence[Mapping[str, Any]] | None

# The opening tag that ends the paper's base-model prompt: its completions start inside the think block.
THINK_OPEN = "<think>"


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a list of parts joined together.

    Example:
        >>> content_text([{"type": "image", "text": None}, {"type": "text", "text": "Hi"}])
        'Hi'
    """
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        return "".join(content_text(part) for part in content if isinstance(part, Mapping))
    return ""


def _is_message(item: Any) -> bool:
    return isinstance(item, Mapping) and ("role" in item or "content" in item)


def completion_text(completion: Completion) -> str:
    """The text of one completion (plain string, list of messages, or a single message).

    Example:
        >>> completion_text([{"role": "assistant", "content": "<answer>B</answer>"}])
        '<answer>B</answer>'
        >>> completion_text([{"role": "assistant", "content": None}])
        ''
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return content_text(completion.get("content"))
    if isinstance(completion, Sequence) and not isinstance(completion, (bytes, bytearray)):
        return "".join(content_text(m.get("content")) for m in completion if isinstance(m, Mapping))
    return ""


def prompt_text(prompt: Prompt) -> str:
    """The text the model saw last: a string prompt, or the text of the last message of a conversational prompt.

    A bare list of parts (``[{"type": "image"}, {"type": "text", ...}]``, as the paper's own base prompt was built)
    counts as one message.

    Example:
        >>> prompt_text([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q\\n<think>"}]}])
        'Q\\n<think>'
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        return content_text(prompt.get("content")) if _is_message(prompt) else content_text(prompt)
    if isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)) and len(prompt) > 0:
        last = prompt[-1]
        if _is_message(last):
            return content_text(last.get("content"))
        return content_text(prompt)
    return ""


def prompt_opens_think(prompt: Prompt) -> bool:
    """Whether the prompt's text ends (trailing whitespace aside) with an opening ``<think>`` (the base template).

    Example:
        >>> prompt_opens_think("User: Q \\nAssistant: Let me solve this step by step.\\n<think>")
        True
        >>> prompt_opens_think([{"role": "user", "content": "Q  Output ... in <answer> </answer> tags."}])
        False
    """
    return prompt_text(prompt).rstrip().endswith(THINK_OPEN)


def at(values: Any, index: int) -> Any:
    """``values[index]`` for a per-example column, or ``None`` when the column or the entry is missing.

    A plain string is one value for every example (so ``solution="B"`` works when calling a reward by hand).

    Example:
        >>> at(["a", "b"], 1), at(["a"], 3), at(None, 0), at("B", 5)
        ('b', None, None, 'B')
    """
    if values is None:
        return None
    if isinstance(values, str):
        return values
    try:
        return values[index]
    except (IndexError, KeyError, TypeError):
        return None


def as_list(values: Any) -> list:
    """A batch as a list: ``None`` is empty, a lone string is one item, any other iterable is listed.

    Example:
        >>> as_list(None), as_list("x"), as_list(("a", "b"))
        ([], ['x'], ['a', 'b'])
    """
    if values is None:
        return []
    if isinstance(values, (str, Mapping)):
        return [values]
    if isinstance(values, list):
        return values
    try:
        return list(values)
    except TypeError:
        return []
