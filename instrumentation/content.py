"""Turning message structures into the JSON attribute values we record: redaction, size cap, prompt hash.

Content attributes hold JSON, and consumers (ClickHouse ``JSONExtract``, Grafana panels) parse it, so a value
over the size cap is never cut mid-JSON: the longest strings inside it are shortened until it fits, and the span
says so with ``llmtap.content.truncated``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from llmtap.instrumentation.redaction import Redactor

ENV_CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENV_MAX_LENGTH = "LLMTAP_CONTENT_MAX_LENGTH"
DEFAULT_MAX_LENGTH = 65536
TRUNCATION_MARK = "…[truncated]"
_CAPTURE_OFF = frozenset({"no_content", "false", "0", "no", "off", "none"})


def _to_json_fallback(value: object) -> object:
    """Values json cannot encode (pydantic models, bytes, enums) become something it can."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json", exclude_unset=True)
        except Exception:
            pass
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# One encoder built once: json.dumps with non-default options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_to_json_fallback)
to_json = _ENCODER.encode


def capture_enabled_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """Content capture is ON unless the standard variable turns it off (``NO_CONTENT``, ``false``, ...)."""
    return environ.get(ENV_CAPTURE_CONTENT, "").strip().lower() not in _CAPTURE_OFF


def max_length_from_env(environ: Mapping[str, str] = os.environ) -> int:
    raw = environ.get(ENV_MAX_LENGTH, "").strip()
    if not raw:
        return DEFAULT_MAX_LENGTH
    try:
        value = int(raw)
        if value < 256:
            raise ValueError("must be at least 256")
    except ValueError as exc:
        import logging

        logging.getLogger(__name__).error(
            "llmtap: ignoring %s=%r (%s); using %d", ENV_MAX_LENGTH, raw, exc, DEFAULT_MAX_LENGTH
        )
        return DEFAULT_MAX_LENGTH
    return value


class Scrubber:
    """Redacts the strings of one call and counts the replacements, for ``llmtap.redaction.count``; notes the
    arguments left unread because reading them would consume them, for ``llmtap.content.skipped``."""

    __slots__ = ("count", "redactor", "skipped")

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.count = 0
        self.skipped: tuple[str, ...] = ()

    def skip(self, argument: str) -> None:
        if argument not in self.skipped:
            self.skipped += (argument,)

    def __call__(self, text: Any) -> Any:
        if not text or not isinstance(text, str) or not self.redactor.active:
            return text
        text, n = self.redactor.redact(text)
        self.count += n
        return text


def prompt_hash(*encoded: str) -> str:
    """SHA-256 (hex) of the recorded input JSON, so identical prompts can be grouped."""
    digest = hashlib.sha256()
    for part in encoded:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


def fit(value: Any, encoded: str, limit: int) -> tuple[str, bool]:
    """Return JSON for ``value`` of at most ``limit`` characters (``encoded`` is its full JSON), and whether it
    had to be shortened. Shortens the longest strings first; drops leading list items only as a last resort."""
    if len(encoded) <= limit:
        return encoded, False
    for _ in range(4):
        leaves = _string_leaves(value)
        if not leaves:
            break
        excess = len(encoded) - limit
        cap = _water_level(
            [len(container[key]) for container, key in leaves], excess + len(TRUNCATION_MARK) * 2
        )
        for container, key in leaves:
            text = container[key]
            if len(text) > cap:
                container[key] = text[:cap] + TRUNCATION_MARK
        encoded = to_json(value)
        if len(encoded) <= limit:
            return encoded, True
    while isinstance(value, list) and len(value) > 1 and len(encoded) > limit:
        value = value[1:]
        encoded = to_json(value)
    if len(encoded) > limit:  # a single item whose structure alone is over the cap
        encoded = to_json([{"type": "text", "content": TRUNCATION_MARK}])
    return encoded, True


def _string_leaves(value: Any) -> list[tuple[Any, Any]]:
    leaves: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            if isinstance(child, str):
                if len(child) > 32:
                    leaves.append((node, key))
            elif isinstance(child, (dict, list)):
                stack.append(child)
    return leaves


def _water_level(lengths: list[int], to_remove: int) -> int:
    """The largest cap such that cutting every length above it removes at least ``to_remove`` characters."""
    ordered = sorted(lengths, reverse=True)
    removed_above = 0
    for i, length in enumerate(ordered):
        nxt = ordered[i + 1] if i + 1 < len(ordered) else 0
        # Lowering the cap from `length` to `nxt` removes (length - nxt) from each of the i+1 longest strings.
        step = (length - nxt) * (i + 1)
        if removed_above + step >= to_remove:
            return max(0, length - -(-(to_remove - removed_above) // (i + 1)))
        removed_above += step
    return 0
