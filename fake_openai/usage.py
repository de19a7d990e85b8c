"""Token usage in the shapes of the Chat Completions and Responses APIs, with cached and reasoning details."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmtap.fake_openai.knobs import Knobs

_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
CACHE_MIN_TOKENS = 1024
CACHE_BLOCK = 128


def is_reasoning_model(model: str) -> bool:
    """o1/o3/o4-mini/gpt-5… spend hidden reasoning tokens; other models do not."""
    return bool(_REASONING_MODEL.match(model))


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int | None = None
    bare: bool = False
    """Totals only, no details objects."""

    @classmethod
    def compute(cls, model: str, prompt_tokens: int, output_words: int, seed: int, knobs: Knobs) -> Usage:
        """Usage the way OpenAI bills it: reasoning tokens are part of the completion tokens.

        Cached tokens follow OpenAI's prompt-caching rule (prompts of 1024+ tokens, in 128-token blocks), as if
        the prompt had been sent before; knobs can force either figure.
        """
        prompt_tokens = max(prompt_tokens, 1)
        if knobs.cached_tokens is not None:
            cached = min(knobs.cached_tokens, prompt_tokens)
        elif prompt_tokens >= CACHE_MIN_TOKENS:
            cached = prompt_tokens // CACHE_BLOCK * CACHE_BLOCK
        else:
            cached = 0
        if knobs.reasoning_tokens is not None:
            reasoning = knobs.reasoning_tokens
        else:
            reasoning = 64 * (1 + seed % 4) if is_reasoning_model(model) else 0
        cache_write = knobs.cache_write_tokens
        if cache_write is not None:
            cache_write = min(cache_write, prompt_tokens - cached)
        return cls(prompt_tokens, output_words + reasoning, cached, reasoning, cache_write, knobs.bare_usage)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def chat(self) -> dict:
        """The ``usage`` object of chat completions and legacy completions."""
        totals = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.bare:
            return totals
        prompt_details = {"cached_tokens": self.cached_tokens, "audio_tokens": 0}
        if self.cache_write_tokens is not None:
            prompt_details["cache_write_tokens"] = self.cache_write_tokens
        return {
            **totals,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def responses(self) -> dict:
        """The ``usage`` object of the Responses API."""
        if self.bare:
            return {
                "input_tokens": self.prompt_tokens,
                "output_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
            }
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens or 0,
            },
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }
