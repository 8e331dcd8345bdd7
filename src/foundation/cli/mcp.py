"""``foundation mcp``: serve a cluster's agents' routes as MCP tools.

The command joins the cluster as a node that hosts nothing (``--app`` names the agent classes
whose routes it may offer; it does not run them) and serves
:class:`~foundation.messaging.tools.ClusterToolCatalog` with ``jido.ai.mcp`` (the official
``mcp`` SDK, the ``mcp`` extra): every registered agent of those classes offers its routes
without wildcards as tools ``<agent_id>__<signal type with dots as _>``; a tool call travels by
``ClusterRef`` to wherever the agent runs now. A client's ``_meta["jido/idempotency_key"]``
becomes the signal's ``idempotencykey``.

* ``foundation mcp --nats URL --app myapp:AGENTS`` serves stdio (for a desktop client that
  starts the server itself). Nothing but MCP goes to stdout; the log goes to stderr.
* ``foundation mcp --http [--host H] [--port P]`` serves streamable HTTP and prints
  ``mcp <url>`` once it listens; with ``--token-env VAR`` every HTTP request must carry
  ``Authorization: Bearer $VAR`` (the token never appears in output or arguments).
* ``--creds`` / ``--tls-ca`` (or their environment variables) join a secure cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from foundation.cli.secure import add_auth_arguments
from foundation.security import NatsAuth

__all__ = ["add_mcp_parser", "run_mcp"]


def add_mcp_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], nats: str) -> None:
    """Add the ``mcp`` subcommand (``nats``: the default NATS URL)."""
    p = sub.add_parser("mcp", help="serve the cluster's agents' routes as MCP tools")
    p.add_argument("--nats", default=nats, help="NATS URL(s), comma separated")
    p.add_argument("--app", required=True, help="module:attr listing the agent classes")
    p.add_argument("--agent", action="append", default=None, help="offer only these agent ids")
    p.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per tool call")
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="with --http: MCP clients must send 'Authorization: Bearer $VAR'",
    )
    add_auth_arguments(p)


async def run_mcp(
    url: str,
    agents: Sequence[type],
    *,
    http: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    only: Sequence[str] | None = None,
    call_timeout: float = 30.0,
    auth: NatsAuth | None = None,
    token: str | None = None,
) -> int:
    """Join the cluster at ``url`` and serve the routes of its agents of classes ``agents``.

    ``auth``: the credentials and CA of a secure cluster (the node's role: its policy then
    decides, as for any node, which agents its tool calls may reach). ``token``: the bearer
    token HTTP clients must send.
    """
    from foundation._node import Node
    from foundation.messaging.tools import ClusterToolCatalog
    from jido.ai.mcp import MCPHTTPServer, mcp_server, serve_stdio

    node = Node(nats=url, name=None, failover=False, call_timeout=call_timeout, auth=auth)
    async with node:
        catalog = ClusterToolCatalog.for_node(node, list(agents), agents=only, timeout=call_timeout)
        server = mcp_server(node.runtime, agents=[], tools=[catalog], name="foundation")
        if not http:
            await serve_stdio(server)
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with MCPHTTPServer(server, host=host, port=port, token=token) as served:
            sys.stdout.write(f"mcp {served.url}\n")
            sys.stdout.flush()
            await stop.wait()
    return 0
