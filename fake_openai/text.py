"""Deterministic text and token counts derived from the request, so the same input always gets the same answer."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

WORDS = (
    "the", "signal", "arrives", "quietly", "and", "every", "span", "records", "what", "happened", "between",
    "prompt", "answer", "latency", "tokens", "flow", "through", "a", "small", "pipeline", "into", "tables",
    "dashboards", "show", "trends", "over", "time", "while", "errors", "stand", "out", "clearly", "models",
    "reply", "with", "careful", "words", "that", "describe", "systems", "calmly", "bright", "river", "stone",
    "lantern", "harbor", "meadow", "orbit", "echo", "copper", "willow", "summit", "ember", "atlas", "pixel",
    "cedar", "falcon", "granite", "horizon", "island", "jasmine", "kernel", "lumen", "marble",
)  # fmt: skip
_WORD = re.compile(r"\S+")
_PIECE = re.compile(r"\s*\S+")


def seed_of(*parts: Any) -> int:
    """A stable 64-bit seed from any JSON-able input (dict key order does not matter)."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")


def short_hash(*parts: Any, length: int = 24) -> str:
    """A stable alphanumeric token for ids and fingerprints."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:length]


def phrase(seed: int, words: int) -> str:
    """``words`` lower-case words picked by ``seed`` (a linear congruential walk over ``WORDS``)."""
    picked = []
    state = seed
    for _ in range(words):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        picked.append(WORDS[(state >> 33) % len(WORDS)])
    return " ".join(picked)


def sentence(seed: int, words: int) -> str:
    """``words`` words picked by ``seed``, capitalised and ending with a full stop."""
    text = phrase(seed, words)
    return text[:1].upper() + text[1:] + "." if text else ""


def answer_length(seed: int) -> int:
    """How many words an answer has when nothing asks for more: 8 to 24."""
    return 8 + seed % 17


def count_words(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(_WORD.findall(text))


def split_pieces(text: str, pieces: int | None) -> list[str]:
    """Split ``text`` into stream deltas: one per word, or exactly ``pieces`` when given (never empty ones)."""
    words = _PIECE.findall(text) or [text]
    if pieces is None or pieces >= len(words):
        parts = list(words)
        if pieces is not None:  # more chunks than words: split the longest remaining part character-wise
            while len(parts) < pieces and any(len(part) > 1 for part in parts):
                index = max(range(len(parts)), key=lambda i: len(parts[i]))
                head = len(parts[index]) // 2
                parts[index : index + 1] = [parts[index][:head], parts[index][head:]]
        return parts
    size, extra = divmod(len(words), pieces)
    parts, start = [], 0
    for index in range(pieces):
        end = start + size + (1 if index < extra else 0)
        parts.append("".join(words[start:end]))
        start = end
    return parts


def words_in(value: Any) -> int:
    """Words in every string inside a JSON-like value: how the fake counts prompt tokens."""
    if isinstance(value, str):
        return count_words(value)
    if isinstance(value, dict):
        return sum(words_in(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(words_in(item) for item in value)
    return 0
