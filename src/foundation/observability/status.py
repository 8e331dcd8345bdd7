"""``foundation status``: read the cluster's state from NATS and render it.

Reads the nodes bucket (live node records), the registry bucket (agents and their owners) and
the coordination bucket (the leader lease, when the coordination part runs) and the quota
bucket (each tenant's quotas and use, see :func:`foundation.tenancy.quota_usage`) with a plain NATS
connection — no node is started and nothing is written. Health: every live node answers a ping
on its private subject, and every registered agent is owned by a live node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from rich.console import Console
from rich.table import Table

from foundation import _wire as wire
from foundation.messaging.client import request
from foundation.nats.kv import KV
from foundation.nats.redact import redact_url
from foundation.security import NatsAuth, open_connection
from foundation.tenancy import quota_usage


@dataclass
class NodeStatus:
    """One node as seen by ``status``."""

    id: str
    record: dict[str, Any]
    agents: int = 0
    responsive: bool = False
    ping_ms: float | None = None


@dataclass
class StatusReport:
    """What ``foundation status`` shows."""

    url: str
    nodes: list[NodeStatus] = field(default_factory=list)
    agents: dict[str, list[str]] = field(default_factory=dict)
    orphans: list[tuple[str, str]] = field(default_factory=list)
    leader: str | None = None
    errors: list[str] = field(default_factory=list)
    quotas: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """``{tenant: {quota field: {"limit", "used"}}}`` of the tenants that have a quota."""

    @property
    def healthy(self) -> bool:
        """True when every node answers and no agent is owned by a missing node."""
        return not self.errors and all(n.responsive for n in self.nodes) and not self.orphans

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "url": self.url,
            "healthy": self.healthy,
            "leader": self.leader,
            "nodes": [
                {
                    "id": n.id,
                    "agents": n.agents,
                    "responsive": n.responsive,
                    "ping_ms": n.ping_ms,
                    "record": n.record,
                }
                for n in self.nodes
            ],
            "agents": self.agents,
            "orphans": [{"agent": a, "node": n} for a, n in self.orphans],
            "errors": self.errors,
            "quotas": self.quotas,
        }


async def _bucket(nc: NatsClient, name: str) -> KV | None:
    js = nc.jetstream()
    try:
        info = await js.stream_info(wire.kv_stream(name))
    except Exception:
        return None
    return KV(
        nc,
        js,
        name,
        replicas=int(info.config.num_replicas or 1),
        direct=bool(info.config.allow_direct),
    )


def _json(value: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


async def collect_status(
    url: str,
    *,
    ping_timeout: float = 1.0,
    auth: NatsAuth | None = None,
    tenant: str | None = None,
) -> StatusReport:
    """Read nodes, agents and the leader from the cluster at ``url`` (as ``auth``).

    ``tenant``: only that tenant's nodes, agents and leader (soft tenants sharing one account);
    ``None``: every node and agent, and the default tenant's leader.
    """
    report = StatusReport(url=redact_url(url))
    nc = await open_connection(url, auth, name="foundation-status", max_reconnect_attempts=0)
    try:
        nodes_kv = await _bucket(nc, wire.NODES_BUCKET)
        if nodes_kv is not None:
            for key, entry in sorted((await nodes_kv.items()).items()):
                record = _json(entry.value)
                if tenant is None or record.get("tenant", wire.DEFAULT_TENANT) == tenant:
                    report.nodes.append(NodeStatus(id=key, record=record))
        registry_kv = await _bucket(nc, wire.REGISTRY_BUCKET)
        live = {n.id for n in report.nodes}
        if registry_kv is not None:
            pattern = f"{tenant}.>" if tenant is not None else ">"
            for key, entry in sorted((await registry_kv.items(pattern)).items()):
                record = _json(entry.value)
                owner = str(record.get("node", "?"))
                agent_id = str(record.get("agent_id") or key.partition(".")[2] or key)
                report.agents.setdefault(owner, []).append(agent_id)
                if owner not in live:
                    report.orphans.append((agent_id, owner))
        for node in report.nodes:
            node.agents = len(report.agents.get(node.id, []))
        quota_kv = await _bucket(nc, wire.QUOTA_BUCKET)
        if quota_kv is not None:
            report.quotas = await quota_usage(quota_kv, registry_kv)
        coord = await _bucket(nc, wire.COORD_BUCKET)
        if coord is not None:
            with contextlib.suppress(Exception):
                lease_name = wire.leader_lease(tenant or wire.DEFAULT_TENANT)
                lease_entry = await coord.get(wire.lease_key(lease_name))
                if lease_entry is not None:
                    lease = _json(lease_entry.value)
                    holder = lease.get("holder") or lease.get("node") or lease.get("owner")
                    report.leader = str(holder) if holder else None

        async def ping(node: NodeStatus) -> None:
            t0 = time.perf_counter()
            try:
                await request(nc, node.id, "ping", b"{}", timeout=ping_timeout)
            except Exception:
                return
            node.responsive = True
            node.ping_ms = (time.perf_counter() - t0) * 1000

        await asyncio.gather(*(ping(n) for n in report.nodes))
    except Exception as exc:
        report.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return report


def render_status(console: Console, report: StatusReport) -> None:
    """Print ``report`` as rich tables."""
    health = "[green]healthy[/green]" if report.healthy else "[red]degraded[/red]"
    # a node hosting no agent type (a dashboard's observer) is not counted as a cluster node
    observers = sum(
        1
        for n in report.nodes
        if not any(str(c).startswith("type:") for c in n.record.get("capabilities", ()))
    )
    extra = f" (+{observers} observer)" if observers else ""
    console.print(
        f"cluster at [cyan]{report.url}[/cyan]: {len(report.nodes) - observers} node(s){extra}, "
        f"{sum(len(v) for v in report.agents.values())} agent(s), leader "
        f"[bold]{report.leader or '—'}[/bold], {health}"
    )
    table = Table(title="nodes")
    for col in ("node", "status", "agents", "ping", "host", "capabilities", "version"):
        table.add_column(col)
    for node in report.nodes:
        rec = node.record
        caps = [c for c in rec.get("capabilities", []) if not str(c).startswith("type:")]
        table.add_row(
            node.id + (" ★" if node.id == report.leader else ""),
            "[green]up[/green]" if node.responsive else "[red]no answer[/red]",
            str(node.agents),
            f"{node.ping_ms:.1f} ms" if node.ping_ms is not None else "—",
            str(rec.get("host", "")),
            ", ".join(map(str, caps)),
            str(rec.get("version", "")),
        )
    console.print(table)
    if report.orphans:
        console.print(
            f"[red]{len(report.orphans)} agent(s) owned by nodes that are gone[/red]: "
            + ", ".join(f"{a}@{n}" for a, n in report.orphans[:10])
        )
    if report.quotas:
        render_quotas(console, report.quotas)
    for err in report.errors:
        console.print(f"[red]{err}[/red]")


def render_quotas(console: Console, quotas: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Print each tenant's use against its quotas (one row per quota that is set)."""
    table = Table(title="quotas")
    for col in ("tenant", "quota", "used", "limit", "use"):
        table.add_column(col)
    for tenant, rows in sorted(quotas.items()):
        for name, row in rows.items():
            limit, used = row.get("limit"), float(row.get("used") or 0)
            if limit is None:
                continue
            share = used / float(limit) if limit else 1.0
            color = "red" if share >= 1 else "yellow" if share >= 0.8 else "green"
            table.add_row(
                tenant, name, f"{used:g}", f"{float(limit):g}", f"[{color}]{share:.0%}[/{color}]"
            )
    console.print(table)


__all__ = ["NodeStatus", "StatusReport", "collect_status", "render_quotas", "render_status"]
