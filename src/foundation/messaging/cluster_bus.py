"""``ClusterBus``: pattern publish/subscribe of signals across nodes, over NATS (see
``docs/cluster-bus.md``).

Subjects. A signal of type ``order.item.created`` travels on ``<root>.signal.order.item.created``
when published at most once (core NATS) and on ``<root>.durable.order.item.created`` when
published at least once (captured by the JetStream stream :data:`SIGNALS_STREAM`). A ``jido``
pattern maps to NATS subject wildcards by :func:`plan_pattern`: ``*`` is ``*``; a trailing
``**`` (zero or more segments) becomes the pair ``<head>`` and ``<head>.>`` (NATS ``>`` needs at
least one segment); any other ``**`` widens the subject to ``<head>.>`` and the exact ``jido``
semantics are restored by a local :class:`jido.Router` filter.

Delivery. ``at_most_once`` subscribers are core NATS subscriptions (one per subject of the plan
and prefix, a callback each, no per-message task). ``at_least_once`` subscribers own a JetStream
pull consumer on the durable subjects (acked only after the handler returns; a failure is
negatively acknowledged with a back-off delay; after ``max_deliver`` attempts the signal is moved
to the dead-letter stream, from which it can be listed, redriven to that consumer, or purged)
and also listen, best effort, to signals published at most once. The guarantee a subscriber gets
is the weaker of the publisher's and its own mode.

Wire. CloudEvents structured JSON by default (the event as the body, no headers) or binary
mode on request (``ce-*`` headers, data as the body); the receiver detects the mode of every
message, so nodes and plain NATS clients may mix them. Structured is the default because
nats-py encodes and parses headers in pure Python: binary mode reaches 0.3-0.6x the structured rate
(see BENCHMARKS.md). The W3C ``traceparent`` crosses
nodes in the event; a signal published from inside a handler without trace context of its own
continues the handler's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, api

from foundation._errors import ClusterBusError
from foundation._wire import (
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT_PREFIX,
    DURABLE_SIGNAL_SUBJECT_PREFIX,
    HDR_MSG_ID,
    REDRIVE_SUBJECT_PREFIX,
    SIGNAL_SUBJECT_PREFIX,
    SIGNALS_STREAM,
    SUBJECT_ROOT,
)
from foundation.messaging.bridge import BusBridge
from foundation.messaging.bus_subjects import (
    Delivery,
    DeliveryLike,
    SubjectPlan,
    consumer_token,
    plan_pattern,
    signal_subject,
)
from foundation.messaging.codec import (
    WireMode,
    _current,
    current_signal,
    decode_signal,
    encode_signal,
)
from foundation.messaging.dead_letters import (
    DeadLetter,
    list_dead_letters,
    read_dead_letter,
)
from foundation.messaging.pull import PullWorker
from foundation.nats.streams import (
    create_or_update_consumer,
    ensure_dead_letter_stream,
    ensure_file_stream,
    js_publish_many,
    parse_ack_reply,
    purge_dead,
    server_barrier,
)
from jido import JidoError, Signal
from jido._router import Router

__all__ = [
    "DEAD_LETTER_SUBJECT_PREFIX",
    "REDRIVE_SUBJECT_PREFIX",
    "BusBridge",
    "BusStatistics",
    "ClusterBus",
    "ClusterBusError",
    "ClusterSubscription",
    "DeadLetter",
    "Delivery",
    "SubjectPlan",
    "current_signal",
    "decode_signal",
    "encode_signal",
    "plan_pattern",
    "signal_subject",
]

log = logging.getLogger("foundation.cluster_bus")


Handler = Callable[[Signal], Awaitable[Any] | Any] | asyncio.Queue[Signal]


def _invoker(handler: Handler) -> Callable[[Signal], Awaitable[None]]:
    """A coroutine function calling ``handler`` the cheapest way for its kind."""
    if isinstance(handler, asyncio.Queue):
        queue = handler

        async def put(signal: Signal) -> None:
            await queue.put(signal)

        return put
    if inspect.iscoroutinefunction(handler):
        return handler
    func = handler

    async def call(signal: Signal) -> None:
        result = func(signal)
        if inspect.isawaitable(result):
            await result

    return call


# --------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """Counters of one :class:`ClusterBus` (an immutable snapshot)."""

    published: int
    received: int
    handled: int
    handler_errors: int
    decode_errors: int
    filtered: int
    redelivered: int
    dead_lettered: int
    subscriptions: int


@dataclass(slots=True)
class _Counters:
    """The live counters behind :class:`BusStatistics` (every field but ``subscriptions``)."""

    published: int = 0
    received: int = 0
    handled: int = 0
    handler_errors: int = 0
    decode_errors: int = 0
    filtered: int = 0
    redelivered: int = 0
    dead_lettered: int = 0


# --------------------------------------------------------------------------------- subscriptions


class ClusterSubscription(PullWorker):
    """A live subscription of a :class:`ClusterBus`; ``await sub.unsubscribe()`` ends it."""

    connection_gone = (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError)

    def __init__(
        self,
        bus: ClusterBus,
        plan: SubjectPlan,
        handler: Handler,
        *,
        delivery: Delivery,
        queue: str | None,
        consumer: str | None,
        ephemeral: bool,
        max_deliver: int = 5,
        backoff: tuple[float, ...] = (0.1,),
    ) -> None:
        PullWorker.__init__(self, bus.js, bus.stream, consumer, "sub")
        self.bus = bus
        self.plan = plan
        self.handler = handler
        self._invoke = _invoker(handler)
        self.delivery = delivery
        self.queue = queue
        self.consumer: str | None = consumer
        """Durable consumer name (``at_least_once`` only)."""
        self._ephemeral = ephemeral
        self._max_deliver = max_deliver
        self._backoff = backoff or (0.0,)
        self._filter: Router | None = None
        if not plan.exact:
            self._filter = Router()
            self._filter.add(plan.pattern, True)
        self._core: list[NatsSubscription] = []

    @property
    def pattern(self) -> str:
        """The ``jido`` pattern this subscription was made with."""
        return self.plan.pattern

    def _wanted(self, sig: Signal) -> bool:
        return self._filter is None or bool(self._filter.route(sig.type))

    # -- at most once ---------------------------------------------------------------------------

    async def _on_core(self, msg: Msg) -> None:
        counters = self.bus._counters
        counters.received += 1
        try:
            sig = decode_signal(msg.headers, msg.data)
        except JidoError as exc:
            counters.decode_errors += 1
            log.warning("dropping undecodable message on %s: %s", msg.subject, exc)
            return
        if self._filter is not None and not self._filter.route(sig.type):
            counters.filtered += 1
            return
        token = _current.set(sig)
        try:
            await self._invoke(sig)
            counters.handled += 1
        except Exception:
            counters.handler_errors += 1
            log.exception("handler for %r failed on %s (at most once: dropped)", self.pattern, sig)
        finally:
            _current.reset(token)

    # -- at least once --------------------------------------------------------------------------

    def _poll_timeout(self) -> float:
        return self.bus.fetch_timeout

    async def _on_fetch_error(self, exc: nats.js.errors.APIError) -> bool:
        log.warning("fetch on consumer %s failed: %s; retrying", self.consumer, exc)
        await asyncio.sleep(self.bus.fetch_retry_delay)  # back off a failing server
        return True

    async def _on_batch(self, msgs: Sequence[Msg]) -> bool:
        for i, msg in enumerate(msgs):
            if self._stopping:
                for rest in msgs[i:]:
                    with contextlib.suppress(Exception):
                        await rest.nak()
                return False
            try:
                await self._on_durable(msg)
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return False  # unacked: redelivered to another member after ack_wait
        return True

    async def _on_durable(self, msg: Msg) -> None:
        bus = self.bus
        counters = bus._counters
        counters.received += 1
        attempts, sseq, _ = parse_ack_reply(msg.reply)
        if attempts > 1:
            counters.redelivered += 1
        try:
            sig = decode_signal(msg.headers, msg.data)
        except JidoError as exc:
            counters.decode_errors += 1
            await self._dead(msg, f"undecodable: {exc.message}", attempts, sseq)
            return
        if self._filter is not None and not self._filter.route(sig.type):
            counters.filtered += 1
            await msg.ack()
            return
        max_deliver = self._max_deliver
        if attempts > max_deliver:
            # Earlier attempts never came back (the consuming process died mid-handler).
            await self._dead(msg, "max deliveries exceeded", attempts - 1, sseq)
            return
        token = _current.set(sig)
        try:
            await self._invoke(sig)
        except Exception as exc:
            counters.handler_errors += 1
            reason = f"{type(exc).__name__}: {exc}"
            if attempts >= max_deliver:
                log.warning("handler for %r failed %d times; dead-lettering %s", self.pattern,
                            attempts, sig)  # fmt: skip
                await self._dead(msg, reason, attempts, sseq)
            else:
                delay = self._backoff[min(attempts, len(self._backoff)) - 1]
                log.info("handler for %r failed (attempt %d/%d), retry in %.3fs: %s",
                         self.pattern, attempts, max_deliver, delay, reason)  # fmt: skip
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay)
            return
        finally:
            _current.reset(token)
        counters.handled += 1
        await msg.ack()

    async def _dead(self, msg: Msg, reason: str, attempts: int, sseq: int) -> None:
        try:
            await self._store_dead(msg, reason, attempts, sseq)
        except Exception as exc:
            # Keep the message: it is redelivered and dead-lettered on a later attempt.
            log.warning("could not dead-letter seq %d of %s: %s", sseq, self.consumer, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._backoff[-1])
            return
        self.bus._counters.dead_lettered += 1
        await msg.ack()

    # -- lifecycle ------------------------------------------------------------------------------

    async def unsubscribe(self) -> None:
        """Stop receiving. A non-durable ``at_least_once`` consumer is deleted; a named durable
        keeps its position (and its unacked signals) for the next subscriber."""
        if self._stopping:
            return
        self._stopping = True
        for sub in self._core:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._core.clear()
        await self._halt()
        if self._ephemeral and self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.bus.js.delete_consumer(self.bus.stream, self.consumer)
        self.bus._subs.discard(self)


# --------------------------------------------------------------------------------- the bus


class ClusterBus:
    """Publish/subscribe of :class:`jido.Signal` by pattern across every node of a cluster.

    Wraps an open nats-py connection (and its JetStream context); it does not close it.
    ``wire`` is how this bus encodes what it publishes (``"structured"`` JSON or ``"binary"``
    ``ce-`` headers); it decodes both.
    ``await bus.start()`` (or ``async with bus``) creates the signal and dead-letter streams
    idempotently. ``replicas`` is their replication factor (``foundation._wire.replicas_for``).
    """

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext | None = None,
        *,
        wire: WireMode = "structured",
        replicas: int = 1,
        duplicate_window: float = 120.0,
        dead_letter_max_age: float = 7 * 24 * 3600.0,
        publish_timeout: float = 5.0,
        fetch_timeout: float = 5.0,
    ) -> None:
        if wire not in ("binary", "structured"):
            raise ClusterBusError(
                f"wire must be 'binary' or 'structured', got {wire!r}", details={"wire": wire}
            )
        self.nc = nc
        self.js = js if js is not None else nc.jetstream()
        self.wire: WireMode = wire
        self.replicas = replicas
        self.duplicate_window = duplicate_window
        self.dead_letter_max_age = dead_letter_max_age
        self.publish_timeout = publish_timeout
        self.fetch_timeout = fetch_timeout
        self.fetch_retry_delay = 0.5
        self.stream = SIGNALS_STREAM
        self._counters = _Counters()
        self._subs: set[ClusterSubscription] = set()
        self._started = False

    async def __aenter__(self) -> ClusterBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Create (or update) the signal stream and the dead-letter stream."""
        await ensure_file_stream(
            self.js,
            SIGNALS_STREAM,
            [f"{DURABLE_SIGNAL_SUBJECT_PREFIX}.>", f"{REDRIVE_SUBJECT_PREFIX}.>"],
            api.RetentionPolicy.INTEREST,
            replicas=self.replicas,
            duplicate_window=self.duplicate_window,
        )
        await ensure_dead_letter_stream(
            self.js, replicas=self.replicas, max_age=self.dead_letter_max_age
        )
        self._started = True

    async def close(self) -> None:
        """Unsubscribe every subscription of this bus (the connection stays open)."""
        for sub in list(self._subs):
            await sub.unsubscribe()

    # -- publish --------------------------------------------------------------------------------

    async def publish(
        self,
        *signals: Signal,
        delivery: DeliveryLike = Delivery.AT_MOST_ONCE,
        ack_timeout: float | None = None,
    ) -> list[int]:
        """Publish ``signals`` to every matching subscriber on every node.

        ``at_most_once``: core NATS, returns ``[]`` once the signals are handed to the client.
        ``at_least_once``: stored in JetStream with ``Nats-Msg-Id`` = signal id (a re-published
        id within the duplicate window is stored once); returns their stream sequences once the
        server acknowledged all of them (raises :class:`ClusterBusError` if it did not).
        """
        wire = self.wire
        if delivery == Delivery.AT_MOST_ONCE:
            publish = self.nc.publish
            for sig in signals:
                headers, body = encode_signal(sig, wire)
                await publish(f"{SIGNAL_SUBJECT_PREFIX}.{sig.type}", body, headers=headers or None)
            self._counters.published += len(signals)
            return []
        if delivery != Delivery.AT_LEAST_ONCE:
            raise ClusterBusError(
                f"unknown delivery mode {delivery!r}; use 'at_most_once' or 'at_least_once'",
                details={"delivery": str(delivery)},
            )
        if not self._started:
            await self.start()
        items = []
        for sig in signals:
            headers, body = encode_signal(sig, wire)
            headers[HDR_MSG_ID] = sig.id
            items.append((f"{DURABLE_SIGNAL_SUBJECT_PREFIX}.{sig.type}", headers, body))
        seqs = await js_publish_many(self.js, items, ack_timeout or self.publish_timeout)
        self._counters.published += len(signals)
        return seqs

    # -- subscribe ------------------------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        queue: str | None = None,
        delivery: DeliveryLike = Delivery.AT_MOST_ONCE,
        durable: str | None = None,
        max_deliver: int = 5,
        ack_wait: float = 30.0,
        backoff: Sequence[float] = (0.05, 0.2, 1.0, 5.0),
        batch: int = 256,
    ) -> ClusterSubscription:
        """Subscribe ``handler`` to signals whose type matches ``pattern`` on every node.

        ``handler``: a coroutine function, a plain callable, or an ``asyncio.Queue``; it runs
        once per signal, one signal at a time per subscription. ``queue``: subscribers sharing a
        queue name form a group and each signal goes to one of them.

        ``at_least_once``: a JetStream consumer (named ``durable``, else ``queue``, else a fresh
        name removed on unsubscribe) receives signals published at least once; each is acked
        after the handler returns, retried after ``backoff[attempt-1]`` seconds when it raises
        (or after ``ack_wait`` when its process died), and dead-lettered after ``max_deliver``
        attempts. Signals published at most once reach it best effort, like a core subscriber.
        A consumer name identifies one consumer: subscribers sharing it must use the same
        pattern (the last one to subscribe sets its filter).
        """
        plan = plan_pattern(pattern)
        if delivery not in (Delivery.AT_MOST_ONCE, Delivery.AT_LEAST_ONCE):
            raise ClusterBusError(
                f"unknown delivery mode {delivery!r}; use 'at_most_once' or 'at_least_once'",
                details={"delivery": str(delivery)},
            )
        if not (isinstance(handler, asyncio.Queue) or callable(handler)):
            raise ClusterBusError(
                "handler must be a coroutine function, a callable or an asyncio.Queue",
                details={"handler": repr(handler)},
            )
        if max_deliver < 1:
            raise ClusterBusError("max_deliver must be >= 1", details={"max_deliver": max_deliver})
        queue_name = consumer_token(queue) if queue else None
        mode = Delivery(delivery)
        consumer: str | None = None
        ephemeral = False
        if mode == Delivery.AT_LEAST_ONCE:
            if durable is not None:
                consumer = consumer_token(durable)
            elif queue_name is not None:
                consumer = queue_name
            else:
                consumer = f"sub_{secrets.token_hex(8)}"
                ephemeral = True
        sub = ClusterSubscription(
            self,
            plan,
            handler,
            delivery=mode,
            queue=queue_name,
            consumer=consumer,
            ephemeral=ephemeral,
            max_deliver=max_deliver,
            backoff=tuple(float(b) for b in backoff),
        )
        prefixes = [SIGNAL_SUBJECT_PREFIX]
        if mode == Delivery.AT_MOST_ONCE:
            prefixes.append(DURABLE_SIGNAL_SUBJECT_PREFIX)
        try:
            for prefix in prefixes:
                for subject in plan.subjects(prefix):
                    sub._core.append(
                        await self.nc.subscribe(subject, queue=queue_name or "", cb=sub._on_core)
                    )
            # Once subscribe returns the server knows the interest: a publish from any node
            # made after this point reaches it (on one server; a cluster spreads interest to
            # the other servers a moment later).
            await server_barrier(self.nc)
            if consumer is not None:
                if not self._started:
                    await self.start()
                filters = plan.subjects(DURABLE_SIGNAL_SUBJECT_PREFIX)
                filters.append(f"{REDRIVE_SUBJECT_PREFIX}.{consumer}")
                config = api.ConsumerConfig(
                    name=consumer,
                    durable_name=consumer,
                    deliver_policy=api.DeliverPolicy.NEW,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    max_deliver=-1,
                    filter_subjects=filters,
                    max_ack_pending=max(batch * 4, 1024),
                    inactive_threshold=300.0 if ephemeral else None,
                )
                await create_or_update_consumer(self.js, self.stream, config)
                psub = await self.js.pull_subscribe_bind(consumer, self.stream)
                sub._spawn(sub._pull(psub, batch), f"cluster-bus:{consumer}")
        except Exception:
            await sub.unsubscribe()
            raise
        self._subs.add(sub)
        return sub

    # -- bridge ---------------------------------------------------------------------------------

    async def bridge(
        self,
        local: Any,
        pattern: str,
        *,
        outbound: bool = True,
        inbound: bool = True,
        delivery: DeliveryLike = Delivery.AT_MOST_ONCE,
        queue: str | None = None,
    ) -> BusBridge:
        """Bridge a local :class:`jido.Bus` to the cluster for signals matching ``pattern``.

        ``outbound`` publishes the local bus's matching signals to the cluster (in ``delivery``
        mode); ``inbound`` publishes the cluster's matching signals on the local bus (through a
        cluster subscription; ``queue`` makes one bridge of a group take each signal). Signals
        never loop: see :class:`BusBridge`.
        """
        plan_pattern(pattern)
        mode = Delivery(delivery)
        bridge = BusBridge(self, local, pattern, mode)
        try:
            if inbound:
                bridge._cluster_sub = await self.subscribe(pattern, bridge._inbound, queue=queue)
            if outbound:
                bridge._local_sub = local.subscribe(pattern, bridge._outbound)
        except BaseException:
            await bridge.close()
            raise
        return bridge

    # -- dead letters ---------------------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        consumer: str | None = None,
        kind: Literal["sub", "inbox", "*"] = "sub",
        limit: int = 1000,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first: of subscriptions (``kind="sub"``), agent inboxes
        (``"inbox"``) or both (``"*"``); of one consumer (durable or inbox consumer name) if
        ``consumer`` is given."""
        tail = consumer_token(consumer) if consumer else "*"
        return await list_dead_letters(
            self.js, subject_filter=f"{DEAD_LETTER_SUBJECT_PREFIX}.{kind}.{tail}", limit=limit
        )

    async def redrive(self, letters: Iterable[DeadLetter | int]) -> int:
        """Send dead letters back to the consumer that gave up on them; returns how many.

        Each is re-published (with a fresh de-duplication id) on that consumer's redrive subject,
        so only that consumer receives it again, and then removed from the dead-letter stream.
        """
        count = 0
        for item in letters:
            letter = item if isinstance(item, DeadLetter) else await self._get_dead(item)
            if letter.subject.startswith(f"{SUBJECT_ROOT}.inbox."):
                subject = letter.subject
            else:
                subject = f"{REDRIVE_SUBJECT_PREFIX}.{letter.consumer}"
                try:
                    await self.js.consumer_info(self.stream, letter.consumer)
                except nats.js.errors.NotFoundError as exc:
                    # With interest retention nothing would keep the redriven signal.
                    raise ClusterBusError(
                        f"consumer {letter.consumer!r} no longer exists, so dead letter "
                        f"{letter.seq} cannot be redriven to it; subscribe with "
                        f"durable={letter.consumer!r} first (the letter is kept)",
                        details={"seq": letter.seq, "consumer": letter.consumer},
                    ) from exc
            headers = dict(letter.headers)
            headers[HDR_MSG_ID] = f"redrive:{letter.seq}"
            await self.js.publish(subject, letter.body, headers=headers)
            await self.js.delete_msg(DEAD_LETTER_STREAM, letter.seq)
            count += 1
        return count

    async def purge_dead_letters(self, *, consumer: str | None = None) -> int:
        """Delete dead letters (of one ``consumer`` if given); returns how many were removed."""
        subject = (
            f"{DEAD_LETTER_SUBJECT_PREFIX}.sub.{consumer_token(consumer) if consumer else '>'}"
        )
        return await purge_dead(self.js, subject)

    async def _get_dead(self, seq: int) -> DeadLetter:
        try:
            raw = await self.js.get_msg(DEAD_LETTER_STREAM, seq)
        except nats.js.errors.NotFoundError as exc:
            raise ClusterBusError(
                f"no dead letter with sequence {seq}; list them with dead_letters()",
                details={"seq": seq},
            ) from exc
        return read_dead_letter(seq, raw.subject or "", raw.headers or {}, raw.data or b"")

    # -- misc -----------------------------------------------------------------------------------

    def statistics(self) -> BusStatistics:
        """An immutable snapshot of this bus's counters."""
        return BusStatistics(**dataclasses.asdict(self._counters), subscriptions=len(self._subs))
