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
import contextvars
import hashlib
import inspect
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, api

from foundation._errors import ClusterError
from foundation._wire import (
    DEAD_LETTER_STREAM,
    DURABLE_SIGNAL_SUBJECT_PREFIX,
    HDR_MSG_ID,
    HDR_TRACEPARENT,
    SIGNAL_SUBJECT_PREFIX,
    SIGNALS_STREAM,
    SUBJECT_ROOT,
)
from foundation.nats.kv import while_placing
from jido import JidoError, Signal, SignalError
from jido._router import Router, validate_pattern

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

# --- wire constants owned by this module (kept beside _wire's stream and subject names) ----

#: Dead letters: ``<root>.dead.<kind>.<consumer>`` (captured by :data:`DEAD_LETTER_STREAM`).
DEAD_LETTER_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.dead"
#: Redriven signals for one consumer: ``<root>.redrive.<consumer>`` (in :data:`SIGNALS_STREAM`).
REDRIVE_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.redrive"
#: Dead-letter headers: original subject, consumer, reason, attempts, original stream sequence.
HDR_DEAD_SUBJECT: Final = "Fdn-Dead-Subject"
HDR_DEAD_CONSUMER: Final = "Fdn-Dead-Consumer"
HDR_DEAD_REASON: Final = "Fdn-Dead-Reason"
HDR_DEAD_ATTEMPTS: Final = "Fdn-Dead-Attempts"
HDR_DEAD_SEQ: Final = "Fdn-Dead-Stream-Seq"
HDR_DEAD_STREAM: Final = "Fdn-Dead-Stream"

_DLQ_HEADERS: Final = frozenset(
    {HDR_DEAD_SUBJECT, HDR_DEAD_CONSUMER, HDR_DEAD_REASON, HDR_DEAD_ATTEMPTS, HDR_DEAD_SEQ,
     HDR_DEAD_STREAM, HDR_MSG_ID}
)  # fmt: skip


class Delivery(StrEnum):
    """Delivery modes of the cluster bus (members compare equal to their string values)."""

    AT_MOST_ONCE = "at_most_once"
    """Core NATS: fast, nothing stored; lost if no subscriber is connected or a handler fails."""
    AT_LEAST_ONCE = "at_least_once"
    """JetStream: stored, de-duplicated by signal id, acked after the handler, redelivered."""


DeliveryLike = Delivery | Literal["at_most_once", "at_least_once"]
WireMode = Literal["binary", "structured"]
Handler = Callable[[Signal], Awaitable[Any] | Any] | asyncio.Queue[Signal]


class ClusterBusError(ClusterError):
    """The cluster bus could not publish, subscribe or manage dead letters; see ``details``."""

    type = "cluster_bus_error"


# --------------------------------------------------------------------------------- subjects


@dataclass(frozen=True, slots=True)
class SubjectPlan:
    """How a ``jido`` pattern is subscribed on NATS.

    ``tails`` are subject suffixes (to put after a prefix such as ``<root>.signal``); ``exact``
    says whether NATS matching alone gives the ``jido`` semantics, or a local
    :class:`jido.Router` filter must drop the extra subjects the wider subscription receives.
    """

    pattern: str
    tails: tuple[str, ...]
    exact: bool

    def subjects(self, prefix: str) -> list[str]:
        """Full subjects under ``prefix`` (``prefix`` alone stands for an empty tail)."""
        return [f"{prefix}.{tail}" if tail else prefix for tail in self.tails]


def plan_pattern(pattern: str) -> SubjectPlan:
    """Map a ``jido`` route pattern to NATS subject tails (see :class:`SubjectPlan`).

    ``a.*.c`` → ``a.*.c`` (exact); ``a.**`` → ``a`` and ``a.>`` (exact: ``**`` may match zero
    segments, NATS ``>`` needs one); ``**`` → ``>`` (exact: a type has at least one segment);
    ``a.**.c`` or ``**.c`` → ``a.>`` / ``>`` filtered locally. Raises :class:`jido.RoutingError`
    for an invalid pattern.
    """
    segments = validate_pattern(pattern)
    try:
        first = segments.index("**")
    except ValueError:
        return SubjectPlan(pattern, (".".join(segments),), True)
    head = ".".join(segments[:first])
    wide = f"{head}.>" if head else ">"
    if first == len(segments) - 1:
        # Trailing ** only: the head itself (zero segments) plus head.> (one or more).
        return SubjectPlan(pattern, (head, wide) if head else (wide,), True)
    return SubjectPlan(pattern, (wide,), False)


def signal_subject(signal_type: str, delivery: DeliveryLike = Delivery.AT_MOST_ONCE) -> str:
    """The subject a signal of ``signal_type`` is published on in ``delivery`` mode."""
    prefix = (
        SIGNAL_SUBJECT_PREFIX
        if delivery == Delivery.AT_MOST_ONCE
        else DURABLE_SIGNAL_SUBJECT_PREFIX
    )
    return f"{prefix}.{signal_type}"


def _token(value: str) -> str:
    """A consumer name / subject token made from any string (readable part + hash)."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", value)[:48]
    if readable == value:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{readable}_{digest}"


# --------------------------------------------------------------------------------- codec

_current: contextvars.ContextVar[Signal | None] = contextvars.ContextVar(
    "foundation_current_signal", default=None
)


def current_signal() -> Signal | None:
    """The signal whose handler is running in this task (``None`` outside a bus handler)."""
    return _current.get()


def _child_traceparent(parent: Signal) -> str:
    """A traceparent in ``parent``'s trace with a new span id."""
    flags = parent.traceparent[-2:] if parent.traceparent is not None else "01"
    return f"00-{parent.trace_id}-{secrets.randbits(64) | 1:016x}-{flags}"


def encode_signal(signal: Signal, wire: WireMode = "structured") -> tuple[dict[str, str], bytes]:
    """Encode ``signal`` as NATS ``(headers, body)`` in ``wire`` mode.

    Binary mode: ``ce-*`` headers and the data as the body. Structured mode: the JSON event as
    the body and no headers (receivers tell the modes apart by the presence of ``ce-`` headers;
    headers cost more than the whole JSON codec in nats-py).

    Inside a bus handler, a signal with no ``traceparent`` of its own gets one continuing the
    handled signal's trace (the signal object itself is not changed).
    """
    inherit: str | None = None
    if "traceparent" not in signal.extensions:
        parent = _current.get()
        if parent is not None:
            inherit = _child_traceparent(parent)
    if wire == "binary":
        headers, body = signal.to_binary()
        if inherit is not None:
            headers["ce-traceparent"] = inherit
        return headers, body
    if inherit is None:
        return {}, signal.to_bytes()
    event = signal.to_dict()
    event["traceparent"] = inherit
    return {}, Signal.from_dict(event).to_bytes()


def _is_binary(headers: Mapping[str, str]) -> bool:
    if "ce-id" in headers or "ce-type" in headers:
        return True
    return any(name[:3].lower() == "ce-" for name in headers)


def decode_signal(headers: Mapping[str, str] | None, body: bytes) -> Signal:
    """Decode a NATS message into a :class:`jido.Signal`, detecting the CloudEvents mode.

    Binary mode when any ``ce-`` header is present, else structured JSON. A plain ``traceparent``
    header (as set by OpenTelemetry NATS instrumentation) is adopted when the event has none.
    Raises :class:`jido.SignalError` for a malformed event.
    """
    if headers and _is_binary(headers):
        sig = Signal.from_binary(headers, body)
    else:
        sig = Signal.from_json(body)
    if headers and "traceparent" not in sig.extensions:
        plain = headers.get(HDR_TRACEPARENT)
        if plain is not None:
            event = sig.to_dict()
            event["traceparent"] = plain
            with contextlib.suppress(SignalError):
                sig = Signal.from_dict(event)
    return sig


def _parse_ack_reply(reply: str) -> tuple[int, int, int]:
    """``(num_delivered, stream_seq, consumer_seq)`` from a JetStream ack reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`` (v1) or
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>...`` (v2).
    """
    tokens = reply.split(".")
    base = 4 if len(tokens) == 9 else 6
    return int(tokens[base]), int(tokens[base + 1]), int(tokens[base + 2])


async def server_barrier(nc: NatsClient) -> None:
    """Return once the server has processed everything this client sent before the call.

    ``nc.flush()`` alone is not enough in nats-py: it writes its PING straight to the socket,
    ahead of commands still queued for the flusher task (a fresh SUB, say), so the PONG can
    come back before the server saw them. By the time a first PONG arrives the flusher has
    written the queue, so a second PING is answered only after those commands were processed.
    """
    await nc.flush()
    await nc.flush()


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
class DeadLetter:
    """A signal that exhausted its deliveries, as stored in the dead-letter stream."""

    seq: int
    """Sequence in the dead-letter stream (what :meth:`ClusterBus.redrive` takes)."""
    consumer: str
    """Durable name of the consumer (or inbox) that gave up."""
    subject: str
    """Subject the signal was originally delivered on."""
    reason: str
    """Why it was dead-lettered (the handler's last error, or ``max deliveries exceeded``)."""
    attempts: int
    """Deliveries made before giving up."""
    signal: Signal | None
    """The decoded signal (``None`` when the message could not be decoded; see ``body``)."""
    headers: dict[str, str] = field(repr=False)
    """Headers of the original message (without the dead-letter bookkeeping headers)."""
    body: bytes = field(repr=False)
    """Body of the original message."""


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


class _Counters:
    __slots__ = (
        "dead_lettered",
        "decode_errors",
        "filtered",
        "handled",
        "handler_errors",
        "published",
        "received",
        "redelivered",
    )

    def __init__(self) -> None:
        self.published = 0
        self.received = 0
        self.handled = 0
        self.handler_errors = 0
        self.decode_errors = 0
        self.filtered = 0
        self.redelivered = 0
        self.dead_lettered = 0


# --------------------------------------------------------------------------------- dead letters


async def dead_letter(
    js: JetStreamContext,
    msg: Msg,
    *,
    kind: str,
    consumer: str,
    reason: str,
    attempts: int,
    stream_seq: int,
    stream: str,
) -> None:
    """Copy ``msg`` to the dead-letter stream with bookkeeping headers (then the caller acks)."""
    headers = {k: v for k, v in (msg.headers or {}).items() if k not in _DLQ_HEADERS}
    headers[HDR_DEAD_SUBJECT] = msg.subject
    headers[HDR_DEAD_CONSUMER] = consumer
    headers[HDR_DEAD_REASON] = reason.replace("\r", " ").replace("\n", " ")[:500] or "error"
    headers[HDR_DEAD_ATTEMPTS] = str(attempts)
    headers[HDR_DEAD_SEQ] = str(stream_seq)
    headers[HDR_DEAD_STREAM] = stream
    # The dead-letter copy is de-duplicated by (stream, seq): a redelivered poison message is
    # stored once even if the ack after this publish is lost.
    headers[HDR_MSG_ID] = f"dead:{stream}:{stream_seq}"
    await js.publish(f"{DEAD_LETTER_SUBJECT_PREFIX}.{kind}.{consumer}", msg.data, headers=headers)


def _read_dead_letter(
    seq: int, subject: str, headers: Mapping[str, str], body: bytes
) -> DeadLetter:
    original = {k: v for k, v in headers.items() if k not in _DLQ_HEADERS}
    try:
        sig: Signal | None = decode_signal(original, body)
    except (SignalError, JidoError):
        sig = None
    return DeadLetter(
        seq=seq,
        consumer=headers.get(HDR_DEAD_CONSUMER, subject.rsplit(".", 1)[-1]),
        subject=headers.get(HDR_DEAD_SUBJECT, ""),
        reason=headers.get(HDR_DEAD_REASON, ""),
        attempts=int(headers.get(HDR_DEAD_ATTEMPTS, "0") or 0),
        signal=sig,
        headers=dict(original),
        body=body,
    )


async def list_dead_letters(
    js: JetStreamContext, *, subject_filter: str, limit: int
) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters whose subject matches ``subject_filter`` (oldest first)."""
    out: list[DeadLetter] = []
    sub = await js.subscribe(
        subject_filter,
        stream=DEAD_LETTER_STREAM,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=subject_filter)
        remaining = sum((info.state.subjects or {}).values())
        while remaining > 0 and len(out) < limit:
            try:
                msg = await sub.next_msg(timeout=5.0)
            except nats.errors.TimeoutError:
                break
            remaining -= 1
            _, sseq, _ = _parse_ack_reply(msg.reply)
            out.append(_read_dead_letter(sseq, msg.subject, msg.headers or {}, msg.data))
    finally:
        await sub.unsubscribe()
    return out


# --------------------------------------------------------------------------------- subscriptions


class ClusterSubscription:
    """A live subscription of a :class:`ClusterBus`; ``await sub.unsubscribe()`` ends it."""

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
        self.bus = bus
        self.plan = plan
        self.handler = handler
        self._invoke = _invoker(handler)
        self.delivery = delivery
        self.queue = queue
        self.consumer = consumer
        """Durable consumer name (``at_least_once`` only)."""
        self._ephemeral = ephemeral
        self._max_deliver = max_deliver
        self._backoff = backoff or (0.0,)
        self._filter: Router | None = None
        if not plan.exact:
            self._filter = Router()
            self._filter.add(plan.pattern, True)
        self._core: list[NatsSubscription] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._fetching = False
        self._closed = asyncio.Event()

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

    async def _pull_loop(self, psub: JetStreamContext.PullSubscription, batch: int) -> None:
        try:
            while not self._closing:
                self._fetching = True
                try:
                    msgs = await psub.fetch(batch, timeout=self.bus.fetch_timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                    return
                except nats.js.errors.APIError as exc:
                    log.warning("fetch on consumer %s failed: %s; retrying", self.consumer, exc)
                    await asyncio.sleep(self.bus.fetch_retry_delay)  # back off a failing server
                    continue
                finally:
                    self._fetching = False
                for i, msg in enumerate(msgs):
                    if self._closing:
                        for rest in msgs[i:]:
                            with contextlib.suppress(Exception):
                                await rest.nak()
                        return
                    try:
                        await self._on_durable(msg)
                    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                        return  # unacked: redelivered to another member after ack_wait
        finally:
            self._closed.set()

    async def _on_durable(self, msg: Msg) -> None:
        bus = self.bus
        counters = bus._counters
        counters.received += 1
        attempts, sseq, _ = _parse_ack_reply(msg.reply)
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
        bus = self.bus
        assert self.consumer is not None
        try:
            await dead_letter(
                bus.js,
                msg,
                kind="sub",
                consumer=self.consumer,
                reason=reason,
                attempts=attempts,
                stream_seq=sseq,
                stream=bus.stream,
            )
        except Exception as exc:
            # Keep the message: it is redelivered and dead-lettered on a later attempt.
            log.warning("could not dead-letter seq %d of %s: %s", sseq, self.consumer, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._backoff[-1])
            return
        bus._counters.dead_lettered += 1
        await msg.ack()

    # -- lifecycle ------------------------------------------------------------------------------

    async def unsubscribe(self) -> None:
        """Stop receiving. A non-durable ``at_least_once`` consumer is deleted; a named durable
        keeps its position (and its unacked signals) for the next subscriber."""
        if self._closing:
            return
        self._closing = True
        for sub in self._core:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._core.clear()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            if self._fetching:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ephemeral and self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.bus.js.delete_consumer(self.bus.stream, self.consumer)
        self.bus._subs.discard(self)


# --------------------------------------------------------------------------------- bridge


class _RecentIds:
    """A bounded set of recent signal ids (oldest forgotten first)."""

    __slots__ = ("_ids", "_max")

    def __init__(self, max_size: int) -> None:
        self._ids: dict[str, None] = {}
        self._max = max_size

    def add(self, sig_id: str) -> None:
        ids = self._ids
        ids[sig_id] = None
        if len(ids) > self._max:
            del ids[next(iter(ids))]

    def pop(self, sig_id: str) -> bool:
        return self._ids.pop(sig_id, 0) is None


class BusBridge:
    """Connects a local :class:`jido.Bus` to the cluster for one pattern, without echo loops.

    Outbound: local signals matching the pattern are published to the cluster. Inbound: cluster
    signals matching it are published on the local bus. A signal that came in from the cluster
    is not sent back out, and this node's own outbound signals coming back from NATS are not
    delivered in again (both are recognised by signal id). Made by :meth:`ClusterBus.bridge`;
    ``await bridge.close()`` ends it.
    """

    def __init__(self, cluster: ClusterBus, local: Any, pattern: str, delivery: Delivery) -> None:
        self.cluster = cluster
        self.local = local
        self.pattern = pattern
        self.delivery = delivery
        self._sent = _RecentIds(65536)
        self._received = _RecentIds(65536)
        self._local_sub: Any = None
        self._cluster_sub: ClusterSubscription | None = None

    async def _outbound(self, sig: Signal) -> None:
        if self._received.pop(sig.id):
            return  # came from the cluster: do not send it back
        self._sent.add(sig.id)
        await self.cluster.publish(sig, delivery=self.delivery)

    async def _inbound(self, sig: Signal) -> None:
        if self._sent.pop(sig.id):
            return  # our own outbound signal echoed back by NATS
        if self._local_sub is not None:
            self._received.add(sig.id)
        await self.local.publish(sig)

    async def close(self) -> None:
        """Stop forwarding in both directions."""
        if self._local_sub is not None:
            await self._local_sub.unsubscribe()
            self._local_sub = None
        if self._cluster_sub is not None:
            await self._cluster_sub.unsubscribe()
            self._cluster_sub = None


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
        await ensure_stream(
            self.js,
            api.StreamConfig(
                name=SIGNALS_STREAM,
                subjects=[f"{DURABLE_SIGNAL_SUBJECT_PREFIX}.>", f"{REDRIVE_SUBJECT_PREFIX}.>"],
                retention=api.RetentionPolicy.INTEREST,
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                duplicate_window=self.duplicate_window,
            ),
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
        queue_name = _token(queue) if queue else None
        mode = Delivery(delivery)
        consumer: str | None = None
        ephemeral = False
        if mode == Delivery.AT_LEAST_ONCE:
            if durable is not None:
                consumer = _token(durable)
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
                await _create_or_update_consumer(self.js, self.stream, config)
                psub = await self.js.pull_subscribe_bind(consumer, self.stream)
                sub._task = asyncio.create_task(
                    sub._pull_loop(psub, batch), name=f"cluster-bus:{consumer}"
                )
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
        tail = _token(consumer) if consumer else "*"
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
        subject = f"{DEAD_LETTER_SUBJECT_PREFIX}.sub.{_token(consumer) if consumer else '>'}"
        return await purge_dead(self.js, subject)

    async def _get_dead(self, seq: int) -> DeadLetter:
        try:
            raw = await self.js.get_msg(DEAD_LETTER_STREAM, seq)
        except nats.js.errors.NotFoundError as exc:
            raise ClusterBusError(
                f"no dead letter with sequence {seq}; list them with dead_letters()",
                details={"seq": seq},
            ) from exc
        return _read_dead_letter(seq, raw.subject or "", raw.headers or {}, raw.data or b"")

    # -- misc -----------------------------------------------------------------------------------

    def statistics(self) -> BusStatistics:
        """An immutable snapshot of this bus's counters."""
        c = self._counters
        return BusStatistics(
            published=c.published,
            received=c.received,
            handled=c.handled,
            handler_errors=c.handler_errors,
            decode_errors=c.decode_errors,
            filtered=c.filtered,
            redelivered=c.redelivered,
            dead_lettered=c.dead_lettered,
            subscriptions=len(self._subs),
        )


# --------------------------------------------------------------------------------- JetStream


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """Create ``config``'s stream, or update it when it exists with another configuration."""
    try:
        await while_placing(lambda: js.add_stream(config))
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise ClusterBusError(
            f"could not create stream {config.name}: {exc.description}",
            details={"stream": config.name, "code": exc.err_code},
            cause=exc,
        ) from exc


async def ensure_dead_letter_stream(js: JetStreamContext, *, replicas: int, max_age: float) -> None:
    """Create the dead-letter stream (limits retention; entries live ``max_age`` seconds)."""
    await ensure_stream(
        js,
        api.StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=[f"{DEAD_LETTER_SUBJECT_PREFIX}.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age,
            duplicate_window=120.0,
        ),
    )


async def purge_dead(js: JetStreamContext, subject: str) -> int:
    """Purge dead letters on ``subject`` (a filter); returns how many were removed."""
    info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=subject)
    count = sum((info.state.subjects or {}).values())
    await js.purge_stream(DEAD_LETTER_STREAM, subject=subject)
    return count


async def _create_or_update_consumer(
    js: JetStreamContext, stream: str, config: api.ConsumerConfig
) -> None:
    try:
        await js.add_consumer(stream, config=config)
    except nats.js.errors.APIError as exc:
        raise ClusterBusError(
            f"could not create consumer {config.durable_name} on {stream}: {exc.description}",
            details={"stream": stream, "consumer": config.durable_name, "code": exc.err_code},
            cause=exc,
        ) from exc


async def js_publish_many(
    js: JetStreamContext,
    items: Sequence[tuple[str, dict[str, str], bytes]],
    ack_timeout: float,
) -> list[int]:
    """Publish ``(subject, headers, body)`` items to JetStream, pipelined; their sequences.

    One item is a plain request; several are sent without waiting and their acks gathered.
    Raises :class:`ClusterBusError` (retryable) when any publish was not acknowledged.
    """
    try:
        if len(items) == 1:
            subject, headers, body = items[0]
            ack = await js.publish(subject, body, timeout=ack_timeout, headers=headers)
            return [ack.seq]
        # No wait_stall: with one, every publish_async yields to the loop (asyncio.wait_for)
        # and each message leaves in its own socket write. The overall bound is below.
        futures = [
            await js.publish_async(subject, body, headers=headers)
            for subject, headers, body in items
        ]
        acks = await asyncio.wait_for(asyncio.gather(*futures), ack_timeout)
        return [ack.seq for ack in acks]
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise ClusterBusError(
            "JetStream did not acknowledge the publish in time; it may or may not be stored: "
            "publish again with the same signal id (it is de-duplicated)",
            details={"count": len(items)},
            retryable=True,
            cause=exc,
        ) from exc
    except nats.js.errors.NoStreamResponseError as exc:
        raise ClusterBusError(
            "no JetStream stream answered: start the bus (await bus.start()) or the node first",
            details={"subject": items[0][0] if items else ""},
            retryable=True,
            cause=exc,
        ) from exc
    except nats.js.errors.APIError as exc:
        raise ClusterBusError(
            f"JetStream refused the publish: {exc.description}",
            details={"code": exc.err_code},
            retryable=True,
            cause=exc,
        ) from exc
