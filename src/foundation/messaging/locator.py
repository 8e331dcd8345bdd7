"""``NodeLocator``: the :class:`~foundation.messaging.ref.Locator` of a node's refs.

It answers a ref's questions from the node's parts — the host (agents running here), the
registry (where the others run), the membership (who is live) — and sends through the node's
:class:`~foundation.messaging.client.NodeClient`. Created with the node; :meth:`NodeLocator.bind`
connects it once the node's start-up has opened those parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from nats.aio.client import Client as NatsClient

from foundation._errors import NodeUnavailableError, NotOwnerError
from foundation.hosting.host import AgentHost
from foundation.membership.membership import Membership
from foundation.messaging.client import NodeClient
from foundation.messaging.envelope import encode_cast
from foundation.messaging.inbox import send_to_inbox
from foundation.messaging.ref import UnreachablePolicy
from foundation.registry.registry import ClusterRegistry, RegistryRecord
from jido import AgentNotFoundError, Signal

_YIELD_MASK = 0xFF  # yield to the event loop every 256 casts sent


class NodeLocator:
    """Where agents run and how to reach them, as seen from one node (see the module docs)."""

    def __init__(
        self,
        node_id: str,
        *,
        host: AgentHost,
        tenant: str,
        call_timeout: float,
        ref_policy: UnreachablePolicy,
        counters: dict[str, int],
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.tenant = tenant
        self.call_timeout = call_timeout
        self.ref_policy = ref_policy
        self._counters = counters
        self.registry: ClusterRegistry = None  # type: ignore[assignment]
        self._membership: Membership = None  # type: ignore[assignment]
        self._client: NodeClient = None  # type: ignore[assignment]
        self._nc: NatsClient = None  # type: ignore[assignment]
        self.inbox_sends = False  # casts to at-least-once agents go to their inbox (transport up)

    def bind(
        self,
        *,
        registry: ClusterRegistry,
        membership: Membership,
        client: NodeClient,
        nc: NatsClient,
    ) -> None:
        """Connect the locator to the node's registry, membership and client."""
        self.registry = registry
        self._membership = membership
        self._client = client
        self._nc = nc

    def local(self, agent_id: str) -> Any:
        """The agent's ``jido`` ref when it runs on this node now, else ``None``."""
        return self.host.local_ref(agent_id)

    def durable(self, agent_id: str) -> bool:
        """True when the local agent's casts go through its inbox (at-least-once)."""
        return agent_id in self.host.durable

    async def wait_local(self, agent_id: str, deadline: float) -> Any:
        """The local agent once it runs here (waits for an activation under way), or ``None``."""
        return await self.host.wait_local(agent_id, deadline)

    async def record(self, agent_id: str, *, consistent: bool) -> RegistryRecord | None:
        """The agent's registry record (``consistent``: read the server, not the cache)."""
        return await self.registry.lookup(agent_id, consistent=consistent)

    def is_live(self, node_id: str) -> bool:
        """True when ``node_id`` is a live member (this node: not fenced)."""
        if node_id == self.node_id:
            return not self.host.fenced
        return bool(self._membership.is_live(node_id))

    def agent_class(self, agent_id: str) -> type | None:
        """The agent's class when this node hosts its type."""
        record = self.registry.cached(agent_id)
        return self.host.types.get(record.type) if record is not None else None

    async def request(
        self,
        node_id: str,
        op: str,
        payload: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 - a NATS request timeout
        agent_id: str,
    ) -> Any:
        """Send ``op`` about ``agent_id`` to node ``node_id`` and return the decoded reply."""
        self._counters["calls_out"] += 1
        return await self._client.request(node_id, op, payload, timeout=timeout, agent_id=agent_id)

    async def cast_remote(
        self, agent_id: str, signal: Signal, meta: Mapping[str, Any] | None
    ) -> None:
        """Cast to an agent that does not run here (or whose casts go through its inbox)."""
        record = await self.record(agent_id, consistent=False)
        if record is None:
            record = await self.record(agent_id, consistent=True)
        if record is None:
            raise AgentNotFoundError(
                f"no agent {agent_id!r} is registered in the cluster; spawn it first",
                details={"agent_id": agent_id},
            )
        spec = self.host.spec_of(record.type)
        if spec is not None and spec.delivery == "at_least_once" and self.inbox_sends:
            await send_to_inbox(self._nc.jetstream(), agent_id, signal, tenant=self.tenant)
            return
        if record.node == self.node_id:
            local = self.host.local_ref(agent_id)
            if local is None:
                raise NotOwnerError(
                    f"agent {agent_id!r} is assigned here but not running yet",
                    details={"agent_id": agent_id},
                )
            await local.cast(signal, meta=meta)
            return
        if not self.is_live(record.node):
            raise NodeUnavailableError(
                f"agent {agent_id!r} is owned by node {record.node!r}, which is not a live member",
                details={"agent_id": agent_id, "node": record.node},
            )
        c = self._counters
        c["calls_out"] += 1
        await self._client.cast(record.node, encode_cast(agent_id, signal, meta))
        if not c["calls_out"] & _YIELD_MASK:
            # A burst of casts never suspends by itself: let heartbeats (the lease) run.
            await asyncio.sleep(0)


__all__ = ["NodeLocator"]
