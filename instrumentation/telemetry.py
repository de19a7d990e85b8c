"""What every instrumented call needs at hand: tracer, histograms and the content settings.

Built once by ``instrument()`` (or lazily by the manual API); the hot path only reads attributes from it.
Also home of ``internal_error``: our code must never break the app, so every failure inside it is caught, logged
once per place, and swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmtap.instrumentation import content, semconv
from llmtap.instrumentation.redaction import RedactHook, Redactor, build_redactor
from opentelemetry import metrics, trace

_log = logging.getLogger("llmtap.instrumentation")
_logged_failures: set[str] = set()

SCOPE_NAME = "llmtap.instrumentation.openai"


def internal_error(where: str) -> None:
    """Log the exception being handled, once per ``where``: a bug of ours must cost the app nothing but a log line."""
    if where in _logged_failures:
        return
    _logged_failures.add(where)
    _log.warning("llmtap: internal error in %s; the call itself is unaffected", where, exc_info=True)


@dataclass
class ContentSettings:
    """Whether and how message content is recorded (see docs/attributes.md, "Content")."""

    capture: bool = True
    max_length: int = content.DEFAULT_MAX_LENGTH
    redactor: Redactor = field(default_factory=Redactor)

    @classmethod
    def resolve(
        cls,
        capture_content: bool | None = None,
        max_content_length: int | None = None,
        redact: bool | Iterable[str] | None = None,
        redact_patterns: Mapping[str, str] | Sequence[str] | None = None,
        redact_hook: RedactHook | None = None,
    ) -> ContentSettings:
        """Explicit arguments win over the environment variables."""
        return cls(
            capture=content.capture_enabled_from_env() if capture_content is None else bool(capture_content),
            max_length=content.max_length_from_env()
            if max_content_length is None
            else int(max_content_length),
            redactor=build_redactor(redact, redact_patterns, redact_hook),
        )


def _version() -> str:
    from llmtap import __version__

    return __version__


class Telemetry:
    """Tracer + the three GenAI histograms + content settings, shared by all wrappers of one instrumentation."""

    def __init__(
        self,
        settings: ContentSettings,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        version = _version()
        self.tracer = trace.get_tracer(SCOPE_NAME, version, tracer_provider)
        meter = metrics.get_meter(SCOPE_NAME, version, meter_provider)
        self.duration = meter.create_histogram(
            semconv.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(semconv.DURATION_BUCKETS),
        )
        self.token_usage = meter.create_histogram(
            semconv.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(semconv.TOKEN_BUCKETS),
        )
        self.time_to_first_chunk = meter.create_histogram(
            semconv.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=list(semconv.DURATION_BUCKETS),
        )

    def record_metrics(
        self,
        attributes: dict[str, Any],
        duration_s: float,
        input_tokens: Any,
        output_tokens: Any,
        time_to_first_chunk_s: float | None,
    ) -> None:
        self.duration.record(duration_s, attributes)
        if isinstance(input_tokens, int):
            self.token_usage.record(input_tokens, {**attributes, semconv.TOKEN_TYPE: "input"})
        if isinstance(output_tokens, int):
            self.token_usage.record(output_tokens, {**attributes, semconv.TOKEN_TYPE: "output"})
        if time_to_first_chunk_s is not None:
            self.time_to_first_chunk.record(time_to_first_chunk_s, attributes)
