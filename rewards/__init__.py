"""Reward functions for GRPO on SAT, as the paper computed them, and the registry the recipes build them from.

Every reward follows TRL's contract: it is called as ``f(prompts=..., completions=..., completion_ids=...,
trainer_state=..., **dataset_columns)`` and returns one float per completion, or ``None`` when it cannot judge.
Every reward is picklable and has a fixed ``__name__`` (TRL logs ``rewards/<__name__>/mean``).

The registry (`REGISTRY`, below) names the paper's rewards, their default weights and what they score:
``accuracy`` (`accuracy_reward`, the answer against the ``solution`` column), ``format`` (`format_reward`, the
``<think>…</think><answer>…</answer>`` shape), ``length`` (`LengthReward`, 0.001 × completion tokens, the paper's
naive ablation) and ``reflection`` (`reflection_reward`, self-reflection phrases: a monitor, weight 0). A config may
also name any importable reward function by dotted path (``my_pkg.mod:func`` or ``my_pkg.mod.func``): README, "Add a
reward".

Where things live: `rewards.answers` reads answers out of text (the paper's regexes, math-verify with its timeouts),
shared by the accuracy reward and `rewards.cvbench`, the paper's CV-Bench scorer used by the evaluation.
The default weights and the length scale are defined here once; the YAML configs override them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from rewards._text import completion_text
from rewards.accuracy import AccuracyReward, accuracy_reward
from rewards.format import format_reward
from rewards.length import DEFAULT_LENGTH_SCALE, LengthReward
from rewards.monitors import REFLECTION_PHRASES, reflection_reward

__all__ = [
    "DEFAULT_WEIGHTS",
    "REFLECTION_PHRASES",
    "REGISTRY",
    "REWARD_NAMES",
    "AccuracyReward",
    "LengthReward",
    "Registered",
    "accuracy_reward",
    "build_reward",
    "check_reward_request",
    "completion_text",
    "format_reward",
    "get_reward_funcs",
    "option",
    "reflection_reward",
]


def option(options: Any, name: str, default: Any = None) -> Any:
    """The parsed option ``name`` (a `recipes.shared.args.RecipeArguments` field); ``default`` when absent or
    ``None``."""
    value = getattr(options, name, None)
    return default if value is None else value


# Builders: (parsed options, the model's tokenizer) -> a reward. Each reads its own parameters from the options, so
# a reward's parameter enters once, as a field of RecipeArguments, and no recipe passes it along by hand.


def _build_accuracy(options: Any, tokenizer: Any) -> Callable:
    return AccuracyReward(
        mode=option(options, "accuracy_mode") or "paper",
        require_format=bool(option(options, "accuracy_requires_format", False)),
    )


def _build_length(options: Any, tokenizer: Any) -> Callable:
    return LengthReward(tokenizer, scale=option(options, "length_scale", DEFAULT_LENGTH_SCALE))


def _fixed(reward: Callable) -> Callable[[Any, Any], Callable]:
    """The builder of a reward without parameters."""

    def build(options: Any, tokenizer: Any) -> Callable:
        return reward

    return build


class Registered(NamedTuple):
    build: Callable[[Any, Any], Callable]
    weight: float


# The one definition of the reward names, their builders and default weights. A new reward: one line here (and its
# parameters as RecipeArguments fields), or no line at all with a dotted path in the config.
REGISTRY: Mapping[str, Registered] = MappingProxyType(
    {
        "accuracy": Registered(_build_accuracy, 1.0),
        "format": Registered(_fixed(format_reward), 1.0),
        "length": Registered(_build_length, 1.0),
        "reflection": Registered(_fixed(reflection_reward), 0.0),  # a monitor: trains only if a config weights it
    }
)
REWARD_NAMES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType({name: entry.weight for name, entry in REGISTRY.items()})
DOTTED_WEIGHT = 1.0  # TRL's default weight, for a reward named by dotted path
_VALID = (
    f"valid names: {', '.join(REWARD_NAMES)}, or an importable reward function as 'package.module:function' or "
    "'package.module.function'"
)


def _import_reward(spec: str) -> Callable:
    """The object a dotted path names (``pkg.mod:func`` or ``pkg.mod.func``); ValueError saying why it cannot be."""
    module_name, _, attribute = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"unknown reward name {spec!r}; {_VALID}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(
                f"unknown reward name {spec!r}: no module {err.name!r} on the Python path; {_VALID}"
            ) from None
        raise ValueError(f"reward {spec!r}: importing {module_name} failed: {err}") from err
    except Exception as err:  # a broken user module: say where, keep the cause
        raise ValueError(f"reward {spec!r}: importing {module_name} failed: {type(err).__name__}: {err}") from err
    reward: Any = module
    for part in attribute.split("."):
        if not hasattr(reward, part):
            raise ValueError(f"unknown reward name {spec!r}: {module_name} has no {attribute!r}; {_VALID}")
        reward = getattr(reward, part)
    if isinstance(reward, type) or not callable(reward):
        raise ValueError(f"reward {spec!r} is not a reward function (a {type(reward).__name__}); name a function")
    if not isinstance(getattr(reward, "__name__", None), str):
        raise ValueError(f"reward {spec!r} has no __name__, which TRL logs it under: give it one")
    return reward


def build_reward(name: str, options: Any = None, tokenizer: Any = None) -> Callable:
    """One reward: a registry name built from ``options`` (see `get_reward_funcs`), or a dotted path imported."""
    if name in REGISTRY:
        return REGISTRY[name].build(options, tokenizer)
    return _import_reward(name)


def _names(options: Any) -> list[str]:
    names = options if isinstance(options, (str, list, tuple)) else option(options, "reward_funcs", [])
    return [names] if isinstance(names, str) else list(names)


def check_reward_request(names: Iterable[str] | str, weights: Iterable[float] | None = None) -> list[float]:
    """Check the names (registered or importable) and weights without building; return the weights to use.

    Raises:
        ValueError: no names, an unknown, repeated or unimportable name, a number of weights different from the
            number of names, or a weight that is not a number.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError(f"no reward names given; {_VALID}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"reward name(s) given more than once: {', '.join(repeated)}")
    for name in names:
        if name not in REGISTRY:
            _import_reward(name)
    if weights is None:
        return [REGISTRY[name].weight if name in REGISTRY else DOTTED_WEIGHT for name in names]
    weight_list = list(weights)
    if len(weight_list) != len(names):
        raise ValueError(
            f"got {len(names)} reward names ({', '.join(names)}) but {len(weight_list)} weights; "
            "give one weight per reward, or none to use the defaults"
        )
    try:
        return [float(weight) for weight in weight_list]
    except (TypeError, ValueError):
        raise ValueError(f"reward weights must be numbers, got {weight_list!r}") from None


def get_reward_funcs(
    options: Any, weights: Iterable[float] | None = None, *, tokenizer: Any = None
) -> tuple[list[Callable], list[float]]:
    """Build the configured rewards, in order, with their weights (the defaults unless ``weights`` is given).

    Args:
        options: the recipe's parsed options (`recipes.shared.args.RecipeArguments`): ``reward_funcs`` holds the names,
        and
            each registered reward reads its own parameters there (``accuracy_mode``, ``accuracy_requires_format``,
            ``length_scale``; unset or ``None`` = the default). Or just the names (a string or a list), every
            parameter at its default. A name is a `REWARD_NAMES` entry or an importable reward function as
            ``package.module:function`` or ``package.module.function`` (weight 1.0 by default).
        weights: one weight per name, overriding the defaults; ``None`` keeps the defaults.
        tokenizer: the model's tokenizer or processor: required by the length reward, which re-tokenizes
            completions as the paper did.

    Raises:
        ValueError: see `check_reward_request`; also a bad parameter value, or two rewards logged under one name.

    Example:
        >>> funcs, weights = get_reward_funcs(["accuracy", "format", "reflection"])
        >>> [f.__name__ for f in funcs], weights
        (['accuracy_reward', 'format_reward', 'reflection_reward'], [1.0, 1.0, 0.0])
        >>> get_reward_funcs(["acuracy"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown reward name 'acuracy'; valid names: accuracy, format, length, reflection, or an ...
    """
    names = _names(options)
    weight_list = check_reward_request(names, weights)
    funcs = [build_reward(name, options, tokenizer) for name in names]
    log_names = [func.__name__ for func in funcs]
    clashing = sorted({log for log in log_names if log_names.count(log) > 1})
    if clashing:
        raise ValueError(f"two rewards would log as rewards/{clashing[0]}/mean: give each its own __name__")
    return funcs, weight_list
