"""Log output of the ``foundation`` command: ``--log-level`` and ``--log-format text|json``.

Every record gets the fields ``node`` (the process's node, or a record's own ``node``),
``tenant``, ``agent`` (a record's ``agent`` / ``agent_id`` extra) and ``trace_id`` (the current
OpenTelemetry span's, when one is recording) where known. JSON output is one object a line:
``{"time", "level", "logger", "message", "node", "tenant", "agent", "trace_id", "error"}``
(absent fields left out).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

import orjson
from opentelemetry import trace

LEVELS = ("debug", "info", "warning", "error", "critical")
"""Accepted ``--log-level`` values."""

FORMATS = ("text", "json")
"""Accepted ``--log-format`` values."""


class ContextFilter(logging.Filter):
    """Adds ``node``, ``tenant``, ``agent`` and ``trace_id`` to every record (``None`` if
    unknown)."""

    def __init__(self, node: str | None = None, tenant: str | None = None) -> None:
        super().__init__()
        self.node = node
        self.tenant = tenant

    def filter(self, record: logging.LogRecord) -> bool:
        """Fill the fields; never drops a record."""
        d = record.__dict__
        d.setdefault("node", self.node)
        d.setdefault("tenant", self.tenant)
        if "agent" not in d:
            d["agent"] = d.get("agent_id")
        if d.get("trace_id") is None:
            ctx = trace.get_current_span().get_span_context()
            d["trace_id"] = f"{ctx.trace_id:032x}" if ctx.is_valid else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module docs)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("node", "tenant", "agent", "trace_id"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(
    level: str = "warning",
    fmt: str = "text",
    *,
    node: str | None = None,
    tenant: str | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send the ``foundation`` and ``jido`` loggers to ``stream`` (default: standard error).

    Returns the handler installed (replacing one installed before by this function).
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter(node, tenant))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    handler._foundation = True  # type: ignore[attr-defined]
    for name in ("foundation", "jido"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_foundation", False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level.upper())
    return handler


def unconfigure(handler: logging.Handler) -> None:
    """Undo :func:`configure` (the handler removed, the loggers' levels reset)."""
    for name in ("foundation", "jido"):
        logger = logging.getLogger(name)
        if handler in logger.handlers:
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)


__all__ = ["FORMATS", "LEVELS", "ContextFilter", "JsonFormatter", "configure", "unconfigure"]
