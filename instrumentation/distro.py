"""What ``opentelemetry-instrument`` needs so that ``pip install llmtap`` alone exports somewhere useful.

``opentelemetry-instrument`` loads one distro (``opentelemetry_distro`` entry points, or ``OTEL_PYTHON_DISTRO``),
one configurator (``opentelemetry_configurator``, or ``OTEL_PYTHON_CONFIGURATOR``) and every instrumentor. Ours
default the exporters to OTLP over HTTP/protobuf, i.e. ``http://localhost:4318`` (``llmtap serve`` or an OTel
Collector), using ``setdefault`` so any ``OTEL_*`` variable the user set wins. With ``opentelemetry-distro`` also
installed, only one of each is loaded (the launcher warns about the other) and either configures the same SDK;
set ``OTEL_PYTHON_DISTRO=llmtap`` to be sure of the HTTP default (the upstream distro defaults to gRPC, :4317).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk._configuration import _OTelSDKConfigurator

DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
}


class LlmtapDistro(BaseDistro):  # type: ignore[misc]
    """Sets our export defaults before the configurator reads the environment."""

    def _configure(self, **kwargs: Any) -> None:
        for name, value in DEFAULTS.items():
            os.environ.setdefault(name, value)


class LlmtapConfigurator(_OTelSDKConfigurator):  # type: ignore[misc]
    """The SDK's own configurator (providers, exporters, resource from ``OTEL_*``), registered under our name:
    the SDK ships it without an entry point and expects distros to provide one."""
