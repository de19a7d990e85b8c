"""The ``opentelemetry_instrumentor`` entry point (``llmtap_openai``): what ``opentelemetry-instrument`` loads."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from llmtap.instrumentation.telemetry import ContentSettings, Telemetry
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor


class OpenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """One GenAI span per OpenAI SDK call (see docs/attributes.md).

    ``instrument()`` accepts the standard ``tracer_provider``/``meter_provider`` plus our content options:
    ``capture_content``, ``max_content_length``, ``redact``, ``redact_patterns``, ``redact_hook`` (each defaults
    to its environment variable).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.0",)

    def _instrument(self, **kwargs: Any) -> None:
        from llmtap.instrumentation import patching

        settings = ContentSettings.resolve(
            capture_content=kwargs.get("capture_content"),
            max_content_length=kwargs.get("max_content_length"),
            redact=kwargs.get("redact"),
            redact_patterns=kwargs.get("redact_patterns"),
            redact_hook=kwargs.get("redact_hook"),
        )
        telemetry = Telemetry(settings, kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
        patching.patch(telemetry)

    def _uninstrument(self, **kwargs: Any) -> None:
        from llmtap.instrumentation import patching

        patching.unpatch()
