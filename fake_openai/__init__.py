"""A local OpenAI-compatible server for tests, benchmarks and the demo.

``FakeOpenAIServer`` serves the API on 127.0.0.1; ``llmtap.fake_openai.transport`` serves the very same bytes
in-process through httpx/httpx2. Answers are deterministic functions of the request; knobs (keyword arguments, or
``x-fake-*`` headers per request) add latency, errors, broken streams and malformed bodies.
"""

from llmtap.fake_openai.knobs import Knobs, header_name
from llmtap.fake_openai.protocol import FakeOpenAI, RecordedRequest
from llmtap.fake_openai.server import FakeOpenAIServer

__all__ = ["FakeOpenAI", "FakeOpenAIServer", "Knobs", "RecordedRequest", "header_name"]
