"""``foundation status --tenant T`` as the operator: a tenant's status read through its exports.

A tenant is a NATS account; the operator's ``APP`` account imports from each tenant, read-only,
its node records and its nodes' ``ping`` and ``stats`` (see
:mod:`foundation.security._tenants`). :func:`collect_tenant_status` listens to the tenant's node
records for ``window`` seconds (every live node renews its record each heartbeat), then asks each
node seen for ``stats`` — no bucket, stream or agent of the tenant is reachable from ``APP``.
With the tenant's own creds, ``foundation status`` reads the tenant's account directly instead
(:func:`foundation.observability.status.collect_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from foundation.messaging.client import request
from foundation.messaging.envelope import Subjects
from foundation.nats.redact import redact_url
from foundation.security import NatsAuth, open_connection, tenant_view
from foundation.security._jwt import creds_jwt, decode

_KV_OP = "KV-Operation"


@dataclass
class TenantNode:
    """One of a tenant's nodes as the operator sees it."""

    id: str
    record: dict[str, Any]
    stats: dict[str, Any] | None = None
    responsive: bool = False
    ping_ms: float | None = None

    @property
    def agents(self) -> int:
        """Agents the node hosts (from its ``stats``; 0 when it did not answer)."""
        return int((self.stats or {}).get("agents", 0))


@dataclass
class TenantStatus:
    """What ``foundation status --tenant T`` shows with the operator's creds."""

    tenant: str
    url: str
    nodes: list[TenantNode] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when some node was seen and every node seen answered."""
        return not self.errors and bool(self.nodes) and all(n.responsive for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "tenant": self.tenant,
            "url": self.url,
            "healthy": self.healthy,
            "nodes": [
                {
                    "id": n.id,
                    "responsive": n.responsive,
                    "ping_ms": n.ping_ms,
                    "agents": n.agents,
                    "record": n.record,
                    "stats": n.stats,
                }
                for n in self.nodes
            ],
            "errors": self.errors,
        }


def creds_tenant(auth: NatsAuth) -> str | None:
    """The tenant the creds of ``auth`` belong to (their ``tenant:`` tag), ``None`` for ``APP``
    or without creds."""
    if auth.creds is None:
        return None
    try:
        claims = decode(creds_jwt(auth.creds.read_text()), check_signature=False)
    except (OSError, ValueError):
        return None
    for tag in claims.get("nats", {}).get("tags", ()):
        if str(tag).startswith("tenant:"):
            return str(tag).partition(":")[2]
    return None


async def _live_nodes(nc: NatsClient, tenant: str, window: float) -> dict[str, dict[str, Any]]:
    view = tenant_view(tenant)
    head = view.nodes[:-1]  # "<root>.nodes."
    seen: dict[str, dict[str, Any]] = {}

    async def on_record(msg: Msg) -> None:
        node_id = msg.subject[len(head) :]
        if (msg.headers or {}).get(_KV_OP) in ("DEL", "PURGE"):
            seen.pop(node_id, None)
            return
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(msg.data)
            seen[node_id] = record if isinstance(record, dict) else {}

    sub = await nc.subscribe(view.nodes, cb=on_record)
    try:
        await asyncio.sleep(window)  # a heartbeat of every live node falls in the window
    finally:
        await sub.unsubscribe()
    return seen


async def collect_tenant_status(
    url: str,
    tenant: str,
    *,
    auth: NatsAuth | None = None,
    window: float = 1.0,
    timeout: float = 1.0,  # noqa: ASYNC109 - a NATS request timeout
) -> TenantStatus:
    """Read ``tenant``'s nodes through its exports to ``APP`` (as ``auth``, an ``APP`` admin or
    observer): the nodes that renewed their record within ``window`` seconds and their stats."""
    report = TenantStatus(tenant=tenant, url=redact_url(url))
    nc = await open_connection(url, auth, name="foundation-status", max_reconnect_attempts=0)
    subjects = Subjects(prefix=tenant_view(tenant).root)
    try:
        seen = await _live_nodes(nc, tenant, window)
        report.nodes = [TenantNode(id=k, record=v) for k, v in sorted(seen.items())]

        async def ask(node: TenantNode) -> None:
            t0 = time.perf_counter()
            try:
                stats = await request(
                    nc, node.id, "stats", b"{}", timeout=timeout, subjects=subjects
                )
            except Exception:
                return
            node.ping_ms = (time.perf_counter() - t0) * 1000
            node.responsive = True
            node.stats = stats if isinstance(stats, dict) else None

        await asyncio.gather(*(ask(n) for n in report.nodes))
    except Exception as exc:
        report.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return report


def render_tenant_status(console: Console, report: TenantStatus) -> None:
    """Print ``report`` as a rich table."""
    health = "[green]healthy[/green]" if report.healthy else "[red]degraded[/red]"
    console.print(
        f"tenant [bold]{report.tenant}[/bold] at [cyan]{report.url}[/cyan]: "
        f"{len(report.nodes)} node(s), {sum(n.agents for n in report.nodes)} agent(s), {health}"
    )
    table = Table(title=f"nodes of {report.tenant}")
    for col in ("node", "status", "agents", "stats", "host", "version"):
        table.add_column(col)
    for node in report.nodes:
        table.add_row(
            node.id,
            "[green]up[/green]" if node.responsive else "[red]no answer[/red]",
            str(node.agents),
            f"{node.ping_ms:.1f} ms" if node.ping_ms is not None else "—",
            str(node.record.get("host", "")),
            str(node.record.get("version", "")),
        )
    console.print(table)
    for err in report.errors:
        console.print(f"[red]{err}[/red]")


__all__ = [
    "TenantNode",
    "TenantStatus",
    "collect_tenant_status",
    "creds_tenant",
    "render_tenant_status",
]
