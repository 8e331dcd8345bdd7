"""``AgentInbox``: at-least-once delivery to one agent, the mechanism under effectively-once.

Every agent with ``at_least_once`` delivery has an inbox subject
``<root>.inbox.<tenant>.<agent_id>`` captured by the work-queue stream :data:`INBOX_STREAM`.

* **Sender**: :func:`send_to_inbox` publishes a signal there with ``Nats-Msg-Id`` = signal id
  and returns once JetStream acknowledged it (the stream sequence; a re-send of the same id
  within the duplicate window is stored once). That acknowledgement is "acknowledged to its
  sender".
* **Owner**: :class:`AgentInbox` drains the inbox through one durable pull consumer and hands
  the messages **in stream order** to the owner, in **batches**: each fetch takes what is
  available (up to ``batch``, without waiting for more — a lone signal is delivered at once)
  and ``deliver_batch(items)`` receives the consecutive ``(signal, stream_seq)`` pairs. It
  applies them in order and commits their state together with the **last** applied sequence
  in one write, then reports how many leading items it applied; only those are acked. (A
  per-signal ``deliver(signal, stream_seq)`` is also accepted: it is called for each message
  in turn.) Started with ``after_seq=N`` (the last applied sequence committed with the agent's
  state) it acks and skips every message with a sequence ≤ N. When the commit carries the
  sequence in the same compare-and-set write as the state, every acknowledged signal is
  applied exactly once, whatever process dies when: a batch not committed is applied again
  by the next owner, one committed but not acked is skipped by it.

Order is what makes the skip rule safe, so the inbox never lets a later message overtake an
earlier one: each activation deletes and recreates the consumer (a fresh consumer of a
work-queue stream delivers the remaining messages in sequence order), a failing message is
retried in place (the messages behind it wait; a batch is never split out of order), and a
gap in the consumer's delivery sequence (a message lost in transit, e.g. across a reconnect)
makes it recreate the consumer and start over from the first unacknowledged message.

Cost per running inbox: one durable consumer on the server, one NATS subscription and one
asyncio task that long-polls (``fetch`` with ``idle_poll`` seconds expiry, 5 s by default) — an
idle inbox costs one small request per ``idle_poll`` seconds and a few KiB of memory. A pull
request does not survive a reconnect to another server, so ``idle_poll`` is also the longest an
inbox can stall after its NATS server fails (a longer poll is cheaper when idle, slower to
recover). Nothing per message beyond
the message itself. Hosts with very many idle agents should start inboxes lazily (e.g. when the
agent is activated) and stop them when it hibernates: messages wait in the stream meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from foundation._errors import ClusterBusError, NotOwnerError
from foundation._ids import ID_RE
from foundation._wire import (
    DEAD_LETTER_SUBJECT_PREFIX,
    DEFAULT_TENANT,
    HDR_MSG_ID,
    INBOX_STREAM,
    INBOX_SUBJECT_PREFIX,
)
from foundation.messaging.codec import WireMode, decode_signal, encode_signal
from foundation.messaging.dead_letters import DeadLetter, list_dead_letters
from foundation.messaging.envelope import payload_too_large
from foundation.messaging.pull import PullWorker
from foundation.nats.streams import (
    ensure_dead_letter_stream,
    ensure_file_stream,
    js_publish_many,
    parse_ack_reply,
    purge_dead,
)
from jido import AgentStoppedError, FencedError, JidoError, Signal

__all__ = [
    "INBOX_STREAM",
    "INBOX_SUBJECT_PREFIX",
    "AgentInbox",
    "Delivered",
    "InboxStatistics",
    "ensure_inbox_stream",
    "inbox_consumer_name",
    "inbox_subject",
    "send_to_inbox",
]

log = logging.getLogger("foundation.inbox")


Deliver = Callable[[Signal, int], Awaitable[None]]
"""Per-signal delivery: apply and commit one signal."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a ``deliver_batch`` call applied: the first ``applied`` items are committed.

    When ``applied`` is less than the number of items, ``error`` is why item ``applied`` was
    not (it is retried in place, dead-lettered or stops the inbox, as a per-signal ``deliver``
    error would); the items after it are delivered again afterwards.
    """

    applied: int
    error: BaseException | None = None


DeliverBatch = Callable[[Sequence[tuple[Signal, int]]], Awaitable[Delivered]]
"""Batch delivery: apply consecutive ``(signal, stream_seq)`` items in order, commit once.

Raising means nothing was applied (e.g. the commit failed): the error counts for the first item.
"""


def _one_by_one(deliver: Deliver) -> DeliverBatch:
    """A ``DeliverBatch`` calling a per-signal ``deliver`` for each item in turn."""

    async def deliver_batch(items: Sequence[tuple[Signal, int]]) -> Delivered:
        for i, (sig, seq) in enumerate(items):
            try:
                await deliver(sig, seq)
            except Exception as exc:
                return Delivered(i, exc)
        return Delivered(len(items))

    return deliver_batch


def _transient(exc: BaseException) -> bool:
    """Whether a ``deliver`` failure may pass by itself (so the message must not be dropped)."""
    if isinstance(exc, JidoError):
        return exc.retryable
    return isinstance(exc, nats.errors.Error | OSError | TimeoutError)


def inbox_subject(agent_id: str, tenant: str = DEFAULT_TENANT) -> str:
    """The inbox subject of ``agent_id`` in ``tenant``."""
    for kind, value in (("tenant", tenant), ("agent id", agent_id)):
        if (
            not isinstance(value, str)
            or not ID_RE.match(value)
            or (kind == "tenant" and "." in value)
        ):
            raise ClusterBusError(
                f"{kind} {value!r} cannot be part of an inbox subject: use letters, digits, "
                "'_', '-', '=' (and dots between them in an agent id)",
                details={"kind": kind, "value": repr(value)},
            )
    return f"{INBOX_SUBJECT_PREFIX}.{tenant}.{agent_id}"


def inbox_consumer_name(agent_id: str, tenant: str = DEFAULT_TENANT) -> str:
    """Durable consumer name of an agent's inbox (readable prefix + hash; no dots)."""
    key = f"{tenant}.{agent_id}"
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", key)[:40]
    return f"inbox_{readable}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


async def ensure_inbox_stream(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    duplicate_window: float = 120.0,
    max_age: float | None = None,
) -> None:
    """Create (or update) the inbox stream and the dead-letter stream, idempotently.

    ``max_age`` (seconds) bounds how long an unconsumed message waits; ``None`` keeps it until
    its agent consumes it or is removed.
    """
    await ensure_file_stream(
        js,
        INBOX_STREAM,
        [f"{INBOX_SUBJECT_PREFIX}.>"],
        api.RetentionPolicy.WORK_QUEUE,
        replicas=replicas,
        duplicate_window=duplicate_window,
        max_age=max_age,
    )
    await ensure_dead_letter_stream(js, replicas=replicas, max_age=7 * 24 * 3600.0)


async def send_to_inbox(
    js: JetStreamContext,
    agent_id: str,
    *signals: Signal,
    tenant: str = DEFAULT_TENANT,
    wire: WireMode = "structured",
    ack_timeout: float = 5.0,
    max_payload: int = 0,
) -> list[int]:
    """Publish ``signals`` to an agent's inbox; returns their stream sequences once stored.

    ``Nats-Msg-Id`` is the signal id, so sending the same signal again (e.g. after a timeout)
    within the duplicate window stores it once and returns the first sequence. Raises
    :class:`ClusterBusError` (retryable) when JetStream did not acknowledge, and
    :class:`jido.PayloadTooLargeError` (nothing sent) for a signal over ``max_payload``
    bytes (the server's limit; ``0``: not checked).
    """
    subject = inbox_subject(agent_id, tenant)
    items = []
    for sig in signals:
        headers, body = encode_signal(sig, wire)
        headers[HDR_MSG_ID] = sig.id
        if max_payload:
            size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12
            if size > max_payload:
                raise payload_too_large(size, max_payload, f"signal to agent {agent_id!r}")
        items.append((subject, headers, body))
    return await js_publish_many(js, items, ack_timeout)


@dataclass(frozen=True, slots=True)
class InboxStatistics:
    """Counters of one :class:`AgentInbox` (an immutable snapshot)."""

    delivered: int
    """Messages applied (committed) and acked."""
    skipped: int
    """Messages acked without delivery because their sequence was ≤ the applied one."""
    retries: int
    """``deliver`` calls that raised and were retried."""
    dead_lettered: int
    restarts: int
    """Consumer recreations after a delivery gap or an error."""
    applied_seq: int
    """Stream sequence of the last message applied (or skipped)."""
    batches: int = 0
    """Deliveries that committed at least one message (``delivered / batches``: mean batch)."""


def _pending(reply: str | None) -> int:
    """The ``pending`` count of a JetStream ack reply subject (messages left after this one)."""
    tokens = (reply or "").split(".")
    if len(tokens) < 9:
        return 0
    try:
        return int(tokens[8 if len(tokens) == 9 else 10])
    except ValueError:
        return 0


class AgentInbox(PullWorker):
    """Drains one agent's inbox in stream order, in batches, acking only what was committed.

    Give either ``deliver(signal, stream_seq)`` (one message at a time) or ``deliver_batch``
    (consecutive ``(signal, stream_seq)`` items, at most ``batch`` of them, applied and committed
    together; returns :class:`Delivered`). ``after_seq``: the last stream sequence already
    applied (committed with the agent's state); messages at or below it are acked and skipped.
    A failing message is retried in place after ``retry_backoff[attempt-1]`` seconds (the last
    delay repeats), together with the messages behind it. A message that keeps failing with a
    permanent error (not ``retryable``: e.g. a validation error) is dead-lettered after
    ``max_attempts`` and the inbox moves on; transient errors (a ``retryable`` ``JidoError``, a
    NATS, OS or timeout error) are retried until they pass, so an outage never drops a signal.
    An error of a type in ``stop_on`` (default: ``FencedError``, ``AgentStoppedError``,
    ``NotOwnerError``) stops the inbox without acking: the messages stay for the next owner.
    ``on_stopped`` is called with that error.
    """

    connection_gone = (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError)
    stop_when_gone = True  # nothing more can be acked

    def __init__(
        self,
        js: JetStreamContext,
        agent_id: str,
        deliver: Deliver | None = None,
        *,
        deliver_batch: DeliverBatch | None = None,
        tenant: str = DEFAULT_TENANT,
        after_seq: int = 0,
        batch: int = 128,
        ack_wait: float = 30.0,
        idle_poll: float = 5.0,
        max_attempts: int = 5,
        retry_backoff: Sequence[float] = (0.05, 0.2, 1.0, 5.0),
        stop_on: tuple[type[BaseException], ...] = (FencedError, AgentStoppedError, NotOwnerError),
        on_stopped: Callable[[BaseException], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ClusterBusError("max_attempts must be >= 1", details={"value": max_attempts})
        if (deliver is None) == (deliver_batch is None):
            raise ClusterBusError(
                "AgentInbox takes exactly one of deliver (per signal) and deliver_batch",
                details={"agent_id": agent_id},
            )
        if batch < 1:
            raise ClusterBusError("batch must be >= 1", details={"value": batch})
        consumer = inbox_consumer_name(agent_id, tenant)
        PullWorker.__init__(self, js, INBOX_STREAM, consumer, "inbox")
        self.consumer: str = consumer
        self.agent_id = agent_id
        self.tenant = tenant
        self.subject = inbox_subject(agent_id, tenant)
        self._deliver: DeliverBatch = (
            deliver_batch if deliver_batch is not None else _one_by_one(deliver)  # type: ignore[arg-type]
        )
        self._applied = after_seq
        self._batch = batch
        self._ack_wait = ack_wait
        self._idle_poll = idle_poll
        self._max_attempts = max_attempts
        self._backoff = tuple(retry_backoff) or (0.0,)
        self._stop_on = stop_on
        self._on_stopped = on_stopped
        self._expected_dseq = 1  # the next consumer sequence of an in-order delivery
        self._delivered = 0
        self.lag = 0
        """Messages waiting in the inbox after the last fetch (the inbox lag)."""
        self._batches = 0
        self._skipped = 0
        self._retries = 0
        self._dead = 0
        self._restarts = 0
        self._progress = asyncio.Condition()
        self.error: BaseException | None = None
        """The error that stopped the inbox, if one did."""

    @property
    def applied_seq(self) -> int:
        """Stream sequence of the last message applied or skipped."""
        return self._applied

    @property
    def running(self) -> bool:
        """Whether the inbox is draining."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Recreate the consumer (fresh, in-order delivery) and start draining."""
        if self._task is not None:
            return
        await self._recreate_consumer()
        self._spawn(self._run(), f"inbox:{self.tenant}.{self.agent_id}")

    async def stop(self) -> None:
        """Stop draining (the consumer and undelivered messages stay for the next owner).

        Called from ``deliver``, it returns at once and the loop ends after ``deliver`` does."""
        await self._halt()

    async def remove(self, *, purge: bool = True) -> None:
        """Stop, delete the consumer and (``purge``) the agent's undelivered messages.

        Use when the agent is removed from the cluster for good.
        """
        await self.stop()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_consumer(INBOX_STREAM, self.consumer)
        if purge:
            await self.js.purge_stream(INBOX_STREAM, subject=self.subject)

    async def wait_applied(self, seq: int) -> None:
        """Wait until the message with stream sequence ``seq`` has been applied (or skipped),
        or the inbox stopped. Bound it with ``asyncio.timeout``."""
        async with self._progress:
            await self._progress.wait_for(lambda: self._applied >= seq or not self.running)

    def statistics(self) -> InboxStatistics:
        """An immutable snapshot of this inbox's counters."""
        return InboxStatistics(
            delivered=self._delivered,
            skipped=self._skipped,
            retries=self._retries,
            dead_lettered=self._dead,
            restarts=self._restarts,
            applied_seq=self._applied,
            batches=self._batches,
        )

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """This inbox's dead letters, oldest first (redrive them with ``ClusterBus.redrive``)."""
        return await list_dead_letters(
            self.js,
            subject_filter=f"{DEAD_LETTER_SUBJECT_PREFIX}.inbox.{self.consumer}",
            limit=limit,
        )

    async def purge_dead_letters(self) -> int:
        """Delete this inbox's dead letters; returns how many were removed."""
        return await purge_dead(self.js, f"{DEAD_LETTER_SUBJECT_PREFIX}.inbox.{self.consumer}")

    # -- internals ------------------------------------------------------------------------------

    async def _recreate_consumer(self) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_consumer(INBOX_STREAM, self.consumer)
        config = api.ConsumerConfig(
            name=self.consumer,
            durable_name=self.consumer,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=-1,
            filter_subject=self.subject,
            max_ack_pending=self._batch * 2,
        )
        try:
            await self.js.add_consumer(INBOX_STREAM, config=config)
        except nats.js.errors.APIError as exc:
            raise ClusterBusError(
                f"could not create the inbox consumer of {self.agent_id!r}: {exc.description}; "
                "is the inbox stream created (ensure_inbox_stream)?",
                details={"agent_id": self.agent_id, "code": exc.err_code},
                cause=exc,
            ) from exc

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def _run(self) -> None:
        delay = 0.0
        try:
            while not self._stopping:
                try:
                    if delay:
                        await asyncio.sleep(delay)  # back off while JetStream is unavailable
                        await self._recreate_consumer()
                    psub = await self.js.pull_subscribe_bind(self.consumer, INBOX_STREAM)
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    return
                except Exception as exc:
                    # A stream leader election, a reconnect or a missing stream: keep trying.
                    delay = min(max(delay * 2, 0.05), 2.0)
                    log.warning("inbox of %s cannot consume yet (%s); retrying", self.agent_id, exc)
                    continue
                try:
                    await self._drain(psub)
                    delay = 0.0
                except Exception as exc:
                    # Whatever went wrong mid-stream, start over in order from the first
                    # unacknowledged message (never skip ahead).
                    delay = 0.05
                    log.warning("inbox of %s: %r; restarting its consumer", self.agent_id, exc)
                finally:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()
                if not self._stopping:
                    self._restarts += 1
                    if not delay:
                        try:
                            await self._recreate_consumer()
                        except Exception as exc:
                            delay = 0.05
                            log.warning(
                                "inbox of %s: consumer not recreated (%s)", self.agent_id, exc
                            )
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            await self._notify()

    async def _drain(self, psub: JetStreamContext.PullSubscription) -> None:
        """Deliver messages until stopped; returns when the consumer must be recreated."""
        self._expected_dseq = 1
        await self._pull(psub, self._batch)

    def _poll_timeout(self) -> float:
        return self._idle_poll

    async def _on_fetch_error(self, exc: nats.js.errors.APIError) -> bool:
        log.warning("inbox fetch of %s failed (%s); recreating consumer", self.agent_id, exc)
        return False

    async def _on_batch(self, msgs: Sequence[Msg]) -> bool:
        self.lag = _pending(msgs[-1].reply) if msgs else 0  # messages still waiting after these
        run: list[tuple[Msg, int, Signal]] = []  # consecutive messages to deliver
        for msg in msgs:
            if self._stopping:
                return False
            _, sseq, dseq = parse_ack_reply(msg.reply)
            if dseq != self._expected_dseq:
                if dseq > self._expected_dseq or sseq > self._applied:
                    # A delivery went missing (lost in transit): deliver what came before it,
                    # then start over in order.
                    log.info(
                        "inbox of %s: delivery gap (consumer seq %d, expected %d); restart",
                        self.agent_id,
                        dseq,
                        self._expected_dseq,
                    )
                    await self._apply(run)
                    return False
            else:
                self._expected_dseq += 1
            if sseq <= self._applied:
                self._skipped += 1
                await msg.ack()
                continue
            try:
                sig = decode_signal(msg.headers, msg.data)
            except JidoError as exc:
                if not await self._apply(run):  # keep the order of what came before it
                    return False
                run = []
                await self._dead_letter(msg, f"undecodable: {exc.message}", 1, sseq)
                continue
            run.append((msg, sseq, sig))
            if len(run) >= self._batch:
                if not await self._apply(run):
                    return False
                run = []
        if not await self._apply(run):
            return False
        await self._notify()
        return True

    async def _apply(self, run: list[tuple[Msg, int, Signal]]) -> bool:
        """Deliver consecutive messages in batches, retrying a failing one in place (with the
        messages behind it); ack each batch's committed prefix. False when the inbox must stop.
        """
        attempt = 1  # deliveries tried for the head of ``run``
        while run:
            if self._stopping:
                return False
            try:
                done = await self._deliver([(sig, sseq) for _, sseq, sig in run])
            except Exception as raised:
                done = Delivered(0, raised)
            applied = min(max(done.applied, 0), len(run))
            if applied:
                for msg, _, _ in run[:applied]:
                    await msg.ack()
                self._applied = run[applied - 1][1]
                self._delivered += applied
                self._batches += 1
                run = run[applied:]
                attempt = 1
                if not run:
                    return True
            exc = done.error
            if exc is None:
                if applied:
                    continue  # the rest goes in the next batch
                exc = ClusterBusError("deliver_batch applied nothing and reported no error")
            if isinstance(exc, self._stop_on):
                self.error = exc
                self._stopping = True
                if self._on_stopped is not None:
                    self._on_stopped(exc)
                return False
            msg, sseq, _ = run[0]
            if attempt >= self._max_attempts and not _transient(exc):
                log.warning(
                    "inbox of %s: deliver failed %d times on seq %d; dead-lettering: %s",
                    self.agent_id,
                    attempt,
                    sseq,
                    exc,
                )
                await self._dead_letter(msg, f"{type(exc).__name__}: {exc}", attempt, sseq)
                run = run[1:]
                attempt = 1
                continue
            self._retries += 1
            delay = self._backoff[min(attempt, len(self._backoff)) - 1]
            if attempt >= self._max_attempts:
                log.warning(
                    "inbox of %s: deliver of seq %d failed %d times (transient: %s); retrying",
                    self.agent_id,
                    sseq,
                    attempt,
                    exc,
                )
            for waiting, _, _ in run:
                with contextlib.suppress(Exception):
                    await waiting.in_progress()
            await asyncio.sleep(delay)  # back-off before retrying the same message in place
            attempt += 1
        return True

    async def _dead_letter(self, msg: Msg, reason: str, attempts: int, sseq: int) -> None:
        await self._store_dead(msg, reason, attempts, sseq)
        self._dead += 1
        self._applied = sseq
        await msg.ack()
