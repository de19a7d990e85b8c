"""A minimal, deterministic instance of a JSON schema: what the fake "model" answers for structured outputs.

Covers what OpenAI structured outputs and pydantic emit ($ref/$defs, anyOf, allOf, enum, const, nested objects and
arrays, string formats, numeric bounds), so ``chat.completions.parse`` and ``responses.parse`` validate the answer.
"""

from __future__ import annotations

import uuid
from typing import Any

from llmtap.fake_openai.text import phrase, seed_of

MAX_DEPTH = 8
_FORMATS = {
    "date-time": "2024-05-13T12:00:00Z",
    "date": "2024-05-13",
    "time": "12:00:00",
    "duration": "PT1H",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


def instance(schema: Any, seed: int) -> Any:
    """A value valid against ``schema``, the same one for the same seed."""
    return _Builder(schema if isinstance(schema, dict) else {}).build(schema, seed, "value", 0)


class _Builder:
    def __init__(self, root: dict) -> None:
        self.root = root

    def build(self, schema: Any, seed: int, name: str, depth: int) -> Any:
        if not isinstance(schema, dict):  # `true` or a missing schema accepts anything
            return phrase(seed_of(seed, name), 2)
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][seed_of(seed, name) % len(schema["enum"])]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.build(self._pick_option(schema[key], depth), seed, name, depth + 1)
        if schema.get("allOf"):
            return self.build(self._merge(schema), seed, name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((item for item in kind if item != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        builders = {
            "object": self._object,
            "array": self._array,
            "integer": self._integer,
            "number": self._number,
            "boolean": self._boolean,
            "null": self._null,
        }
        return builders.get(kind, self._string)(schema, seed, name, depth)

    def _resolve(self, schema: dict) -> dict:
        seen = 0
        while "$ref" in schema and seen < 32:
            target: Any = self.root
            for part in schema["$ref"].lstrip("#").strip("/").split("/"):
                if part:
                    target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            extra = {key: value for key, value in schema.items() if key != "$ref"}
            schema = {**target, **extra} if isinstance(target, dict) else extra
            seen += 1
        return schema

    def _pick_option(self, options: list, depth: int) -> Any:
        """The first non-null option; past MAX_DEPTH prefer null, so recursive models terminate."""
        resolved = [self._resolve(option) if isinstance(option, dict) else option for option in options]
        nulls = [option for option in resolved if isinstance(option, dict) and option.get("type") == "null"]
        if depth >= MAX_DEPTH and nulls:
            return nulls[0]
        return next((option for option in resolved if option not in nulls), resolved[0])

    def _merge(self, schema: dict) -> dict:
        merged: dict = {key: value for key, value in schema.items() if key != "allOf"}
        for part in schema["allOf"]:
            part = self._resolve(part) if isinstance(part, dict) else {}
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def _object(self, schema: dict, seed: int, name: str, depth: int) -> dict:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        return {
            key: self.build(sub, seed_of(seed, key), key, depth + 1)
            for key, sub in properties.items()
            if depth < MAX_DEPTH or key in required
        }

    def _array(self, schema: dict, seed: int, name: str, depth: int) -> list:
        prefix = schema.get("prefixItems") or []
        minimum = int(schema.get("minItems", 0))
        count = max(minimum, len(prefix), 0 if depth >= MAX_DEPTH else 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items", {})
        return [
            self.build(prefix[index] if index < len(prefix) else items, seed_of(seed, index), name, depth + 1)
            for index in range(count)
        ]

    def _string(self, schema: dict, seed: int, name: str, depth: int) -> str:
        value_seed = seed_of(seed, name)
        fmt = schema.get("format")
        if fmt == "uuid":
            value = str(uuid.UUID(int=value_seed << 64 | value_seed, version=4))
        else:
            value = _FORMATS.get(fmt) or phrase(value_seed, 1 + value_seed % 3)
        minimum, maximum = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(value) < minimum:
            value = value + "x" * (minimum - len(value))
        if maximum is not None:
            value = value[: int(maximum)]
        return value

    def _integer(self, schema: dict, seed: int, name: str, depth: int) -> int:
        return int(self._number(schema, seed, name, depth, integer=True))

    def _number(self, schema: dict, seed: int, name: str, depth: int, integer: bool = False) -> float:
        step = 1 if integer else 0.5
        low = schema.get("minimum", float("-inf"))
        if "exclusiveMinimum" in schema:
            low = max(low, schema["exclusiveMinimum"] + step)
        high = schema.get("maximum", float("inf"))
        if "exclusiveMaximum" in schema:
            high = min(high, schema["exclusiveMaximum"] - step)
        value: float = seed_of(seed, name) % 100 + (0 if integer else 0.5)
        value = min(max(value, low), high)
        multiple = schema.get("multipleOf")
        if multiple:
            value = -(-value // multiple) * multiple  # round up onto the grid
            if value > high:
                value -= multiple
        if integer:
            value = -(-value // 1)
        return value

    def _boolean(self, schema: dict, seed: int, name: str, depth: int) -> bool:
        return seed_of(seed, name) % 2 == 0

    def _null(self, schema: dict, seed: int, name: str, depth: int) -> None:
        return None
