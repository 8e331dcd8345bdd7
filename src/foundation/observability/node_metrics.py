"""Serve this process's node metrics (``foundation._metrics.REGISTRY``) over HTTP."""

from __future__ import annotations

import sys

from prometheus_client import start_http_server

from foundation._metrics import REGISTRY


def serve_metrics(port: int, addr: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread; return the port bound.

    Port 0 binds a free port. The port is also written to standard error
    (``metrics on :PORT``) so a supervisor can find it.
    """
    server, _ = start_http_server(port, addr=addr, registry=REGISTRY)
    bound = int(server.server_address[1])
    print(f"metrics on :{bound}", file=sys.stderr, flush=True)
    return bound


__all__ = ["serve_metrics"]
