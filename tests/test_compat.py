"""The upstream bugs `recipes.shared.compat` works around, demonstrated on the installed libraries with real
components.

Each bug test passes only while the bug exists. When an upgrade makes one fail, upstream has fixed it: delete the
workaround from recipes/shared/compat.py together with its tests. When an upgrade leaves the bug in place but moves the
library out of the workaround's version range, `test_each_workaround_covers_the_installed_version` fails: extend the
range (after checking the workaround still holds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForImageTextToText, Trainer, TrainingArguments
from trl import GRPOTrainer
from trl.trainer.utils import strip_images_from_messages

from recipes import grpo_base
from recipes.shared import compat
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT
from recipes.shared.models import load_model
from recipes.shared.prepare import prepare
from rewards import get_reward_funcs

WORKAROUNDS = {
    "QWEN2VL_RESUME": compat.QWEN2VL_RESUME,
    "WANDB_IMAGE_TABLE": compat.WANDB_IMAGE_TABLE,
    "DEEPSPEED_SHM_OP": compat.DEEPSPEED_SHM_OP,
}


@pytest.mark.parametrize("name", WORKAROUNDS)
def test_each_workaround_covers_the_installed_version(name):
    workaround = WORKAROUNDS[name]
    assert workaround.applies(), (
        f"{workaround.package} {workaround.installed()} is outside {name}'s range {workaround.affected}: if its bug "
        "test still passes, the bug is still there: extend the range in recipes/shared/compat.py; otherwise drop it"
    )


# --- transformers: resuming a Qwen2-VL checkpoint restores no weight (huggingface/transformers#43701) ---------------


def _train_one_step(model, out_dir, resume: str | None = None, workaround: bool = False) -> None:
    ids = torch.randint(20, 200, (8, 12), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        save_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    if workaround:
        compat.load_checkpoint_weights(trainer, resume)
    trainer.train(resume_from_checkpoint=resume)


def test_transformers_resume_still_ignores_qwen2vl_checkpoint_weights(tiny_base_dir, tmp_path):
    """Resuming from a step-1 checkpoint with max_steps 1 trains nothing: the model must end with the checkpoint's
    weights. transformers (5.20.2 here) loads them under the wrong names and leaves the initial weights in place."""
    trained = AutoModelForImageTextToText.from_pretrained(tiny_base_dir)
    _train_one_step(trained, tmp_path / "run")
    checkpoint = str(tmp_path / "run" / "checkpoint-1")
    initial = AutoModelForImageTextToText.from_pretrained(tiny_base_dir).state_dict()
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(trained.state_dict()[name], initial[name])

    resumed = AutoModelForImageTextToText.from_pretrained(tiny_base_dir)
    _train_one_step(resumed, tmp_path / "run", resume=checkpoint)
    assert torch.equal(resumed.state_dict()[name], initial[name]), (
        "fixed upstream: drop compat.load_checkpoint_weights"
    )

    # The workaround: the checkpoint's weights, loaded through from_pretrained before the Trainer resumes.
    fixed = AutoModelForImageTextToText.from_pretrained(tiny_base_dir)
    _train_one_step(fixed, tmp_path / "run", resume=checkpoint, workaround=True)
    for key, value in trained.state_dict().items():
        assert torch.equal(fixed.state_dict()[key], value), key


# --- TRL + W&B: the completions table of an image prompt cannot be logged -------------------------------------------

IMAGE_PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the circle?"}]}]


def test_wandb_still_cannot_type_trls_image_prompts():
    wandb = pytest.importorskip("wandb")
    prompts = [strip_images_from_messages(IMAGE_PROMPT)] * 2  # the prompt column GRPOTrainer.log builds
    with pytest.raises(TypeError, match="incompatible types"):
        wandb.Table(dataframe=pd.DataFrame({"prompt": prompts}))
    text = [[compat.WandbImagePromptTable._as_text(turn) for turn in prompt] for prompt in prompts]
    assert text[0] == [{"role": "user", "content": "<image>Where is the circle?"}]
    wandb.Table(dataframe=pd.DataFrame({"prompt": text}))


def _grpo_trainer(tiny_base_dir, sat_records_dir, out_dir) -> GRPOTrainer:
    argv = ["--config", str(CONFIG_DIR / "tiny/grpo_base.yaml"), "--model_name_or_path", str(tiny_base_dir)]
    argv += ["--dataset_path", str(sat_records_dir), "--output_dir", str(out_dir), "--report_to", "wandb"]
    argv += ["--max_steps", "1", "--per_device_train_batch_size", "4", "--num_completions_to_print", "1"]
    script_args, training_args, model_args = grpo_base.make_parser().parse_args_and_config(argv)
    _, processor, dataset = prepare(script_args, training_args, model_args)
    reward_funcs, training_args.reward_weights = get_reward_funcs(
        script_args.reward_funcs, weights=training_args.reward_weights, tokenizer=processor.tokenizer
    )
    return GRPOTrainer(
        model=load_model(model_args, script_args, training_args),
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
    )


@pytest.mark.slow
def test_trl_grpo_still_crashes_logging_image_prompts_to_wandb(tiny_base_dir, sat_records_dir, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for key in ("WANDB_DIR", "WANDB_TAGS", "WANDB_PROJECT", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(key, raising=False)  # restored after the test (the recipes' set-up exports them)
    trainer = _grpo_trainer(tiny_base_dir, sat_records_dir, tmp_path / "plain")
    try:
        with pytest.raises(TypeError, match="incompatible types"):
            trainer.train()
    finally:
        wandb.finish()

    trainer = _grpo_trainer(tiny_base_dir, sat_records_dir, tmp_path / "fixed")
    (fix,) = compat.compat_callbacks(trainer)
    trainer.add_callback(fix)
    try:
        trainer.train()
        tables = sorted(Path(wandb.run.dir).glob("media/table/completions_*.table.json"))  # the run's files
        table = json.loads(tables[-1].read_text())
        prompt = table["data"][0][table["columns"].index("prompt")]
        # The prompt as text (its image part an <image> marker), the image itself in the table's image column.
        assert isinstance(prompt[-1]["content"], str) and prompt[-1]["content"].startswith("<image>")
        assert "image" in table["columns"]
    finally:
        wandb.finish()


# --- DeepSpeed: the CPU shared-memory op is compiled whenever the comm backend starts --------------------------------

PROBE = """
import importlib, inspect, json
import deepspeed.ops
comm = importlib.import_module("deepspeed.comm.torch")
report = {
    "compatible": deepspeed.ops.__compatible_ops__.get("deepspeed_shm_comm"),
    "eager": "build_shm_op()" in inspect.getsource(comm.TorchBackend.__init__),
}
from recipes.shared.compat import skip_deepspeed_shm_op
skip_deepspeed_shm_op()
report["built_after_workaround"] = comm.build_shm_op() is not None
print(json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the op is only built on CPU-only machines")
def test_deepspeed_still_builds_its_shm_op_when_the_comm_backend_starts():
    env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true", "OMP_NUM_THREADS": "1"}
    env.pop("DS_SHM_COMM_OP", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # DeepSpeed deems the op usable here and builds it in TorchBackend.__init__, whatever the job.
    assert report["compatible"] and report["eager"], f"fixed upstream: drop compat.skip_deepspeed_shm_op ({report})"
    assert not report["built_after_workaround"]  # with the workaround nothing is compiled
