"""One LLM call = one span: opened with the request, closed exactly once with the response, error or stream end.

``start_call`` builds the span from the request; ``LLMCall`` closes it (``succeed``, ``fail``, or through
``StreamState`` for streams) and records the metrics. Nothing here may raise into the app: callers wrap every
entry point with ``telemetry.internal_error``.
"""

from __future__ import annotations

import time
from typing import Any

from llmtap.instrumentation import content as ct
from llmtap.instrumentation import context as custom_context
from llmtap.instrumentation import semconv as sc
from llmtap.instrumentation.operations import Operation
from llmtap.instrumentation.telemetry import Telemetry, internal_error
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

_METRIC_KEYS = (sc.OPERATION, sc.PROVIDER, sc.REQUEST_MODEL, sc.SERVER_ADDRESS, sc.SERVER_PORT)
_DEFAULT_PORTS = {"https": 443, "http": 80}


Server = tuple[str | None, int | None, str]
# The last client class and base URL object seen, and their Server: an app's calls nearly always go through the
# same client, whose URL object stays the same until the app assigns a new base_url.
_last_server: tuple[Any, Any, Server] = (None, None, (None, None, sc.PROVIDER_OPENAI))


def server_of(client: Any) -> Server:
    """(server.address, server.port, gen_ai.provider.name) of an OpenAI client."""
    global _last_server
    url = getattr(client, "base_url", None)
    last_class, last_url, server = _last_server
    if url is not None and url is last_url and type(client) is last_class:
        return server
    provider = sc.PROVIDER_AZURE if "Azure" in type(client).__name__ else sc.PROVIDER_OPENAI
    if url is None:
        return None, None, provider
    host = getattr(url, "host", None) or None
    port = getattr(url, "port", None) or _DEFAULT_PORTS.get(getattr(url, "scheme", ""))
    server = (host, port, provider)
    _last_server = (type(client), url, server)
    return server


class LLMCall:
    """The open span of one call, plus what is needed to close it and record metrics."""

    __slots__ = (
        "content_attributes",
        "ended",
        "first_chunk_ns",
        "metric_attributes",
        "operation",
        "scrubber",
        "span",
        "start_ns",
        "telemetry",
        "truncated",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        operation: Operation,
        span: trace.Span,
        metric_attributes: dict[str, Any],
        start_ns: int,
    ) -> None:
        self.telemetry = telemetry
        self.operation = operation
        self.span = span
        self.metric_attributes = metric_attributes
        self.start_ns = start_ns
        self.first_chunk_ns: int | None = None
        self.ended = False
        self.truncated = False
        self.scrubber = ct.Scrubber(telemetry.settings.redactor)
        # Request content, set on the span together with the response attributes: one SDK call instead of two.
        self.content_attributes: dict[str, Any] | None = None

    @property
    def capturing(self) -> bool:
        return self.telemetry.settings.capture and self.span.is_recording()

    def record_request_content(self, kwargs: dict[str, Any]) -> None:
        build = self.operation.request_content
        if build is None or not self.span.is_recording():
            return
        request = build(kwargs, self.scrubber)
        attrs: dict[str, Any] = {}
        settings = self.telemetry.settings
        system_json = ct.to_json(request.system) if request.system else ""
        input_json = ct.to_json(request.input) if request.input is not None else ""
        attrs[sc.PROMPT_HASH] = ct.prompt_hash(system_json, input_json)
        if self.scrubber.skipped:  # single-pass iterables the app passed, left for the SDK to read
            attrs[sc.CONTENT_SKIPPED] = self.scrubber.skipped
        if settings.capture:
            if request.system:
                attrs[sc.SYSTEM_INSTRUCTIONS] = self._fit(request.system, system_json)
            if request.input is not None:
                attrs[sc.INPUT_MESSAGES] = self._fit(request.input, input_json)
            if request.tools:
                attrs[sc.TOOL_DEFINITIONS] = self._fit(request.tools, ct.to_json(request.tools))
        self.content_attributes = attrs

    def _fit(self, value: Any, encoded: str) -> str:
        encoded, truncated = ct.fit(value, encoded, self.telemetry.settings.max_length)
        self.truncated |= truncated
        return encoded

    def output_messages_attribute(self, messages: list[Any]) -> str:
        return self._fit(messages, ct.to_json(messages))

    def mark_first_chunk(self) -> None:
        self.first_chunk_ns = time.perf_counter_ns()

    def succeed(self, response: Any) -> None:
        """Close the span with a complete (non-streamed) response."""
        if self.ended:
            return
        attrs = self.operation.response_attributes(response)
        build = self.operation.response_content
        if build is not None and self.capturing:
            attrs[sc.OUTPUT_MESSAGES] = self.output_messages_attribute(build(response, self.scrubber))
        self.end(attrs)

    def fail(
        self,
        error: BaseException,
        attrs: dict[str, Any] | None = None,
        error_type: str | None = None,
        end_time_ns: int | None = None,
    ) -> None:
        if self.ended:
            return
        attrs = attrs if attrs is not None else {}
        error_type = error_type or type(error).__qualname__
        attrs[sc.ERROR_TYPE] = error_type
        status_code = getattr(error, "status_code", None)
        if isinstance(status_code, int):
            attrs[sc.HTTP_STATUS_CODE] = status_code
        self.span.record_exception(error)
        self.span.set_status(Status(StatusCode.ERROR, f"{error_type}: {error}"))
        self.end(attrs, end_time_ns)

    def end(self, attrs: dict[str, Any], end_time_ns: int | None = None) -> None:
        """Set the final attributes, end the span and record the metrics; runs at most once.

        ``end_time_ns`` (epoch) is for the manual API, which reports calls that already happened."""
        if self.ended:
            return
        self.ended = True
        end_ns = time.perf_counter_ns() if end_time_ns is None else end_time_ns
        span = self.span
        ttfc = None
        if self.first_chunk_ns is not None:
            ttfc = (self.first_chunk_ns - self.start_ns) / 1e9
            attrs[sc.RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
        if span.is_recording():
            if self.content_attributes:
                attrs = {**self.content_attributes, **attrs}
            if self.scrubber.count:
                attrs[sc.REDACTION_COUNT] = self.scrubber.count
            if self.truncated:
                attrs[sc.CONTENT_TRUNCATED] = True
            span.set_attributes(attrs)
        span.end(end_time_ns)
        metric_attributes = self.metric_attributes
        if sc.RESPONSE_MODEL in attrs:
            metric_attributes[sc.RESPONSE_MODEL] = attrs[sc.RESPONSE_MODEL]
        if sc.ERROR_TYPE in attrs:
            metric_attributes[sc.ERROR_TYPE] = attrs[sc.ERROR_TYPE]
        self.telemetry.record_metrics(
            metric_attributes,
            (end_ns - self.start_ns) / 1e9,
            attrs.get(sc.USAGE_INPUT_TOKENS),
            attrs.get(sc.USAGE_OUTPUT_TOKENS),
            ttfc,
        )


def _sent_parameters(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request parameters as the SDK sends them: ``extra_body``, merged into the body last, wins."""
    extra = kwargs.get("extra_body")
    if not isinstance(extra, dict) or not extra:
        return kwargs
    merged = dict(kwargs)
    merged.update(extra)
    return merged


def start_call(
    telemetry: Telemetry,
    operation: Operation,
    kwargs: dict[str, Any],
    server: Server,
    start_time_ns: int | None = None,
) -> LLMCall:
    """Open the span (child of the current context) with everything known from the request.

    ``server`` is (address, port, provider); ``start_time_ns`` (epoch) is for calls reported after the fact,
    whose duration is then measured on the same clock."""
    model = kwargs.get("model")
    model = model if isinstance(model, str) else ""
    host, port, provider = server
    attrs: dict[str, Any] = {sc.OPERATION: operation.name, sc.PROVIDER: provider, sc.REQUEST_MODEL: model}
    if host:
        attrs[sc.SERVER_ADDRESS] = host
    if port:
        attrs[sc.SERVER_PORT] = port
    metric_attributes = {k: attrs[k] for k in _METRIC_KEYS if k in attrs}
    attrs.update(operation.request_attributes(_sent_parameters(kwargs)))
    custom = custom_context.current()
    if custom:
        attrs.update(custom)
    start_ns = time.perf_counter_ns() if start_time_ns is None else start_time_ns
    span = telemetry.tracer.start_span(
        f"{operation.name} {model}" if model else operation.name,
        kind=SpanKind.CLIENT,
        attributes=attrs,
        start_time=start_time_ns,
    )
    call = LLMCall(telemetry, operation, span, metric_attributes, start_ns)
    try:
        call.record_request_content(kwargs)
    except Exception:
        internal_error("recording request content")
    return call
