"""Configure the OpenTelemetry SDK of a node process from the standard ``OTEL_*`` variables.

``foundation node`` calls :func:`setup_from_env`: when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, ``OTEL_SDK_DISABLED`` is not ``true`` and the
``[otel]`` extra is installed, spans are exported over OTLP/HTTP in batches, with the resource
``service.name`` (``OTEL_SERVICE_NAME``, default ``foundation``) and ``foundation.node``. The
sampler follows ``OTEL_TRACES_SAMPLER`` as the SDK reads it (default: every span, parent-based).
The provider also becomes the process's global one when none is set yet, so the GenAI spans of
the LLM loop and the spans of instrumented libraries an action uses are exported with the
node's.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace

from foundation import _tracing

log = logging.getLogger("foundation.otel")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""Either variable turns OTLP export on."""


def setup_from_env(node: str | None = None) -> Any | None:
    """Install an SDK tracer provider exporting over OTLP/HTTP; return it (``None``: not set up).

    Call ``provider.shutdown()`` before the process exits so the last spans are sent.
    """
    if not any(os.environ.get(v) for v in ENDPOINT_VARS):
        return None
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed; "
            "install foundation-agents[otel] to export traces"
        )
        return None
    attrs: dict[str, Any] = {"service.name": os.environ.get("OTEL_SERVICE_NAME", "foundation")}
    if node:
        attrs[_tracing.ATTR_NODE] = node
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracing.configure(provider)
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # the process's own provider too: the LLM loop's GenAI spans (tracer ``jido.ai``) and
        # any instrumented library in the node's actions use the global one
        trace.set_tracer_provider(provider)
    return provider


__all__ = ["ENDPOINT_VARS", "setup_from_env"]
