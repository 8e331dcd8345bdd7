"""The node-level ops of a node's endpoint: ``handoff``, ``drain`` and ``stats``; and the
node's connection stage (:func:`open_connections`) and endpoint start (:func:`start_endpoint`).

The agent ops (``call``, ``cast``, ...) are :class:`~foundation.messaging.agent_ops.AgentOps`;
these three need the node itself: a hand-over is taken only from the cluster leader (its stamp
checked against the leader lease, see :func:`~foundation.failover.rebalance.checked_handoff`),
a drain runs the node's own drain, and ``stats`` is its statistics snapshot.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from nats.aio.msg import Msg

from foundation._errors import NotOwnerError
from foundation._metrics import command_summary
from foundation.failover.rebalance import ClusterNode, checked_handoff
from foundation.membership.link_probe import LinkProbe
from foundation.membership.tenants import served_elsewhere
from foundation.messaging.endpoint import Endpoint, Handler, with_request
from foundation.messaging.envelope import Request
from foundation.registry.registry import RegistryRecord
from foundation.security import FROM_PREFIX
from jido import FencedError

__all__ = ["ControlOps", "ControlledNode", "open_connections", "start_endpoint"]


class ControlledNode(ClusterNode, Protocol):
    """What the node-level ops need from the node (a ``Node`` is one)."""

    def statistics(self) -> Any:
        """The node's statistics snapshot (with ``to_dict()``)."""
        ...

    def local_agents(self) -> list[str]:
        """Ids of the agents running on the node now."""
        ...

    async def drain(self) -> None:
        """Hand every agent over, leave the membership and stop."""
        ...


class ControlOps:
    """Serves ``handoff``, ``drain`` and ``stats`` for one node."""

    def __init__(self, node: ControlledNode) -> None:
        self.node = node
        self._drain_task: asyncio.Task[None] | None = None

    def install(self, endpoint: Endpoint) -> None:
        """Enter the ops in ``endpoint``'s table."""
        endpoint.add("handoff", with_request(self.handoff))
        endpoint.add("drain", self.drain)
        endpoint.add("stats", self.stats)

    async def handoff(self, req: Request) -> Any:
        """Hand the agent over to ``to``: only for the leader, its stamp checked on the lease."""
        to, stamp = await checked_handoff(self.node, req.extra)
        return await self.node.host.hand_over(req.agent_id, to=to, metadata=stamp)

    async def drain(self, msg: Msg) -> Any:
        """Begin draining in the background; answers at once with what will be moved."""
        node = self.node
        agents = len(node.local_agents())
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(
                node.drain(), name=f"drain-{node.id}"
            )
        return {"node": node.id, "draining": True, "agents": agents}

    async def stats(self, msg: Msg) -> Any:
        """The node's statistics snapshot (with its command histogram, its recent fences and
        denials, ``events``, and its tenant's quota use, ``quotas``)."""
        node = self.node
        out = {
            **node.statistics().to_dict(),
            "commands": command_summary(node.id),
            "events": node.host.events.recent(),
        }
        quotas = getattr(node, "quotas", None)
        if quotas is not None:
            out["quotas"] = quotas.report()
        return out


async def open_connections(node: Any) -> None:
    """The ``connect`` stage of a :class:`foundation.Node`: its NATS (an embedded server when no
    URL is given), the data and control connections (with the node's credentials) and the
    link probe."""
    if node._nats is None:
        from foundation.nats.server import NatsServer

        node._server = NatsServer(store_dir=node._store_dir)
        await node._server.astart()
        node.url = node._server.url
    elif isinstance(node._nats, str):
        node.url = node._nats
    else:
        node.url = ",".join(node._nats)
    node.nc = await node.security.connect(
        node.url,
        name=f"foundation-node-{node.id}",
        on_disconnect=node._on_disconnect,
        on_reconnect=node._on_reconnect,
    )
    # The lease gets its own connection, so heartbeat acks never queue behind a flood of
    # agent traffic on the data connection (that would fence a healthy, busy node).
    node._control_nc = await node.security.connect(
        node.url, name=f"foundation-node-{node.id}-control"
    )
    # ... and is given up when the data connection stops answering (a gray failure).
    node._link_probe = LinkProbe(node.nc)
    await node._link_probe.start()


async def start_spawned(node: Any, record: RegistryRecord, state: dict[str, Any] | None) -> None:
    """Start a just-claimed agent where its record says: here, or by a start request.

    When the target was lost meanwhile and the failover re-placed the agent (the target then
    answers ``fenced`` or ``not_owner``), the agent runs elsewhere: that is not an error.
    """
    if record.node == node.id:
        await node.host.activate(record, state=state, fresh=True)
        return
    try:
        await node.client.start_remote(record, state, fresh=True)
    except (FencedError, NotOwnerError):
        current = await node.registry.lookup(record.agent_id, consistent=True)
        if current is None or current.epoch <= record.epoch:
            raise


async def start_endpoint(node: Any, endpoint: Endpoint, public: Handler) -> None:
    """Subscribe ``endpoint``: ``node``'s private subjects and its tenant's public agent
    subjects (a default-tenant node leaves a subject of another served tenant to its nodes)."""
    attested = FROM_PREFIX if node.security.on else None
    elsewhere = served_elsewhere(node.membership, node.subjects, node.tenant)
    await endpoint.start(
        public=public, attested=attested, tenant=node.tenant, served_elsewhere=elsewhere
    )
