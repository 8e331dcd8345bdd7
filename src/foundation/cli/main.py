"""The ``foundation`` command line: ``demo``, ``up``, ``node``, ``status``.

* ``foundation demo`` — the main job: an embedded NATS, three local node processes, the sample
  order-processing app under load, and a summary (see ``foundation.cli.demo``).
* ``foundation up [--nodes N] [--nats-servers 1|3] [--app module:attr]`` — a local dev cluster:
  an embedded NATS (one server or a 3-server JetStream cluster) and N node processes; prints the
  NATS URL, a live dashboard URL (``--dashboard-port``) and the cluster status, runs until
  Ctrl-C, then stops everything.
* ``foundation node --nats URL --app module:attr --name NAME`` — one node joining the cluster at
  URL and hosting the agent classes listed at ``module:attr``; SIGTERM or Ctrl-C drains it (its
  agents are handed over to other nodes) before it leaves.
* ``foundation status [--nats URL]`` — nodes, agents per node, leader and health.
* ``foundation drain NODE [--nats URL]`` — hand NODE's agents over to other nodes with their
  state, then NODE leaves and its process exits; prints where each agent went.
* ``foundation mcp --nats URL --app module:attr [--http]`` — the routes of the cluster's agents
  as MCP tools, over stdio or streamable HTTP (see ``foundation.cli.mcp``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from foundation.cli.mcp import add_mcp_parser
from jido import DefinitionError

console = Console()

DEFAULT_APP = "foundation.demo_app:AGENTS"
"""The app hosted by ``foundation up`` and ``foundation demo`` unless ``--app`` is given."""

ENV_NATS = "FOUNDATION_NATS_URL"
"""Environment variable read by ``foundation status`` / ``node`` when ``--nats`` is not given."""


def load_app(spec: str) -> list[type]:
    """Resolve ``module:attr`` to the agent classes it lists.

    ``attr`` may be a list/tuple of agent classes, a single class, an object with an ``agents``
    attribute, or a zero-argument callable returning one of those.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise DefinitionError(
            f"--app {spec!r} is not of the form module:attr (e.g. myapp.agents:AGENTS)",
            details={"app": spec},
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DefinitionError(
            f"cannot import module {module_name!r} of --app {spec!r}: {exc}. Check the name and "
            "that it is on PYTHONPATH.",
            details={"app": spec},
            cause=exc,
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise DefinitionError(
                f"module {module_name!r} has no attribute {attr!r} (from --app {spec!r})",
                details={"app": spec},
                cause=exc,
            ) from exc
    if callable(obj) and not isinstance(obj, type):
        obj = obj()
    if hasattr(obj, "agents") and not isinstance(obj, type):
        obj = obj.agents
    items = [obj] if isinstance(obj, type) else list(obj)
    for item in items:
        if not isinstance(item, type):
            raise DefinitionError(
                f"--app {spec!r} lists {item!r}, which is not an agent class",
                details={"app": spec},
            )
    return items


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundation",
        description="Foundation: stateful agents on one machine or across a NATS cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job: 3 local nodes, load, summary")
    demo.add_argument("--nodes", type=int, default=3, help="node processes (default 3)")
    demo.add_argument("--duration", type=float, default=8.0, help="seconds of load (default 8)")
    demo.add_argument("--orders", type=int, default=24, help="order agents to deploy")
    demo.add_argument("--concurrency", type=int, default=32, help="callers driving load")

    up = sub.add_parser("up", help="start a local dev cluster until Ctrl-C")
    up.add_argument("--nodes", type=int, default=3, help="node processes (default 3)")
    up.add_argument("--nats-servers", type=int, choices=(1, 3), default=1)
    up.add_argument("--app", default=DEFAULT_APP, help="module:attr listing the agent classes")
    up.add_argument("--store-dir", default=None, help="JetStream data directory (default: temp)")
    up.add_argument("--dashboard-port", type=int, default=0, help="dashboard port (default: free)")

    node = sub.add_parser("node", help="run one node joining a cluster")
    node.add_argument("--nats", default=os.environ.get(ENV_NATS), help="NATS URL(s), comma sep.")
    node.add_argument("--app", default=DEFAULT_APP, help="module:attr listing the agent classes")
    node.add_argument("--name", default=None, help="node id (default: a unique id)")
    node.add_argument("--capability", action="append", default=[], help="node capability")

    drain = sub.add_parser("drain", help="move a node's agents (with state) away, then stop it")
    drain.add_argument("node", help="id of the node to drain")
    drain.add_argument("--nats", default=os.environ.get(ENV_NATS, "nats://127.0.0.1:4222"))
    drain.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")

    status = sub.add_parser("status", help="show nodes, agents per node, leader and health")
    status.add_argument("--nats", default=os.environ.get(ENV_NATS, "nats://127.0.0.1:4222"))
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_mcp_parser(sub, os.environ.get(ENV_NATS, "nats://127.0.0.1:4222"))
    return parser


def _run_mcp(args: argparse.Namespace) -> int:
    from foundation.cli.mcp import run_mcp

    agents = load_app(args.app)
    opts = {"http": args.http, "host": args.host, "port": args.port, "call_timeout": args.timeout}
    return asyncio.run(run_mcp(args.nats, agents, only=args.agent, **opts))


async def _run_node(url: str, app: str, name: str | None, capabilities: list[str]) -> int:
    from foundation._node import Node

    agents = load_app(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Node(nats=url, name=name, agents=agents, capabilities=capabilities) as node:
        # One line on stdout so a parent process can tell the node is up without polling.
        print(f"node {node.id} ready", flush=True)
        stopped = asyncio.ensure_future(node.wait_stopped())  # e.g. `foundation drain` did it
        signalled = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stopped, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        stopped.cancel()
        if stop.is_set():
            console.print(f"[yellow]node {node.id}: draining[/yellow]", highlight=False)
            await node.drain()
    return 0


async def _run_up(
    nodes: int, servers: int, app: str, store_dir: str | None, dashboard_port: int = 0
) -> int:
    from foundation.observability.dashboard import Dashboard
    from foundation.observability.status import collect_status, render_status
    from foundation.testing import LocalCluster

    load_app(app)  # fail early on a bad --app
    cluster = LocalCluster(nodes=nodes, nats_servers=servers, app=app, store_dir=store_dir)
    async with cluster as lc, Dashboard.for_cluster(lc.url, port=dashboard_port) as dash:
        console.print(f"[bold green]cluster up[/bold green]: NATS at [cyan]{lc.url}[/cyan]")
        console.print(f"  live dashboard: [cyan]{dash.url}[/cyan]", soft_wrap=True)
        console.print(f"  foundation status --nats {lc.url}")
        render_status(console, await collect_status(lc.url))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        console.print("[yellow]stopping the cluster[/yellow]")
    return 0


async def _run_status(url: str, as_json: bool) -> int:
    from foundation.observability.status import collect_status, render_status

    report = await collect_status(url)
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        render_status(console, report)
    return 0 if report.healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``foundation`` console script; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from foundation.cli.demo import DemoOptions, run_demo

            opts = DemoOptions(
                nodes=args.nodes,
                duration=args.duration,
                orders=args.orders,
                concurrency=args.concurrency,
            )
            return asyncio.run(run_demo(opts, console=console))
        if args.command == "up":
            return asyncio.run(
                _run_up(
                    args.nodes, args.nats_servers, args.app, args.store_dir, args.dashboard_port
                )
            )
        if args.command == "node":
            if not args.nats:
                console.print(f"[red]give --nats URL (or set {ENV_NATS})[/red]")
                return 2
            return asyncio.run(_run_node(args.nats, args.app, args.name, args.capability))
        if args.command == "mcp":
            return _run_mcp(args)
        if args.command == "status":
            return asyncio.run(_run_status(args.nats, args.json))
        if args.command == "drain":
            from foundation.failover.rebalance import run_drain_command

            return asyncio.run(run_drain_command(args.nats, args.node, args.timeout, console))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from jido import JidoError

        if isinstance(exc, JidoError):
            console.print(f"[red]{type(exc).__name__}[/red]: {exc.message}", highlight=False)
            return 1
        raise
    return 2


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
