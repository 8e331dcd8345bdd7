"""Location-transparent agent references.

A :class:`ClusterRef` offers the ``call`` / ``cast`` / ``state`` of ``jido.AgentRef`` for an agent
anywhere in the cluster. When the agent runs on the caller's node the call goes straight to the
local runtime (no encoding, no network). Otherwise the ref finds the owner in the registry cache
and sends one request to that node's private subject:

* the owner answers ``NotOwnerError`` (the agent moved, or its node let it go while the call
  waited in its mailbox, so the call was never handled): the ref reads the registry again
  (consistent read) and retries **once** at the new owner;
* the owner is not a live member, or nobody listens on its subject: the ref asks its node's
  :class:`UnreachablePolicy`. The default, :class:`FailFast`, gives up at once with
  ``NodeUnavailableError``; a failover-aware policy may instead wait, within the caller's
  deadline, for the agent to be re-placed and return the new record to retry against.

A ref reaches the cluster only through a :class:`Locator` (its node): where an agent runs,
whether its owner is live, the agent itself when it runs here, and the node's requests and casts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from foundation import _tracing
from foundation._errors import ClusterError, NodeUnavailableError, NotOwnerError
from foundation.hosting.host import released
from foundation.messaging.envelope import check_meta, encode_request
from foundation.registry.registry import ClusterRegistry, RegistryRecord
from jido import (
    AgentInfo,
    AgentNotFoundError,
    AgentStoppedError,
    JidoError,
    Signal,
    TimeoutError,
)


class RemoteState(BaseModel):
    """State of an agent whose class is not known on the calling node (fields kept as sent)."""

    model_config = ConfigDict(extra="allow")


class UnreachablePolicy(Protocol):
    """What a ref does when an agent's owner cannot be reached (the failover hook).

    ``on_unreachable`` gets the ref, the registry record that pointed at the unreachable owner
    (``None`` when the agent is not registered at all), the error that would be raised, and the
    absolute deadline (``loop.time()``) of the caller. Return a newer record to retry against it,
    or ``None`` to raise the error.
    """

    async def on_unreachable(
        self, ref: ClusterRef, record: Any, error: JidoError, deadline: float
    ) -> Any | None:
        """Decide whether (and where) to retry; ``None`` gives up with ``error``."""
        ...


class FailFast:
    """The default :class:`UnreachablePolicy`: never wait, raise the typed error at once."""

    async def on_unreachable(
        self, ref: ClusterRef, record: Any, error: JidoError, deadline: float
    ) -> Any | None:
        """Give up: the caller gets ``error`` (``NodeUnavailableError``)."""
        return None


class Locator(Protocol):
    """What a :class:`ClusterRef` needs from the node it was made on."""

    @property
    def node_id(self) -> str:
        """Id of this node."""
        ...

    @property
    def call_timeout(self) -> float:
        """Default timeout of ``call`` and ``state``, in seconds."""
        ...

    @property
    def ref_policy(self) -> UnreachablePolicy:
        """What refs do when an owner cannot be reached."""
        ...

    @property
    def registry(self) -> ClusterRegistry:
        """The registry (its watched cache answers most lookups)."""
        ...

    def local(self, agent_id: str) -> Any:
        """The agent's ``jido`` ref when it runs on this node now, else ``None``."""
        ...

    def durable(self, agent_id: str) -> bool:
        """True when the local agent's casts go through its inbox (at-least-once)."""
        ...

    async def wait_local(self, agent_id: str, deadline: float) -> Any:
        """The local agent once it runs here (waits for an activation under way), or ``None``."""
        ...

    async def record(self, agent_id: str, *, consistent: bool) -> RegistryRecord | None:
        """The agent's registry record (``consistent``: read the server, not the cache)."""
        ...

    def is_live(self, node_id: str) -> bool:
        """True when ``node_id`` is a live member (this node: not fenced)."""
        ...

    def virtual_class(self, agent_id: str, cls: type | None) -> type | None:
        """The virtual class ``agent_id`` is activated as (``None``: not a virtual agent)."""
        ...

    async def activate(self, agent_id: str, cls: type) -> RegistryRecord:
        """Activate virtual agent ``agent_id``; its registry record."""
        ...

    def agent_class(self, agent_id: str) -> type | None:
        """The agent's class when this node hosts its type."""
        ...

    async def cast_remote(
        self, agent_id: str, signal: Signal, meta: Mapping[str, Any] | None
    ) -> None:
        """Cast to an agent that does not run here (or whose casts go through its inbox)."""
        ...

    async def request(
        self,
        node_id: str,
        op: str,
        payload: bytes,
        *,
        timeout: float,  # noqa: ASYNC109
        agent_id: str,
    ) -> Any:
        """Send ``op`` about ``agent_id`` to node ``node_id`` and return the decoded reply."""
        ...


_MAX_HOPS = 8  # bound on policy-driven retries within one call


class ClusterRef:
    """A reference to a (clustered) agent by id, usable from any node.

    ``call``, ``cast`` and ``state`` behave like those of ``jido.AgentRef`` wherever the agent
    runs. Obtain one with ``node.spawn(...)`` or ``node.ref(agent_id)``.
    """

    __slots__ = ("_cls", "_locator", "id", "tenant")

    def __init__(
        self, locator: Locator, agent_id: str, *, tenant: str, agent_cls: type | None = None
    ) -> None:
        self._locator = locator
        self.id = agent_id
        self.tenant = tenant
        self._cls = agent_cls

    @property
    def locator(self) -> Locator:
        """The node this ref reaches the cluster through."""
        return self._locator

    def __repr__(self) -> str:
        return f"ClusterRef({self.id!r}, node={self._locator.node_id!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ClusterRef)
            and other.id == self.id
            and other.tenant == self.tenant
            and other._locator is self._locator
        )

    def __hash__(self) -> int:
        return hash((self.id, self.tenant))

    # -- public API --------------------------------------------------------------------------

    async def call(
        self,
        signal: Signal,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the jido AgentRef contract
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send ``signal`` and wait for the result of the command it triggers.

        ``meta`` keys ``stream_seq`` and ``fdn.*`` are reserved for the cluster's nodes
        (``InvalidRequestError``); a request larger than the server's ``max_payload`` raises
        ``PayloadTooLargeError`` before anything is sent.

        Raises the typed ``JidoError`` the agent (or the cluster) produced: ``TimeoutError``
        after ``timeout`` seconds (default: the node's ``call_timeout``), ``NotOwnerError`` if the
        agent moved twice during the call, ``NodeUnavailableError`` if its node is gone, and
        ``AgentNotFoundError`` if no agent has this id.
        """
        meta = check_meta(meta)
        if _tracing.active is None:
            return await self._call(signal, timeout, meta)
        with _tracing.span(
            self._span_name("call"),
            kind=_tracing.SpanKind.CLIENT,
            traceparent=signal.traceparent,
            attributes=self._span_attrs(),
        ) as current:
            assert current is not None
            return await self._call(_tracing.stamped(signal, current), timeout, meta)

    def _span_name(self, op: str) -> str:
        cls = self._cls or self._locator.agent_class(self.id)
        return f"{op} {cls.__name__ if cls is not None else 'agent'}"

    def _span_attrs(self) -> dict[str, str]:
        return {
            _tracing.ATTR_NODE: self._locator.node_id,
            _tracing.ATTR_AGENT: self.id,
            _tracing.ATTR_TENANT: self.tenant,
        }

    async def _call(
        self,
        signal: Signal,
        timeout: float | None,  # noqa: ASYNC109
        meta: dict[str, Any] | None,
    ) -> dict[str, Any]:
        loc = self._locator
        local = loc.local(self.id)
        budget = loc.call_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + budget
        if local is not None:
            try:
                result: dict[str, Any] = await local.call(signal, timeout=timeout, meta=meta)
                return result
            except AgentStoppedError as exc:
                if not released(exc):
                    raise
            # This node let the agent go while the call waited in its mailbox (never handled):
            # find where it runs now, within what is left of the budget.
        reply = await self._remote("call", signal, deadline, meta)
        return reply if isinstance(reply, dict) else {"result": reply}

    async def cast(self, signal: Signal, *, meta: Mapping[str, Any] | None = None) -> None:
        """Send ``signal`` without waiting for its outcome.

        The agent's registry record decides the delivery mode, whichever node sends: to an
        ``at_least_once`` agent the cast returns only once JetStream stored it in the agent's
        inbox; otherwise it is at-most-once.

        Raises ``AgentNotFoundError`` when the id is not registered and
        ``NodeUnavailableError`` when its owner is not a live member.
        """
        meta = check_meta(meta)
        if _tracing.active is None:
            return await self._cast(signal, meta)
        with _tracing.span(
            self._span_name("cast"),
            kind=_tracing.SpanKind.PRODUCER,
            traceparent=signal.traceparent,
            attributes=self._span_attrs(),
        ) as current:
            assert current is not None
            await self._cast(_tracing.stamped(signal, current), meta)

    async def _cast(self, signal: Signal, meta: dict[str, Any] | None) -> None:
        loc = self._locator
        local = loc.local(self.id)
        if local is not None and not loc.durable(self.id):
            await local.cast(signal, meta=meta)
            return
        # remote, or an at_least_once agent (its casts always go through its inbox)
        try:
            await loc.cast_remote(self.id, signal, meta)
        except AgentNotFoundError:
            # No record, cached or consistent: a virtual agent is activated by its first cast
            # (looked for only then, so a cast to a running agent pays nothing for it).
            if local is not None or await self._activated(known=True) is None:
                raise
            await loc.cast_remote(self.id, signal, meta)

    async def state(self, *, timeout: float | None = None) -> BaseModel:  # noqa: ASYNC109
        """The agent's current state model (a :class:`RemoteState` if the class is unknown here)."""
        loc = self._locator
        local = loc.local(self.id)
        if local is not None:
            state: BaseModel = await local.state()
            return state
        budget = loc.call_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + budget
        raw = await self._remote("state", None, deadline, None)
        cls = self._cls or loc.agent_class(self.id)
        model = getattr(cls, "state_model", None) if cls is not None else None
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(raw)
        return RemoteState.model_validate(raw)

    async def info(self, *, timeout: float | None = None) -> AgentInfo:  # noqa: ASYNC109
        """The agent's runtime bookkeeping where it runs (:class:`jido.AgentInfo`: status,
        mailbox, commands, checkpoint, schedules, restarts, state size, last error)."""
        local = self._locator.local(self.id)
        if local is not None:
            info: AgentInfo = local.info()
            return info
        budget = self._locator.call_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + budget
        raw = await self._remote("info", None, deadline, None)
        try:
            return AgentInfo.from_dict(raw)
        except ValueError as exc:
            raise ClusterError(
                f"the owner of agent {self.id!r} answered info with {exc}",
                details={"agent_id": self.id},
            ) from exc

    async def owner(self) -> str | None:
        """Id of the node that owns the agent now (registry cache), or ``None``."""
        record = await self._locator.record(self.id, consistent=False)
        return record.node if record is not None else None

    # -- remote path ----------------------------------------------------------------------------

    async def _activated(self, *, known: bool) -> RegistryRecord | None:
        """Activate a virtual agent with no record; its record (``None``: not virtual, or
        ``known`` false and a record exists). ``known``: the caller already found none."""
        loc = self._locator
        cls = loc.virtual_class(self.id, self._cls)
        if cls is None:
            return None
        if not known and (
            await loc.record(self.id, consistent=False) is not None
            or await loc.record(self.id, consistent=True) is not None
        ):
            return None
        return await loc.activate(self.id, cls)

    async def _remote(
        self,
        op: str,
        signal: Signal | None,
        deadline: float,
        meta: Mapping[str, Any] | None,
    ) -> Any:
        loc = self._locator
        record = await loc.record(self.id, consistent=False)
        if record is None:
            record = await loc.record(self.id, consistent=True)
        retried = False
        for _ in range(_MAX_HOPS):
            if record is None:
                record = await self._activated(known=True)
            if record is None:
                raise AgentNotFoundError(
                    f"no agent {self.id!r} is registered in the cluster; spawn it first",
                    details={"agent_id": self.id, "tenant": self.tenant},
                )
            try:
                return await self._send(op, record, signal, deadline, meta)
            except NotOwnerError as exc:
                error: JidoError = exc
                if not retried:
                    # The agent moved (or is moving): read the registry and retry once.
                    retried = True
                    fresh = await loc.record(self.id, consistent=True)
                    if fresh is None or (fresh.node, fresh.epoch) != (record.node, record.epoch):
                        record = fresh
                        continue
            except NodeUnavailableError as exc:
                error = exc
            new = await loc.ref_policy.on_unreachable(self, record, error, deadline)
            if new is None:
                raise error
            record = new
        raise NodeUnavailableError(
            f"gave up reaching agent {self.id!r} after {_MAX_HOPS} attempts",
            details={"agent_id": self.id},
        )

    async def _send(
        self,
        op: str,
        record: Any,
        signal: Signal | None,
        deadline: float,
        meta: Mapping[str, Any] | None,
    ) -> Any:
        loc = self._locator
        loop = asyncio.get_running_loop()
        if record.node == loc.node_id:
            local = await loc.wait_local(self.id, deadline)
            if local is None:
                raise NotOwnerError(
                    f"agent {self.id!r} is assigned to node {loc.node_id} but not running there",
                    details={"agent_id": self.id, "node": loc.node_id},
                )
            if op == "call":
                assert signal is not None
                remaining = max(deadline - loop.time(), 0.001)
                return await local.call(signal, timeout=remaining, meta=meta)
            if op == "info":
                return local.info().to_dict()
            return (await local.state()).model_dump(mode="json")
        if not loc.is_live(record.node):
            raise NodeUnavailableError(
                f"agent {self.id!r} is owned by node {record.node!r}, which is not a live "
                "member of the cluster; wait for failover or spawn it elsewhere",
                details={"agent_id": self.id, "node": record.node},
            )
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(
                f"{op} to agent {self.id!r} got no reply in time; retry or raise the timeout",
                details={"agent_id": self.id, "op": op},
            )
        payload = encode_request(
            self.id, signal, timeout=remaining * 0.95 if op == "call" else None, meta=meta
        )
        return await loc.request(record.node, op, payload, timeout=remaining, agent_id=self.id)


__all__ = ["ClusterRef", "FailFast", "Locator", "RemoteState", "UnreachablePolicy"]
