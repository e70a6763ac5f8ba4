"""The weight TRL 1.16 puts on each completion's loss when vLLM generates, under the *_vllm.yaml configs and today.

TRL's vLLM importance-sampling correction compares two log-probabilities of each sampled token: vLLM's, returned with
``logprobs_mode="processed_logprobs"`` (TRL's colocated engine fixes that mode: after temperature and the top-k
filter, renormalised over the kept tokens), and the trainer's, recomputed with the full softmax
(``trl.trainer.utils.selective_log_softmax``, the function GRPOTrainer scores with). TRL has no public function for the
correction itself, so `trl_completion_weight` restates it from ``GRPOTrainer._generate_and_score_completions`` and
``_compute_loss`` (trl 1.16.0, trl/trainer/grpo_trainer.py: "Compute the importance sampling ratio when using vLLM"
and ``per_token_loss * inputs["importance_sampling_ratio"]``). vLLM's processed log-probabilities are computed with
the logits processors `transformers` samples with (``output_scores`` of ``generate``: temperature, then top-k with
the rest set to -inf), which is the distribution vLLM samples from with the same settings.

On a tiny random model (near-uniform next-token distributions, so the top 50 of ~500 tokens hold only ~10% of the
mass) the effect is far larger than on Qwen2-VL, whose tokens are mostly near-certain; its direction is the same.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer
from trl import GRPOConfig
from trl.trainer.utils import selective_log_softmax

from recipes import grpo_base
from recipes.shared.cli import CONFIG_DIR

VLLM_CONFIGS = sorted((CONFIG_DIR / "paper").glob("*_vllm.yaml"))
COMPLETIONS, LENGTH = 8, 24


def trl_completion_weight(args: GRPOConfig, trainer_logps, vllm_logps, mask) -> torch.Tensor:
    """The factor TRL 1.16 multiplies each token's policy loss by: (B, 1) for sequence modes, (B, T) for token ones.

    1.0 wherever the correction is off: TRL then leaves ``per_token_loss`` as it is (the paper's estimator).
    """
    if not (args.use_vllm and args.vllm_importance_sampling_correction):
        return torch.ones(trainer_logps.shape[0], 1)
    diff = torch.nan_to_num((trainer_logps - vllm_logps) * mask, nan=0.0)
    mode = args.vllm_importance_sampling_mode
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
    low, high = args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=low, max=high)
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def sample_both_sides(model_dir, sharpen: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Completions sampled at the paper's settings; (trainer, vLLM) log-probability of every sampled token.

    ``sharpen`` multiplies every logit (through the final norm's scale): a more certain model, as a trained one is.
    """
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.model.language_model.norm.weight.mul_(sharpen)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer(["User: Is the chair left or right of the table? \nAssistant:"], return_tensors="pt")
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            **prompt,
            do_sample=True,
            temperature=1.0,
            top_k=50,
            top_p=1.0,
            max_new_tokens=LENGTH,
            min_new_tokens=LENGTH,  # every completion runs its full length: weights compared at each length
            num_return_sequences=COMPLETIONS,
            output_scores=True,
            return_dict_in_generate=True,
        )
        tokens = out.sequences[:, prompt["input_ids"].shape[1] :]
        # vLLM's processed_logprobs: log-softmax of the processed logits the token was sampled from.
        vllm_logps = torch.stack([score.log_softmax(-1) for score in out.scores], dim=1)
        vllm_logps = vllm_logps.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        # The trainer's: one forward pass over prompt + completion, full softmax, as GRPOTrainer scores.
        logits = model(input_ids=out.sequences).logits[:, prompt["input_ids"].shape[1] - 1 : -1]
        trainer_logps = selective_log_softmax(logits, tokens, temperature=1.0)
    assert tokens.shape == (COMPLETIONS, LENGTH)
    return trainer_logps, vllm_logps


@pytest.fixture(scope="module")
def sampled(tiny_base_dir):
    return sample_both_sides(tiny_base_dir)


@pytest.fixture(scope="module")
def sampled_certain(tiny_base_dir):
    return sample_both_sides(tiny_base_dir, sharpen=10.0)  # the top 50 tokens hold ~94% of the mass, not ~13%


def parse(config, *overrides: str) -> GRPOConfig:
    argv = ["--config", str(config), "--use_cpu", "true", *overrides]
    return grpo_base.make_parser().parse_args_and_config(argv)[1]


def weights_by_length(args: GRPOConfig, trainer_logps, vllm_logps) -> torch.Tensor:
    """(COMPLETIONS, LENGTH): the weight of each completion cut after 1..LENGTH tokens."""
    columns = []
    for n in range(1, LENGTH + 1):
        mask = torch.zeros_like(trainer_logps)
        mask[:, :n] = 1
        columns.append(trl_completion_weight(args, trainer_logps, vllm_logps, mask)[:, 0])
    return torch.stack(columns, dim=1)


def test_each_token_is_no_more_likely_to_the_trainer_than_to_vllm(sampled):
    trainer_logps, vllm_logps = sampled
    # Renormalising over the kept 50 tokens raises every kept token's probability.
    assert (trainer_logps <= vllm_logps + 1e-5).all()
    assert (trainer_logps < vllm_logps - 1e-3).float().mean() > 0.9


def test_todays_default_weight_is_below_one_and_falls_with_length(sampled):
    trainer_logps, vllm_logps = sampled
    assert GRPOConfig.vllm_importance_sampling_correction is True  # TRL's default: why the configs must set it
    default = parse(VLLM_CONFIGS[0], "--vllm_importance_sampling_correction", "true")
    assert default.vllm_importance_sampling_mode == "sequence_mask"

    weights = weights_by_length(default, trainer_logps, vllm_logps)
    assert (weights < 1).all() and (weights > 0).all()  # the mask (ratio > 3) drops none of them
    # Longer = smaller: each extra token multiplies the weight by a ratio <= 1.
    assert (weights[:, 1:] <= weights[:, :-1] * (1 + 1e-5)).all()
    assert (weights[:, -1] < weights[:, 0]).all()
    # The gradient's mix moves: a 24-token completion counts for a small fraction of a 1-token one.
    assert weights[:, -1].mean() < 0.01 * weights[:, 0].mean()


def test_todays_default_weight_depends_on_how_certain_the_model_is(sampled, sampled_certain):
    default = parse(VLLM_CONFIGS[0], "--vllm_importance_sampling_correction", "true")
    uncertain = weights_by_length(default, *sampled)
    certain = weights_by_length(default, *sampled_certain)
    # Closer to 1 for a more certain model, and still below 1 and falling with length: the bias is the tail mass
    # top-k cuts off, so it is larger for uncertain (exploring) completions and compounds over long ones.
    assert (certain > uncertain).all() and (certain < 1).all()
    assert (certain[:, 1:] <= certain[:, :-1] * (1 + 1e-5)).all() and (certain[:, -1] < certain[:, 0]).all()


@pytest.mark.parametrize("config", VLLM_CONFIGS, ids=lambda p: p.stem)
def test_the_vllm_configs_weight_every_completion_one_as_the_paper(config, sampled):
    trainer_logps, vllm_logps = sampled
    args = parse(config)
    assert args.use_vllm and args.vllm_importance_sampling_correction is False
    assert (weights_by_length(args, trainer_logps, vllm_logps) == 1).all()
