"""The oracle: the paper's own prompt construction, re-expressed here, against what our recipes and evaluation render.

Each ``paper_*`` function below restates one step of the paper's code (turningpoint-ai/VisualThinker-R1-Zero):
its SAT conversion (``src/data/SAT/process_dataset.py``), its GRPO prompts (``src/open-r1-multimodal/src/open_r1/
grpo.py``, ``make_conversation_sat``), its SFT messages (``sft.py``) and its CV-Bench prompts
(``src/eval/evaluate_Qwen2_VL_CVBench-base.py`` and ``evaluate_Qwen2_VL_CVBench.py``). Their output is rendered through
the checkpoints' own chat templates (tests/fixtures/qwen2vl_chat_templates.py) and compared byte for byte with what
our code renders for the same records: the text ``--dry_run`` prints, the text TRL's trainer tokenizes, the tokens
TRL's SFT collator builds and the prompts the CV-Bench evaluation writes to ``predictions.jsonl``. One character of
drift fails.
"""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk
from fixtures.qwen2vl_chat_templates import BASE_CHECKPOINT_TEMPLATE, INSTRUCT_CHECKPOINT_TEMPLATE
from transformers import AutoProcessor
from trl.data_utils import prepare_multimodal_messages
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from recipes import grpo_base, sft_baseline
from recipes.shared.cli import CONFIG_DIR, run_cli
from recipes.shared.prepare import prepare
from recipes.shared.prompts import EVAL_TEMPLATES, get_template, render

# --- the paper's construction, restated ------------------------------------------------------------------------

PAPER_BASE = (
    "A conversation between User and Assistant. The user asks a question about the image, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer.\nUser: {question} \nAssistant: Let me solve this step by step.\n<think>"
)
PAPER_BASE_NO_REASONING = (
    "A conversation between User and Assistant. The user asks a question about the image, and the Assistant solves "
    "it.\nUser: {question} \nAssistant: "
)
PAPER_QUESTION_TEMPLATE = (
    "{Question}  Output the thinking process in <think> </think> and final answer (option) in <answer> </answer> tags."
)
PAPER_CVBENCH_INSTRUCTION = (
    "\nOutput the thinking process in <think> </think> and final answer in <answer> </answer> tags."
)


def paper_user_text(question: str, options: list[str]) -> str:
    """process_dataset.py: the options (already shuffled) joined "a, b or c", the literal "<image>" in front."""
    answer = ", ".join(options[:-1]) + " or " + options[-1]
    prompt = f"{question} Choose between the following options: {answer}"
    return f"<image> Answer in natural language. {prompt}"


def paper_grpo_base(user_text: str) -> list[dict]:
    """grpo.py, base_model_prompt=True: a list of content parts, rendered by the base checkpoint's template."""
    question = user_text.replace("<image>", "")
    return [{"type": "image"}, {"type": "text", "text": "<image>" + PAPER_BASE.format(question=question)}]


def paper_grpo_instruct(user_text: str) -> list[dict]:
    content = [{"type": "image"}, {"type": "text", "text": PAPER_QUESTION_TEMPLATE.format(Question=user_text)}]
    return [{"role": "user", "content": content}]


def paper_sft(user_text: str, answer: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": user_text}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def paper_cvbench(prompt_name: str, row_prompt: str):
    """The two evaluation scripts: (messages, template) for one CV-Bench row."""
    if prompt_name in ("base", "base_no_reasoning"):
        text = (PAPER_BASE if prompt_name == "base" else PAPER_BASE_NO_REASONING).format(question=row_prompt)
        return [
            {"type": "image", "image": "x.png"},
            {"type": "text", "text": "<image>" + text},
        ], BASE_CHECKPOINT_TEMPLATE
    text = row_prompt + PAPER_CVBENCH_INSTRUCTION if prompt_name == "instruct" else row_prompt
    messages = [{"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": text}]}]
    return messages, INSTRUCT_CHECKPOINT_TEMPLATE


def paper_render(processor, conversation, template: str, generation_prompt: bool = True) -> str:
    return processor.tokenizer.apply_chat_template(
        conversation, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )


# --- what our code renders ------------------------------------------------------------------------------------------


def parse_tiny(module, config: str, model_dir, data_dir, out_dir, *extra: str):
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none", *extra]
    return module.make_parser().parse_args_and_config(argv)


def dry_run_prompts(module, config, model_dir, data_dir, out_dir, capsys, n: int) -> list[str]:
    """What `--dry_run true` prints: the rendered prompts, one block each."""
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model_dir)]
    argv += ["--dataset_path", str(data_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--dry_run", "true", "--dry_run_samples", str(n)]
    capsys.readouterr()
    run_cli(module.main, module.make_parser(), argv, None)
    blocks = capsys.readouterr().out.split("----- rendered prompt ")[1:]
    return [block.split(" -----\n", 1)[1].removesuffix("\n") for block in blocks]


def trl_rendered(processor, prompt: list[dict], images: list) -> str:
    """The text GRPOTrainer tokenizes for a prompt: its multimodal preparation, then the processor's chat template."""
    prepared = prepare_multimodal_messages(prompt, images=images)
    return processor.apply_chat_template(conversation=[prepared], add_generation_prompt=True, tokenize=False)[0]


@pytest.mark.parametrize(
    ("config", "model", "paper"),
    [
        ("tiny/grpo_base.yaml", "tiny_base_dir", "base"),
        ("tiny/grpo_instruct.yaml", "tiny_instruct_dir", "instruct"),
    ],
)
def test_grpo_prompts_are_the_papers_byte_for_byte(config, model, paper, request, sat_records_dir, tmp_path, capsys):
    model_dir = request.getfixturevalue(model)
    n = 4
    printed = dry_run_prompts(grpo_base, config, model_dir, sat_records_dir, tmp_path / "dry", capsys, n)
    _, processor, dataset = prepare(*parse_tiny(grpo_base, config, model_dir, sat_records_dir, tmp_path / "run"))
    records = load_from_disk(str(sat_records_dir))
    assert len(printed) == n
    for i in range(n):
        record = records[i]
        user_text = paper_user_text(record["question"], record["options"])
        if paper == "base":
            expected = paper_render(processor, paper_grpo_base(user_text), BASE_CHECKPOINT_TEMPLATE)
            assert "User:  Answer in natural language." in expected and expected.count("<image>") == 1
        else:
            expected = paper_render(processor, paper_grpo_instruct(user_text), INSTRUCT_CHECKPOINT_TEMPLATE)
            assert "<|vision_end|><image> Answer in natural language." in expected
        assert printed[i] == expected
        assert render(processor, dataset[i]["prompt"]) == expected
        assert trl_rendered(processor, dataset[i]["prompt"], dataset[i]["images"]) == expected


def test_sft_sequence_is_the_papers_token_for_token(tiny_base_dir, sat_records_dir, tmp_path, capsys):
    """The whole sequence TRL's vision collator builds equals the paper's rendered conversation, tokenized."""
    config = "tiny/sft_baseline.yaml"
    printed = dry_run_prompts(sft_baseline, config, tiny_base_dir, sat_records_dir, tmp_path / "dry", capsys, 2)
    parsed = parse_tiny(sft_baseline, config, tiny_base_dir, sat_records_dir, tmp_path / "run")
    _, processor, dataset = prepare(*parsed, with_completion=True)
    collator = DataCollatorForVisionLanguageModeling(processor)
    records = load_from_disk(str(sat_records_dir))
    for i in range(2):
        record = records[i]
        messages = paper_sft(paper_user_text(record["question"], record["options"]), record["solution"])
        paper_text = paper_render(processor, messages, INSTRUCT_CHECKPOINT_TEMPLATE, generation_prompt=False)
        assert paper_text.endswith(record["solution"] + "<|im_end|>\n")
        assert printed[i] == paper_render(processor, messages[:1], INSTRUCT_CHECKPOINT_TEMPLATE)
        image = dataset[i]["images"][0]
        paper_ids = processor(text=[paper_text], images=[image], return_tensors="pt")["input_ids"][0].tolist()
        batch = collator([dataset[i]])
        ours = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
        assert processor.tokenizer.decode(ours) == processor.tokenizer.decode(paper_ids)
        assert ours == paper_ids


@pytest.mark.parametrize("prompt_name", ["base", "base_no_reasoning", "instruct", "instruct_no_reasoning"])
def test_cvbench_prompts_are_the_papers_byte_for_byte(prompt_name, tiny_base_dir, tiny_instruct_dir, cvbench_parquet):
    from datasets import load_dataset

    rows = load_dataset("parquet", data_files=str(cvbench_parquet), split="train")
    model_dir = tiny_base_dir if prompt_name.startswith("base") else tiny_instruct_dir
    template = get_template(prompt_name, evaluation=True)
    processor = AutoProcessor.from_pretrained(model_dir)
    from recipes.shared.prompts import set_chat_template

    set_chat_template(processor, template)
    for row_prompt in rows["prompt"][:4]:
        messages, checkpoint_template = paper_cvbench(prompt_name, row_prompt)
        expected = paper_render(processor, messages, checkpoint_template)
        assert render(processor, template.messages(row_prompt)) == expected
    if prompt_name == "instruct":
        assert "(option)" not in expected and "<image>" not in expected


def test_the_training_and_evaluation_instruct_prompts_differ_as_in_the_paper():
    question = "How many cars? (A) 1 (B) 2"
    train = get_template("instruct").text_for(question)
    evaluation = EVAL_TEMPLATES["instruct"].text_for(question)
    assert (
        train == question + "  Output the thinking process in <think> </think> and final answer (option) in "
        "<answer> </answer> tags."
    )
    assert evaluation == question + PAPER_CVBENCH_INSTRUCTION


def test_clean_templates_drop_only_the_accidental_image_text(tiny_base_dir):
    processor = AutoProcessor.from_pretrained(tiny_base_dir)
    user_text = paper_user_text("Is the car left of the tree?", ["yes", "no"])
    paper = render_with(processor, "base", user_text)
    clean = render_with(processor, "base_clean", user_text)
    assert paper.replace("<image>", "", 1).replace("User:  ", "User: ") == clean
    assert "<image>" not in clean and "User: Answer in natural language." in clean


def render_with(processor, name: str, source_text: str, num_images: int = 1) -> str:
    from recipes.shared.prompts import set_chat_template

    template = get_template(name)
    set_chat_template(processor, template)
    return render(processor, template.messages(source_text, num_images))


@pytest.mark.parametrize("name", ["base", "instruct", "sft", "base_clean", "base_short"])
def test_two_image_rows_put_every_image_part_first(name, tiny_instruct_dir):
    processor = AutoProcessor.from_pretrained(tiny_instruct_dir)
    text = render_with(processor, name, paper_user_text("Did the camera move left?", ["yes", "no"]), num_images=2)
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    head = text.split(vision * 2, 1)
    assert len(head) == 2 and vision not in head[1]
    assert json.dumps(head[0]).count("Answer") == 0  # no text before the images
