"""What the protocol layer hands to a transport: status, headers and the body as timed chunks.

Transports (the socket server, the in-process httpx/httpx2 transports) only wait and write; every decision about
bytes and timing — including knob effects such as delays, a cut stream or a malformed body — is made here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmtap.fake_openai.knobs import Knobs

DONE = "[DONE]"


@dataclass(frozen=True)
class Chunk:
    """Body bytes sent after waiting ``delay`` seconds."""

    delay: float
    data: bytes


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``data`` is a JSON-able object or the literal ``[DONE]``."""

    data: Any
    name: str | None = None

    def encode(self, malformed: bool = False) -> bytes:
        text = self.data if self.data == DONE else dumps(self.data)
        if malformed:
            text = text[: max(1, len(text) // 2)]  # cut mid-object: never valid JSON
        head = f"event: {self.name}\n" if self.name else ""
        return f"{head}data: {text}\n\n".encode()


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    chunks: list[Chunk]
    latency: float = 0.0
    """Seconds to wait before sending the status line and headers."""
    streaming: bool = False
    """Chunked transfer (server-sent events); otherwise one body with Content-Length."""
    broken: bool = False
    """Cut the connection after the chunks, without the terminating chunk."""

    @property
    def body(self) -> bytes:
        return b"".join(chunk.data for chunk in self.chunks)


def dumps(value: Any) -> str:
    """Compact JSON, as the OpenAI API sends it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_reply(status: int, body: Any, knobs: Knobs, headers: dict[str, str]) -> Reply:
    """A JSON response; ``malformed`` truncates it so no JSON parser accepts it."""
    data = dumps(body).encode()
    if knobs.malformed:
        data = data[: max(1, len(data) // 2)]
    return Reply(
        status,
        [("content-type", "application/json"), *headers.items()],
        [Chunk(knobs.ttfc_ms / 1000, data)],
        latency=knobs.latency_ms / 1000,
    )


def stream_reply(events: list[Event], knobs: Knobs, headers: dict[str, str]) -> Reply:
    """A text/event-stream response with the knobs' timing, cut and malformed-event effects applied."""
    broken = knobs.break_after is not None
    if broken:  # never deliver the final event ([DONE], response.completed) of a stream that must break
        events = events[: min(knobs.break_after, len(events) - 1)]
    bad_index = min(1, len(events) - 1) if knobs.malformed else -1
    chunks = [
        Chunk(
            (knobs.ttfc_ms if index == 0 else knobs.chunk_delay_ms) / 1000, event.encode(index == bad_index)
        )
        for index, event in enumerate(events)
    ]
    return Reply(
        200,
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            *headers.items(),
        ],
        chunks,
        latency=knobs.latency_ms / 1000,
        streaming=True,
        broken=broken,
    )
