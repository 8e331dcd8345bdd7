"""``Endpoint``: a node's private subject, served from a table of ops.

Each node subscribes **once** to ``<root>.node.<node_id>.>``; the last token of a message's
subject names the op. An op is one entry of the table (:meth:`Endpoint.add`): a handler that gets
the NATS message and returns the result to send back (or raises the error to send back). Two
kinds:

* request ops (``call``, ``state``, ``start``, ``stop``, ``handoff``, ``drain``, ``ping``,
  ``stats``, ...) each run in a task of their own, and their result or typed error is the reply;
* one-way ops (``cast``, ``casts``) run inline, in arrival order, and send nothing back.

A step that applies to every op — authorization, tracing — is one wrapper
(:meth:`Endpoint.wrap`): it gets the op's name and handler and returns the handler to use.
(Rate quotas count each call and cast, a batch item by item: ``AgentOps.admit``.) The
endpoint also subscribes (as its tenant's queue group) to its tenant's public agent subjects
when given a handler for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from foundation._errors import InvalidRequestError
from foundation._hooks import TaskSet
from foundation._wire import DEFAULT_TENANT
from foundation.messaging.envelope import (
    Request,
    Subjects,
    decode_request,
    encode_error,
    encode_ok,
    encode_reply_within,
)

Handler = Callable[[Msg], Awaitable[Any]]
"""An op: gets the message, returns the result to reply with (one-way ops: ``None``)."""

Wrapper = Callable[[str, Handler], Handler]
"""A step around every op: ``wrapper(op_name, handler)`` returns the handler to run."""


def with_request(fn: Callable[[Request], Awaitable[Any]]) -> Handler:
    """An op whose handler takes the decoded request (agent id, signal, extras)."""

    async def handler(msg: Msg) -> Any:
        return await fn(decode_request(msg.data))

    return handler


@dataclass(frozen=True, slots=True)
class Op:
    """One entry of the op table."""

    handler: Handler
    one_way: bool = False


class Endpoint:
    """The op table of one node and its subscriptions (see the module docs)."""

    def __init__(self, nc: NatsClient, node_id: str, *, subjects: Subjects, tasks: TaskSet) -> None:
        self.nc = nc
        self.node_id = node_id
        self.subjects = subjects
        self._tasks = tasks
        self._table: dict[str, Op] = {}
        self._wrappers: list[Wrapper] = []
        self._serving: dict[str, Op] = {}
        self._subs: list[Any] = []

    # -- the table -----------------------------------------------------------------------------

    def add(self, name: str, handler: Handler, *, one_way: bool = False) -> None:
        """Serve op ``name`` with ``handler`` (replacing an entry of that name)."""
        self._table[name] = Op(handler, one_way)
        self._serving[name] = Op(self._wrapped(name, handler), one_way)

    def wrap(self, wrapper: Wrapper) -> None:
        """Run ``wrapper`` around every op, those in the table and those added later."""
        self._wrappers.append(wrapper)
        for name, op in self._table.items():
            self._serving[name] = Op(self._wrapped(name, op.handler), op.one_way)

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of the ops served."""
        return tuple(self._table)

    def _wrapped(self, name: str, handler: Handler) -> Handler:
        for wrapper in self._wrappers:
            handler = wrapper(name, handler)
        return handler

    # -- subscriptions -------------------------------------------------------------------------

    async def start(
        self,
        *,
        public: Handler | None = None,
        attested: str | None = None,
        tenant: str = DEFAULT_TENANT,
        served_elsewhere: Callable[[str], bool] | None = None,
    ) -> None:
        """Subscribe to this node's private subjects (and ``tenant``'s public agent subjects,
        in that tenant's queue group: another tenant's requests never reach this node).

        ``served_elsewhere(subject)``: true for a public subject another tenant's nodes serve;
        such a message is left to them, unanswered (the default tenant's nodes see every
        agent subject).

        ``attested`` (a secure cluster's ``foundation.from``) also serves each subject under
        ``<attested>.<role>.<name>.``: the server lets a principal publish only under its own
        prefix there, so the ops (through a :meth:`wrap` step) know who sent them.
        """
        wildcards = [self.subjects.node_wildcard(self.node_id)]
        if attested is not None:
            wildcards.append(f"{attested}.*.*.{wildcards[0]}")
        for wildcard in wildcards:
            self._subs.append(
                await self.nc.subscribe(wildcard, cb=self._on_node_msg, pending_msgs_limit=-1)
            )
        if public is not None:
            handler = public

            async def on_public(msg: Msg) -> None:
                if served_elsewhere is not None and served_elsewhere(msg.subject):
                    return
                self._tasks.spawn(self._serve(handler, msg, one_way=not msg.reply))

            publics = [self.subjects.tenant_wildcard(tenant)]
            if attested is not None:
                publics.append(f"{attested}.*.*.{publics[0]}")
            for wildcard in publics:
                self._subs.append(
                    await self.nc.subscribe(
                        wildcard,
                        queue=self.subjects.tenant_queue(tenant),
                        cb=on_public,
                        pending_msgs_limit=-1,
                    )
                )
        await self.nc.flush()

    @property
    def subscribed(self) -> bool:
        """True while the endpoint holds subscriptions."""
        return bool(self._subs)

    async def stop(self, step: Callable[[str, Awaitable[Any]], Awaitable[None]]) -> None:
        """Unsubscribe (each unsubscribe run through ``step``, the node's bounded stop step)."""
        for sub in self._subs:
            await step("unsubscribe", sub.unsubscribe())
        self._subs.clear()

    # -- dispatch ------------------------------------------------------------------------------

    async def _on_node_msg(self, msg: Msg) -> None:
        name = msg.subject[msg.subject.rfind(".") + 1 :]
        op = self._serving.get(name)
        if op is None:
            self._tasks.spawn(self._serve(_unknown(name), msg))
        elif op.one_way:
            await op.handler(msg)
        else:
            self._tasks.spawn(self._serve(op.handler, msg))

    async def _serve(self, handler: Handler, msg: Msg, *, one_way: bool = False) -> None:
        try:
            result = await handler(msg)
            if one_way:
                return
            data = encode_ok(result)
        except Exception as exc:
            if one_way:
                return
            data = encode_error(exc)
        await self.respond(msg, data)

    async def respond(self, msg: Msg, data: bytes) -> None:
        """Send ``data`` as the reply to ``msg`` (if it asked for one).

        A reply larger than the server accepts becomes a typed ``payload_too_large`` error
        reply saying the command was applied (never a timeout of an applied call).
        """
        if msg.reply:
            data = encode_reply_within(data, self.nc.max_payload, "this request")
            with contextlib.suppress(Exception):
                await self.nc.publish(msg.reply, data)


def _unknown(name: str) -> Handler:
    async def handler(msg: Msg) -> Any:
        raise InvalidRequestError(f"unknown node op {name[:40]!r}", details={"field": "op"})

    return handler


__all__ = ["Endpoint", "Handler", "Op", "Wrapper", "with_request"]
