"""Placement: which node should run a new (or failed-over) agent.

Policy apart from mechanism:

- a :class:`PlacementRequest` says what the agent needs (capabilities, resources such as
  ``{"cpu": 0.5, "memory": 256, "gpu": 1}``, nodes to avoid, affinity and anti-affinity);
- the :class:`PlacementDirector` builds the **candidates**: live, accepting (not draining)
  nodes that offer every required capability and have free capacity for every requested
  resource (free = capacity the node declares - what is reserved there: the node's
  reservation ledger when the director has one, else the load it last published; a resource
  a node does not declare counts as zero capacity), then applies affinity and anti-affinity,
  and sorts them by node id;
- a **strategy** (a small object with ``name`` and ``choose(request, candidates)``) picks one
  of those sorted candidates, deterministically: the same inputs give the same node.

Built-in strategies: ``local``, ``least_loaded``, ``load_balanced``, ``capability``,
``resource_aware``, ``spread``; :class:`Affinity` / :class:`AntiAffinity` wrap any strategy.
When no node qualifies, :class:`NoCapacityError` says what was asked, why each node was
rejected and, per requested resource that some node lacks, what is free on each node
(``details["missing"]``).

The director chooses from cached views; the choice is only a proposal. A node's resources are
taken by a compare-and-set on its reservation ledger (:mod:`foundation.placement.reservations`),
which refuses what does not fit, so concurrent spawns never over-commit a node.

Load is what each node last published in its membership record (heartbeats every 250 ms),
with the number of agents taken from the registry cache when one is given (it includes this
node's own claims at once).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from foundation._errors import NoCapacityError, PlacementError
from foundation.membership.membership import NodeRecord

#: Resource name counting agents (a node may declare ``{"agents": 1000}`` as capacity).
AGENTS = "agents"


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What an agent needs from the node that will run it."""

    agent_id: str
    """The agent to place (used by hashing strategies)."""
    capabilities: frozenset[str] = frozenset()
    """Capabilities the node must offer (all of them)."""
    resources: Mapping[str, float] = field(default_factory=dict)
    """Resources to reserve (``cpu``, ``memory``, custom names)."""
    origin: str | None = None
    """The node asking (preferred by ``local``)."""
    exclude: frozenset[str] = frozenset()
    """Nodes not to use (e.g. the draining node)."""
    affinity: frozenset[str] = frozenset()
    """Agent ids to run next to: only nodes hosting one of them qualify."""
    anti_affinity: frozenset[str] = frozenset()
    """Agent ids to keep away from: nodes hosting any of them are rejected."""
    group: str | None = None
    """Spread group (agents of one group are spread over nodes); defaults to the agent type."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that can take the agent, with the figures strategies rank by."""

    node_id: str
    """Node id."""
    record: NodeRecord
    """Its membership record."""
    agents: int
    """Agents it runs now."""
    free: Mapping[str, float]
    """Free capacity per declared resource before this placement."""
    group_count: int = 0
    """Agents of the request's spread group it runs."""

    def utilization_after(self, request: PlacementRequest) -> float:
        """Highest used/capacity fraction over the requested (or declared) resources after
        placing ``request`` here (0 when the node declares no capacity)."""
        worst = 0.0
        capacity = self.record.resources
        names = set(request.resources) | set(capacity)
        for name in names:
            cap = float(capacity.get(name, 0.0))
            if cap <= 0:
                continue
            used = cap - float(self.free.get(name, cap)) + float(request.resources.get(name, 0.0))
            worst = max(worst, used / cap)
        return worst


class PlacementStrategy(ABC):
    """Chooses one node among compatible candidates (sorted by id); must be deterministic."""

    name: ClassVar[str] = ""

    @abstractmethod
    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Return one of ``candidates`` (never empty, sorted by node id)."""

    def filter(
        self, request: PlacementRequest, candidates: Sequence[Candidate], hosts: HostsOf
    ) -> tuple[list[Candidate], dict[str, str]]:
        """Narrow candidates further (wrappers override); returns kept and rejected reasons."""
        return list(candidates), {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HostsOf(Protocol):
    """Callable giving the node that hosts an agent (or None)."""

    def __call__(self, agent_id: str) -> str | None: ...


class LocalStrategy(PlacementStrategy):
    """Run on the node that asks (``request.origin``); no capacity there is an error."""

    name = "local"

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """The origin node if it is a candidate."""
        for c in candidates:
            if c.node_id == request.origin:
                return c
        raise NoCapacityError(
            f"local placement of {request.agent_id!r}: the local node {request.origin!r} "
            "cannot take it (not live, draining, lacking a capability or capacity); use "
            "another strategy or free capacity there",
            details={"agent_id": request.agent_id, "origin": request.origin},
        )


class LeastLoadedStrategy(PlacementStrategy):
    """The node running the fewest agents (ties: lowest node id)."""

    name = "least_loaded"

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Fewest agents, then node id."""
        return min(candidates, key=lambda c: (c.agents, c.node_id))


class LoadBalancedStrategy(PlacementStrategy):
    """Rendezvous hashing of the agent id over the candidates, weighted by free capacity.

    Spreads agents evenly without coordination between spawners (no herd on the momentarily
    least-loaded node) and moves few agents when nodes come and go.
    """

    name = "load_balanced"

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Highest hash(agent, node) score scaled by the node's remaining headroom."""

        def score(c: Candidate) -> tuple[float, str]:
            digest = hashlib.blake2b(
                f"{request.agent_id}\x00{c.node_id}".encode(), digest_size=8
            ).digest()
            unit = (int.from_bytes(digest, "big") + 1) / 2**64
            headroom = max(1e-9, 1.0 - min(c.utilization_after(request), 1.0) + 1e-3)
            return (unit * headroom, c.node_id)

        return max(candidates, key=score)


class CapabilityStrategy(PlacementStrategy):
    """Best fit on capabilities: the node offering the fewest capabilities beyond those asked
    (keeps specialised nodes free), then the fewest agents."""

    name = "capability"

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Fewest extra capabilities, then fewest agents, then node id."""
        return min(
            candidates,
            key=lambda c: (
                len(set(c.record.capabilities) - request.capabilities),
                c.agents,
                c.node_id,
            ),
        )


class ResourceAwareStrategy(PlacementStrategy):
    """The node whose busiest resource is least used after placing the agent."""

    name = "resource_aware"

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Lowest utilisation after placement, then fewest agents, then node id."""
        return min(candidates, key=lambda c: (c.utilization_after(request), c.agents, c.node_id))


class SpreadStrategy(PlacementStrategy):
    """Spread one group (default: the agent type) over nodes: the node with the fewest agents
    of that group, then the fewest agents overall."""

    name = "spread"

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Fewest of the group, then fewest agents, then node id."""
        return min(candidates, key=lambda c: (c.group_count, c.agents, c.node_id))


class Affinity(PlacementStrategy):
    """Wrap a strategy: only nodes hosting one of ``agents`` qualify (run next to them)."""

    def __init__(self, inner: PlacementStrategy, agents: Iterable[str]) -> None:
        self.inner = inner
        self.agents = frozenset(agents)
        self.name = f"{inner.name}+affinity"  # type: ignore[misc]

    def filter(
        self, request: PlacementRequest, candidates: Sequence[Candidate], hosts: HostsOf
    ) -> tuple[list[Candidate], dict[str, str]]:
        """Keep nodes hosting one of the agents."""
        kept, rejected = self.inner.filter(request, candidates, hosts)
        wanted = {h for a in self.agents if (h := hosts(a)) is not None}
        out = [c for c in kept if c.node_id in wanted]
        rejected.update(
            {
                c.node_id: f"affinity: hosts none of {sorted(self.agents)}"
                for c in kept
                if c not in out
            }
        )
        return out, rejected

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Delegate to the wrapped strategy."""
        return self.inner.choose(request, candidates)


class AntiAffinity(PlacementStrategy):
    """Wrap a strategy: nodes hosting any of ``agents`` are rejected (keep apart)."""

    def __init__(self, inner: PlacementStrategy, agents: Iterable[str]) -> None:
        self.inner = inner
        self.agents = frozenset(agents)
        self.name = f"{inner.name}+anti_affinity"  # type: ignore[misc]

    def filter(
        self, request: PlacementRequest, candidates: Sequence[Candidate], hosts: HostsOf
    ) -> tuple[list[Candidate], dict[str, str]]:
        """Drop nodes hosting one of the agents."""
        kept, rejected = self.inner.filter(request, candidates, hosts)
        avoid = {h for a in self.agents if (h := hosts(a)) is not None}
        out = [c for c in kept if c.node_id not in avoid]
        rejected.update({c.node_id: "anti-affinity" for c in kept if c.node_id in avoid})
        return out, rejected

    def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
        """Delegate to the wrapped strategy."""
        return self.inner.choose(request, candidates)


#: Built-in strategies by name.
STRATEGIES: dict[str, PlacementStrategy] = {
    s.name: s
    for s in (
        LocalStrategy(),
        LeastLoadedStrategy(),
        LoadBalancedStrategy(),
        CapabilityStrategy(),
        ResourceAwareStrategy(),
        SpreadStrategy(),
    )
}


class _MembershipView(Protocol):
    def members(self) -> list[NodeRecord]: ...


class _ReservationsView(Protocol):
    def reserved(self, node_id: str) -> Mapping[str, float]: ...


class _RegistryView(Protocol):
    def counts_by_node(self) -> dict[str, int]: ...

    def cached(self, agent_id: str) -> Any: ...

    def records(self) -> list[Any]: ...


def _reject_reason(
    record: NodeRecord,
    request: PlacementRequest,
    agents: int,
    reserved: Mapping[str, float] | None = None,
) -> str | None:
    if record.id in request.exclude:
        return "excluded"
    if not record.accepting:
        return f"status {record.status!r}"
    missing = request.capabilities - set(record.capabilities)
    if missing:
        return f"missing capabilities {sorted(missing)}"
    for name, amount in request.resources.items():
        if amount <= 0:
            continue
        free = _free(record, agents, reserved).get(name, 0.0)
        if free < amount:
            return f"not enough {name}: {free:g} free, {amount:g} asked"
    cap_agents = record.resources.get(AGENTS)
    if cap_agents is not None and agents + 1 > cap_agents:
        return f"agent limit {cap_agents:g} reached"
    return None


def _free(
    record: NodeRecord, agents: int, reserved: Mapping[str, float] | None = None
) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, cap in record.resources.items():
        used = float((record.load if reserved is None else reserved).get(name, 0.0))
        if name == AGENTS:
            used = max(used, float(agents))
        out[name] = float(cap) - used
    return out


def resolve_strategy(strategy: str | PlacementStrategy | Mapping[str, Any]) -> PlacementStrategy:
    """A strategy object from a name, an object, or ``{"strategy": name, ...}``."""
    if isinstance(strategy, PlacementStrategy):
        return strategy
    if isinstance(strategy, Mapping):
        strategy = str(strategy.get("strategy", "least_loaded"))
    if isinstance(strategy, str):
        found = STRATEGIES.get(strategy)
        if found is None:
            raise PlacementError(
                f"unknown placement strategy {strategy!r}; use one of {sorted(STRATEGIES)} "
                "or pass a PlacementStrategy object",
                details={"strategy": strategy},
            )
        return found
    if callable(getattr(strategy, "choose", None)):
        return strategy  # duck-typed strategy object
    raise PlacementError(
        f"not a placement strategy: {strategy!r}", details={"strategy": repr(strategy)}
    )


class PlacementDirector:
    """Builds compatible candidates from membership (+ registry) and applies a strategy.

    ``membership`` is anything with ``members() -> list[NodeRecord]`` (a
    :class:`~foundation.membership.membership.Membership`) or a callable returning node records;
    ``registry`` (optional) supplies agent counts, hosts for affinity and spread groups;
    ``reservations`` (optional, a :class:`~foundation.placement.reservations.ReservationLedger`)
    what is reserved per node (else the load each node published is counted).
    """

    def __init__(
        self,
        membership: _MembershipView | Callable[[], Sequence[NodeRecord]],
        registry: _RegistryView | None = None,
        *,
        strategies: Mapping[str, PlacementStrategy] | None = None,
        reservations: _ReservationsView | None = None,
    ) -> None:
        self._members = membership
        self._registry = registry
        self.reservations = reservations
        self.strategies = dict(STRATEGIES)
        self.strategies.update(strategies or {})

    def register(self, strategy: PlacementStrategy) -> None:
        """Make ``strategy`` available by its name."""
        self.strategies[strategy.name] = strategy

    def _records(self) -> list[NodeRecord]:
        src = self._members
        if callable(src) and not hasattr(src, "members"):
            return list(src())
        return list(src.members())

    def _hosts(self, agent_id: str) -> str | None:
        if self._registry is None:
            return None
        rec = self._registry.cached(agent_id)
        return str(rec.node) if rec is not None else None

    def candidates(
        self, request: PlacementRequest, strategy: PlacementStrategy | None = None
    ) -> tuple[list[Candidate], dict[str, str]]:
        """Compatible candidates sorted by node id, and the reason each other node was rejected."""
        counts = self._registry.counts_by_node() if self._registry is not None else {}
        group_counts: dict[str, int] = {}
        if self._registry is not None and request.group is not None:
            indexed = getattr(self._registry, "group_counts", None)
            if indexed is not None:  # kept per change by the registry: O(nodes)
                group_counts = indexed(request.group)
            else:
                for rec in self._registry.records():
                    if rec.type == request.group or rec.metadata.get("group") == request.group:
                        group_counts[rec.node] = group_counts.get(rec.node, 0) + 1
        kept: list[Candidate] = []
        rejected: dict[str, str] = {}
        ledger = self.reservations
        for record in sorted(self._records(), key=lambda r: r.id):
            agents = max(counts.get(record.id, 0), int(record.load.get(AGENTS, 0)))
            reserved = ledger.reserved(record.id) if ledger is not None else None
            reason = _reject_reason(record, request, agents, reserved)
            if reason is not None:
                rejected[record.id] = reason
                continue
            kept.append(
                Candidate(
                    node_id=record.id,
                    record=record,
                    agents=agents,
                    free=_free(record, agents, reserved),
                    group_count=group_counts.get(record.id, 0),
                )
            )
        if request.affinity or request.anti_affinity:
            wrapped: PlacementStrategy = LeastLoadedStrategy()
            if request.affinity:
                wrapped = Affinity(wrapped, request.affinity)
            if request.anti_affinity:
                wrapped = AntiAffinity(wrapped, request.anti_affinity)
            kept, more = wrapped.filter(request, kept, self._hosts)
            rejected.update(more)
        if strategy is not None:
            kept, more = strategy.filter(request, kept, self._hosts)
            rejected.update(more)
        return kept, rejected

    def choose(
        self,
        request: PlacementRequest,
        strategy: str | PlacementStrategy | Mapping[str, Any] = "least_loaded",
    ) -> str:
        """Node id for ``request`` (deterministic); :class:`NoCapacityError` if none fits."""
        strat = (
            self.strategies[strategy]
            if isinstance(strategy, str) and strategy in self.strategies
            else resolve_strategy(strategy)
        )
        kept, rejected = self.candidates(request, strat)
        if not kept:
            missing = self.missing(request)
            lacking = "".join(
                f"; {name}: {m['asked']:g} asked, free "
                + ", ".join(f"{n} {f:g}" for n, f in m["free"].items())
                for name, m in missing.items()
            )
            raise NoCapacityError(
                f"no node can take agent {request.agent_id!r} "
                f"(capabilities {sorted(request.capabilities)}, resources "
                f"{dict(request.resources)}){lacking}; add nodes or capacity, or relax the "
                "request",
                details={
                    "missing": missing,
                    "agent_id": request.agent_id,
                    "strategy": strat.name,
                    "capabilities": sorted(request.capabilities),
                    "resources": dict(request.resources),
                    "rejected": rejected,
                },
            )
        return strat.choose(request, kept).node_id

    def missing(self, request: PlacementRequest) -> dict[str, dict[str, Any]]:
        """Per requested resource that some node lacks: the amount asked and what is free on
        each live, accepting node offering the capabilities asked
        (``{"cpu": {"asked": 0.5, "free": {"n1": 0.0}}}``)."""
        counts = self._registry.counts_by_node() if self._registry is not None else {}
        ledger = self.reservations
        out: dict[str, dict[str, Any]] = {}
        records = [
            r
            for r in self._records()
            if r.accepting
            and r.id not in request.exclude
            and request.capabilities <= set(r.capabilities)
        ]
        for name, amount in sorted(request.resources.items()):
            if amount <= 0:
                continue
            free: dict[str, float] = {}
            for record in sorted(records, key=lambda r: r.id):
                agents = max(counts.get(record.id, 0), int(record.load.get(AGENTS, 0)))
                reserved = ledger.reserved(record.id) if ledger is not None else None
                free[record.id] = max(0.0, _free(record, agents, reserved).get(name, 0.0))
            if any(f < amount for f in free.values()):
                out[name] = {"asked": float(amount), "free": free}
        return out

    async def place(
        self,
        agent_id: str,
        *,
        strategy: str | PlacementStrategy | Mapping[str, Any] = "least_loaded",
        capabilities: Iterable[str] = (),
        resources: Mapping[str, float] | None = None,
        origin: str | None = None,
        exclude: Iterable[str] = (),
        affinity: Iterable[str] = (),
        anti_affinity: Iterable[str] = (),
        group: str | None = None,
    ) -> str:
        """Choose the node for ``agent_id``; see :meth:`choose`."""
        caps = tuple(capabilities)
        request = PlacementRequest(
            agent_id=agent_id,
            capabilities=frozenset(caps),
            resources=dict(resources or {}),
            origin=origin,
            exclude=frozenset(exclude),
            affinity=frozenset(affinity),
            anti_affinity=frozenset(anti_affinity),
            group=group if group is not None else _type_capability(caps),
        )
        return self.choose(request, strategy)


def _type_capability(capabilities: Iterable[str]) -> str | None:
    for cap in capabilities:
        if cap.startswith("type:"):
            return cap[5:]
    return None


__all__ = [
    "STRATEGIES",
    "Affinity",
    "AntiAffinity",
    "Candidate",
    "CapabilityStrategy",
    "LeastLoadedStrategy",
    "LoadBalancedStrategy",
    "LocalStrategy",
    "PlacementDirector",
    "PlacementRequest",
    "PlacementStrategy",
    "ResourceAwareStrategy",
    "SpreadStrategy",
    "resolve_strategy",
]
