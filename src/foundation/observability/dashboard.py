"""A live web dashboard and Prometheus endpoint for a cluster, served by one node.

```python
async with Node(nats=url) as node, Dashboard(node) as dash:   # loopback, free port
    print(dash.url)
```

Routes (GET or HEAD):

- ``/`` — an HTML page (no external assets): nodes, agents, leader, throughput, latency and
  recent events, updated live from ``/api/events``.
- ``/api/status`` — that data as JSON; ``/api/events`` — one SSE ``status`` event per refresh.
- ``/api/agents/<id>`` — one agent: its registry record, its owner's runtime detail
  (:class:`jido.AgentInfo`: status, mailbox, commands, checkpoint, state size, last error) and
  the owners it had while the dashboard watched.
- ``/metrics`` — the Prometheus text exposition format (version 0.0.4).
- ``/healthz`` — ``200`` while the node runs and holds its membership lease, else ``503``.

Every ``refresh`` seconds it reads the membership, the registry, the leader lease, the quota use
(``quotas``) and every live node's statistics (the others' over their ``stats`` subject: the
round trip is the *ping*; each reply's command histogram is summed into cluster-wide latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import orjson

from foundation import _wire as wire
from foundation._errors import ClusterError
from foundation._ids import check_agent_id
from foundation._metrics import command_summary
from foundation.nats.kv import KV
from foundation.nats.redact import redact_url
from foundation.observability import http
from foundation.observability.access import AccessGuard
from foundation.observability.agents_view import (
    NO_AGENTS,
    AgentsView,
    NodeEventFeed,
    OwnerHistory,
    agent_detail,
)
from foundation.observability.cluster_view import ClusterCommands
from foundation.observability.metrics import COUNTERS, Latency, exposition

__all__ = ["Dashboard", "DashboardError"]

#: Largest request head accepted.
MAX_HEAD = 16 * 1024

_PAGE_RESOURCE = "dashboard_page.html"


class DashboardError(ClusterError):
    """The dashboard cannot serve this node (not started, or the address is taken)."""

    type = "dashboard_error"


def _page() -> bytes:
    return (
        importlib.resources.files(__package__ or "foundation.observability")
        .joinpath(_PAGE_RESOURCE)
        .read_bytes()
    )


class Dashboard:
    """Serve a live dashboard, ``/api/status``, ``/metrics`` and ``/healthz`` for ``node``.

    Args:
        node: a started :class:`foundation.Node` (the dashboard reads its public objects).
        host: address to listen on (default loopback only).
        port: TCP port; ``0`` (default) picks a free one — read :attr:`url`.
        refresh: seconds between two collections of the cluster's state.
        latencies: optional list of call latencies in seconds that the application appends
            to; new entries are read at every refresh.
        errors: optional mapping of error type → count kept by the application.
        stats_timeout: how long to wait for another node's statistics, in seconds.
        history: how many recent events are kept.
        token, allowed_hosts: access (see :mod:`~foundation.observability.access`): a token is
            required beyond loopback; ``Host`` must name this dashboard.

    Use as ``async with Dashboard(node) as dash:`` or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        node: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        refresh: float = 1.0,
        latencies: Sequence[float] | None = None,
        errors: Mapping[str, int] | None = None,
        stats_timeout: float = 0.5,
        history: int = 100,
        token: str | None = None,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self._access = AccessGuard(host, token, allowed_hosts)
        if refresh <= 0:
            raise DashboardError("refresh must be > 0 seconds", details={"refresh": refresh})
        self.node = node
        self.host = host
        self.port = int(port)
        self.refresh = float(refresh)
        self.stats_timeout = float(stats_timeout)
        self._ext_latencies = latencies
        self._ext_seen = 0
        self._ext_errors = errors
        self._latency = Latency()
        self._cluster = ClusterCommands()  # the nodes' own command histograms, added up
        self._errors: dict[str, int] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=history)
        self._event_counts: dict[tuple[str, str], int] = {}
        self._prev: dict[str, tuple[float, int]] = {}
        self._rates: dict[str, float] = {}
        self._leader: tuple[str, int] | None = None
        self._coord: KV | None = None
        self._server: asyncio.Server | None = None
        self._collector: asyncio.Task[None] | None = None
        self._handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._closing = False
        self._status: dict[str, Any] = {}
        self._status_json = b"{}"
        self._updated = asyncio.Event()
        self._collections = 0
        self._page = _page()
        self._own_node: Any = None  # an observer node started and stopped by this dashboard
        self._agents: AgentsView | None = None
        self._owners = OwnerHistory()
        self._node_events = NodeEventFeed()

    @classmethod
    def for_cluster(
        cls,
        nats: str | Sequence[str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        **options: Any,
    ) -> Dashboard:
        """A dashboard of the cluster at ``nats`` served by its own observer node.

        The observer is a :class:`foundation.Node` hosting no agent type (so nothing is ever
        placed on it) named ``name`` (default ``dashboard-<random>``); the dashboard starts it
        on :meth:`start` and stops it on :meth:`stop`. ``options`` are those of the
        constructor (``refresh=``, ...), plus ``auth=`` and ``tenant=`` for the observer.
        """
        from foundation._node import Node

        name = name or f"dashboard-{uuid.uuid4().hex[:6]}"
        node = Node(
            nats=nats,
            name=name,
            agents=[],
            auth=options.pop("auth", None),
            tenant=options.pop("tenant", None) or wire.DEFAULT_TENANT,
        )
        dash = cls(node, host, port, **options)
        dash._own_node = node
        return dash

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The page's URL (``http://host:port/``); valid once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Collect once, then listen and keep collecting every ``refresh`` seconds."""
        if self._own_node is not None and self._server is None:
            await self._own_node.start()
            try:
                await self._start()
            except BaseException:
                await self._own_node.stop()
                raise
        else:
            await self._start()

    async def _start(self) -> None:
        node = self.node
        if getattr(node, "membership", None) is None or getattr(node, "registry", None) is None:
            raise DashboardError(
                "the node is not started: start it first "
                "(async with Node(...) as node: async with Dashboard(node) as dash: ...)",
                details={"node": getattr(node, "id", None)},
            )
        if self._server is not None:
            return
        node.membership.add_listener(self._on_membership)
        node.registry.add_listener(self._on_registry)
        try:
            await self.collect()
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, limit=MAX_HEAD
            )
        except BaseException as exc:
            self._remove_listeners()
            if not isinstance(exc, OSError):
                raise
            raise DashboardError(
                f"cannot listen on {self.host}:{self.port}: {exc}; pick another port or 0",
                details={"host": self.host, "port": self.port},
                cause=exc,
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._collector = asyncio.create_task(self._collect_loop(), name="dashboard-collector")

    async def stop(self) -> None:
        """Stop listening, end open connections (event streams included) and collecting."""
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
            self._collector = None
        if self._server is not None:
            self._closing = True
            self._server.close()
            self._updated.set()  # wakes the event streams, which see _closing and end
            for writer in list(self._handlers.values()):
                writer.close()  # ends reads in progress
            if self._handlers:
                _, pending = await asyncio.wait(list(self._handlers), timeout=2.0)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
            await self._server.wait_closed()
            self._server = None
            self._closing = False
            self._remove_listeners()
        if self._own_node is not None:
            await self._own_node.stop()

    def _remove_listeners(self) -> None:
        with contextlib.suppress(Exception):
            self.node.membership.remove_listener(self._on_membership)
        with contextlib.suppress(Exception):
            self.node.registry.remove_listener(self._on_registry)

    # -- inputs ------------------------------------------------------------------------------

    def observe(self, seconds: float, *, error: str | None = None) -> None:
        """Record one call: its latency in seconds, or the error type it failed with."""
        if error is not None:
            self._errors[error] = self._errors.get(error, 0) + 1
        else:
            self._latency.add(seconds)

    def _event(self, kind: str, node: str, *, agent: str | None = None, detail: str = "") -> None:
        source = "membership" if kind in ("join", "leave", "expire", "update") else "registry"
        if kind in ("leader", "fence", "fenced", "denied"):
            source = "leader" if kind == "leader" else "node"
        self._events.append(
            {
                "time": time.time(),
                "kind": kind,
                "source": source,
                "node": node,
                "agent": agent,
                "detail": detail,
            }
        )
        self._event_counts[(source, kind)] = self._event_counts.get((source, kind), 0) + 1

    def _on_membership(self, event: Any) -> None:
        detail = ""
        if event.kind == "update" and event.record is not None:
            detail = f"status {event.record.status}"
        elif event.kind == "expire":
            detail = "lease expired"
        self._event(str(event.kind), str(event.node_id), detail=detail)

    def _on_registry(self, change: Any) -> None:
        self._owners.note(change)
        record, previous = change.record, change.previous
        if record is None:
            return
        if change.kind == "delete":
            self._event("removed", record.node, agent=record.agent_id, detail=f"from {record.node}")
        elif previous is None:
            self._event("claimed", record.node, agent=record.agent_id, detail=f"on {record.node}")
        elif previous.node != record.node:
            self._event(
                "moved",
                record.node,
                agent=record.agent_id,
                detail=f"{previous.node} → {record.node} (epoch {record.epoch})",
            )

    # -- collection --------------------------------------------------------------------------

    async def _collect_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.collect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the last status; say what failed
                self._status = {**self._status, "error": f"{type(exc).__name__}: {exc}"}
                self._publish()

    async def _stats_of(self, node_id: str) -> tuple[dict[str, Any] | None, float | None]:
        node = self.node
        if node_id == node.id:
            stats: dict[str, Any] = node.statistics().to_dict()
            events = node.host.events.recent()
            return {**stats, "commands": command_summary(node.id), "events": events}, None
        t0 = time.perf_counter()
        try:
            reply = await node.client.request(node_id, "stats", b"{}", timeout=self.stats_timeout)
        except Exception:
            return None, None
        rtt = time.perf_counter() - t0
        return (reply if isinstance(reply, dict) else None), rtt

    async def _read_leader(self) -> tuple[str, int] | None:
        if self._coord is None:
            js = self.node.nc.jetstream()
            try:
                info = await js.stream_info(wire.kv_stream(wire.COORD_BUCKET))
            except Exception:
                return None  # no coordination bucket yet: no leader
            self._coord = KV(
                self.node.nc,
                js,
                wire.COORD_BUCKET,
                replicas=int(info.config.num_replicas or 1),
                direct=bool(info.config.allow_direct),
            )
        entry = await self._coord.get(wire.lease_key(wire.leader_lease(self.node.tenant)))
        if entry is None:
            return None
        try:
            data = orjson.loads(entry.value)
        except orjson.JSONDecodeError:
            return None
        holder = data.get("holder") if isinstance(data, dict) else None
        if not holder:
            return None
        return str(holder), int(data.get("term") or entry.revision)

    def _ingest_external(self) -> None:
        ext = self._ext_latencies
        if ext is None:
            return
        size = len(ext)
        if size < self._ext_seen:  # the list was cleared or replaced
            self._ext_seen = 0
        for i in range(self._ext_seen, size):
            self._latency.add(float(ext[i]))
        self._ext_seen = size

    async def collect(self) -> dict[str, Any]:
        """Read the cluster's state now; returns (and serves from then on) the new status."""
        node = self.node
        now, mono = time.time(), time.monotonic()
        snapshot = node.membership.snapshot
        members = snapshot.records()
        agents = self._agents_view()
        pairs = await asyncio.gather(*(self._stats_of(m.id) for m in members))
        try:
            leader = await self._read_leader()
        except Exception:
            leader = self._leader
        if leader != self._leader and leader is not None:
            self._event("leader", leader[0], detail=f"{leader[0]} leads (term {leader[1]})")
        self._leader = leader
        self._ingest_external()

        by_node = agents.by_node
        live = {m.id for m in members}
        nodes: list[dict[str, Any]] = []
        total_rate = 0.0
        for member, (stats, rtt) in zip(members, pairs, strict=True):
            rate = self._rate(member.id, stats, mono)
            total_rate += rate or 0.0
            owned = by_node.get(member.id, NO_AGENTS)
            nodes.append(
                {
                    "id": member.id,
                    "host": member.host,
                    "pid": member.pid,
                    "status": member.status,
                    "version": member.version,
                    "started_at": member.started_at,
                    "load": dict(member.load),
                    "resources": dict(member.resources),
                    "capabilities": [c for c in member.capabilities if not c.startswith("type:")],
                    "agents": owned.count,
                    "critical": owned.critical,
                    "agent_ids": owned.ids,
                    "types": owned.types,
                    "responsive": stats is not None,
                    "ping_ms": rtt * 1000 if rtt is not None else None,
                    "signals_per_s": rate,
                    "stats": stats,
                    "self": member.id == node.id,
                    "leader": leader is not None and leader[0] == member.id,
                }
            )
        for gone in set(self._prev) - live:
            self._prev.pop(gone, None)
        for member, (stats, _) in zip(members, pairs, strict=True):
            for event in self._node_events.new(member.id, stats):
                self._event(
                    str(event.get("kind")),
                    member.id,
                    agent=event.get("agent"),
                    detail=str(event.get("detail") or ""),
                )
        self._node_events.forget(live)
        dead_owners = sorted(set(by_node) - live)
        orphaned = sum(by_node[owner].count for owner in dead_owners)
        orphans = [  # the first ids of each dead owner; ``orphaned`` is the full count
            {"agent": agent_id, "node": owner}
            for owner in dead_owners
            for agent_id in by_node[owner].ids
        ]
        totals = _sum_stats([n["stats"] for n in nodes if n["stats"] is not None])
        quantiles = self._latency.quantiles()
        errors = dict(self._errors)
        for kind, count in (self._ext_errors or {}).items():
            errors[str(kind)] = errors.get(str(kind), 0) + int(count)
        health = self.health()
        status: dict[str, Any] = {
            "time": now,
            "node": node.id,
            "url": self.url,
            "nats_url": redact_url(getattr(node, "url", "")),
            "healthy": health["status"] == "ok"
            and not orphaned
            and all(n["responsive"] for n in nodes),
            "health": health,
            "leader": {"node": leader[0], "term": leader[1]} if leader else None,
            "membership_version": snapshot.version,
            "registry_version": int(getattr(node.registry, "version", 0)),
            "nodes": nodes,
            "agents": {
                "total": agents.total,
                "critical": agents.critical,
                "orphaned": orphaned,
                "by_node": {k: v.count for k, v in sorted(by_node.items())},
                "by_type": agents.types,
            },
            "orphans": orphans,
            "totals": {**totals, "signals_per_s": total_rate},
            "latency": {
                "count": self._latency.count,
                "sum": self._latency.sum,
                "window": len(self._latency.window),
                "buckets": self._latency.buckets(),
                **{f"p{round(q * 100)}": v for q, v in quantiles.items()},
            },
            "errors": errors,
            "cluster": self._cluster.update(
                ((n["stats"] or {}).get("commands") for n in nodes), mono
            ),
            "quotas": node.quotas.report(),
            "events": list(reversed(self._events)),
            "collections": self._collections + 1,
        }
        self._collections += 1
        self._status = status
        self._publish()
        return status

    def _agents_view(self) -> AgentsView:
        """Agents grouped by owner, recomputed only when the registry cache has moved."""
        registry = self.node.registry
        version = getattr(registry, "version", None)
        cached = self._agents
        if cached is not None and version is not None and cached.version == version:
            return cached
        self._agents = AgentsView.of(registry.records(), version)
        return self._agents

    def _rate(self, node_id: str, stats: Mapping[str, Any] | None, mono: float) -> float | None:
        if stats is None:
            return self._rates.get(node_id)
        count = int(stats.get("calls_in", 0)) + int(stats.get("casts_in", 0))
        prev = self._prev.get(node_id)
        self._prev[node_id] = (mono, count)
        if prev is None or mono <= prev[0]:
            return self._rates.get(node_id, 0.0)
        delta = count - prev[1]
        rate = max(0.0, delta / (mono - prev[0])) if delta >= 0 else 0.0
        self._rates[node_id] = rate
        return rate

    def _publish(self) -> None:
        self._status_json = orjson.dumps(self._status, default=str)
        self._updated.set()
        self._updated = asyncio.Event()

    # -- views -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The last collected status (what ``/api/status`` serves)."""
        return self._status

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "unavailable", ...}`` for ``/healthz``."""
        node = self.node
        stage = getattr(node, "stage", None)
        stage_name = getattr(stage, "name", str(stage)).lower()
        membership = getattr(node, "membership", None)
        holds = bool(getattr(membership, "holds_lease", False))
        ok = stage_name == "running" and holds
        return {
            "status": "ok" if ok else "unavailable",
            "node": node.id,
            "stage": stage_name,
            "holds_lease": holds,
        }

    def metrics(self) -> str:
        """The last status in the Prometheus text exposition format (0.0.4)."""
        return exposition(self._status, self._event_counts)

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a handler; asyncio's stream server must not see it cancelled.
            if not self._closing:
                raise
        finally:
            self._handlers.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        except asyncio.LimitOverrunError:
            await http.respond(writer, 431, b"request head too large\n", "text/plain")
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await http.respond(writer, 400, b"bad request\n", "text/plain")
            return
        method, target = parts[0], parts[1]
        path = urlsplit(target).path or "/"
        if (refused := self._access.refusal(head, path)) is not None:
            return await http.respond(
                writer, refused[0], refused[1], "text/plain", extra=refused[2]
            )
        if method not in ("GET", "HEAD"):
            await http.respond(
                writer, 405, b"only GET and HEAD\n", "text/plain", extra={"Allow": "GET, HEAD"}
            )
            return
        head_only = method == "HEAD"
        if path in ("/", "/index.html"):
            await http.respond(
                writer, 200, self._page, "text/html; charset=utf-8", head_only=head_only
            )
        elif path == "/api/status":
            await http.respond(
                writer, 200, self._status_json, "application/json", head_only=head_only
            )
        elif path == "/metrics":
            body = self.metrics().encode()
            ctype = "text/plain; version=0.0.4; charset=utf-8"
            await http.respond(writer, 200, body, ctype, head_only=head_only)
        elif path == "/healthz":
            health = self.health()
            code = 200 if health["status"] == "ok" else 503
            await http.respond(
                writer, code, orjson.dumps(health), "application/json", head_only=head_only
            )
        elif path.startswith("/api/agents/"):
            await self._agent(writer, path.removeprefix("/api/agents/"), head_only=head_only)
        elif path == "/api/events":
            await self._stream(writer, head_only=head_only)
        else:
            await http.respond(writer, 404, b"not found\n", "text/plain", head_only=head_only)

    async def _agent(self, writer: asyncio.StreamWriter, raw: str, *, head_only: bool) -> None:
        try:
            agent_id = check_agent_id(unquote(raw))
        except Exception as exc:
            body = orjson.dumps({"error": "invalid_agent_id", "message": str(exc)})
            return await http.respond(writer, 400, body, "application/json", head_only=head_only)
        detail = await agent_detail(self.node, agent_id, self._owners, timeout=self.stats_timeout)
        if detail is None:
            body = orjson.dumps(
                {"error": "agent_not_found", "message": f"no agent {agent_id!r} is registered"}
            )
            return await http.respond(writer, 404, body, "application/json", head_only=head_only)
        body = orjson.dumps(detail, default=str)
        await http.respond(writer, 200, body, "application/json", head_only=head_only)

    async def _stream(self, writer: asyncio.StreamWriter, *, head_only: bool) -> None:
        writer.write(
            http.head(
                200,
                "text/event-stream",
                None,
                extra={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        )
        await writer.drain()
        if head_only:
            return
        writer.write(b"retry: 2000\n\n")
        while not self._closing:
            waiter = self._updated
            writer.write(b"event: status\ndata: " + self._status_json + b"\n\n")
            await writer.drain()
            try:
                await asyncio.wait_for(waiter.wait(), 15.0)
            except TimeoutError:
                writer.write(b": keep-alive\n\n")


def _sum_stats(stats: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    totals = dict.fromkeys((name for name, _ in COUNTERS), 0)
    for item in stats:
        for name in totals:
            totals[name] += int(item.get(name, 0) or 0)
    return totals
