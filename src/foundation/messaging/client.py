"""The sending side of the node-to-node wire: requests, cast batching, one error translation.

Every request a node (or a command-line tool) sends to another node's private subject goes
through :func:`request`, the only place where NATS errors become typed cluster errors:

* no responders → ``NodeUnavailableError`` (the node stopped or is cut off);
* no reply in time → ``jido.TimeoutError`` (also a builtin ``TimeoutError``);
* our own connection closed → ``NodeUnavailableError``.

A caller that reads a timeout differently (a start request that may still land) catches the
typed error, never a NATS one. :class:`NodeClient` adds the per-node parts: casts issued in the
same event-loop turn to one node leave as one ``casts`` message (see :meth:`NodeClient.cast`).

:class:`NodeLocator` is the :class:`~foundation.messaging.ref.Locator` of a node's refs: it
answers a ref's questions from the node's parts — the host (agents running here), the registry
(where the others run), the membership (who is live) — and sends through the node's
``NodeClient``. Created with the node; :meth:`NodeLocator.bind` connects it once the node's
start-up has opened those parts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from foundation import _tracing
from foundation._errors import NodeUnavailableError, NotOwnerError
from foundation._hooks import TaskSet
from foundation.hosting import virtual
from foundation.hosting.host import AgentHost
from foundation.membership.membership import Membership
from foundation.messaging.envelope import (
    CAST_BATCH_BYTES,
    Subjects,
    check_size,
    decode_reply,
    encode_cast,
    encode_cast_batch,
    encode_request,
)
from foundation.messaging.inbox import send_to_inbox
from foundation.messaging.ref import UnreachablePolicy
from foundation.registry.registry import ClusterRegistry, RegistryRecord
from jido import AgentNotFoundError, Signal, TimeoutError

log = logging.getLogger("foundation.node")


async def request(
    nc: NatsClient,
    node_id: str,
    op: str,
    payload: bytes,
    *,
    timeout: float,  # noqa: ASYNC109 - a NATS request timeout
    agent_id: str | None = None,
    origin: str | None = None,
    subjects: Subjects | None = None,
) -> Any:
    """Send ``op`` to node ``node_id`` and return its decoded reply.

    Raises the typed error the remote side answered, or one of the translations in the module
    docs. ``agent_id`` (the agent the request is about) and ``origin`` (the sending node) go into
    the error details.
    """
    subject = (subjects or Subjects()).node(node_id, op)
    about = {"agent_id": agent_id} if agent_id is not None else {}
    what = f"{op} to agent {agent_id!r}" if agent_id is not None else f"{op} to node {node_id!r}"
    check_size(payload, nc.max_payload, what)
    try:
        msg = await nc.request(subject, payload, timeout=timeout, headers=_tracing.headers())
    except NoRespondersError as exc:
        raise NodeUnavailableError(
            f"node {node_id!r} does not answer (no responders); it may have stopped "
            "or been cut off",
            details={**about, "node": node_id, "op": op},
            cause=exc,
        ) from exc
    except NatsTimeoutError as exc:
        raise TimeoutError(
            f"{what} got no reply in time; retry or raise the timeout",
            details={**about, "node": node_id, "op": op},
        ) from exc
    except ConnectionClosedError as exc:
        raise NodeUnavailableError(
            "this node's NATS connection is closed",
            details={**about, "node": origin},
            cause=exc,
        ) from exc
    return decode_reply(msg.data)


class NodeClient:
    """Requests and casts from one node to the others (see the module docs).

    Casts to a node whose membership record does not list the ``casts`` wire feature go one
    message each.
    """

    def __init__(
        self,
        nc: NatsClient,
        node_id: str,
        *,
        subjects: Subjects,
        call_timeout: float,
        membership: Membership,
        tasks: TaskSet,
    ) -> None:
        self.nc = nc
        self.node_id = node_id
        self.subjects = subjects
        self.call_timeout = call_timeout
        self._membership = membership
        self._tasks = tasks
        self._cast_out: dict[str, list[bytes]] = {}
        self._cast_out_bytes: dict[str, int] = {}
        self._cast_flush_scheduled = False

    async def request(
        self,
        node_id: str,
        op: str,
        payload: bytes,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a NATS request timeout
        agent_id: str | None = None,
    ) -> Any:
        """Send ``op`` to ``node_id`` (after the casts queued for it); return the decoded reply."""
        if node_id in self._cast_out:
            # casts issued before this request reach the agent before it
            await self.flush_casts_to(node_id)
        return await request(
            self.nc,
            node_id,
            op,
            payload,
            timeout=self.call_timeout if timeout is None else timeout,
            agent_id=agent_id,
            origin=self.node_id,
            subjects=self.subjects,
        )

    async def start_remote(
        self, record: RegistryRecord, state: dict[str, Any] | None, *, fresh: bool = False
    ) -> None:
        """Ask the owner named by ``record`` to start the agent (at ``record.epoch``).

        Raises ``NodeUnavailableError`` when the owner does not confirm; the record stays, and
        the owner's reconciliation (or the failover) starts the agent.
        """
        extra: dict[str, Any] = {"epoch": record.epoch, "fresh": fresh}
        if state:
            extra["state"] = state
        payload = encode_request(record.agent_id, None, **extra)
        try:
            await self.request(record.node, "start", payload, agent_id=record.agent_id)
        except (NodeUnavailableError, TimeoutError) as exc:
            if isinstance(exc, NodeUnavailableError) and exc.details.get("node") != record.node:
                raise  # our own connection is closed
            raise NodeUnavailableError(
                f"node {record.node!r} did not confirm the start of {record.agent_id!r}; it stays "
                "registered there and starts when that node reconciles",
                details={"agent_id": record.agent_id, "node": record.node},
                cause=exc,
            ) from exc

    # -- casts ---------------------------------------------------------------------------------

    def _serves_casts(self, node_id: str) -> bool:
        """True if ``node_id`` understands ``casts`` batches (its record lists the feature)."""
        record = self._membership.snapshot.get(node_id)
        return record is not None and "casts" in record.wire_features

    async def cast(self, node_id: str, item: bytes) -> None:
        """Add one encoded cast to the batch bound for ``node_id``.

        Casts issued in the same event-loop turn to one node leave as one ``casts`` message
        (a JSON array, in order), published when the turn ends or when the batch reaches
        :data:`CAST_BATCH_BYTES`. A cast too large for a batch goes alone (after the batch, so
        order is kept) and a publish error reaches the caller as before.
        """
        nc = self.nc
        if nc.is_closed:
            raise NodeUnavailableError(
                "this node's NATS connection is closed", details={"node": self.node_id}
            )
        if len(item) > CAST_BATCH_BYTES or not self._serves_casts(node_id):
            await self.flush_casts_to(node_id)
            await nc.publish(self.subjects.node(node_id, "cast"), item)
            return
        batch = self._cast_out.get(node_id)
        if batch is None:
            self._cast_out[node_id] = [item]
            self._cast_out_bytes[node_id] = len(item)
        else:
            batch.append(item)
            self._cast_out_bytes[node_id] += len(item) + 1
            if self._cast_out_bytes[node_id] > CAST_BATCH_BYTES:
                await self.flush_casts_to(node_id)
                return
        if not self._cast_flush_scheduled:
            self._cast_flush_scheduled = True
            self._tasks.spawn(self.flush_casts())

    async def flush_casts_to(self, node_id: str) -> None:
        """Publish the pending casts for ``node_id`` now (before a request to it, keeping order).

        The batch is taken and handed to ``publish`` without suspending in between, and nats-py
        queues the message before its first suspension, so messages to a node leave in the
        order their casts were issued.
        """
        batch = self._cast_out.pop(node_id, None)
        if batch is None:
            return
        del self._cast_out_bytes[node_id]
        await self.nc.publish(self.subjects.node(node_id, "casts"), encode_cast_batch(batch))

    async def flush_casts(self) -> None:
        """Publish every pending cast batch (runs once per event-loop turn that queued casts)."""
        self._cast_flush_scheduled = False
        while self._cast_out:
            node_id = next(iter(self._cast_out))
            try:
                await self.flush_casts_to(node_id)
            except Exception as exc:
                log.warning("node %s: casts to node %s not sent: %s", self.node_id, node_id, exc)


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
        self._virtual = virtual.VirtualTypes(host.types)
        self.admit_send: Callable[[str], None] | None = None
        """Called with ``"call"`` or ``"cast"`` before one is sent to another node for this
        node's tenant (a rate quota refused at the source); raises to refuse."""

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

    def virtual_class(self, agent_id: str, cls: type | None) -> type | None:
        """The virtual class of ``agent_id``: ``cls`` if virtual, else by its id prefix."""
        if virtual.is_virtual(cls):
            return cls
        return self._virtual.class_for(agent_id) if self._virtual else None

    async def activate(self, agent_id: str, cls: type) -> RegistryRecord:
        """Activate virtual agent ``agent_id`` (see ``foundation.hosting.virtual``)."""
        return await virtual.activate(self.host, agent_id, cls)

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
        if op == "call" and self.admit_send is not None:
            self.admit_send("call")
        self._counters["calls_out"] += 1
        return await self._client.request(node_id, op, payload, timeout=timeout, agent_id=agent_id)

    def delivery_of(self, record: RegistryRecord) -> str:
        """The agent's delivery mode: from its record (a record written before the field
        existed falls back to the class, when this node knows it)."""
        if record.delivery:
            return record.delivery
        spec = self.host.spec_of(record.type)
        return spec.delivery if spec is not None else "at_most_once"

    async def send_to_inbox(self, agent_id: str, signal: Signal) -> None:
        """Publish ``signal`` to the agent's inbox; returns once JetStream stored it."""
        await send_to_inbox(
            self._nc.jetstream(),
            agent_id,
            signal,
            tenant=self.tenant,
            max_payload=self._nc.max_payload,
        )

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
        if self.delivery_of(record) == "at_least_once":
            # The agent's record decides, never what this node happens to know: the cast
            # returns once JetStream holds it in the agent's inbox.
            await self.send_to_inbox(agent_id, signal)
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
        if self.admit_send is not None:
            self.admit_send("cast")
        c = self._counters
        c["calls_out"] += 1
        item = encode_cast(agent_id, signal, meta)
        if len(item) > self._nc.max_payload:
            check_size(item, self._nc.max_payload, f"cast to agent {agent_id!r}")
        await self._client.cast(record.node, item)
        if not c["calls_out"] & _YIELD_MASK:
            # A burst of casts never suspends by itself: let heartbeats (the lease) run.
            await asyncio.sleep(0)


__all__ = ["NodeClient", "NodeLocator", "request"]
