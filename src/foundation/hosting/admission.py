"""Admission of an agent to a node: placed, its resources reserved by CAS, then registered.

The two registry writes that give an agent a node — a claim (spawn, virtual activation) and a
move (hand-over) — are each preceded by a reservation on the target's ledger
(:mod:`foundation.placement.reservations`) and carry its token; a registry write that fails
releases the reservation it made. The failover, which moves agents as well, does the same with
the same helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from foundation.hosting.clustered import ClusterSpec, type_name_of
from foundation.placement.reservations import (
    ReservationLedger,
    holding,
    positive,
    reserve_placed,
)
from foundation.registry.registry import ClusterRegistry, RegistryRecord


class HostView(Protocol):
    """What admission needs from the node's :class:`~foundation.hosting.host.AgentHost`."""

    placement: Any
    """The placement director (with its reservation ledger)."""
    registry: ClusterRegistry
    """The agent registry."""

    async def place(
        self,
        agent_cls: type,
        spec: ClusterSpec,
        agent_id: str,
        *,
        away: bool = False,
        on: str | None = None,
    ) -> str:
        """A node for ``agent_id`` (see ``AgentHost.place``)."""
        ...

    def spec_of(self, type_name: str) -> ClusterSpec | None:
        """The cluster spec of a hosted agent type."""
        ...


def ledger_of(director: Any) -> ReservationLedger | None:
    """The reservation ledger a placement director counts (``None`` if it has none)."""
    ledger = getattr(director, "reservations", None)
    return ledger if isinstance(ledger, ReservationLedger) else None


async def claim_placed(
    host: HostView,
    cls: type,
    spec: ClusterSpec,
    agent_id: str,
    *,
    on: str | None = None,
    away: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> RegistryRecord:
    """Place ``agent_id`` (on ``on`` when given), reserve its resources there and claim its
    registry record for that node.

    Raises :class:`~foundation._errors.NoCapacityError` when no node (or not ``on``) has the
    resources free, and ``AlreadyRegisteredError`` when the id is taken (the reservation made
    for it is released first).
    """
    ledger = ledger_of(host.placement)
    resources = positive(spec.resources)

    async def place() -> str:
        return await host.place(cls, spec, agent_id, away=away, on=on)

    target, token = await reserve_placed(ledger, agent_id, resources, place, forced=on is not None)
    return await holding(
        ledger,
        target,
        token,
        host.registry.claim(
            agent_id,
            node=target,
            type=type_name_of(cls),
            critical=spec.critical,
            capabilities=list(spec.capabilities),
            placement=spec.to_dict()["placement"],
            metadata=dict(metadata or {}),
            delivery=spec.delivery,
            resources=resources,
            reservation=token,
        ),
    )


def resources_of(host: HostView, record: RegistryRecord) -> dict[str, float]:
    """What ``record``'s agent reserves: as its record says, else as its class declares."""
    if record.resources:
        return positive(record.resources)
    spec = host.spec_of(record.type)
    return positive(spec.resources) if spec is not None else {}


async def move_reserved(
    host: HostView, agent_id: str, *, to: str, expected: RegistryRecord
) -> RegistryRecord:
    """Reserve the agent's resources on ``to`` (by CAS; ``NoCapacityError`` if they do not fit)
    and move its record there by CAS against ``expected``, carrying the new reservation."""
    ledger = ledger_of(host.placement)
    resources = resources_of(host, expected)
    token = await ledger.reserve(to, agent_id, resources) if ledger is not None else ""
    if resources:
        expected = msgspec.structs.replace(expected, resources=resources, reservation=token)
    return await holding(ledger, to, token, host.registry.move(agent_id, to=to, expected=expected))


__all__ = ["HostView", "claim_placed", "ledger_of", "move_reserved", "resources_of"]
