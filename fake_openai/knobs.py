"""Behaviour knobs: set server-wide as keyword arguments, overridden per request by ``x-fake-*`` headers.

One table (``KNOBS``) defines every knob's keyword name, header name and parser, so the server, the in-process
transports, the CLI and the docs can never disagree about what a knob is called or what it accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HEADER_PREFIX = "x-fake-"
ERROR_STATUSES = range(400, 600)


class KnobError(ValueError):
    """A knob value that cannot be used; ``source`` names the header or keyword that carried it."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


def _milliseconds(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError("must be a number of milliseconds >= 0")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be an integer >= 1")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be an integer >= 0")
    return number


def _status(value: str) -> int:
    number = int(value)
    if number not in ERROR_STATUSES:
        raise ValueError("must be an HTTP error status between 400 and 599")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be a number of seconds >= 0")
    return number


def _flag(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1 or 0")


@dataclass(frozen=True)
class Knobs:
    """The behaviour of one reply. ``None`` means "not set": the endpoint's natural behaviour applies."""

    latency_ms: float = 0.0
    """Delay before the response headers are sent (every request, errors included)."""
    ttfc_ms: float = 0.0
    """Delay before the first body chunk (the first SSE event of a stream, or the whole JSON body)."""
    chunk_delay_ms: float = 0.0
    """Delay before each later SSE event of a stream."""
    chunks: int | None = None
    """Content chunks per choice in a stream (default: one per word)."""
    status: int | None = None
    """Answer with this HTTP error status and an OpenAI-shaped error body."""
    retry_after: float | None = None
    """Seconds for the Retry-After header (sent with 429 and 503; default 1 for 429)."""
    error_attempts: int | None = None
    """Apply ``status`` only to the first N attempts (by the SDK's x-stainless-retry-count), so retries succeed."""
    break_after: int | None = None
    """Cut the connection after N SSE events of a stream, without [DONE] or the final chunk."""
    malformed: bool = False
    """Send an unparseable JSON body (or one unparseable SSE event in a stream)."""
    cached_tokens: int | None = None
    """Report this many cached prompt tokens (capped at the prompt size) instead of the automatic rule."""
    reasoning_tokens: int | None = None
    """Report this many reasoning tokens instead of the automatic rule (0 for non-reasoning models)."""
    prompt_filter: bool = False
    """Open a chat stream as Azure OpenAI does: a ``prompt_filter_results`` chunk with an empty id and model."""
    computer_call: bool = False
    """Answer a Responses request with a ``computer_call`` item (a click) instead of a message."""
    cache_write_tokens: int | None = None
    """Report this many prompt tokens written to the cache (capped at the uncached rest of the prompt)."""
    bare_usage: bool = False
    """Send usage totals only, without the token details objects (as compatible servers and older APIs do)."""

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Knobs:
        """Server-wide knobs from keyword arguments; unknown names and bad values raise at once."""
        unknown = sorted(set(kwargs) - set(KNOBS))
        if unknown:
            raise TypeError(f"unknown fake-openai knob(s): {', '.join(unknown)}; known: {', '.join(KNOBS)}")
        return cls()._with({name: (name, value) for name, value in kwargs.items() if value is not None})

    def with_headers(self, headers: Mapping[str, str]) -> Knobs:
        """These knobs overridden by any ``x-fake-*`` headers (keys must be lower-case)."""
        found = {}
        for name in KNOBS:
            header = header_name(name)
            if header in headers:
                found[name] = (header, headers[header])
        return self._with(found) if found else self

    def _with(self, values: Mapping[str, tuple[str, Any]]) -> Knobs:
        changes = {}
        for name, (source, raw) in values.items():
            try:
                changes[name] = KNOBS[name](raw if isinstance(raw, str) else str(raw))
            except ValueError as exc:
                raise KnobError(source, f"invalid value {raw!r}: {exc}") from None
        return dataclasses.replace(self, **changes)


def header_name(knob: str) -> str:
    """``chunk_delay_ms`` -> ``x-fake-chunk-delay-ms``."""
    return HEADER_PREFIX + knob.replace("_", "-")


KNOBS: dict[str, Callable[[str], Any]] = {
    "latency_ms": _milliseconds,
    "ttfc_ms": _milliseconds,
    "chunk_delay_ms": _milliseconds,
    "chunks": _positive_int,
    "status": _status,
    "retry_after": _seconds,
    "error_attempts": _count,
    "break_after": _count,
    "malformed": _flag,
    "cached_tokens": _count,
    "reasoning_tokens": _count,
    "prompt_filter": _flag,
    "computer_call": _flag,
    "cache_write_tokens": _count,
    "bare_usage": _flag,
}
assert set(KNOBS) == {field.name for field in dataclasses.fields(Knobs)}
