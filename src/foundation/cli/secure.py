"""The security parts of the command line: credentials options, ``up --secure``, ``audit``.

* ``--creds FILE`` and ``--tls-ca FILE`` (or ``FOUNDATION_CREDS`` / ``FOUNDATION_TLS_CA``, and
  the other variables :meth:`NatsAuth.from_env` reads) on ``node``, ``status`` and ``drain``;
* ``--tenant T`` (or ``FOUNDATION_TENANT``) on ``node`` and ``status``: the tenant a node
  serves (log in with that tenant's ``node.creds``); ``status`` with the tenant's creds reads
  its account, with the operator's (``APP``) admin or observer creds reads it through the
  tenant's read-only exports (:mod:`foundation.observability.tenant_status`);
* ``foundation up --secure --dir DIR``: writes (or reuses) a secure setup in DIR — ``ca.pem``
  and one creds file per role (``admin``, ``node``, ``client``, ``observer``) — and runs the
  dev cluster on TLS + authenticated ``nats-server``\\ s, the nodes with the node role;
  with ``--tenants acme,globex`` each tenant is a NATS account with its own creds
  (``DIR/<tenant>/{node,client,admin}.creds``) and runs ``--nodes`` nodes of its own
  (``<tenant>-node-1``, ...), logged in with its ``node.creds``; no node runs in ``APP``;
* ``foundation audit tail|verify|export``: the audit trail (see
  :func:`foundation.security.run_audit`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundation.security import (
    NatsAuth,
    SecureNatsCluster,
    SecureNatsServer,
    load_secure_setup,
    run_audit,
    write_secure_setup,
)
from foundation.security._auth import ENV_CREDS, ENV_TLS_CA
from foundation.security._roles import check_token
from foundation.security._server import setup_dir_env
from foundation.security._setup import SecureSetup

#: Environment variable naming the tenant of ``foundation node`` / ``status``.
ENV_TENANT = "FOUNDATION_TENANT"


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--creds`` and ``--tls-ca`` (defaults from the environment)."""
    parser.add_argument(
        "--creds", default=os.environ.get(ENV_CREDS), help=f"NATS creds file (or ${ENV_CREDS})"
    )
    parser.add_argument(
        "--tls-ca", default=os.environ.get(ENV_TLS_CA), help=f"CA of the cluster (${ENV_TLS_CA})"
    )


def auth_from_args(args: argparse.Namespace) -> NatsAuth:
    """The credentials the options and the environment give."""
    return NatsAuth.of(
        NatsAuth.from_env(),
        creds=getattr(args, "creds", None),
        tls_ca=getattr(args, "tls_ca", None),
    )


def add_tenant_argument(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    """Add ``--tenant`` (default from ``FOUNDATION_TENANT``, else ``default``)."""
    parser.add_argument(
        "--tenant",
        type=_tenant,
        default=os.environ.get(ENV_TENANT, default),
        help=f"tenant (a NATS account with --secure --tenants; ${ENV_TENANT})",
    )


def _tenant(text: str) -> str:
    try:
        return check_token("tenant", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tenant_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one tenant: --tenants acme,globex")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"tenants must be distinct: {text!r}")
    return tuple(_tenant(t) for t in names)


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--secure``, ``--dir`` and ``--tenants`` to ``foundation up``."""
    parser.add_argument(
        "--secure", action="store_true", help="TLS + authentication, one identity per role"
    )
    parser.add_argument(
        "--dir", default="foundation-secure", help="where --secure writes ca.pem and *.creds"
    )
    parser.add_argument(
        "--tenants",
        type=_tenant_list,
        default=(),
        help="with --secure: one NATS account per tenant (comma-separated), --nodes each",
    )


def _load_or_write(root: Path, tenants: tuple[str, ...]) -> SecureSetup:
    if not (root / "setup.json").is_file():
        return write_secure_setup(root, tenants)
    setup = load_secure_setup(root)
    if set(setup.tenants) != set(tenants):
        raise ValueError(
            f"{root} holds a setup for tenants {list(setup.tenants)}, not {list(tenants)}: "
            "give another --dir (or the same tenants)"
        )
    return setup


def _show_creds(console: Any, setup: SecureSetup, tenant: str | None) -> None:
    for role in ("admin", "node", "client"):
        where = setup.creds_for(role, tenant)
        console.print(f"  {role}: {where}", highlight=False, soft_wrap=True)


def audit_command(argv: Sequence[str]) -> int:
    """``foundation audit ...``."""
    return run_audit(list(argv))


async def run_up_secure(
    nodes: int,
    servers: int,
    app: str,
    store_dir: str | None,
    dashboard_port: int,
    directory: str,
    console: Any,
    tenants: tuple[str, ...] = (),
) -> int:
    """``foundation up --secure --dir DIR``: the dev cluster, secure (see the module docs)."""
    from foundation.observability.dashboard import Dashboard
    from foundation.observability.status import collect_status, render_status
    from foundation.testing import LocalCluster

    setup = _load_or_write(Path(directory), tenants)
    store = Path(store_dir) if store_dir is not None else None
    server: SecureNatsServer | SecureNatsCluster
    if servers == 1:
        server = SecureNatsServer(setup, store_dir=store)
        await server.astart()
    else:
        server = SecureNatsCluster(servers, setup=setup, store_root=store)
        await asyncio.to_thread(server.start)
    node_auth = NatsAuth.of(creds=setup.creds_for("node"), tls_ca=setup.ca)
    env = {**os.environ, **setup_dir_env(setup, "node")}
    try:
        if tenants:
            return await _run_tenants(server, setup, nodes, app, dashboard_port, console)
        async with (
            LocalCluster(nats=server, nodes=nodes, app=app, env=env, auth=node_auth) as lc,
            Dashboard.for_cluster(lc.url, port=dashboard_port, auth=node_auth) as dash,
        ):
            console.print(f"[bold green]cluster up[/bold green]: NATS at [cyan]{lc.url}[/cyan]")
            console.print(f"  CA: {setup.ca}", highlight=False, soft_wrap=True)
            _show_creds(console, setup, None)
            console.print(f"  live dashboard: [cyan]{dash.url}[/cyan]", soft_wrap=True)
            admin = f"--creds {setup.creds_for('admin')} --tls-ca {setup.ca}"
            console.print(f"  foundation status --nats {lc.url} {admin}", soft_wrap=True)
            admin_auth = NatsAuth.of(creds=setup.creds_for("admin"), tls_ca=setup.ca)
            render_status(console, await collect_status(lc.url, auth=admin_auth))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            console.print("[yellow]stopping the cluster[/yellow]")
    finally:
        if isinstance(server, SecureNatsServer):
            await server.astop()
        else:
            await asyncio.to_thread(server.stop)
    return 0


async def _run_tenants(
    server: SecureNatsServer | SecureNatsCluster,
    setup: SecureSetup,
    nodes: int,
    app: str,
    dashboard_port: int,
    console: Any,
) -> int:
    from foundation.observability.dashboard import Dashboard
    from foundation.observability.tenant_status import (
        collect_tenant_status,
        render_tenant_status,
    )
    from foundation.testing import LocalCluster

    url = server.url if isinstance(server, SecureNatsServer) else ",".join(server.urls)
    dashboards: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        for i, tenant in enumerate(setup.tenants):
            auth = NatsAuth.of(creds=setup.creds_for("node", tenant), tls_ca=setup.ca)
            env = {
                **os.environ,
                ENV_CREDS: os.fspath(setup.creds_for("node", tenant)),
                ENV_TLS_CA: os.fspath(setup.ca),
                ENV_TENANT: tenant,
            }
            cluster = LocalCluster(
                nats=url,
                nodes=nodes,
                app=app,
                env=env,
                auth=auth,
                name_prefix=f"{tenant}-node",
                node_args=("--tenant", tenant),
            )
            await stack.enter_async_context(cluster)
            # one dashboard per tenant, its observer a node of the tenant's account: it sees
            # that tenant and nothing of the others
            dash = Dashboard.for_cluster(
                url,
                port=dashboard_port + i if dashboard_port else 0,
                auth=auth,
                tenant=tenant,
                name=f"{tenant}-dashboard",
            )
            await stack.enter_async_context(dash)
            dashboards[tenant] = dash.url
        console.print(f"[bold green]cluster up[/bold green]: NATS at [cyan]{url}[/cyan]")
        console.print(f"  CA: {setup.ca}", highlight=False, soft_wrap=True)
        console.print("  operator (APP account):", highlight=False)
        _show_creds(console, setup, None)
        for tenant in setup.tenants:
            console.print(f"  tenant {tenant} ({nodes} node(s)):", highlight=False)
            _show_creds(console, setup, tenant)
            console.print(f"    live dashboard: [cyan]{dashboards[tenant]}[/cyan]", soft_wrap=True)
        admin = f"--creds {setup.creds_for('admin')} --tls-ca {setup.ca}"
        console.print(f"  foundation status --nats {url} --tenant TENANT {admin}", soft_wrap=True)
        admin_auth = NatsAuth.of(creds=setup.creds_for("admin"), tls_ca=setup.ca)
        for tenant in setup.tenants:
            render_tenant_status(console, await collect_tenant_status(url, tenant, auth=admin_auth))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        console.print("[yellow]stopping the cluster[/yellow]")
    return 0


async def run_status(
    url: str, tenant: str | None, auth: NatsAuth, as_json: bool, console: Any
) -> int:
    """``foundation status [--tenant T]``: with the operator's creds and a tenant, read it
    through its exports; otherwise read the account the creds log in to."""
    import orjson

    from foundation.observability.status import collect_status, render_status
    from foundation.observability.tenant_status import (
        collect_tenant_status,
        creds_tenant,
        render_tenant_status,
    )

    report: Any
    if tenant is not None and auth.creds is not None and creds_tenant(auth) is None:
        report = await collect_tenant_status(url, tenant, auth=auth)
        render: Any = render_tenant_status
    else:
        report = await collect_status(url, auth=auth)
        render = render_status
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        render(console, report)
    return 0 if report.healthy else 1


__all__ = [
    "ENV_TENANT",
    "add_auth_arguments",
    "add_tenant_argument",
    "add_up_arguments",
    "audit_command",
    "auth_from_args",
    "run_status",
    "run_up_secure",
]
