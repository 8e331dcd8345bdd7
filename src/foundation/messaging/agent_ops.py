"""The agent ops of a node's endpoint: ``call``, ``cast``, ``casts``, ``state``, ``start``,
``stop``, ``handoff`` and ``ping``, and the handler of the public agent subjects.

Each op is a method of :class:`AgentOps` entered in the :class:`~foundation.messaging.endpoint.
Endpoint` table by :meth:`AgentOps.install`; the agents themselves live in the node's
:class:`~foundation.hosting.host.AgentHost`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from foundation import _tracing
from foundation._errors import InvalidRequestError, QuotaExceededError
from foundation.hosting.backlog import CastBacklog
from foundation.hosting.host import AgentHost, released
from foundation.messaging.client import NodeLocator
from foundation.messaging.endpoint import Endpoint, with_request
from foundation.messaging.envelope import (
    Request,
    Subjects,
    decode_cast_batch,
    decode_public_signal,
    decode_request,
    public_is_cast,
    public_meta,
    public_timeout,
)
from foundation.messaging.ref import ClusterRef
from jido import (
    AgentNotFoundError,
    AgentStoppedError,
    JidoError,
    MailboxFullError,
)

log = logging.getLogger("foundation.node")

_YIELD_MASK = 0xFF  # yield to the event loop every 256 casts received


class AgentOps:
    """Serves requests about the agents of one node (see the module docs)."""

    def __init__(
        self,
        host: AgentHost,
        locator: NodeLocator,
        *,
        tenant: str,
        subjects: Subjects,
    ) -> None:
        self.host = host
        self.locator = locator
        self.backlog = CastBacklog(
            host.wait_local,
            timeout=lambda: host.call_timeout,
            spawn=host.tasks.spawn,
            owner=host.node_id,
            not_here=host.not_here,
        )
        """Casts (and calls behind them) waiting for a busy or starting agent."""
        self.node_id = host.node_id
        self.tenant = tenant
        self.subjects = subjects
        self.call_timeout = host.call_timeout
        self.counters = host.counters  # the node's counters, shared
        self.admit: Callable[[str], None] | None = None
        """Called with ``"call"`` or ``"cast"`` as one reaches an agent here (a tenant's rate
        quota); raises to refuse: a refused call answers the error, a refused cast is dropped."""

    def install(self, endpoint: Endpoint) -> None:
        """Enter the agent ops in ``endpoint``'s table."""
        endpoint.add("call", self.call)
        endpoint.add("cast", self.cast, one_way=True)
        endpoint.add("casts", self.casts, one_way=True)
        endpoint.add("state", with_request(self.state))
        endpoint.add("info", with_request(self.info))
        endpoint.add("start", with_request(self.start))
        endpoint.add("stop", with_request(self.stop))
        endpoint.add("ping", self.ping)

    def _deadline(self, timeout: float) -> float:
        return asyncio.get_running_loop().time() + timeout

    # -- request ops ---------------------------------------------------------------------------

    async def call(self, msg: Msg) -> Any:
        """``call``: run the signal on the local agent and return the command's result."""
        self.counters["calls_in"] += 1
        if self.admit is not None:
            self.admit("call")
        req = decode_request(msg.data)
        host = self.host
        local = host.local_ref(req.agent_id)
        if local is None:
            timeout = req.timeout if req.timeout is not None else self.call_timeout
            local = await host.wait_local(req.agent_id, self._deadline(timeout))
            if local is None:
                raise host.not_here(req.agent_id)
        if req.signal is None:
            raise InvalidRequestError("a call request needs a signal ('s')", details={"field": "s"})
        _tracing.restamp_owned(req.signal)  # the command's span: a child of this hop's
        try:
            if req.agent_id in self.backlog:
                # casts wait for this agent: the call goes behind them, in order
                timeout = req.timeout if req.timeout is not None else self.call_timeout
                return await self.backlog.call(
                    req.agent_id, req.signal, req.meta, self._deadline(timeout)
                )
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

    async def info(self, req: Request) -> Any:
        """``info``: the local agent's runtime bookkeeping (:class:`jido.AgentInfo`), with the
        node that answered."""
        host = self.host
        local = host.local_ref(req.agent_id) or await host.wait_local(
            req.agent_id, self._deadline(self.call_timeout)
        )
        if local is None:
            raise host.not_here(req.agent_id)
        return {**local.info().to_dict(), "node": self.node_id}

    async def start(self, req: Request) -> Any:
        """``start``: activate the agent here (the registry must assign it here)."""
        return await self.host.handle_start(req.agent_id, req.extra)

    async def stop(self, req: Request) -> Any:
        """``stop``: stop the local copy of the agent (its state stays)."""
        return {"stopped": await self.host.stop_local(req.agent_id)}

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
        """Apply one cast received on this node's subject without ever waiting for its agent.

        Called in the subscription callback, so it must not block: a cast whose agent cannot
        take it now (mailbox full, still starting) waits in that agent's backlog, and so does
        every later cast (and call) to it (see :mod:`foundation.hosting.backlog`).
        """
        c = self.counters
        c["casts_in"] += 1
        if not c["casts_in"] & _YIELD_MASK:
            await asyncio.sleep(0)  # a flood of casts must not starve the lease heartbeats
        if self.admit is not None:
            try:
                self.admit("cast")
            except JidoError:
                return  # counted and audited by the quota
        signal = req.signal
        agent_id = req.agent_id
        if signal is None:
            log.warning("node %s: cast to %s without a signal dropped", self.node_id, agent_id)
            return
        try:
            if agent_id in self.host.durable:
                # A direct cast to an inbox agent (an old or a raw sender) joins its inbox, so
                # it is ordered and applied exactly once like every other signal to it.
                await self.locator.send_to_inbox(agent_id, signal)
                return
            if agent_id not in self.backlog:
                local = self.host.local_ref(agent_id)
                if local is not None:
                    try:
                        await local.cast(signal, meta=req.meta)
                        return
                    except MailboxFullError:
                        pass
            self.backlog.add(agent_id, signal, req.meta)
        except JidoError as exc:
            log.warning("node %s: cast to %s failed: %s", self.node_id, agent_id, exc)

    # -- public agent subjects -----------------------------------------------------------------

    async def public(self, msg: Msg) -> Any:
        """A signal sent to ``<root>.agent.<tenant>.<agent_id>``: a call (reply), a cast (none),
        or an acknowledged cast (a reply and the ``fdn-cast: 1`` header)."""
        try:
            tenant, agent_id = self.subjects.parse_agent(msg.subject)
            if tenant != self.tenant:
                raise AgentNotFoundError(
                    f"tenant {tenant!r} is not served by this cluster's nodes (they serve "
                    f"{self.tenant!r}); send to {self.subjects.agent(agent_id, self.tenant)}",
                    details={"tenant": tenant, "agent_id": agent_id},
                )
            # a reply subject makes it a call, unless the sender asks for an acknowledged cast
            is_cast = not msg.reply or public_is_cast(msg.headers)
            if self.admit is not None and self.host.local_ref(agent_id) is not None:
                self.admit("cast" if is_cast else "call")  # not forwarded: counted here
            signal = decode_public_signal(msg.headers, msg.data)
            timeout = public_timeout(msg.headers, self.call_timeout)
            meta = public_meta(msg.headers)
            ref = ClusterRef(self.locator, agent_id, tenant=tenant)
            if is_cast:
                # acknowledged: answered once the cast is accepted (an at_least_once agent's
                # once JetStream stored it in its inbox), or with the error that refused it
                await ref.cast(signal, meta=meta)
                return None
            self.counters["forwarded"] += 1
            return await ref.call(signal, timeout=timeout, meta=meta)
        except QuotaExceededError:
            if not msg.reply:
                return None
            raise
        except Exception as exc:
            if not msg.reply:
                log.warning("node %s: public cast to %s failed: %s", self.node_id, msg.subject, exc)
                return None
            raise


__all__ = ["AgentOps"]
