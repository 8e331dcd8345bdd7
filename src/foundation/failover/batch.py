"""Placement for the failover of a batch of agents (the agents of one dead node).

:class:`BatchDirector` places each orphaned agent with the node's own placement rules, but
counts the moves still in flight on their targets, so that agents re-placed together spread
over the nodes as if they had been placed one after the other.
"""

from __future__ import annotations

from typing import Any

from foundation.failover.rebalance import ClusterNode
from foundation.hosting.admission import ledger_of
from foundation.placement.placement import PlacementDirector

__all__ = ["BatchDirector"]


class BatchDirector:
    """Placement for a batch of concurrent moves: counts the moves still in flight, so that
    agents re-placed together spread over the nodes as if placed one after the other."""

    def __init__(self, node: ClusterNode) -> None:
        self._registry = node.registry
        self._pending: dict[str, int] = {}
        self._records: list[Any] | None = None
        self.ledger = ledger_of(node.host.placement)
        self._director = PlacementDirector(node.membership, self, reservations=self.ledger)

    def counts_by_node(self) -> dict[str, int]:
        """Agents per node, the moves in flight counted on their targets."""
        counts = dict(self._registry.counts_by_node())
        for node_id, n in self._pending.items():
            counts[node_id] = counts.get(node_id, 0) + n
        return counts

    def cached(self, agent_id: str) -> Any:
        """The cached registry record of ``agent_id``."""
        return self._registry.cached(agent_id)

    def group_counts(self, group: str) -> dict[str, int]:
        """Agents per node of spread group ``group``."""
        return dict(self._registry.group_counts(group))

    def records(self) -> list[Any]:
        """Every cached record, read once per batch."""
        # One snapshot per batch: the director scans every record per placement (spread
        # groups), which is quadratic over a batch of a thousand agents otherwise.
        if self._records is None:
            self._records = list(self._registry.records())
        return self._records

    async def place(self, agent_id: str, **request: Any) -> str:
        """A node for ``agent_id`` (see :meth:`PlacementDirector.place`)."""
        return await self._director.place(agent_id, **request)

    def taken(self, node_id: str) -> None:
        """A move to ``node_id`` is in flight."""
        self._pending[node_id] = self._pending.get(node_id, 0) + 1

    def done(self, node_id: str) -> None:
        """A move to ``node_id`` is over (done or failed)."""
        left = self._pending.get(node_id, 0) - 1
        if left > 0:
            self._pending[node_id] = left
        else:
            self._pending.pop(node_id, None)
