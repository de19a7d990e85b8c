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

__all__ = ["__version__"]
