"""The dashboard's view of agents: grouped by owner, one agent in detail, the owners it had,
and the nodes' own events (fences, denials) merged once each.

- :class:`AgentsView` groups the registry by owner (recomputed only when the cache moved).
- :class:`OwnerHistory` keeps, for the agents whose record changed while the dashboard ran,
  the owners they had (bounded: the most recently changed agents, a few owners each).
- :class:`NodeEventFeed` turns the numbered ``events`` of each node's ``stats`` reply into new
  events only.
- :func:`agent_detail` answers ``/api/agents/<id>``: the registry record, the owner's runtime
  bookkeeping (:class:`jido.AgentInfo`, asked with the ``info`` op; metadata, never state) and
  the owner history.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from foundation.messaging.envelope import encode_request

__all__ = [
    "MAX_AGENT_IDS",
    "AgentsView",
    "NodeAgents",
    "NodeEventFeed",
    "OwnerHistory",
    "agent_detail",
]

#: Agent ids listed per node in the status (counts are always complete).
MAX_AGENT_IDS = 500
#: Agents whose owner history is kept (the most recently changed), and owners kept per agent.
HISTORY_AGENTS = 10_000
HISTORY_OWNERS = 8


@dataclass(frozen=True, slots=True)
class NodeAgents:
    """The agents one node owns, as shown: count, critical count, first ids, types."""

    count: int
    critical: int
    ids: list[str]
    types: dict[str, int]

    @classmethod
    def of(cls, records: Sequence[Any]) -> NodeAgents:
        """Summarise one owner's registry records."""
        types: dict[str, int] = {}
        for record in records:
            types[record.type] = types.get(record.type, 0) + 1
        short: dict[str, int] = {}
        for name, count in types.items():
            label = name.rpartition(":")[2] or name or "?"
            short[label] = short.get(label, 0) + count
        ids = sorted(r.agent_id for r in records)
        return cls(
            count=len(records),
            critical=sum(1 for r in records if r.critical),
            ids=ids[:MAX_AGENT_IDS],
            types=dict(sorted(short.items())),
        )


NO_AGENTS = NodeAgents(0, 0, [], {})


@dataclass(frozen=True, slots=True)
class AgentsView:
    """Agents grouped by owner at one registry cache version."""

    version: int | None
    by_node: dict[str, NodeAgents]
    total: int
    critical: int
    types: dict[str, int]

    @classmethod
    def of(cls, records: Iterable[Any], version: int | None) -> AgentsView:
        """Group ``records`` (the registry cache at ``version``) by owner."""
        groups: dict[str, list[Any]] = {}
        for record in records:
            groups.setdefault(record.node, []).append(record)
        by_node = {owner: NodeAgents.of(group) for owner, group in groups.items()}
        types: dict[str, int] = {}
        for summary in by_node.values():
            for name, count in summary.types.items():
                types[name] = types.get(name, 0) + count
        return cls(
            version=version,
            by_node=by_node,
            total=sum(g.count for g in by_node.values()),
            critical=sum(g.critical for g in by_node.values()),
            types=dict(sorted(types.items())),
        )


class OwnerHistory:
    """The owners of the agents whose record changed while it watched (newest last)."""

    def __init__(self, agents: int = HISTORY_AGENTS, owners: int = HISTORY_OWNERS) -> None:
        self._agents = agents
        self._owners = owners
        self._items: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    def note(self, change: Any) -> None:
        """Take one registry change (claim, move, removal)."""
        record, previous = change.record, change.previous
        if record is None:
            return
        if change.kind == "delete":
            entry = {"node": record.node, "epoch": record.epoch, "event": "removed"}
        elif previous is None:
            entry = {"node": record.node, "epoch": record.epoch, "event": "claimed"}
        elif previous.node != record.node:
            entry = {"node": record.node, "epoch": record.epoch, "event": "moved"}
        else:
            return
        owners = self._items.pop(record.agent_id, None)
        if owners is None:
            owners = deque(maxlen=self._owners)
            if previous is not None and entry["event"] == "moved":
                owners.append({"node": previous.node, "epoch": previous.epoch, "event": "seen"})
        owners.append({**entry, "time": time.time()})
        self._items[record.agent_id] = owners
        while len(self._items) > self._agents:
            self._items.popitem(last=False)

    def of(self, agent_id: str) -> list[dict[str, Any]]:
        """The owners seen for ``agent_id``, oldest first (empty when it never changed)."""
        return list(self._items.get(agent_id, ()))


class NodeEventFeed:
    """The events of each node's ``stats`` reply not seen before (by their ``seq``)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int]] = {}  # node -> (its start time, last seq)

    def new(self, node_id: str, stats: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """The events of ``stats`` (one node's reply) newer than the last ones taken."""
        if not stats:
            return []
        events = stats.get("events")
        if not isinstance(events, list):
            return []
        # a restarted node numbers from 1 again: its uptime went down
        uptime = float(stats.get("uptime") or 0.0)
        started = time.time() - uptime
        known = self._seen.get(node_id)
        last = known[1] if known is not None and abs(known[0] - started) < 5.0 else 0
        out: list[dict[str, Any]] = []
        top = last
        for event in events:
            if not isinstance(event, dict):
                continue
            try:
                seq = int(event["seq"])
            except (KeyError, TypeError, ValueError):
                continue
            if seq > last:
                out.append(event)
                top = max(top, seq)
        self._seen[node_id] = (started, top)
        return out

    def forget(self, live: Iterable[str]) -> None:
        """Drop the nodes not in ``live``."""
        keep = set(live)
        for gone in set(self._seen) - keep:
            del self._seen[gone]


async def agent_detail(
    node: Any,
    agent_id: str,
    owners: OwnerHistory,
    *,
    timeout: float,  # noqa: ASYNC109 - the owner's request timeout
) -> dict[str, Any] | None:
    """What ``/api/agents/<id>`` shows, or ``None`` when no agent ``agent_id`` is registered.

    The owner is asked for its runtime detail with the ``info`` op (never activating anything);
    an owner that cannot answer leaves ``runtime`` empty and says why in ``runtime_error``.
    """
    record = await node.registry.lookup(agent_id)
    if record is None:
        return None
    runtime: dict[str, Any] | None = None
    error: str | None = None
    try:
        if record.node == node.id:
            local = node.host.local_ref(agent_id)
            if local is None:
                raise LookupError(f"agent {agent_id!r} is not running on {node.id} now")
            runtime = {**local.info().to_dict(), "node": node.id}
        else:
            reply = await node.client.request(
                record.node, "info", encode_request(agent_id), timeout=timeout, agent_id=agent_id
            )
            runtime = reply if isinstance(reply, dict) else None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    out: dict[str, Any] = {
        "agent": agent_id,
        "record": orjson.loads(record.encode()),
        "runtime": runtime,
        "runtime_error": error,
        "owners": owners.of(agent_id),
    }
    out["record"].pop("metadata", None)  # an application's own data: not the dashboard's
    return out
