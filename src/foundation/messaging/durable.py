"""Inboxes of the at-least-once agents a node hosts (see ``foundation.messaging.inbox``).

:class:`InboxOpener` is the host's ``open_inbox``: it creates the inbox stream once per node and
starts an :class:`~foundation.messaging.inbox.AgentInbox` that applies each batch of signals in
one mailbox turn, committed together with the last applied stream sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nats.aio.client import Client as NatsClient

from foundation.messaging.inbox import AgentInbox, Delivered, ensure_inbox_stream
from jido import Signal


class InboxOpener:
    """Starts agent inboxes on ``nc`` for ``tenant`` (the stream with ``replicas`` copies)."""

    def __init__(self, nc: NatsClient, *, tenant: str, replicas: int) -> None:
        self._nc = nc
        self._tenant = tenant
        self._replicas = replicas
        self._stream_ready = False

    async def __call__(
        self,
        agent_id: str,
        ref: Any,
        after_seq: int,
        on_stopped: Callable[[BaseException], None],
    ) -> AgentInbox:
        """Start the inbox of ``agent_id`` (running as ``ref``) after sequence ``after_seq``."""
        js = self._nc.jetstream()
        if not self._stream_ready:
            await ensure_inbox_stream(js, replicas=self._replicas)
            self._stream_ready = True

        async def deliver_batch(items: Sequence[tuple[Signal, int]]) -> Delivered:
            # One mailbox turn: the signals are applied in order and their state is committed
            # with the last applied stream sequence in ONE CAS write, before any directive runs
            # or anything is acked. A failed commit (FencedError included) raises: nothing acked.
            out = await ref.call_batch(
                [signal for signal, _ in items], metas=[{"stream_seq": seq} for _, seq in items]
            )
            return Delivered(out.applied, out.error)

        inbox = AgentInbox(
            js,
            agent_id,
            deliver_batch=deliver_batch,
            tenant=self._tenant,
            after_seq=after_seq,
            on_stopped=on_stopped,
        )
        await inbox.start()
        return inbox


__all__ = ["InboxOpener"]
