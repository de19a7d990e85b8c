"""Zero-code OpenAI instrumentation: one OpenTelemetry GenAI span per call.

Importing this package does not import openai; the SDK is patched only by ``instrument()`` (or by
``opentelemetry-instrument`` through the ``llmtap_openai`` entry point). Attribute names: docs/attributes.md.
"""

from llmtap.instrumentation.context import attributes
from llmtap.instrumentation.instrumentor import OpenAIInstrumentor
from llmtap.instrumentation.manual import capture, log_interaction
from llmtap.instrumentation.setup import instrument, uninstrument

__all__ = ["OpenAIInstrumentor", "attributes", "capture", "instrument", "log_interaction", "uninstrument"]
