"""The security parts of the command line: credentials options, ``up --secure``, ``audit``.

* ``--creds FILE`` and ``--tls-ca FILE`` (or ``FOUNDATION_CREDS`` / ``FOUNDATION_TLS_CA``, and
  the other variables :meth:`NatsAuth.from_env` reads) on ``node``, ``status`` and ``drain``;
* ``foundation up --secure --dir DIR``: writes (or reuses) a secure setup in DIR — ``ca.pem``
  and one creds file per role (``admin``, ``node``, ``client``, ``observer``) — and runs the
  dev cluster on TLS + authenticated ``nats-server``\\ s, the nodes with the node role;
* ``foundation audit tail|verify|export``: the audit trail (see
  :func:`foundation.security.run_audit`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
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
from foundation.security._server import setup_dir_env


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


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--secure`` and ``--dir`` to ``foundation up``."""
    parser.add_argument(
        "--secure", action="store_true", help="TLS + authentication, one identity per role"
    )
    parser.add_argument(
        "--dir", default="foundation-secure", help="where --secure writes ca.pem and *.creds"
    )


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
) -> int:
    """``foundation up --secure --dir DIR``: the dev cluster, secure (see the module docs)."""
    from foundation.observability.dashboard import Dashboard
    from foundation.observability.status import collect_status, render_status
    from foundation.testing import LocalCluster

    root = Path(directory)
    setup = load_secure_setup(root) if (root / "setup.json").is_file() else write_secure_setup(root)
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
        async with (
            LocalCluster(nats=server, nodes=nodes, app=app, env=env, auth=node_auth) as lc,
            Dashboard.for_cluster(lc.url, port=dashboard_port, auth=node_auth) as dash,
        ):
            console.print(f"[bold green]cluster up[/bold green]: NATS at [cyan]{lc.url}[/cyan]")
            console.print(f"  CA: {setup.ca}", highlight=False, soft_wrap=True)
            for role in ("admin", "node", "client"):
                console.print(f"  {role}: {setup.creds_for(role)}", highlight=False, soft_wrap=True)
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


__all__ = [
    "add_auth_arguments",
    "add_up_arguments",
    "audit_command",
    "auth_from_args",
    "run_up_secure",
]
