"""Rebalancing when nodes join, hand-over between nodes, and graceful drain.

**Hand-over** (:meth:`AgentHost.hand_over <foundation.hosting.host.AgentHost.hand_over>`, served
by the owner on its ``handoff`` op): the owner parks the agent (its reconciliation will not
restart it), stops it — the runtime lets the command in progress finish and commits its final
checkpoint — then moves the registry record by CAS to the target (the epoch grows, the leader's
term is stamped), un-parks it and asks the target to start it. The target's activation claims the
state key with the new epoch and restores that last checkpoint. The agent is never moved in the
middle of a command, and no two copies run: the old one is stopped before the record moves.

**Rebalancing** (:class:`Rebalancer`, run by the leader): when a node joins, the leader moves
agents from the most loaded nodes to it, at most ``max_moves`` per ``interval``, until the
joined node holds its share: the average number of agents over the **hosts** (members that
accept agents and host at least one agent type; clients and draining nodes are not counted),
within ``tolerance``. Only nodes that can host an agent's type (capability ``type:<type>``),
accept agents (status ``up``) and have its resources free receive it (the owner reserves them
on the target by CAS before the record moves), and agents are only taken from hosts (never from a
draining node: it hands its agents over itself). Every node's rebalancer notes the joins it
sees, leading or not, so a join seen around a change of leader (in a rolling restart, the
leader is drained and its node rejoins while the next leader takes over) is acted on by the
next leader, which takes over the joins of the last ``join_memory`` seconds. Rebalancing only
follows joins: agents deliberately placed (``spawn(node=...)``) are not moved otherwise.

**Drain** (:func:`request_drain`, ``foundation drain NODE``): the node refuses new agents, hands
each agent over to a placed target with its state, leaves the membership and stops (the process
exits). Agents no other node can take stay registered to it and are re-placed by the failover
once its record is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from foundation._errors import InvalidRequestError, NodeUnavailableError
from foundation._wire import LEADER_KEY, LEADER_LEASE, TERM_KEY
from foundation.coordination.coordination import Coordination
from foundation.hosting.admission import ledger_of
from foundation.hosting.host import AgentHost
from foundation.membership.membership import Membership
from foundation.messaging.client import NodeClient, request
from foundation.messaging.envelope import encode_request
from foundation.registry.registry import ClusterRegistry
from jido import TimeoutError as RequestTimeoutError

log = logging.getLogger("foundation.rebalance")


class ClusterNode(Protocol):
    """What failover and rebalancing need from the node they serve (a ``Node`` is one)."""

    @property
    def id(self) -> str:
        """The node's id."""
        ...

    @property
    def membership(self) -> Membership:
        """The membership view (who is live, joins and losses)."""
        ...

    @property
    def registry(self) -> ClusterRegistry:
        """The agent registry."""
        ...

    @property
    def coordination(self) -> Coordination | None:
        """The node's coordination (the leader lease is campaigned for there)."""
        ...

    @property
    def host(self) -> AgentHost:
        """The agents running on the node (activation and hand-over here)."""
        ...

    @property
    def client(self) -> NodeClient:
        """Requests to other nodes."""
        ...


@dataclass(frozen=True, slots=True)
class Move:
    """One hand-over decided by the rebalancer."""

    agent_id: str
    from_node: str
    to_node: str
    epoch: int
    term: int
    seconds: float


# -- owner side ----------------------------------------------------------------------------------


async def hand_over(
    node: ClusterNode, agent_id: str, *, to: str, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Hand ``agent_id`` over from ``node`` (its owner) to node ``to``; see module docs."""
    return await node.host.hand_over(agent_id, to=to, metadata=metadata)


async def checked_handoff(
    node: ClusterNode, extra: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The target and leader stamp of a ``handoff`` request, believed only if the lease backs them.

    Only the cluster leader sends ``handoff`` (rebalancing), stamped with its term. The stamp
    is written into the agent's record, where a higher term deposes the leader, so it is taken
    only when the leader lease (a CAS-written key) names the same holder and term; the target
    must be a live member accepting agents.
    """
    to = extra.get("to")
    if not isinstance(to, str) or not to or to == node.id:
        raise InvalidRequestError(
            "handoff needs a target node ('to'), another node than the owner",
            details={"field": "to"},
        )
    member = node.membership.snapshot.get(to)
    if member is None or not node.membership.is_live(to) or not member.accepting:
        raise InvalidRequestError(
            f"handoff target {to[:64]!r} is not a live member accepting agents",
            details={"field": "to"},
        )
    stamp = extra.get("stamp")
    term = stamp.get(TERM_KEY) if isinstance(stamp, Mapping) else None
    leader = stamp.get(LEADER_KEY) if isinstance(stamp, Mapping) else None
    if not isinstance(term, int) or isinstance(term, bool) or not isinstance(leader, str):
        raise InvalidRequestError(
            "handoff needs the leader's stamp {'fdn.term': int, 'fdn.leader': str}",
            details={"field": "stamp"},
        )
    failover = getattr(node, "failover", None)  # the node's Failover, when it runs one
    lease = getattr(getattr(failover, "options", None), "lease_name", LEADER_LEASE)
    coordination = node.coordination
    current = await coordination.leader(lease) if coordination is not None else None
    if current != (leader, term):
        raise InvalidRequestError(
            f"handoff refused: its stamp (leader {leader[:64]!r}, term {term}) is not the "
            "current leader lease; only the cluster leader moves agents",
            details={"field": "stamp", "term": term},
        )
    return to, {TERM_KEY: term, LEADER_KEY: leader}


# -- caller side ---------------------------------------------------------------------------------


async def request_drain(nc: Any, node_id: str, *, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Ask node ``node_id`` to drain; returns its answer (``{"node", "draining", "agents"}``)."""
    try:
        result: dict[str, Any] = await request(
            nc, node_id, "drain", encode_request(node_id, None), timeout=timeout
        )
    except (NodeUnavailableError, RequestTimeoutError) as exc:
        raise NodeUnavailableError(
            f"node {node_id!r} did not answer the drain request; is it running?",
            details={"node": node_id},
            cause=exc,
        ) from exc
    return result


async def request_hand_over(
    node: ClusterNode,
    record: Any,
    to: str,
    *,
    metadata: Mapping[str, Any],
    timeout: float = 10.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Ask the owner of ``record`` to hand the agent over to ``to``."""
    if record.node == node.id:
        return await node.host.hand_over(record.agent_id, to=to, metadata=metadata)
    payload = encode_request(record.agent_id, None, to=to, stamp=dict(metadata))
    result: dict[str, Any] = await node.client.request(
        record.node, "handoff", payload, timeout=timeout, agent_id=record.agent_id
    )
    return result


# -- leader side ---------------------------------------------------------------------------------


class Rebalancer:
    """Moves agents to nodes that join, in bounded steps; acts only while the node leads.

    Joins are noted by every node (:meth:`on_join`), whether it leads or not; :meth:`step` is
    run by the leader only, at most once per ``interval``, and moves at most ``max_moves``
    agents, one hand-over at a time. A new leader keeps the joins it noted in the last
    ``join_memory`` seconds before its tenure (older ones were for its predecessor to fill).
    """

    def __init__(
        self,
        node: ClusterNode,
        *,
        interval: float = 2.0,
        max_moves: int = 4,
        tolerance: int = 1,
        join_memory: float = 60.0,
    ) -> None:
        self.node = node
        self.interval = interval
        self.max_moves = max_moves
        self.tolerance = tolerance
        self.join_memory = join_memory
        # This node joined just now, too: should it come to lead soon, it fills itself.
        self._joined: dict[str, float] = {node.id: time.monotonic()}
        self._last_run = 0.0
        self._term: int | None = None
        self.moves: list[Move] = []

    def on_join(self, node_id: str) -> None:
        """Note that ``node_id`` joined: it is a rebalancing target from now on."""
        self._joined[node_id] = time.monotonic()

    @property
    def pending(self) -> bool:
        """True while joined nodes are waiting to be filled."""
        return bool(self._joined)

    def due(self) -> bool:
        """True when a step may run now (joined nodes wait, one step per interval)."""
        return bool(self._joined) and time.monotonic() - self._last_run >= self.interval

    def _hostable(self, member: Any, record: Any) -> bool:
        ledger = ledger_of(self.node.host.placement)
        return (
            member.accepting
            and (not record.type or f"type:{record.type}" in member.capabilities)
            and (ledger is None or ledger.fits(member, record.resources))
        )

    @staticmethod
    def _hosts(members: Mapping[str, Any], counts: Mapping[str, int]) -> set[str]:
        """Members that take part in the balance: accepting agents and hosting at least one
        agent type (or holding agents)."""
        return {
            node_id
            for node_id, m in members.items()
            if m.accepting
            and (counts.get(node_id, 0) > 0 or any(c.startswith("type:") for c in m.capabilities))
        }

    async def _ready(self, node_id: str) -> bool:
        try:
            await self.node.client.request(node_id, "ping", b"{}", timeout=1.0)
        except Exception:
            return False
        return True

    async def step(self, term: int, held: Any) -> list[Move]:
        """One bounded step: move up to ``max_moves`` agents towards the joined nodes."""
        now = time.monotonic()
        self._last_run = now
        if term != self._term:  # a new tenure: joins noted long before it are not ours to fill
            self._term = term
            for node_id, seen in list(self._joined.items()):
                if now - seen > self.join_memory:
                    self._joined.pop(node_id)
        members = {m.id: m for m in self.node.membership.members()}
        registry = self.node.registry
        by_node = registry.counts_by_node()
        hosts = self._hosts(members, by_node)
        for node_id in list(self._joined):
            if node_id not in hosts:
                self._joined.pop(node_id)  # gone, draining, or hosting nothing (a client)
        if not self._joined:
            return []
        counts = {n: by_node.get(n, 0) for n in hosts}
        average = sum(counts.values()) / len(counts)
        moves: list[Move] = []
        pools: dict[str, list[Any]] = {}
        moved: set[str] = set()
        for _ in range(self.max_moves):
            targets = [n for n in self._joined if n in counts]
            if not targets:
                break
            target = min(targets, key=lambda n: (counts[n], n))
            if counts[target] + self.tolerance > average:
                self._joined.pop(target, None)  # filled up to about the average
                continue
            source = max(counts, key=lambda n: (counts[n], n))
            if source == target or counts[source] - counts[target] <= self.tolerance:
                self._joined.pop(target, None)
                continue
            # a source's records are listed (sorted) once per step, not once per move: a
            # source can hold 100,000
            pool = pools.get(source)
            if pool is None:
                pool = pools[source] = registry.assigned_to(source)
            record = next(
                (
                    r
                    for r in pool
                    if r.agent_id not in moved
                    and r.status == "active"
                    and self._hostable(members[target], r)
                ),
                None,
            )
            if record is None:
                counts[source] = 0  # nothing movable there; try the next most loaded
                continue
            if not held():
                break
            if not await self._ready(target):
                break  # joined the membership but not serving yet: next step
            t0 = time.monotonic()
            try:
                out = await request_hand_over(
                    self.node, record, target, metadata={TERM_KEY: term, LEADER_KEY: self.node.id}
                )
            except Exception as exc:
                log.info("hand-over of %s to %s failed: %r", record.agent_id, target, exc)
                break
            counts[source] -= 1
            counts[target] += 1
            moved.add(record.agent_id)
            move = Move(
                record.agent_id,
                source,
                target,
                int(out.get("epoch", 0)),
                term,
                time.monotonic() - t0,
            )
            moves.append(move)
            self.moves.append(move)
        return moves


async def run_drain_command(
    url: str,
    node_id: str,
    timeout: float,  # noqa: ASYNC109
    console: Any,
    options: dict[str, Any] | None = None,
) -> int:
    """``foundation drain NODE``: drain it, wait until it left, show where its agents went
    (``options``: more ``nats.connect`` options, e.g. credentials)."""
    from rich.table import Table

    from foundation.nats.kv import connect

    nc = await connect(url, name="foundation-drain", **(options or {}))
    members = Membership(nc, None)
    registry: ClusterRegistry | None = None
    try:
        await members.start()
        member = members.snapshot.get(node_id)
        if member is None:
            console.print(f"[red]node {node_id!r} is not a live member of the cluster[/red]")
            return 1
        registry = ClusterRegistry(nc, tenant=member.tenant)  # the node's tenant's agents
        await registry.start()
        before = [r.agent_id for r in registry.assigned_to(node_id)]
        answer = await request_drain(nc, node_id)
        console.print(
            f"draining [bold]{node_id}[/bold]: {answer.get('agents', 0)} agents to hand over",
            highlight=False,
        )
        try:
            await members.wait_gone(node_id, timeout=timeout)
        except TimeoutError:
            console.print(f"[red]node {node_id} did not leave within {timeout:.0f}s[/red]")
            return 1
        table = Table(title=f"agents of {node_id}")
        table.add_column("agent")
        table.add_column("now on")
        table.add_column("epoch", justify="right")
        left = 0
        for agent_id in before:
            record = await registry.lookup(agent_id, consistent=True)
            where = record.node if record is not None else "(removed)"
            left += where == node_id
            table.add_row(agent_id, where, str(record.epoch) if record is not None else "—")
        console.print(table)
        if left:
            console.print(
                f"[yellow]{left} agents could not be placed elsewhere; the failover re-places "
                "them when a node can take them[/yellow]"
            )
        console.print(f"[green]node {node_id} drained and left[/green]")
        return 0
    finally:
        if registry is not None:
            await registry.stop()
        await members.stop()
        await nc.close()


__all__ = [
    "Move",
    "Rebalancer",
    "hand_over",
    "request_drain",
    "request_hand_over",
    "run_drain_command",
]
