"""Bus vocabulary: errors, overflow policies, statistics snapshots, middleware, log entries."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from jido._errors import JidoError, MailboxFullError

if TYPE_CHECKING:
    from jido._bus import Bus, Subscription
    from jido._bus_durable import DurableState, PersistentSubscription
    from jido._signal import Signal

__all__ = [
    "BusClosedError",
    "BusError",
    "BusStats",
    "DeadLetter",
    "Decision",
    "LogEntry",
    "LoggingMiddleware",
    "Middleware",
    "Overflow",
    "PublishHaltedError",
    "SubscriberOverflowError",
    "SubscriptionStats",
]


class BusError(JidoError):
    """A bus operation was refused (bad subscription options, unknown durable name, ...)."""

    type = "bus_error"


class BusClosedError(BusError):
    """The bus is closed; open a new one (``async with Bus() as bus``)."""

    type = "bus_closed"


class PublishHaltedError(BusError):
    """A publish middleware halted the publish; nothing was published."""

    type = "publish_halted"


class SubscriberOverflowError(MailboxFullError):
    """A subscriber with ``overflow="error"`` has a full queue; nothing was published."""

    type = "subscriber_overflow"


class Overflow(StrEnum):
    """What happens when a subscriber's bounded queue is full.

    * ``drop_oldest`` (default): the oldest queued signal is dropped to make room;
    * ``drop_newest``: the new signal is not queued for that subscriber;
    * ``block``: ``publish`` waits until every blocking subscriber has room (back-pressure on
      the publisher, the only policy that lets a slow subscriber slow others down);
    * ``error``: ``publish`` raises :class:`SubscriberOverflowError` and publishes nothing.

    Drops and rejections are counted in :meth:`Subscription.statistics`.
    """

    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    BLOCK = "block"
    ERROR = "error"


class Decision(StrEnum):
    """What a middleware hook decides for a signal.

    Before publish: ``continue`` goes on; ``skip`` leaves this signal out (the others of the
    same ``publish`` still go); ``halt`` stops the whole ``publish`` with
    :class:`PublishHaltedError` and nothing is published.
    Before dispatch: ``continue`` delivers; ``skip`` does not deliver to this subscriber (a
    persistent subscription counts it as done); ``halt`` counts it as a failed delivery (a
    persistent subscription retries it and, after ``max_attempts``, dead-letters it).
    """

    CONTINUE = "continue"
    SKIP = "skip"
    HALT = "halt"


class Middleware:
    """Hooks around publish and dispatch. Override the ones you need; the others cost nothing.

    Hooks run in the order middleware were given to the bus.
    """

    async def before_publish(self, signal: Signal, bus: Bus) -> Decision:
        """Called for every signal of a ``publish`` before any of them is published."""
        return Decision.CONTINUE

    async def before_dispatch(self, signal: Signal, subscription: Subscription) -> Decision:
        """Called before a signal is handed to a subscriber's handler."""
        return Decision.CONTINUE

    async def after_dispatch(
        self, signal: Signal, subscription: Subscription, error: BaseException | None
    ) -> None:
        """Called after the handler returned (``error`` is what it raised, if anything)."""


class LoggingMiddleware(Middleware):
    """Logs every publish and dispatch (and handler failures) to a :mod:`logging` logger."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.DEBUG) -> None:
        """Log to ``logger`` (default ``jido.bus``) at ``level``; failures log at WARNING."""
        self.logger = logger or logging.getLogger("jido.bus")
        self.level = level

    async def before_publish(self, signal: Signal, bus: Bus) -> Decision:
        """Log the publish."""
        self.logger.log(
            self.level, "publish %s id=%s source=%s", signal.type, signal.id, signal.source
        )
        return Decision.CONTINUE

    async def before_dispatch(self, signal: Signal, subscription: Subscription) -> Decision:
        """Log the dispatch."""
        self.logger.log(
            self.level, "dispatch %s id=%s to %s", signal.type, signal.id, subscription.name
        )
        return Decision.CONTINUE

    async def after_dispatch(
        self, signal: Signal, subscription: Subscription, error: BaseException | None
    ) -> None:
        """Log a handler failure."""
        if error is not None:
            self.logger.warning(
                "handler of %s failed on %s id=%s: %r",
                subscription.name,
                signal.type,
                signal.id,
                error,
            )


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    """Counters of one subscription (an immutable snapshot)."""

    delivered: int
    """Signals handed to the handler that returned without error."""
    failed: int
    """Handler calls that raised (or were halted by middleware)."""
    dropped: int
    """Signals dropped by the overflow policy."""
    rejected: int
    """Publishes refused because this subscriber was full (``overflow="error"``)."""
    skipped: int
    """Signals skipped by dispatch middleware."""
    queued: int
    """Signals waiting in the queue now."""
    redelivered: int = 0
    """Persistent: deliveries after the first attempt."""
    dead_lettered: int = 0
    """Persistent: signals moved to the dead-letter queue."""
    lost: int = 0
    """Persistent: signals that left the bounded log before this subscriber read them."""
    in_flight: int = 0
    """Persistent: delivered, not yet acknowledged."""
    checkpoint: int = 0
    """Persistent: log position up to which every matching signal is done."""


@dataclass(frozen=True, slots=True)
class BusStats:
    """Counters of a bus (an immutable snapshot)."""

    published: int
    """Signals published (after middleware)."""
    skipped: int
    """Signals left out by publish middleware."""
    subscriptions: int
    """Active subscriptions."""
    log_first: int
    """Oldest position still in the log (``0`` when the log is empty)."""
    log_last: int
    """Newest position in the log (``0`` when the log is empty)."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A signal in the bus log, with its position and the time the bus accepted it."""

    position: int
    """Position in the log, from 1, increasing by one per published signal."""
    time: datetime
    """When the bus accepted the signal (UTC)."""
    signal: Signal
    """The signal."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A signal a persistent subscription gave up on after ``max_attempts`` deliveries."""

    subscription: str
    """The durable name of the subscription."""
    signal: Signal
    """The signal."""
    attempts: int
    """How many times it was delivered."""
    error: str | None
    """The last error (``repr``) or ``None`` when the last attempt timed out unacknowledged."""
    position: int
    """Its log position (``0`` for a redriven signal)."""
    time: datetime
    """When it was dead-lettered (UTC)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "subscription": self.subscription,
            "signal": self.signal.to_dict(),
            "attempts": self.attempts,
            "error": self.error,
            "position": self.position,
            "time": self.time.isoformat(),
        }


# -- shared by the bus and its persistent subscriptions (jido-internal, not exported) ----------

DELIVERED, FAILED, SKIPPED = 0, 1, 2
"""Outcomes of one delivery to a handler: handled, raised (or rejected), halted by middleware."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_to_datetime(ns: int) -> datetime:
    """The UTC time of a log timestamp (nanoseconds since the epoch)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(value: datetime) -> int:
    """A log timestamp (nanoseconds since the epoch) of an aware ``datetime``."""
    if value.tzinfo is None:
        raise BusError("replay times must be timezone-aware (e.g. datetime.now(UTC))")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


class BusLog:
    """Ring buffer of the last ``capacity`` published signals, addressed by position."""

    __slots__ = ("_buf", "_cap", "next")

    def __init__(self, capacity: int) -> None:
        self._cap = capacity
        self._buf: list[tuple[int, int, Signal] | None] = [None] * capacity
        self.next = 1  # position the next signal will get

    def append(self, sig: Signal, ns: int) -> int:
        pos = self.next
        self._buf[pos % self._cap] = (pos, ns, sig)
        self.next = pos + 1
        return pos

    @property
    def first(self) -> int:
        """Oldest position still held (== ``next`` when empty)."""
        return max(1, self.next - self._cap)

    def get(self, pos: int) -> tuple[int, int, Signal] | None:
        if pos < self.first or pos >= self.next:
            return None
        return self._buf[pos % self._cap]

    def entries(self, start: int) -> Iterable[tuple[int, int, Signal]]:
        for pos in range(max(start, self.first), self.next):
            entry = self._buf[pos % self._cap]
            if entry is not None:
                yield entry


class DurableBook:
    """What a bus keeps for its persistent subscriptions, shared with ``jido._bus_durable``.

    The bus owns it; persistent subscriptions read the log and register themselves here, so
    neither module reaches into the other's attributes.
    """

    __slots__ = ("active", "log", "states")

    def __init__(self, log: BusLog | None) -> None:
        self.log = log
        """The bus log (``None`` when the bus keeps none: no persistent subscriptions)."""
        self.states: dict[str, DurableState] = {}
        """Checkpoint and dead letters per durable name, kept between subscribers."""
        self.active: list[PersistentSubscription] = []
        """The persistent subscriptions connected now (at most one per durable name)."""
