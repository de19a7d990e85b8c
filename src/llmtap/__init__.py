"""llmtap: record every LLM call an application makes, as OpenTelemetry GenAI spans.

The package root holds only the public API and the CLI; the parts live in subpackages
(``llmtap.instrumentation``, ``llmtap.collector``, ``llmtap.clickhouse``, ``llmtap.grafana``,
``llmtap.fake_openai``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:
    __version__ = _dist_version("llmtap")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# The public API lives in llmtap.instrumentation; it is loaded on first use so that `import llmtap` (and the CLI)
# stays light and never imports openai.
_PUBLIC_API = ("instrument", "uninstrument", "attributes", "log_interaction", "capture")

__all__ = ["__version__", *_PUBLIC_API]


def __getattr__(name: str) -> object:
    if name in _PUBLIC_API:
        from llmtap import instrumentation

        return getattr(instrumentation, name)
    raise AttributeError(f"module 'llmtap' has no attribute {name!r}")
