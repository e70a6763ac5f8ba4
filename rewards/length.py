"""The paper's naive length reward (an ablation): ``scale`` × the number of tokens of each completion, scale 0.001.

Counted as the paper did: the decoded completion text is tokenized again with the model's tokenizer
(``len(tokenizer(text)["input_ids"])``), so a finished completion's end-of-sequence token, which decoding dropped, is
not counted. TRL's ``completion_ids`` (which include it) are not used. The paper loaded the processor from the Hub
inside the reward on every call; here the registry passes the training processor's tokenizer once, and nothing is
ever downloaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from rewards._text import Completion, as_list, completion_text

logger = logging.getLogger(__name__)

DEFAULT_LENGTH_SCALE = 0.001  # the paper's; configs may set length_scale


class LengthReward:
    """``scale`` × the number of tokens of each completion's text, re-tokenized as in the paper.

    ``tokenizer`` is a `transformers` tokenizer (or a processor, whose ``tokenizer`` is used); it is called as the
    paper called it, ``tokenizer(texts)["input_ids"]``. A completion the tokenizer fails on gets ``None`` ("cannot
    judge"). Never raises once built.

    Example:
        >>> from transformers import PreTrainedTokenizerFast
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> words = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        >>> words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        >>> reward = LengthReward(PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]"))
        >>> reward(["<think> a </think> <answer> b </answer>", "b"], completion_ids=[[5, 6, 7, 8, 9, 10, 0], [9, 0]])
        [0.006, 0.001]
    """

    __name__ = "length_reward"

    def __init__(self, tokenizer: Any, scale: float = DEFAULT_LENGTH_SCALE) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"length scale must be a finite number, got {scale!r}")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor: count with its text tokenizer
        if not callable(tokenizer):
            raise ValueError(
                "the length reward counts tokens as the paper did, by tokenizing each completion again: give it the "
                f"model's tokenizer (get_reward_funcs(..., tokenizer=processor.tokenizer)); got {tokenizer!r}"
            )
        self.scale = float(scale)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"LengthReward(tokenizer={type(self.tokenizer).__name__}, scale={self.scale})"

    def __call__(self, completions: Sequence[Completion], **kwargs: Any) -> list[float | None]:
        texts = [completion_text(completion) for completion in as_list(completions)]
        try:
            return [self.scale * len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        except Exception:
            logger.debug("tokenizing the batch failed; counting one completion at a time", exc_info=True)
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> float | None:
        try:
            return self.scale * len(self.tokenizer(text)["input_ids"])
        except Exception:
            logger.warning("the tokenizer failed on a completion of %d characters", len(text), exc_info=True)
            return None
