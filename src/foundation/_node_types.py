"""The value types of the :class:`~foundation.Node` facade: its start-up :class:`Stage` and the
:class:`NodeStatistics` snapshot (also what the ``stats`` op answers)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["NodeStatistics", "Stage"]


class Stage(enum.IntEnum):
    """Start-up stages of a :class:`Node`, in order (stop runs them in reverse)."""

    CREATED = 0
    CONNECT = 1
    BUCKETS = 2
    MEMBERSHIP = 3
    REGISTRY = 4
    RUNTIME = 5
    TRANSPORT = 6
    RECONCILE = 7
    RUNNING = 8
    DRAINING = 9
    STOPPED = 10


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """An immutable snapshot of a node's counters (see :meth:`Node.statistics`)."""

    node_id: str
    stage: str
    agents: int
    calls_in: int
    casts_in: int
    forwarded: int
    calls_out: int
    spawns: int
    starts: int
    stops: int
    fenced_stops: int
    fenced: bool
    draining: bool
    uptime: float
    nats_url: str
    agent_ids: tuple[str, ...] = field(default_factory=tuple)
    casts_backlogged: int = 0
    """Casts waiting in per-agent backlogs now (full mailbox or agent starting)."""
    casts_refused: int = 0
    """Casts refused so far: backlog full, agent absent, or mailbox full past the timeout."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (every field but ``agent_ids``)."""
        out = asdict(self)
        del out["agent_ids"]
        return out
