"""One API call as the endpoint handlers see it: the parsed JSON body, the effective knobs, ids and the clock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from llmtap.fake_openai.errors import invalid
from llmtap.fake_openai.knobs import Knobs
from llmtap.fake_openai.text import short_hash

_MISSING = object()
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "an array", dict: "an object"}


@dataclass
class Call:
    body: dict
    knobs: Knobs
    sequence: int
    """Position of this request in the server's life: ids are unique per server, yet reproducible per run."""
    raw: bytes
    path_params: dict[str, str]
    created: int = 0

    def __post_init__(self) -> None:
        self.created = self.created or int(time.time())

    def new_id(self, prefix: str, *salt: Any) -> str:
        """A reproducible id: the same request at the same position in a run gets the same id."""
        return prefix + short_hash(self.sequence, self.raw, *salt)

    def field(self, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        """``body[name]`` checked against ``kind``; a missing required or mistyped field is a 400 naming it."""
        value = self.body.get(name, _MISSING)
        if value is _MISSING or (value is None and default is not _MISSING):
            if default is _MISSING:
                raise invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(_TYPE_NAMES.get(item, item.__name__) for item in kinds)
            raise invalid(
                f"Invalid type for '{name}': expected {expected}, got {_json_type(value)}.",
                name,
                "invalid_type",
            )
        return value

    def count(
        self, name: str, default: int | None, minimum: int = 1, maximum: int | None = None
    ) -> int | None:
        """An optional integer parameter within bounds (``n``, ``max_tokens``, ``dimensions``…)."""
        value = self.field(name, int, default)
        if value is not None and (value < minimum or (maximum is not None and value > maximum)):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise invalid(f"Invalid '{name}': {value}; it must be {bound}.", name, "invalid_value")
        return value

    def model(self) -> str:
        """The requested model, or the Azure deployment name when the path carries one."""
        deployment = self.path_params.get("deployment")
        model = self.field("model", str, deployment if deployment else _MISSING)
        if not model:
            raise invalid("Invalid 'model': empty string.", "model", "invalid_value")
        return model


def system_fingerprint(model: str) -> str:
    """A stable ``system_fingerprint`` per model, as the real API returns."""
    return "fp_" + short_hash(model, length=10)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)
