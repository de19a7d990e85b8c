"""``llmtap.instrument()`` / ``llmtap.uninstrument()``: zero-config capture from inside the app.

If the app already set up OpenTelemetry, its providers are used as they are. Otherwise we install SDK providers
exporting OTLP/HTTP, which by default goes to ``http://localhost:4318`` (``llmtap serve`` or an OTel Collector);
the standard ``OTEL_*`` variables (endpoint, headers, resource, ``OTEL_SDK_DISABLED``, ``OTEL_METRICS_EXPORTER=none``)
are honoured by the SDK and exporters themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmtap.instrumentation.instrumentor import OpenAIInstrumentor
from llmtap.instrumentation.redaction import RedactHook
from opentelemetry import metrics, trace


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _resource(service_name: str | None, project: str | None) -> Any:
    from opentelemetry.sdk.resources import Resource

    attributes = {}
    if service_name:
        attributes["service.name"] = service_name
    if project:
        attributes["service.namespace"] = project
    return Resource.create(attributes)  # merges OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME


def _ensure_tracer_provider(resource: Any, endpoint: str | None) -> trace.TracerProvider:
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider) or _sdk_disabled():
        return current
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider()


def _ensure_meter_provider(resource: Any, endpoint: str | None) -> metrics.MeterProvider:
    current = metrics.get_meter_provider()
    configured = type(current).__name__ != "_ProxyMeterProvider"
    if configured or _sdk_disabled() or os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return current
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(endpoint=f"{endpoint.rstrip('/')}/v1/metrics" if endpoint else None)
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)])
    )
    return metrics.get_meter_provider()


def instrument(
    *,
    service_name: str | None = None,
    project: str | None = None,
    endpoint: str | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    capture_content: bool | None = None,
    max_content_length: int | None = None,
    redact: bool | Iterable[str] | None = None,
    redact_patterns: Mapping[str, str] | Sequence[str] | None = None,
    redact_hook: RedactHook | None = None,
) -> OpenAIInstrumentor:
    """Record every OpenAI SDK call from now on as a GenAI span (and its metrics).

    ``project`` becomes the ``service.namespace`` resource attribute; ``endpoint`` is an OTLP/HTTP base URL
    (default: ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318``). Content options default to their
    environment variables (see docs/attributes.md). Calling it again re-applies the new options.
    """
    resource = None
    if tracer_provider is None or meter_provider is None:
        resource = _resource(service_name, project)
    if tracer_provider is None:
        tracer_provider = _ensure_tracer_provider(resource, endpoint)
    if meter_provider is None:
        meter_provider = _ensure_meter_provider(resource, endpoint)
    instrumentor = OpenAIInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=capture_content,
        max_content_length=max_content_length,
        redact=redact,
        redact_patterns=redact_patterns,
        redact_hook=redact_hook,
    )
    return instrumentor


def uninstrument() -> None:
    """Put the original OpenAI SDK methods back (spans already open still end normally)."""
    OpenAIInstrumentor().uninstrument()
