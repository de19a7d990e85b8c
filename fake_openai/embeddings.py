"""POST /v1/embeddings: deterministic unit vectors per input, as JSON floats or base64 float32 (the SDK default)."""

from __future__ import annotations

import base64
import random
import struct

from llmtap.fake_openai.call import Call
from llmtap.fake_openai.errors import invalid
from llmtap.fake_openai.text import seed_of, words_in

DIMENSIONS = {"text-embedding-3-large": 3072}
DEFAULT_DIMENSIONS = 1536
MAX_INPUTS = 2048


def embeddings(call: Call) -> dict:
    model = call.model()
    inputs = _inputs(call)
    native = DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    dimensions = call.count("dimensions", native, maximum=native)
    encoding = call.field("encoding_format", str, "float")
    if encoding not in ("float", "base64"):
        raise invalid(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    data = []
    for index, item in enumerate(inputs):
        values = vector(seed_of("embedding", model, item), dimensions)
        packed = struct.pack(f"<{dimensions}f", *values)
        embedding = base64.b64encode(packed).decode() if encoding == "base64" else values
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(len(item) if isinstance(item, list) else max(words_in(item), 1) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def vector(seed: int, dimensions: int) -> list[float]:
    """A unit-length vector, rounded to float32 so the JSON and base64 encodings carry the very same numbers."""
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = sum(value * value for value in raw) ** 0.5 or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in raw))))


def _inputs(call: Call) -> list:
    """A string, a token array, or an array of either — as the real endpoint accepts."""
    value = call.field("input", (str, list))
    if isinstance(value, str) or (value and all(isinstance(token, int) for token in value)):
        value = [value]
    if not value:
        raise invalid(
            "'$.input' is invalid: it must be a non-empty string or array.", "input", "invalid_value"
        )
    if len(value) > MAX_INPUTS:
        raise invalid(
            f"'$.input' is invalid: at most {MAX_INPUTS} inputs per request.", "input", "invalid_value"
        )
    for index, item in enumerate(value):
        valid_tokens = isinstance(item, list) and item and all(isinstance(token, int) for token in item)
        if not (isinstance(item, str) and item) and not valid_tokens:
            raise invalid(
                f"'$.input[{index}]' is invalid: expected a non-empty string or token array.",
                f"input[{index}]",
                "invalid_value",
            )
    return value
