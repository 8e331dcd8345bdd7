"""``Bus``: in-memory publish/subscribe of signals by type pattern.

* ``await bus.publish(*signals)`` validates every signal first (type, payload size, middleware,
  subscriber capacity for ``block``/``error`` subscribers) and only then publishes them all:
  nothing is published half-way. It returns the log positions of the published signals.
* ``bus.subscribe(pattern, handler)`` with a coroutine function, a plain callable or an
  ``asyncio.Queue``. Each subscription has its own bounded queue and worker task, so a failing
  or slow handler neither breaks nor blocks the others (see :class:`Overflow` for what happens
  when a queue is full). Handler errors are counted, kept as ``last_error`` and logged.
* ``bus.subscribe(..., durable="name")`` makes a persistent subscription (ack, redelivery, dead
  letters, checkpoint): see :class:`PersistentSubscription`.
* A bounded log of the last ``log_size`` signals can be replayed from a position or a time,
  filtered by pattern (:meth:`Bus.replay`).
* Middleware run around publish and dispatch (:class:`Middleware`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from jido._bus_types import (
    DELIVERED,
    FAILED,
    SKIPPED,
    BusClosedError,
    BusError,
    BusLog,
    BusStats,
    DeadLetter,
    Decision,
    DurableBook,
    LogEntry,
    Middleware,
    Overflow,
    PublishHaltedError,
    SubscriberOverflowError,
    SubscriptionStats,
    datetime_to_ns,
    ns_to_datetime,
)
from jido._codec import DEFAULT_MAX_SIZE, dumps_json
from jido._errors import PayloadTooLargeError, SignalError
from jido._router import Route, Router, validate_pattern
from jido._signal import Signal

if TYPE_CHECKING:
    from jido._journal import Journal

__all__ = ["Bus", "Handler", "Subscription"]

_logger = logging.getLogger("jido.bus")

Handler = Callable[[Signal], Awaitable[Any]] | Callable[[Signal], Any] | asyncio.Queue[Signal]
"""A subscriber: a coroutine function, a plain callable, or an ``asyncio.Queue``."""


def _payload_size(data: Any) -> int:
    if isinstance(data, bytes | bytearray | str):
        return len(data)
    try:
        return len(dumps_json(data))
    except TypeError as exc:
        raise SignalError(
            f"signal data is not JSON-serialisable: {exc}; send JSON values, bytes or a "
            "pydantic model",
            details={"attribute": "data"},
        ) from exc


class _MiddlewareChain:
    """The middleware of a bus, split per hook (only those overriding it)."""

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        for mw in middleware:
            if not isinstance(mw, Middleware):
                raise BusError(
                    f"middleware must subclass jido.Middleware, got {mw!r}",
                    details={"middleware": repr(mw)},
                )
        self.all = tuple(middleware)
        self.publish = tuple(
            m for m in middleware if type(m).before_publish is not Middleware.before_publish
        )
        self.before = tuple(
            m for m in middleware if type(m).before_dispatch is not Middleware.before_dispatch
        )
        self.after = tuple(
            m for m in middleware if type(m).after_dispatch is not Middleware.after_dispatch
        )
        self.dispatch = bool(self.before or self.after)


def _handler_kind(handler: object) -> Literal["async", "sync", "queue"]:
    if isinstance(handler, asyncio.Queue):
        return "queue"
    if not callable(handler):
        raise BusError(
            f"a subscription handler must be a coroutine function, a callable or an "
            f"asyncio.Queue, got {handler!r}",
            details={"handler": repr(handler)},
        )
    if inspect.iscoroutinefunction(handler):
        return "async"
    # a callable object with an ``async def __call__``
    call = getattr(type(handler), "__call__", None)  # noqa: B004
    return "async" if call is not None and inspect.iscoroutinefunction(call) else "sync"


class Subscription:
    """A live subscription: a pattern, a handler, a bounded queue and a worker task.

    Made by :meth:`Bus.subscribe`; stop it with ``await sub.unsubscribe()``.
    """

    def __init__(
        self,
        bus: Bus,
        pattern: str,
        handler: Handler,
        *,
        name: str,
        queue_size: int,
        overflow: Overflow,
        match: Callable[[Signal], bool] | None,
    ) -> None:
        self.bus = bus
        """The bus this subscription belongs to."""
        self.pattern = pattern
        """The type pattern it receives."""
        self.name = name
        """A name for logs and statistics."""
        self.handler = handler
        """The handler."""
        self.overflow = overflow
        """The overflow policy of its queue."""
        self.queue_size = queue_size
        """The bound of its queue."""
        self.match = match
        """Optional predicate on the signal."""
        self.last_error: BaseException | None = None
        """The last exception its handler raised, if any."""
        self._kind = _handler_kind(handler)
        self._queue: deque[tuple[Signal, int]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._space_waiters: list[asyncio.Future[None]] = []
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._busy = False
        self._active = True
        self._route: Route | None = None
        self._task: asyncio.Task[None] | None = None
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._rejected = 0
        self._skipped = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the subscription still receives signals."""
        return self._active

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"jido.bus.subscription:{self.name}"
        )

    async def unsubscribe(self) -> None:
        """Stop receiving; queued signals not yet handled are dropped. Idempotent."""
        if not self._active:
            return
        self._active = False
        self.bus._detach(self)
        self._dropped += len(self._queue)
        self._queue.clear()
        self._wake_all()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def _wake_all(self) -> None:
        for fut in (*self._space_waiters, *self._idle_waiters):
            if not fut.done():
                fut.set_result(None)
        self._space_waiters.clear()
        self._idle_waiters.clear()

    async def wait_idle(self) -> None:
        """Wait until its queue is empty and its handler is not running."""
        if not self._active or self._idle():
            return
        fut = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        await fut

    def _idle(self) -> bool:
        return not self._queue and not self._busy

    def statistics(self) -> SubscriptionStats:
        """Counters (an immutable snapshot)."""
        return SubscriptionStats(
            delivered=self._delivered,
            failed=self._failed,
            dropped=self._dropped,
            rejected=self._rejected,
            skipped=self._skipped,
            queued=len(self._queue),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} pattern={self.pattern!r}>"

    # -- queueing --------------------------------------------------------------------------------

    def _free(self) -> int:
        return self.queue_size - len(self._queue)

    def _offer(self, sig: Signal, pos: int) -> None:
        queue = self._queue
        if len(queue) >= self.queue_size:
            if self.overflow is Overflow.DROP_NEWEST:
                self._dropped += 1
                return
            # drop_oldest, and the (reserved-ahead, so rare) overflow of block/error policies
            queue.popleft()
            self._dropped += 1
        queue.append((sig, pos))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_space(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._space_waiters.append(fut)
        await fut

    # -- delivery --------------------------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while self._active:
            if not queue:
                if self._idle_waiters:
                    self._wake_idle()
                waiter = self._waiter = loop.create_future()
                await waiter
                continue
            sig, _pos = queue.popleft()
            if self._space_waiters:
                self._wake_space()
            self._busy = True
            try:
                await self._call(sig)
            finally:
                self._busy = False

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _wake_space(self) -> None:
        waiters, self._space_waiters = self._space_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _call(self, sig: Signal) -> int:
        """Run middleware and the handler; returns ``DELIVERED``, ``FAILED`` or ``SKIPPED``."""
        chain = self.bus._mw
        error: BaseException | None = None
        if chain.dispatch:
            for mw in chain.before:
                try:
                    decision = await mw.before_dispatch(sig, self)
                except Exception as exc:
                    decision = Decision.HALT
                    error = exc
                if decision is Decision.SKIP:
                    self._skipped += 1
                    return SKIPPED
                if decision is Decision.HALT:
                    error = error or PublishHaltedError(
                        f"dispatch halted by {type(mw).__name__}",
                        details={"middleware": type(mw).__name__, "signal_id": sig.id},
                    )
                    self._record_failure(sig, error)
                    await self._after(sig, error)
                    return FAILED
        try:
            kind = self._kind
            if kind == "async":
                await self.handler(sig)  # type: ignore[operator]
            elif kind == "sync":
                result = self.handler(sig)  # type: ignore[operator]
                if inspect.isawaitable(result):
                    await result
            else:
                await self.handler.put(sig)  # type: ignore[union-attr]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
            self._record_failure(sig, exc)
        else:
            self._delivered += 1
        if chain.after:
            await self._after(sig, error)
        return DELIVERED if error is None else FAILED

    def _record_failure(self, sig: Signal, error: BaseException) -> None:
        self._failed += 1
        self.last_error = error
        _logger.warning(
            "bus subscriber %r failed on %s (id=%s): %r", self.name, sig.type, sig.id, error
        )

    async def _after(self, sig: Signal, error: BaseException | None) -> None:
        for mw in self.bus._mw.after:
            try:
                await mw.after_dispatch(sig, self, error)
            except Exception as exc:
                _logger.warning("after_dispatch of %s raised %r", type(mw).__name__, exc)


class Bus:
    """In-memory signal bus; use as ``async with Bus() as bus:``.

    Options: ``log_size`` (signals kept for replay and persistent subscriptions; 0 disables the
    log), ``max_payload_size`` (bytes of encoded ``data`` per signal, default 1 MiB, ``None``
    for no limit), ``middleware``, ``journal`` (a :class:`jido.Journal` recording causality),
    ``queue_size`` / ``overflow`` (defaults for subscriptions), ``close_timeout`` (how long
    leaving the ``async with`` block waits for subscribers to drain).
    """

    def __init__(
        self,
        *,
        name: str = "bus",
        log_size: int = 10_000,
        max_payload_size: int | None = DEFAULT_MAX_SIZE,
        middleware: Sequence[Middleware] = (),
        journal: Journal | None = None,
        queue_size: int = 1024,
        overflow: Overflow | str = Overflow.DROP_OLDEST,
        close_timeout: float = 5.0,
    ) -> None:
        if not isinstance(log_size, int) or log_size < 0:
            raise BusError(f"log_size must be an integer >= 0, got {log_size!r}")
        if max_payload_size is not None and (
            not isinstance(max_payload_size, int) or max_payload_size <= 0
        ):
            raise BusError(
                f"max_payload_size must be a positive integer or None, got {max_payload_size!r}"
            )
        self.name = name
        """Name for logs."""
        self.max_payload_size = max_payload_size
        """Limit on the encoded size of a signal's ``data`` (bytes), or ``None``."""
        self.journal = journal
        """The causality journal every published signal is recorded in, if any."""
        self.close_timeout = close_timeout
        """Seconds leaving ``async with`` waits for subscribers to finish their queues."""
        self._default_queue_size = _check_queue_size(queue_size)
        self._default_overflow = _check_overflow(overflow)
        self._mw = _MiddlewareChain(middleware)
        self._log = BusLog(log_size) if log_size else None
        self._router = Router()
        self._subs: list[Subscription] = []
        self._durable = DurableBook(self._log)
        self._reserving = 0  # subscriptions with block/error overflow
        self._closed = False
        self._published = 0
        self._skipped = 0
        self._counter = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Bus:
        if self._closed:
            raise BusClosedError("this bus was closed; make a new Bus")
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                await asyncio.wait_for(self.drain(), self.close_timeout)
            except TimeoutError:
                _logger.warning("bus %r closed before its subscribers drained", self.name)
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def close(self) -> None:
        """Stop every subscription (queued signals are dropped) and refuse new publishes."""
        if self._closed:
            return
        self._closed = True
        for sub in [*self._subs, *self._durable.active]:
            await sub.unsubscribe()

    async def drain(self) -> None:
        """Wait until every subscriber has handled everything published so far."""
        while True:
            busy = [s for s in (*self._subs, *self._durable.active) if not s._idle()]
            if not busy:
                return
            for sub in busy:
                await sub.wait_idle()

    # -- subscribe ------------------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        name: str | None = None,
        queue_size: int | None = None,
        overflow: Overflow | str | None = None,
        match: Callable[[Signal], bool] | None = None,
        durable: str | None = None,
        ack_timeout: float = 30.0,
        max_attempts: int = 5,
        auto_ack: bool = True,
        max_in_flight: int = 64,
        retry_delay: float = 0.0,
        start: Literal["new", "first"] | int | datetime = "new",
    ) -> Subscription:
        """Subscribe ``handler`` to signals whose type matches ``pattern`` (``*``, ``**``).

        Must be called with a running event loop. ``queue_size`` / ``overflow`` bound the
        subscriber's queue (defaults from the bus); ``match`` filters on the signal.

        With ``durable="name"`` the subscription is persistent (see
        :class:`PersistentSubscription`): it reads the bus log from its checkpoint, and
        ``ack_timeout``, ``max_attempts``, ``auto_ack``, ``max_in_flight``, ``retry_delay`` and
        ``start`` (where a new durable name begins: ``"new"`` signals only, ``"first"`` in the
        log, a log position or a time) apply.
        """
        if self._closed:
            raise BusClosedError("cannot subscribe to a closed bus")
        validate_pattern(pattern)
        self._counter += 1
        if durable is not None:
            from jido._bus_durable import PersistentSubscription

            return PersistentSubscription._open(
                self,
                self._durable,
                durable,
                pattern,
                handler,
                match=match,
                ack_timeout=ack_timeout,
                max_attempts=max_attempts,
                auto_ack=auto_ack,
                max_in_flight=max_in_flight,
                retry_delay=retry_delay,
                start=start,
            )
        sub = Subscription(
            self,
            pattern,
            handler,
            name=name or f"{pattern}#{self._counter}",
            queue_size=(
                self._default_queue_size if queue_size is None else _check_queue_size(queue_size)
            ),
            overflow=self._default_overflow if overflow is None else _check_overflow(overflow),
            match=match,
        )
        sub._route = self._router.add(pattern, sub, match=match)
        self._subs.append(sub)
        if sub.overflow in (Overflow.BLOCK, Overflow.ERROR):
            self._reserving += 1
        sub._start()
        return sub

    def subscriptions(self) -> list[Subscription]:
        """Active subscriptions (plain and persistent)."""
        return [*self._subs, *self._durable.active]

    def _detach(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            if sub._route is not None:
                self._router.remove(sub._route)
            if sub.overflow in (Overflow.BLOCK, Overflow.ERROR):
                self._reserving -= 1
        elif sub in self._durable.active:
            self._durable.active.remove(sub)

    # -- publish ------------------------------------------------------------------------------

    async def publish(self, *signals: Signal) -> list[int]:
        """Publish signals, all or nothing; returns their log positions (0 without a log).

        Raises :class:`jido.SignalError` / :class:`jido.PayloadTooLargeError` for a bad signal,
        :class:`PublishHaltedError` when middleware halts, :class:`SubscriberOverflowError`
        when an ``overflow="error"`` subscriber is full, :class:`BusClosedError` when closed.
        """
        if self._closed:
            raise BusClosedError("cannot publish on a closed bus")
        limit = self.max_payload_size
        for index, sig in enumerate(signals):
            if not isinstance(sig, Signal):
                raise SignalError(
                    f"publish takes Signal objects; argument {index} is {type(sig).__name__}",
                    details={"attribute": "signal", "index": index},
                )
            if limit is not None and sig.data is not None:
                size = _payload_size(sig.data)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"signal {sig.type!r} carries {size} bytes of data, over the "
                        f"{limit}-byte limit of this bus; send less or raise max_payload_size",
                        details={"attribute": "data", "size": size, "limit": limit},
                    )
        batch: Sequence[Signal] = signals
        if self._mw.publish:
            batch = await self._before_publish(signals)
        if self._reserving:
            await self._reserve(batch)
            if self._closed:
                raise BusClosedError("the bus closed while publish waited for room")
        log = self._log
        journal = self.journal
        route = self._router.route
        ns = time.time_ns() if log is not None else 0
        positions: list[int] = []
        for sig in batch:
            pos = log.append(sig, ns) if log is not None else 0
            positions.append(pos)
            if journal is not None:
                journal.record(sig)
            for r in route(sig):
                r.target._offer(sig, pos)
        self._published += len(batch)
        if self._durable.active:
            for durable in self._durable.active:
                durable._notify()
        return positions

    async def _before_publish(self, signals: Sequence[Signal]) -> list[Signal]:
        kept: list[Signal] = []
        for sig in signals:
            decision = Decision.CONTINUE
            for mw in self._mw.publish:
                decision = await mw.before_publish(sig, self)
                if decision is Decision.HALT:
                    raise PublishHaltedError(
                        f"publish halted by {type(mw).__name__} at signal {sig.type!r}; "
                        "nothing was published",
                        details={"middleware": type(mw).__name__, "signal_id": sig.id},
                    )
                if decision is Decision.SKIP:
                    break
            if decision is Decision.SKIP:
                self._skipped += 1
            else:
                kept.append(sig)
        return kept

    async def _reserve(self, batch: Sequence[Signal]) -> None:
        """Ensure block/error subscribers have room for the whole batch (before publishing)."""
        while True:
            need: dict[Subscription, int] = {}
            for sig in batch:
                for r in self._router.route(sig):
                    sub: Subscription = r.target
                    if sub.overflow is Overflow.BLOCK or sub.overflow is Overflow.ERROR:
                        need[sub] = need.get(sub, 0) + 1
            blocked: Subscription | None = None
            for sub, count in need.items():
                if sub._free() >= count:
                    continue
                if sub.overflow is Overflow.ERROR or count > sub.queue_size:
                    sub._rejected += 1
                    raise SubscriberOverflowError(
                        f"subscriber {sub.name!r} has no room for {count} signal(s) "
                        f"(queue {len(sub._queue)}/{sub.queue_size}); nothing was published. "
                        "Retry later or raise its queue_size",
                        details={"subscription": sub.name, "queued": len(sub._queue)},
                    )
                blocked = blocked or sub
            if blocked is None:
                return
            await blocked._wait_space()
            if self._closed:
                return

    # -- log ----------------------------------------------------------------------------------

    def replay(
        self,
        pattern: str = "**",
        *,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        limit: int | None = None,
    ) -> list[LogEntry]:
        """Signals still in the log matching ``pattern``, oldest first.

        ``since`` / ``until`` bound the range (inclusive) by log position or by the time the
        bus accepted the signal; ``limit`` caps the count.
        """
        log = self._log
        if log is None:
            raise BusError("this bus keeps no log (log_size=0); nothing to replay")
        matcher = Router()
        matcher.add(pattern, None)
        start = since if isinstance(since, int) else log.first
        since_ns = datetime_to_ns(since) if isinstance(since, datetime) else None
        until_pos = until if isinstance(until, int) else None
        until_ns = datetime_to_ns(until) if isinstance(until, datetime) else None
        out: list[LogEntry] = []
        for pos, ns, sig in log.entries(start):
            if until_pos is not None and pos > until_pos:
                break
            if until_ns is not None and ns > until_ns:
                break
            if since_ns is not None and ns < since_ns:
                continue
            if matcher.route(sig.type):
                out.append(LogEntry(pos, ns_to_datetime(ns), sig))
                if limit is not None and len(out) >= limit:
                    break
        return out

    @property
    def position(self) -> int:
        """Position of the newest signal in the log (0 if none)."""
        return self._log.next - 1 if self._log is not None else 0

    # -- persistent subscriptions (state kept across reconnects) ----------------------------------

    def checkpoint(self, durable: str) -> int:
        """The checkpoint (last log position fully handled) of a durable subscription."""
        return self._durable_state(durable).checkpoint  # type: ignore[no-any-return]

    def dead_letters(self, durable: str | None = None) -> list[DeadLetter]:
        """Dead letters of one durable subscription, or of all of them."""
        if durable is not None:
            return list(self._durable_state(durable).dead_letters)
        return [d for state in self._durable.states.values() for d in state.dead_letters]

    def redrive(self, durable: str, ids: Iterable[str] | None = None) -> int:
        """Move dead letters (all, or those with the given signal ids) back for delivery.

        They are delivered with a fresh attempt count when the subscription is active (at
        once, or when it reconnects). Returns how many were moved.
        """
        state = self._durable_state(durable)
        moved = state.take_dead_letters(None if ids is None else set(ids))
        for active in self._durable.active:
            if active.durable == durable:
                active._notify()
        return len(moved)

    def clear_dead_letters(self, durable: str | None = None) -> int:
        """Drop dead letters of one durable subscription (or all); returns how many."""
        states = [self._durable_state(durable)] if durable else list(self._durable.states.values())
        count = 0
        for state in states:
            count += len(state.dead_letters)
            state.dead_letters.clear()
        return count

    def delete_durable(self, durable: str) -> None:
        """Forget a durable subscription's checkpoint and dead letters (it must be inactive)."""
        if any(s.durable == durable for s in self._durable.active):
            raise BusError(f"durable subscription {durable!r} is active; unsubscribe it first")
        self._durable_state(durable)
        del self._durable.states[durable]

    def durables(self) -> list[str]:
        """Names of known durable subscriptions (active or not)."""
        return list(self._durable.states)

    def _durable_state(self, durable: str) -> Any:
        state = self._durable.states.get(durable)
        if state is None:
            raise BusError(
                f"no durable subscription named {durable!r}",
                details={"durable": durable, "known": sorted(self._durable.states)},
            )
        return state

    # -- statistics ---------------------------------------------------------------------------

    def statistics(self) -> BusStats:
        """Counters (an immutable snapshot)."""
        log = self._log
        first = log.first if log is not None and log.next > 1 else 0
        return BusStats(
            published=self._published,
            skipped=self._skipped,
            subscriptions=len(self._subs) + len(self._durable.active),
            log_first=first,
            log_last=self.position,
        )


def _check_queue_size(size: object) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise BusError(f"queue_size must be an integer >= 1, got {size!r}")
    return size


def _check_overflow(value: object) -> Overflow:
    try:
        return Overflow(str(value))
    except ValueError:
        raise BusError(
            f"overflow must be one of {[o.value for o in Overflow]}, got {value!r}"
        ) from None
