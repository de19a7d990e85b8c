"""What both receivers (HTTP and gRPC) do with a decoded export request: validate, accept, answer."""

from __future__ import annotations

import hmac
from typing import Any

from llmtap.collector.decode import Signal, validate
from llmtap.collector.pipeline import Pipeline
from llmtap.collector.stats import Stats


class Receiver:
    """Validates a request, hands its valid part to the pipeline and builds the OTLP response."""

    def __init__(self, pipeline: Pipeline, stats: Stats, token: str | None = None) -> None:
        self.pipeline = pipeline
        self.stats = stats
        self.token = token or None

    def authorized(self, authorization: str | None) -> bool:
        """True when no token is configured or the `Authorization: Bearer <token>` value matches it."""
        if self.token is None:
            return True
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip(), self.token)

    def export(self, signal: Signal, request: Any, raw: bytes | None = None) -> Any:
        """Store the valid items of ``request`` durably; raises pipeline.Refused when the buffer is full.

        ``raw`` is the request's own protobuf encoding when the client sent one, reused as the spool payload
        when validation removed nothing (saves re-serializing).
        """
        validation = validate(signal, request)
        if validation.accepted:
            payload = raw if raw is not None and not validation.rejected else request.SerializeToString()
            self.pipeline.accept(signal.name, payload, validation.accepted)
        if validation.rejected:
            self.stats.add(signal.name, "rejected", validation.rejected)
        return signal.response(validation.rejected, validation.message(signal))
