"""The paper's SFT loss through TRL's own loss (recipes/shared/sft_loss.py): the same values and updates as the loss
written out (`SequenceMeanLoss`, the route through TRL 1.16's deprecated ``compute_loss_func`` it replaces), and the
batch it cannot give refused before the model loads."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForImageTextToText, TrainerCallback
from trl import SFTTrainer

from recipes import sft_baseline
from recipes.shared.cli import CONFIG_DIR
from recipes.shared.errors import RecipeError
from recipes.shared.models import load_model
from recipes.shared.prepare import prepare
from recipes.shared.sft_loss import PaperSFTLoss, SequenceMeanLoss


def parse(tiny_base_dir, sat_records_dir, out_dir, *extra: str):
    argv = ["--config", str(CONFIG_DIR / "tiny/sft_baseline.yaml"), "--model_name_or_path", str(tiny_base_dir)]
    argv += ["--dataset_path", str(sat_records_dir), "--output_dir", str(out_dir), "--report_to", "none"]
    argv += ["--save_strategy", "no", "--disable_tqdm", "true", *extra]
    return sft_baseline.make_parser().parse_args_and_config(argv)


class KeepGradients(TrainerCallback):
    """The accumulated gradients just before the optimizer uses them."""

    def __init__(self, model) -> None:
        self.model, self.gradients = model, {}

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.gradients = {name: p.grad.detach().clone() for name, p in self.model.named_parameters()}


def train_one_step(route: str, tiny_base_dir, sat_records_dir, out_dir) -> tuple[float, dict[str, torch.Tensor]]:
    """One optimizer step (4 sequences of different lengths, accumulated) with the paper's loss by `route`: the
    logged loss and the gradients the optimizer receives."""
    script_args, args, model_args = parse(
        tiny_base_dir, sat_records_dir, out_dir, "--max_steps", "1", "--gradient_accumulation_steps", "4"
    )
    _, processor, dataset = prepare(script_args, args, model_args, with_completion=True)
    paper = PaperSFTLoss(processor, args)
    model = load_model(model_args, script_args, args)
    if route == "trl":
        arguments = paper.trainer_arguments(model)
    elif route == "trl_token_mean":  # the collator alone: TRL's default token mean over the accumulated batch
        arguments = {"data_collator": paper.collator}
    else:  # the loss as this repository computed it before, through the deprecated compute_loss_func
        arguments = {"data_collator": paper.collator, "compute_loss_func": SequenceMeanLoss(4)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # compute_loss_func's deprecation, expected here
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor, **arguments)
    gradients = KeepGradients(model)
    trainer.add_callback(gradients)
    trainer.train()
    (logged,) = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return logged, gradients.gradients


@pytest.mark.slow
def test_trls_own_loss_gives_the_paper_loss_values_and_gradients(tiny_base_dir, sat_records_dir, tmp_path):
    before_loss, before = train_one_step("compute_loss_func", tiny_base_dir, sat_records_dir, tmp_path / "a")
    after_loss, after = train_one_step("trl", tiny_base_dir, sat_records_dir, tmp_path / "b")
    assert after_loss == pytest.approx(before_loss, rel=1e-5)
    assert (
        before.keys()
        == after.keys()
        == dict(AutoModelForImageTextToText.from_pretrained(tiny_base_dir).named_parameters()).keys()
    )
    for name, gradient in after.items():
        assert gradient.abs().sum() > 0, f"{name} gets no gradient"
        # Same loss, summed in another order (TRL's fused LM head): equal up to float32 rounding.
        torch.testing.assert_close(gradient, before[name], rtol=1e-4, atol=1e-7, msg=name)
    # Without the model's accepts_loss_kwargs set, TRL averages over the accumulated batch's tokens: other gradients
    # (a random tiny model's losses are all about log(vocabulary), so the loss values alone barely differ).
    _, token_mean = train_one_step("trl_token_mean", tiny_base_dir, sat_records_dir, tmp_path / "c")
    assert not all(torch.allclose(token_mean[name], before[name], rtol=1e-3, atol=1e-7) for name in before)


def test_more_than_one_sequence_per_micro_batch_is_refused_before_the_model_loads(
    tiny_base_dir, sat_records_dir, tmp_path, monkeypatch
):
    script_args, args, model_args = parse(
        tiny_base_dir, sat_records_dir, tmp_path / "run", "--per_device_train_batch_size", "4"
    )
    monkeypatch.setattr(sft_baseline, "load_model", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(RecipeError, match=r"per_device_train_batch_size: 1 .*or use sft_loss: trl"):
        sft_baseline.main(script_args, args, model_args)
