"""``BusBridge``: a local ``jido.Bus`` joined to the cluster bus for one pattern, without echoes."""

from __future__ import annotations

from typing import Any, Protocol

from foundation.messaging.bus_subjects import Delivery, DeliveryLike
from jido import Signal


class SignalPublisher(Protocol):
    """The side of the cluster bus a bridge sends through."""

    async def publish(self, *signals: Signal, delivery: DeliveryLike = ...) -> list[int]:
        """Publish ``signals`` to the cluster in ``delivery`` mode."""
        ...


class Unsubscribable(Protocol):
    """A cluster subscription, as a bridge ends it."""

    async def unsubscribe(self) -> None:
        """Stop receiving."""
        ...


class _RecentIds:
    """A bounded set of recent signal ids (oldest forgotten first)."""

    __slots__ = ("_ids", "_max")

    def __init__(self, max_size: int) -> None:
        self._ids: dict[str, None] = {}
        self._max = max_size

    def add(self, sig_id: str) -> None:
        ids = self._ids
        ids[sig_id] = None
        if len(ids) > self._max:
            del ids[next(iter(ids))]

    def pop(self, sig_id: str) -> bool:
        return self._ids.pop(sig_id, 0) is None


class BusBridge:
    """Connects a local :class:`jido.Bus` to the cluster for one pattern, without echo loops.

    Outbound: local signals matching the pattern are published to the cluster. Inbound: cluster
    signals matching it are published on the local bus. A signal that came in from the cluster
    is not sent back out, and this node's own outbound signals coming back from NATS are not
    delivered in again (both are recognised by signal id). Made by :meth:`ClusterBus.bridge`;
    ``await bridge.close()`` ends it.
    """

    def __init__(
        self, cluster: SignalPublisher, local: Any, pattern: str, delivery: Delivery
    ) -> None:
        self.cluster = cluster
        self.local = local
        self.pattern = pattern
        self.delivery = delivery
        self._sent = _RecentIds(65536)
        self._received = _RecentIds(65536)
        self._local_sub: Any = None
        self._cluster_sub: Unsubscribable | None = None

    async def _outbound(self, sig: Signal) -> None:
        if self._received.pop(sig.id):
            return  # came from the cluster: do not send it back
        self._sent.add(sig.id)
        await self.cluster.publish(sig, delivery=self.delivery)

    async def _inbound(self, sig: Signal) -> None:
        if self._sent.pop(sig.id):
            return  # our own outbound signal echoed back by NATS
        if self._local_sub is not None:
            self._received.add(sig.id)
        await self.local.publish(sig)

    async def close(self) -> None:
        """Stop forwarding in both directions."""
        if self._local_sub is not None:
            await self._local_sub.unsubscribe()
            self._local_sub = None
        if self._cluster_sub is not None:
            await self._cluster_sub.unsubscribe()
            self._cluster_sub = None


__all__ = ["BusBridge", "SignalPublisher", "Unsubscribable"]
