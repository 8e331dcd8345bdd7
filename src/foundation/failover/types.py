"""The value types of failover: the :class:`Tenure` a leader acts under, its options, events
and statistics, and :class:`DeposedError`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from foundation._errors import LeaseLostError
from foundation._wire import LEADER_LEASE

NonCritical = Literal["remove", "replace"]


class Tenure(Protocol):
    """A held leader lease (what :class:`Failover` needs from the coordination layer)."""

    @property
    def term(self) -> int:
        """Fencing token of this tenure (grows with every new tenure)."""
        ...

    @property
    def held(self) -> bool:
        """True while the lease is certainly still ours (checked before every decision)."""
        ...

    async def wait_lost(self) -> None:
        """Return once the lease is lost (expired, taken over, or resigned)."""
        ...

    async def resign(self) -> None:
        """Give the lease up now."""
        ...


Elector = Callable[[str], Awaitable[Tenure]]
"""``await elector(name)`` returns once this node leads ``name``."""


@dataclass(frozen=True, slots=True)
class FailoverOptions:
    """Tuning of :class:`Failover`.

    Attributes:
        non_critical: what happens to a non-critical agent of a dead node: ``"remove"`` its
            registry record (default) or ``"replace"`` it like a critical one (fresh state if it
            never checkpointed).
        sweep_interval: seconds between two registry sweeps for orphaned records.
        concurrency: agents re-placed in parallel by the leader.
        lease_name: name of the leader lease.
        rebalance: move agents to nodes that join (see ``foundation.failover.rebalance``).
        rebalance_interval: seconds between two rebalancing steps (and after a join).
        max_moves: agents moved per rebalancing step.
        kick_concurrency: start requests the leader keeps in flight after moves (the targets'
            reconciliation starts the rest as they see the moves).
    """

    non_critical: NonCritical = "remove"
    sweep_interval: float = 0.5
    concurrency: int = 64
    lease_name: str = LEADER_LEASE
    rebalance: bool = True
    rebalance_interval: float = 2.0
    max_moves: int = 4
    kick_concurrency: int = 48


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """One decision taken by the leader (for observers and tests)."""

    kind: Literal["moved", "removed", "pending", "leader", "deposed", "rebalanced"]
    agent_id: str
    from_node: str
    to_node: str | None
    epoch: int
    term: int
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class FailoverStatistics:
    """Immutable snapshot of a node's failover counters."""

    leader: bool
    term: int
    terms_led: int
    moved: int
    removed: int
    pending: int
    conflicts: int
    last_failover_seconds: float | None


class DeposedError(LeaseLostError):
    """This leader found a record written by a newer term: it stops leading at once."""

    type = "deposed"
