"""Every prompt template of the project, in one place: training (GRPO, SFT) and CV-Bench evaluation.

A template turns a *source text* into a conversational prompt for TRL, plus the chat template it must be rendered
with. The source text is what the paper's code started from: for SAT, the user text its conversion wrote (a record's
user text, ``"<image> Answer in natural language. {question} Choose between the following options: …"``, see
`data_prep.schema.user_text`); for CV-Bench, the row's ``prompt`` column. Every image part comes first, then the text
(also for two-image rows, which the paper skipped), in training and evaluation alike.

The paper's templates (`TEMPLATES` for training, `EVAL_TEMPLATES` for CV-Bench) reproduce its text byte for byte,
accidents included (tests/test_prompt_oracle.py renders the paper's own construction through the checkpoints' own
chat templates and compares):

* ``base`` — GRPO on the base model. The paper removed the literal ``<image>`` from the SAT text (which then starts
  with a space, hence *two* spaces after ``User:``), built its role-free prompt around it and prepended a literal
  ``<image>``: the model sees ``<|vision_start|><|image_pad|><|vision_end|><image>A conversation …\\nUser:  Answer in
  natural language. … \\nAssistant: Let me solve this step by step.\\n<think>``. The completion starts inside the think
  block. Rendered with `PLAIN_CHAT_TEMPLATE` (no role markers), as the base checkpoint's own template renders it.
* ``instruct`` — GRPO on the instruct model: the SAT text, ``<image> `` prefix included, then two spaces and the
  think/answer instruction, in the model's own chat template.
* ``sft`` — the SFT baseline's user turn: the SAT text as it is (the target is the bare answer).

For CV-Bench (`EVAL_TEMPLATES`), the paper's two evaluation scripts: ``base`` (``<image>`` + the same role-free
prompt around the row's prompt, which has no leading space), ``base_no_reasoning`` (asks for the answer directly),
``instruct`` (the row's prompt, a newline and an instruction that is *not* the training one: no "(option)"),
``instruct_no_reasoning`` (the bare row prompt).

Named differences from the paper (not used by any paper config): the ``*_clean`` templates drop the accidental
literal ``<image>`` text and the stray space it leaves; ``base_short`` is ``base_clean`` without the ~70-token
preamble, for the mini R1-Zero experiment's tiny models (`recipes/mini/MINI_R1.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

from data_prep.fixtures.chat_templates import PLAIN_CHAT_TEMPLATE, QWEN2VL_CHAT_TEMPLATE, QWEN3VL_CHAT_TEMPLATE
from data_prep.schema import IMAGE_PLACEHOLDER

_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question about the image, and the Assistant solves it."
)
_THINK_FIRST = (
    " The assistant first thinks about the reasoning process in the mind and then provides the user with the answer."
)
# One space between the question and the newline, as in the paper.
BASE_PROMPT = _SYSTEM + _THINK_FIRST + "\nUser: {question} \nAssistant: Let me solve this step by step.\n<think>"
BASE_NO_REASONING_PROMPT = _SYSTEM + "\nUser: {question} \nAssistant: "
BASE_SHORT_PROMPT = "User: {question} \nAssistant: <think>"
# Two spaces after the question, as in the paper's GRPO script.
INSTRUCT_PROMPT = (
    "{question}  Output the thinking process in <think> </think> and final answer (option) in <answer> </answer> tags."
)
# The paper's CV-Bench script for instruct models: a newline, and no "(option)".
CVBENCH_INSTRUCT_PROMPT = (
    "{question}\nOutput the thinking process in <think> </think> and final answer in <answer> </answer> tags."
)
BARE_PROMPT = "{question}"

CHAT_TEMPLATES = {"plain": PLAIN_CHAT_TEMPLATE, "qwen2vl": QWEN2VL_CHAT_TEMPLATE, "qwen3vl": QWEN3VL_CHAT_TEMPLATE}

# How a source text becomes a template's {question}.
AS_IS = "as_is"  # unchanged (the instruct and SFT prompts keep the SAT text's "<image> " prefix)
PLACEHOLDER_REMOVED = "placeholder_removed"  # the paper's base prompt: `text.replace("<image>", "")`, spaces kept
CLEAN = "clean"  # the placeholder and the white space around the text removed


def question_of(source_text: str, mode: str) -> str:
    """The template's ``{question}`` for ``source_text``.

    Example:
        >>> question_of("<image> Is it red?", PLACEHOLDER_REMOVED), question_of("<image> Is it red?", CLEAN)
        (' Is it red?', 'Is it red?')
    """
    if mode == AS_IS:
        return source_text
    if mode == PLACEHOLDER_REMOVED:
        return source_text.replace(IMAGE_PLACEHOLDER, "")
    if mode == CLEAN:
        return source_text.replace(IMAGE_PLACEHOLDER, "").strip()
    raise ValueError(f"unknown question mode {mode!r}")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    # None: the model's own chat template (an instruct model's); otherwise a key of CHAT_TEMPLATES.
    chat_template: str | None
    question: str = AS_IS  # how the source text becomes {question} (see `question_of`)
    prefix: str = ""  # literal text before the template (the paper's base prompts: "<image>")

    def text_for(self, source_text: str) -> str:
        """The prompt's text part for ``source_text``.

        Example:
            >>> TEMPLATES["instruct"].text_for("<image> Is it red?")[:22]
            '<image> Is it red?  Ou'
        """
        return self.prefix + self.text.format(question=question_of(source_text, self.question))

    def messages(self, source_text: str, num_images: int = 1) -> list[dict]:
        """The conversational prompt: one user turn, every image part first, then the text.

        Example:
            >>> TEMPLATES["instruct"].messages("How many?", num_images=1)[0]["content"][0]
            {'type': 'image'}
        """
        content: list[dict] = [{"type": "image"} for _ in range(num_images)]
        content.append({"type": "text", "text": self.text_for(source_text)})
        return [{"role": "user", "content": content}]


# Training prompts, over a record's user text (the paper's SAT conversion text).
TEMPLATES = {
    "base": PromptTemplate("base", BASE_PROMPT, "plain", PLACEHOLDER_REMOVED, prefix=IMAGE_PLACEHOLDER),
    "instruct": PromptTemplate("instruct", INSTRUCT_PROMPT, None),
    "sft": PromptTemplate("sft", BARE_PROMPT, None),
    "base_clean": PromptTemplate("base_clean", BASE_PROMPT, "plain", CLEAN),
    "instruct_clean": PromptTemplate("instruct_clean", INSTRUCT_PROMPT, None, CLEAN),
    "sft_clean": PromptTemplate("sft_clean", BARE_PROMPT, None, CLEAN),
    "base_short": PromptTemplate("base_short", BASE_SHORT_PROMPT, "plain", CLEAN),
}

# CV-Bench prompts, over a row's ``prompt`` column (the paper's two evaluation scripts).
EVAL_TEMPLATES = {
    "base": PromptTemplate("base", BASE_PROMPT, "plain", PLACEHOLDER_REMOVED, prefix=IMAGE_PLACEHOLDER),
    "base_no_reasoning": PromptTemplate(
        "base_no_reasoning", BASE_NO_REASONING_PROMPT, "plain", PLACEHOLDER_REMOVED, prefix=IMAGE_PLACEHOLDER
    ),
    "instruct": PromptTemplate("instruct", CVBENCH_INSTRUCT_PROMPT, None),
    "instruct_no_reasoning": PromptTemplate("instruct_no_reasoning", BARE_PROMPT, None),
    "base_clean": PromptTemplate("base_clean", BASE_PROMPT, "plain", CLEAN),
    "base_short": PromptTemplate("base_short", BASE_SHORT_PROMPT, "plain", CLEAN),
}


def get_template(name: str, evaluation: bool = False) -> PromptTemplate:
    """A training template (`TEMPLATES`), or with ``evaluation=True`` a CV-Bench one (`EVAL_TEMPLATES`)."""
    table, kind = (EVAL_TEMPLATES, "evaluation") if evaluation else (TEMPLATES, "training")
    if name not in table:
        raise ValueError(f"unknown {kind} prompt template {name!r}: choose one of {', '.join(table)}")
    return table[name]


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
    """The exact text the model sees for a prompt (special tokens included), before image-token expansion.

    The same call TRL's trainers make: the processor's chat template with the generation prompt added.
    """
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
