"""The agent ops of a node's endpoint: ``call``, ``cast``, ``casts``, ``state``, ``start``,
``stop``, ``handoff`` and ``ping``, and the handler of the public agent subjects.

Each op is a method of :class:`AgentOps` entered in the :class:`~foundation.messaging.endpoint.
Endpoint` table by :meth:`AgentOps.install`; the agents themselves live in the node's
:class:`~foundation.hosting.host.AgentHost`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from nats.aio.msg import Msg

from foundation._errors import ClusterError
from foundation.hosting.host import AgentHost, released
from foundation.messaging.endpoint import Endpoint, with_request
from foundation.messaging.envelope import (
    Request,
    Subjects,
    decode_cast_batch,
    decode_public_signal,
    decode_request,
    public_meta,
    public_timeout,
)
from foundation.messaging.ref import ClusterRef, Locator
from jido import (
    AgentNotFoundError,
    AgentStoppedError,
    DefinitionError,
    JidoError,
    MailboxFullError,
    Signal,
)

log = logging.getLogger("foundation.node")

_YIELD_MASK = 0xFF  # yield to the event loop every 256 casts received


class AgentOps:
    """Serves requests about the agents of one node (see the module docs)."""

    def __init__(
        self,
        host: AgentHost,
        locator: Locator,
        *,
        tenant: str,
        subjects: Subjects,
    ) -> None:
        self.host = host
        self.locator = locator
        self.node_id = host.node_id
        self.tenant = tenant
        self.subjects = subjects
        self.call_timeout = host.call_timeout
        self.counters = host.counters  # the node's counters, shared

    def install(self, endpoint: Endpoint) -> None:
        """Enter the agent ops in ``endpoint``'s table."""
        endpoint.add("call", self.call)
        endpoint.add("cast", self.cast, one_way=True)
        endpoint.add("casts", self.casts, one_way=True)
        endpoint.add("state", with_request(self.state))
        endpoint.add("start", with_request(self.start))
        endpoint.add("stop", with_request(self.stop))
        endpoint.add("handoff", with_request(self.handoff))
        endpoint.add("ping", self.ping)

    def _deadline(self, timeout: float) -> float:
        return asyncio.get_running_loop().time() + timeout

    # -- request ops ---------------------------------------------------------------------------

    async def call(self, msg: Msg) -> Any:
        """``call``: run the signal on the local agent and return the command's result."""
        self.counters["calls_in"] += 1
        req = decode_request(msg.data)
        host = self.host
        local = host.local_ref(req.agent_id)
        if local is None:
            timeout = req.timeout if req.timeout is not None else self.call_timeout
            local = await host.wait_local(req.agent_id, self._deadline(timeout))
            if local is None:
                raise host.not_here(req.agent_id)
        if req.signal is None:
            raise DefinitionError("call request without a signal")
        try:
            return await local.call(req.signal, timeout=req.timeout, meta=req.meta)
        except AgentStoppedError as exc:
            if not released(exc):
                raise
            # let go (moved, handed over) while the call waited: never handled, so the
            # caller may look up the new owner and send it there
            raise host.not_here(req.agent_id) from exc

    async def state(self, req: Request) -> Any:
        """``state``: the local agent's state, as JSON."""
        host = self.host
        local = host.local_ref(req.agent_id) or await host.wait_local(
            req.agent_id, self._deadline(self.call_timeout)
        )
        if local is None:
            raise host.not_here(req.agent_id)
        return (await local.state()).model_dump(mode="json")

    async def start(self, req: Request) -> Any:
        """``start``: activate the agent here (the registry must assign it here)."""
        return await self.host.handle_start(req.agent_id, req.extra)

    async def stop(self, req: Request) -> Any:
        """``stop``: stop the local copy of the agent (its state stays)."""
        return {"stopped": await self.host.stop_local(req.agent_id)}

    async def handoff(self, req: Request) -> Any:
        """``handoff``: hand the agent over to node ``to`` (its state goes along)."""
        extra = req.extra
        to = extra.get("to")
        if not isinstance(to, str) or not to:
            raise ClusterError("handoff needs a target node ('to')", details={"extra": extra})
        meta = extra.get("stamp")
        return await self.host.hand_over(
            req.agent_id, to=to, metadata=meta if isinstance(meta, Mapping) else None
        )

    async def ping(self, msg: Msg) -> Any:
        """``ping``: this node's id and agent count."""
        return {"node": self.node_id, "agents": len(self.host.local)}

    # -- one-way ops ---------------------------------------------------------------------------

    async def casts(self, msg: Msg) -> None:
        """``casts``: a batch of casts applied in order, each exactly as a single ``cast``."""
        try:
            items = decode_cast_batch(msg.data)
        except JidoError as exc:
            log.warning("node %s: casts batch dropped: %s", self.node_id, exc)
            return
        for item in items:
            if isinstance(item, JidoError):
                self.counters["casts_in"] += 1
                log.warning("node %s: cast failed: %s", self.node_id, item)
                continue
            await self._apply_cast(item)

    async def cast(self, msg: Msg) -> None:
        """``cast``: one signal into a local mailbox, no reply."""
        try:
            req = decode_request(msg.data)
        except JidoError as exc:
            self.counters["casts_in"] += 1
            log.warning("node %s: cast failed: %s", self.node_id, exc)
            return
        await self._apply_cast(req)

    async def _apply_cast(self, req: Request) -> None:
        c = self.counters
        c["casts_in"] += 1
        if not c["casts_in"] & _YIELD_MASK:
            await asyncio.sleep(0)  # a flood of casts must not starve the lease heartbeats
        try:
            local = self.host.local_ref(req.agent_id)
            if local is None or req.signal is None:
                if req.signal is not None:
                    local = await self.host.wait_local(
                        req.agent_id, self._deadline(self.call_timeout)
                    )
                if local is None or req.signal is None:
                    log.warning(
                        "node %s: cast to unknown agent %s dropped", self.node_id, req.agent_id
                    )
                    return
            await self._cast_with_backpressure(local, req.signal, req.meta)
        except JidoError as exc:
            log.warning("node %s: cast failed: %s", self.node_id, exc)

    async def _cast_with_backpressure(
        self, local: Any, signal: Signal, meta: Mapping[str, Any] | None
    ) -> None:
        """Cast into a local mailbox; when it is full, wait for room (up to ``call_timeout``).

        Waiting here holds up this node's subscription, so a fast sender is slowed down by
        the NATS client's buffers instead of its signals being dropped.
        """
        try:
            await local.cast(signal, meta=meta)
            return
        except MailboxFullError:
            pass
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.call_timeout
        tries = 0
        while True:
            # the first waits only let the agent's task run; then poll every half millisecond
            await asyncio.sleep(0 if tries < 16 else 0.0005)
            tries += 1
            try:
                await local.cast(signal, meta=meta)
                return
            except MailboxFullError:
                if loop.time() >= give_up:
                    raise

    # -- public agent subjects -----------------------------------------------------------------

    async def public(self, msg: Msg) -> Any:
        """A signal sent to ``<root>.agent.<tenant>.<agent_id>``: a call (reply) or a cast."""
        try:
            tenant, agent_id = self.subjects.parse_agent(msg.subject)
            if tenant != self.tenant:
                raise AgentNotFoundError(
                    f"tenant {tenant!r} is not served by this cluster's nodes (they serve "
                    f"{self.tenant!r}); send to {self.subjects.agent(agent_id, self.tenant)}",
                    details={"tenant": tenant, "agent_id": agent_id},
                )
            signal = decode_public_signal(msg.headers, msg.data)
            timeout = public_timeout(msg.headers, self.call_timeout)
            meta = public_meta(msg.headers)
            ref = ClusterRef(self.locator, agent_id, tenant=tenant)
            if not msg.reply:
                await ref.cast(signal, meta=meta)
                return None
            self.counters["forwarded"] += 1
            return await ref.call(signal, timeout=timeout, meta=meta)
        except Exception as exc:
            if not msg.reply:
                log.warning("node %s: public cast to %s failed: %s", self.node_id, msg.subject, exc)
                return None
            raise


__all__ = ["AgentOps"]
