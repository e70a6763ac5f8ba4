"""Reward functions for GRPO on SAT, as the paper computed them, and the registry the recipes build them from.

Every reward follows TRL's contract: it is called as ``f(prompts=..., completions=..., completion_ids=...,
trainer_state=..., **dataset_columns)`` and returns one float per completion, or ``None`` when it cannot judge.
Every reward is picklable and has a fixed ``__name__`` (TRL logs ``rewards/<__name__>/mean``).

========== ===================== ============== ===============================================================
name       function              default weight what it scores
========== ===================== ============== ===============================================================
accuracy   `accuracy_reward`     1.0            the answer against the ``solution`` column (the paper's checks)
format     `format_reward`       1.0            the ``<think>…</think><answer>…</answer>`` shape
length     `LengthReward`        1.0            0.001 × completion tokens (the paper's naive ablation)
reflection `reflection_reward`   0.0            self-reflection phrases: a monitor, logged but never trained on
========== ===================== ============== ===============================================================

Where things live: `rewards.answers` reads answers out of text (the paper's regexes, math-verify with its timeouts),
shared by the accuracy reward and `rewards.cvbench`, the paper's CV-Bench scorer used by the evaluation.
The default weights and the length scale are defined here once; the YAML configs override them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from rewards.accuracy import AccuracyReward, accuracy_reward
from rewards.format import format_reward
from rewards.length import DEFAULT_LENGTH_SCALE, LengthReward
from rewards.monitors import REFLECTION_PHRASES, reflection_reward

__all__ = [
    "DEFAULT_WEIGHTS",
    "REFLECTION_PHRASES",
    "REWARD_NAMES",
    "AccuracyReward",
    "LengthReward",
    "accuracy_reward",
    "format_reward",
    "get_reward_funcs",
    "reflection_reward",
]


def _build_accuracy(params: Mapping[str, Any]) -> Callable:
    mode = params.get("accuracy_mode") or "paper"
    return AccuracyReward(mode=mode, require_format=bool(params.get("accuracy_requires_format") or False))


def _build_format(params: Mapping[str, Any]) -> Callable:
    return format_reward


def _build_length(params: Mapping[str, Any]) -> Callable:
    scale = params.get("length_scale")
    return LengthReward(params.get("tokenizer"), scale=DEFAULT_LENGTH_SCALE if scale is None else scale)


def _build_reflection(params: Mapping[str, Any]) -> Callable:
    return reflection_reward


class _Entry(NamedTuple):
    build: Callable[[Mapping[str, Any]], Callable]
    weight: float


# The one definition of the reward names, their builders and default weights.
_REGISTRY: Mapping[str, _Entry] = MappingProxyType(
    {
        "accuracy": _Entry(_build_accuracy, 1.0),
        "format": _Entry(_build_format, 1.0),
        "length": _Entry(_build_length, 1.0),
        "reflection": _Entry(_build_reflection, 0.0),  # a monitor: never trains unless a config gives it a weight
    }
)
REWARD_NAMES: tuple[str, ...] = tuple(_REGISTRY)
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType({name: entry.weight for name, entry in _REGISTRY.items()})
_PARAMS = ("accuracy_mode", "accuracy_requires_format", "length_scale", "tokenizer")


def get_reward_funcs(
    names: Iterable[str] | str, weights: Iterable[float] | None = None, **params: Any
) -> tuple[list[Callable], list[float]]:
    """Build the named rewards, in order, with their weights (the registry's defaults unless ``weights`` is given).

    Args:
        names: reward names from `REWARD_NAMES` (a single name may be given as a string).
        weights: one weight per name, overriding the defaults; ``None`` keeps the defaults.
        **params: ``accuracy_mode`` ("paper", the default, or "gold_first": see `rewards.accuracy`),
            ``accuracy_requires_format`` (bool: format-gated accuracy), ``length_scale`` (float; ``None`` or absent:
            `DEFAULT_LENGTH_SCALE`), ``tokenizer`` (the model's tokenizer or processor: required by the length
            reward, which re-tokenizes completions as the paper did). Parameters of rewards that are not requested
            are ignored; ``None`` means "the default".

    Raises:
        ValueError: an unknown or repeated name, an unknown parameter, a bad parameter value, or a number of
            weights different from the number of names.

    Example:
        >>> funcs, weights = get_reward_funcs(["accuracy", "format", "reflection"])
        >>> [f.__name__ for f in funcs], weights
        (['accuracy_reward', 'format_reward', 'reflection_reward'], [1.0, 1.0, 0.0])
        >>> get_reward_funcs(["acuracy"])
        Traceback (most recent call last):
        ...
        ValueError: unknown reward name 'acuracy'; valid names: accuracy, format, length, reflection
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown_params = sorted(set(params) - set(_PARAMS))
    if unknown_params:
        raise ValueError(f"unknown reward parameter(s) {', '.join(unknown_params)}; valid: {', '.join(_PARAMS)}")
    if not names:
        raise ValueError(f"no reward names given; choose from: {', '.join(REWARD_NAMES)}")
    for name in names:
        if name not in _REGISTRY:
            raise ValueError(f"unknown reward name {name!r}; valid names: {', '.join(REWARD_NAMES)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"reward name(s) given more than once: {', '.join(repeated)}")

    if weights is None:
        weight_list = [_REGISTRY[name].weight for name in names]
    else:
        weight_list = list(weights)
        if len(weight_list) != len(names):
            raise ValueError(
                f"got {len(names)} reward names ({', '.join(names)}) but {len(weight_list)} weights; "
                "give one weight per reward, or none to use the defaults"
            )
        try:
            weight_list = [float(weight) for weight in weight_list]
        except (TypeError, ValueError):
            raise ValueError(f"reward weights must be numbers, got {weight_list!r}") from None

    return [_REGISTRY[name].build(params) for name in names], weight_list
