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
* ``foundation up --secure --dir DIR``, ``--creds`` / ``--tls-ca`` on ``node``, ``status`` and
  ``drain``, and ``foundation audit tail|verify|export``: see ``foundation.cli.secure``.
* ``foundation quota set|show TENANT [--max-agents N ...]`` — a tenant's quotas and their use
  (see ``foundation.cli.quota``).
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

from foundation.cli import options
from foundation.cli.mcp import add_mcp_parser
from foundation.cli.quota import add_quota_parser, run_quota
from foundation.cli.secure import (
    add_auth_arguments,
    add_tenant_argument,
    add_up_arguments,
    audit_command,
    auth_from_args,
    run_status,
)
from jido import DefinitionError

console = options.console()
err_console = options.error_console()

DEFAULT_APP = "foundation.demo_app:AGENTS"
"""The app hosted by ``foundation up`` and ``foundation demo`` unless ``--app`` is given."""

ENV_NATS = options.ENV_NATS
"""Environment variable read by ``foundation status`` / ``node`` when ``--nats`` is not given."""
ENV_LEASE_TTL = "FOUNDATION_LEASE_TTL"
"""Environment variable read by ``foundation node`` when ``--lease-ttl`` is not given."""


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
    from jido import Agent

    try:
        items = [obj] if isinstance(obj, type) else list(obj)
    except TypeError:
        items = [obj]
    for item in items:
        if not isinstance(item, type) or not issubclass(item, Agent):
            raise DefinitionError(
                f"--app {spec!r} lists {item!r}, which is not an agent class (a jido.Agent "
                "subclass)",
                details={"app": spec},
            )
    if not items:
        raise DefinitionError(f"--app {spec!r} lists no agent class", details={"app": spec})
    return items


def _build_parser() -> argparse.ArgumentParser:
    fmt = options.HelpFormatter
    parser = argparse.ArgumentParser(
        prog="foundation",
        description="Foundation: stateful agents on one machine or across a NATS cluster.",
        epilog=f"environment: ${ENV_NATS} names the NATS URL(s) when --nats is not given; the "
        "standard OTEL_* variables (e.g. OTEL_EXPORTER_OTLP_ENDPOINT) turn on trace export "
        "of `foundation node` when the [otel] extra is installed.",
        formatter_class=fmt,
    )
    options.add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    num, secs, port = options.positive_int, options.positive_float, options.port

    demo = sub.add_parser(
        "demo", help="run the main job: 3 local nodes, load, summary", formatter_class=fmt
    )
    demo.add_argument("--nodes", type=num, default=3, help="node processes")
    demo.add_argument("--duration", type=secs, default=8.0, help="seconds of load")
    demo.add_argument("--orders", type=num, default=24, help="order agents to deploy")
    demo.add_argument("--concurrency", type=num, default=32, help="callers driving load")

    up = sub.add_parser("up", help="start a local dev cluster until Ctrl-C", formatter_class=fmt)
    up.add_argument("--nodes", type=num, default=3, help="node processes")
    up.add_argument("--nats-servers", type=int, choices=(1, 3), default=1, help="NATS servers")
    up.add_argument("--app", default=DEFAULT_APP, help="module:attr listing the agent classes")
    up.add_argument("--store-dir", default=None, help="JetStream data directory (None: temp)")
    up.add_argument("--dashboard-port", type=port, default=0, help="dashboard port (0: free)")
    up.add_argument(
        "--log-dir", default=None, help="where each node's log file goes (None: a new temp dir)"
    )
    add_up_arguments(up)

    node = sub.add_parser("node", help="run one node joining a cluster", formatter_class=fmt)
    node.add_argument("--nats", default=os.environ.get(ENV_NATS), help=options.nats_help())
    node.add_argument("--app", default=DEFAULT_APP, help="module:attr listing the agent classes")
    node.add_argument("--name", default=None, help="node id (None: a unique id)")
    node.add_argument("--capability", action="append", default=[], help="node capability")
    node.add_argument(
        "--metrics-port",
        type=port,
        default=None,
        help="serve Prometheus metrics on this port (0: a free port; None: no endpoint)",
    )
    node.add_argument(
        "--lease-ttl",
        type=options.positive_float,
        default=os.environ.get(ENV_LEASE_TTL),
        help=f"membership lease in seconds: a node whose lease is not renewed for this long is "
        f"failed over (raise it for nodes with very many agents; ${ENV_LEASE_TTL}; unset: 1 s)",
    )
    add_auth_arguments(node)
    add_tenant_argument(node, default="default")

    local = "nats://127.0.0.1:4222"
    drain = sub.add_parser(
        "drain", help="move a node's agents (with state) away, then stop it", formatter_class=fmt
    )
    drain.add_argument("node", help="id of the node to drain")
    drain.add_argument("--nats", default=os.environ.get(ENV_NATS, local), help=options.nats_help())
    drain.add_argument("--timeout", type=secs, default=60.0, help="seconds to wait")
    add_auth_arguments(drain)

    status = sub.add_parser(
        "status", help="show nodes, agents per node, leader and health", formatter_class=fmt
    )
    status.add_argument("--nats", default=os.environ.get(ENV_NATS, local), help=options.nats_help())
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_auth_arguments(status)
    add_tenant_argument(status, default=None)
    sub.add_parser("audit", help="the audit trail: tail, verify, export (see audit --help)")
    add_mcp_parser(sub, os.environ.get(ENV_NATS, "nats://127.0.0.1:4222"))
    add_quota_parser(sub, os.environ.get(ENV_NATS, local))
    return parser


def _run_mcp(args: argparse.Namespace) -> int:
    from foundation.cli.mcp import run_mcp

    agents = load_app(args.app)
    token = None
    if args.token_env is not None:
        token = os.environ.get(args.token_env)
        if not token:
            err_console.print(f"error: --token-env {args.token_env}: that variable is not set")
            return 2
    opts = {"http": args.http, "host": args.host, "port": args.port, "call_timeout": args.timeout}
    auth = auth_from_args(args)
    return asyncio.run(run_mcp(args.nats, agents, only=args.agent, auth=auth, token=token, **opts))


async def _run_node(
    url: str,
    app: str,
    name: str | None,
    capabilities: list[str],
    auth: Any = None,
    tenant: str = "default",
    lease_ttl: float | None = None,
) -> int:
    from foundation.observability.otel import setup_from_env

    agents = load_app(app)
    provider = setup_from_env(name)
    try:
        return await _serve_node(url, agents, name, capabilities, auth, tenant, lease_ttl)
    finally:
        if provider is not None:
            provider.shutdown()  # send the last spans


async def _serve_node(
    url: str,
    agents: list[type],
    name: str | None,
    capabilities: list[str],
    auth: Any = None,
    tenant: str = "default",
    lease_ttl: float | None = None,
) -> int:
    from foundation._node import Node

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Node(
        nats=url,
        name=name,
        agents=agents,
        capabilities=capabilities,
        auth=auth,
        tenant=tenant,
        lease_ttl=lease_ttl,
    ) as node:
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
    nodes: int,
    servers: int,
    app: str,
    store_dir: str | None,
    dashboard_port: int = 0,
    log_dir: str | None = None,
) -> int:
    import tempfile

    from foundation.observability.dashboard import Dashboard
    from foundation.observability.status import collect_status, render_status
    from foundation.testing import LocalCluster

    load_app(app)  # fail early on a bad --app
    logs = log_dir or tempfile.mkdtemp(prefix="foundation-logs-")  # kept after the cluster stops
    cluster = LocalCluster(
        nodes=nodes, nats_servers=servers, app=app, store_dir=store_dir, log_dir=logs
    )
    async with cluster as lc, Dashboard.for_cluster(lc.url, port=dashboard_port) as dash:
        console.print(
            f"[bold green]cluster up[/bold green]: {len(lc.nodes)} node(s), NATS at "
            f"[cyan]{lc.url}[/cyan]"
        )
        for name, local in lc.nodes.items():
            console.print(f"  node {name} log: {local.log_path}", highlight=False)
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


async def _run_status(url: str, as_json: bool, auth: Any = None) -> int:
    from foundation.observability.status import collect_status, render_status

    report = await collect_status(url, auth=auth)
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        render_status(console, report)
    return 0 if report.healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``foundation`` console script; returns the process exit code.

    Errors go to standard error with a non-zero status and no traceback: 2 for usage errors
    (argparse), 1 for everything else.
    """
    from foundation.observability import logs

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["audit"]:
        return audit_command(argv[1:])

    args = _build_parser().parse_args(argv)
    handler = logs.configure(args.log_level, args.log_format, node=getattr(args, "name", None))
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from jido import JidoError

        message = exc.message if isinstance(exc, JidoError) else str(exc) or repr(exc)
        err_console.print(f"[red]{type(exc).__name__}[/red]: {message}", highlight=False)
        return 1
    finally:
        logs.unconfigure(handler)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from foundation.cli.demo import DemoOptions, run_demo

        opts = DemoOptions(
            nodes=args.nodes,
            duration=args.duration,
            orders=args.orders,
            concurrency=args.concurrency,
        )
        return asyncio.run(run_demo(opts, console=console))
    if args.command == "up" and args.tenants and not args.secure:
        err_console.print("[red]--tenants needs --secure (a tenant is a NATS account)[/red]")
        return 2
    if args.command == "up" and args.secure:
        from foundation.cli.secure import run_up_secure

        return asyncio.run(
            run_up_secure(
                args.nodes,
                args.nats_servers,
                args.app,
                args.store_dir,
                args.dashboard_port,
                args.dir,
                console,
                args.tenants,
            )
        )
    if args.command == "up":
        return asyncio.run(
            _run_up(
                args.nodes,
                args.nats_servers,
                args.app,
                args.store_dir,
                args.dashboard_port,
                args.log_dir,
            )
        )
    if args.command == "node":
        if not args.nats:
            err_console.print(f"[red]give --nats URL (or set {ENV_NATS})[/red]")
            return 2
        if args.metrics_port is not None:
            from foundation.observability.node_metrics import serve_metrics

            serve_metrics(args.metrics_port)
        auth = auth_from_args(args)
        return asyncio.run(
            _run_node(
                args.nats, args.app, args.name, args.capability, auth, args.tenant, args.lease_ttl
            )
        )
    if args.command == "mcp":
        return _run_mcp(args)
    if args.command == "status":
        if args.tenant is not None:
            return asyncio.run(
                run_status(args.nats, args.tenant, auth_from_args(args), args.json, console)
            )
        return asyncio.run(_run_status(args.nats, args.json, auth_from_args(args)))
    if args.command == "quota":
        return asyncio.run(run_quota(args, console))
    if args.command == "drain":
        from foundation.failover.rebalance import run_drain_command

        connect = auth_from_args(args).connect_options()
        return asyncio.run(run_drain_command(args.nats, args.node, args.timeout, console, connect))
    return 2


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
