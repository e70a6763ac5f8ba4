"""Every prompt template of the project, in one place: training (GRPO, SFT) and CV-Bench evaluation share them.

A template turns the question text of a record (for SAT, the user text written by `data_prep`; for CV-Bench, the
row's ``prompt``) into a conversational prompt for TRL, plus the chat template it must be rendered with:

* ``base`` — the paper's role-free prompt for the base model. The completion starts inside the think block, so the
  rendered text ends with ``<think>``; rendered with `PLAIN_CHAT_TEMPLATE`, which adds no role markers, so the model
  sees exactly ``<|vision_start|><|image_pad|>…<|vision_end|>`` followed by the paper's text.
* ``base_no_reasoning`` — the paper's evaluation variant that asks for the answer directly.
* ``instruct`` — the question plus the paper's think/answer instruction, inside the model's own chat template.
* ``instruct_no_reasoning`` — the bare question inside the model's chat template (the SFT baseline, whose targets
  are bare answers).
* ``base_short`` — ``base`` without the paper's preamble: role-free, ``User: … Assistant:``, ending with
  ``<think>``, so it is scored exactly as ``base`` is. For models so small that the preamble's ~70 tokens would be
  most of the compute (the mini R1-Zero experiment, `recipes/MINI_R1.md`); not a prompt of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_prep.chat_templates import PLAIN_CHAT_TEMPLATE, QWEN2VL_CHAT_TEMPLATE

_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question about the image, and the Assistant solves it."
)
_THINK_FIRST = (
    " The assistant first thinks about the reasoning process in the mind and then provides the user with the answer."
)
# Note the single space between the question and the newline, as in the paper.
BASE_PROMPT = _SYSTEM + _THINK_FIRST + "\nUser: {question} \nAssistant: Let me solve this step by step.\n<think>"
BASE_NO_REASONING_PROMPT = _SYSTEM + "\nUser: {question} \nAssistant: "
BASE_SHORT_PROMPT = "User: {question} \nAssistant: <think>"
# Note the two spaces after the question, as in the paper.
INSTRUCT_PROMPT = (
    "{question}  Output the thinking process in <think> </think> and final answer (option) in <answer> </answer> tags."
)
INSTRUCT_NO_REASONING_PROMPT = "{question}"

CHAT_TEMPLATES = {"plain": PLAIN_CHAT_TEMPLATE, "qwen2vl": QWEN2VL_CHAT_TEMPLATE}


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    # None: the model's own chat template (an instruct model's); otherwise a key of CHAT_TEMPLATES.
    chat_template: str | None

    def messages(self, question: str, num_images: int = 1) -> list[dict]:
        """The conversational prompt: one user turn, image placeholders first, then the rendered text.

        Example:
            >>> TEMPLATES["instruct"].messages("How many?", num_images=1)[0]["content"][0]
            {'type': 'image'}
        """
        content: list[dict] = [{"type": "image"} for _ in range(num_images)]
        content.append({"type": "text", "text": self.text.format(question=question)})
        return [{"role": "user", "content": content}]


TEMPLATES = {
    "base": PromptTemplate("base", BASE_PROMPT, "plain"),
    "base_no_reasoning": PromptTemplate("base_no_reasoning", BASE_NO_REASONING_PROMPT, "plain"),
    "instruct": PromptTemplate("instruct", INSTRUCT_PROMPT, None),
    "instruct_no_reasoning": PromptTemplate("instruct_no_reasoning", INSTRUCT_NO_REASONING_PROMPT, None),
    "base_short": PromptTemplate("base_short", BASE_SHORT_PROMPT, "plain"),
}


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}: choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def set_chat_template(processor, template: PromptTemplate, override: str | None = None) -> None:
    """Put the chat template that ``template`` needs on ``processor`` (and its tokenizer).

    ``override`` (a key of CHAT_TEMPLATES) replaces the model's own template, e.g. the SFT baseline puts the
    Qwen2-VL instruct template on the base weights. An instruct prompt on a model without a chat template is an
    error rather than a silent fallback.
    """
    key = override or template.chat_template
    if key is not None:
        if key not in CHAT_TEMPLATES:
            raise ValueError(f"unknown chat template {key!r}: choose one of {', '.join(CHAT_TEMPLATES)}")
        processor.chat_template = CHAT_TEMPLATES[key]
    elif not getattr(processor, "chat_template", None):
        raise ValueError(
            f"the {template.name!r} prompt needs the model's chat template, but this model has none (a base model?). "
            "Use a base prompt (prompt_template: base) or set chat_template: qwen2vl."
        )
    processor.tokenizer.chat_template = processor.chat_template


def render(processor, messages: list[dict]) -> str:
    """The exact text the model sees for a prompt (special tokens included), before image-token expansion."""
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
