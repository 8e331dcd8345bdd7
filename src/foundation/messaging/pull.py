"""``PullWorker``: the skeleton of a JetStream pull-consumer worker.

The cluster bus's ``at_least_once`` subscriptions and the agent inboxes both drain one durable
pull consumer from one background task: fetch a batch, hand it over, ack or retry what came
back, dead-letter what can never be delivered, and stop promptly (a task blocked in a long
``fetch`` is cancelled; one busy delivering finishes what it holds). :class:`PullWorker` is that
loop; what differs is a hook each:

* :meth:`PullWorker._on_batch` delivers what one fetch returned and acks, naks or keeps each
  message (the bus: one signal at a time, a failure negatively acknowledged with a back-off
  and dead-lettered after ``max_deliver`` attempts; an inbox: in stream order and in batches,
  a failure retried in place so nothing overtakes it);
* :meth:`PullWorker._on_fetch_error` decides what a refused fetch means (the bus waits and
  fetches again; an inbox recreates its consumer);
* :attr:`PullWorker.connection_gone` names the errors that end the loop for good and
  :attr:`PullWorker.stop_when_gone` whether the worker then counts as stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Sequence
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from foundation.messaging.dead_letters import dead_letter

__all__ = ["PullWorker"]


class PullWorker(ABC):
    """One pull consumer of ``stream`` drained by one background task (subclass it).

    ``consumer`` is the durable consumer's name (``None``: none, nothing to pull) and
    ``dead_kind`` the dead-letter subject token of what this worker gives up on (``"sub"``,
    ``"inbox"``). Subclasses start the task with :meth:`_spawn`, run :meth:`_pull` in it, and
    end it with :meth:`_halt`.
    """

    connection_gone: ClassVar[tuple[type[BaseException], ...]] = (
        nats.errors.ConnectionClosedError,
    )
    """Errors of ``fetch`` after which nothing more can be fetched or acked: the loop ends."""
    stop_when_gone: ClassVar[bool] = False
    """Whether such an error also marks the worker stopping (nothing more to do at all)."""

    def __init__(
        self, js: JetStreamContext, stream: str, consumer: str | None, dead_kind: str
    ) -> None:
        self.js = js
        self.stream = stream
        self.consumer = consumer
        self._dead_kind = dead_kind
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._fetching = False

    def _spawn(self, loop: Coroutine[Any, Any, None], name: str) -> None:
        self._task = asyncio.create_task(loop, name=name)

    async def _halt(self) -> None:
        """Stop the loop and wait for it: a task blocked in ``fetch`` is cancelled, one that is
        delivering returns after the message in hand. From inside the task: only flags it."""
        self._stopping = True
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        if self._fetching:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _pull(self, psub: JetStreamContext.PullSubscription, batch: int) -> None:
        """Fetch up to ``batch`` messages (waiting at most :meth:`_poll_timeout` seconds for the
        first) and hand each batch to :meth:`_on_batch` until stopped, until the connection is
        gone, or until a hook says to return."""
        while not self._stopping:
            self._fetching = True
            try:
                msgs = await psub.fetch(batch, timeout=self._poll_timeout())
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except self.connection_gone:
                if self.stop_when_gone:
                    self._stopping = True
                return
            except nats.js.errors.APIError as exc:
                if await self._on_fetch_error(exc):
                    continue
                return
            finally:
                self._fetching = False
            if not await self._on_batch(msgs):
                return

    @abstractmethod
    def _poll_timeout(self) -> float:
        """How long one fetch waits for a first message (an idle worker's poll interval)."""

    @abstractmethod
    async def _on_batch(self, msgs: Sequence[Msg]) -> bool:
        """Deliver the messages of one fetch; False ends :meth:`_pull`."""

    @abstractmethod
    async def _on_fetch_error(self, exc: nats.js.errors.APIError) -> bool:
        """The server refused a fetch: True to fetch again, False to end :meth:`_pull`."""

    async def _store_dead(self, msg: Msg, reason: str, attempts: int, sseq: int) -> None:
        """Copy ``msg`` (stream sequence ``sseq``) to the dead-letter stream; the caller acks it
        once it is stored (an error leaves it unacked, to be delivered again)."""
        assert self.consumer is not None
        await dead_letter(
            self.js,
            msg,
            kind=self._dead_kind,
            consumer=self.consumer,
            reason=reason,
            attempts=attempts,
            stream_seq=sseq,
            stream=self.stream,
        )
