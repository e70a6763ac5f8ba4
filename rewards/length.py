"""The paper's naive length reward (an ablation): ``scale`` × the number of completion tokens, scale 0.001.

The paper re-tokenized each decoded completion with the Qwen2-VL tokenizer, loading the processor from the Hub inside
the reward (once per call in one version of its code). Here tokens are counted from TRL's ``completion_ids`` — the
exact ids that were trained on — and only when those are absent from a tokenizer given at construction; nothing is
ever downloaded or loaded per call. One consequence: TRL's ids include the end-of-sequence token of a completion
that finished, which the paper's re-tokenized text did not, so such completions score ``scale`` (0.001) more.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from rewards._text import Completion, as_list, at, completion_text

logger = logging.getLogger(__name__)

DEFAULT_LENGTH_SCALE = 0.001


def _count_tokens(tokenizer: Any, text: str) -> int | None:
    """Tokens of ``text`` without special tokens, for a `transformers` tokenizer or processor or a `tokenizers`
    ``Tokenizer``; ``None`` if the tokenizer fails."""
    if not hasattr(tokenizer, "encode") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer  # a processor: count with its text tokenizer
    try:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        return len(getattr(encoded, "ids", encoded))
    except Exception:
        logger.debug("tokenizer failed on a completion of %d characters", len(text), exc_info=True)
        return None


class LengthReward:
    """``scale`` × the number of tokens of each completion (the paper's length ablation, scale 0.001).

    Tokens are counted from TRL's ``completion_ids`` keyword (the exact training ids) when it is given; otherwise
    the completion text is encoded with ``tokenizer`` (a `transformers` tokenizer or processor, or a `tokenizers`
    ``Tokenizer``) given at construction, without special tokens. With neither, the reward is ``None`` ("cannot
    judge") for every completion. Never raises.

    Example:
        >>> length_reward(["<think>a</think><answer>b</answer>", "b"], completion_ids=[[5, 6, 7, 8], [9]])
        [0.004, 0.001]
        >>> LengthReward(scale=0.5)(["b"], completion_ids=[[1, 2]])
        [1.0]
        >>> length_reward(["no ids and no tokenizer"])
        [None]
    """

    __name__ = "length_reward"

    def __init__(self, scale: float = DEFAULT_LENGTH_SCALE, tokenizer: Any = None) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"length scale must be a finite number, got {scale!r}")
        self.scale = float(scale)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        tokenizer = "None" if self.tokenizer is None else type(self.tokenizer).__name__
        return f"LengthReward(scale={self.scale}, tokenizer={tokenizer})"

    def __call__(
        self,
        completions: Sequence[Completion],
        completion_ids: Sequence[Sequence[int] | None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        rewards: list[float | None] = []
        for i, completion in enumerate(as_list(completions)):
            count = self._count(completion, at(completion_ids, i))
            rewards.append(None if count is None else self.scale * count)
        return rewards

    def _count(self, completion: Completion, ids: Any) -> int | None:
        if ids is not None and not isinstance(ids, (str, bytes)):
            try:
                return len(ids)
            except TypeError:
                pass
        if self.tokenizer is not None:
            return _count_tokens(self.tokenizer, completion_text(completion))
        return None


length_reward = LengthReward()
