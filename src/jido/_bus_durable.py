"""Persistent (durable) subscriptions: ack, redelivery, dead letters and a checkpoint.

A persistent subscription reads the bus log in order, starting after its checkpoint:

* each matching signal is delivered to the handler; with ``auto_ack=True`` (default) a handler
  that returns acknowledges it and a handler that raises (or dispatch middleware that halts)
  rejects it; with ``auto_ack=False`` the handler (or anyone) calls ``await sub.ack(signal)``
  or ``await sub.nack(signal)``;
* a rejected signal is delivered again after ``retry_delay`` seconds; an unacknowledged one
  after ``ack_timeout`` seconds; after ``max_attempts`` deliveries it goes to the dead-letter
  queue (``sub.dead_letters()``, ``bus.redrive(name)``, ``bus.clear_dead_letters(name)``);
* at most ``max_in_flight`` signals are delivered and not yet settled at once;
* the checkpoint is the log position up to which every matching signal is acknowledged,
  skipped or dead-lettered. It is kept by the bus under the durable name: a subscriber that
  unsubscribes (or is dropped) and subscribes again with the same name resumes right after it.
  Delivery is at least once: signals acknowledged out of order beyond the checkpoint are
  delivered again after a reconnect.

Signals that leave the bounded log before the subscriber reads them are counted as ``lost``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from jido._bus import Bus, Handler, Subscription
from jido._bus_types import (
    FAILED,
    SKIPPED,
    BusError,
    BusLog,
    DeadLetter,
    DurableBook,
    Overflow,
    SubscriptionStats,
    datetime_to_ns,
    ns_to_datetime,
)
from jido._router import Router
from jido._signal import Signal

__all__ = ["PersistentSubscription"]

MAX_DEAD_LETTERS = 10_000


class DurableState:
    """What the bus keeps for a durable name between connections."""

    def __init__(self, name: str, pattern: str, checkpoint: int) -> None:
        self.name = name
        self.pattern = pattern
        self.checkpoint = checkpoint
        self.dead_letters: deque[DeadLetter] = deque(maxlen=MAX_DEAD_LETTERS)
        self.redrive: deque[Signal] = deque()

    def take_dead_letters(self, ids: set[str] | None) -> list[DeadLetter]:
        moved = [d for d in self.dead_letters if ids is None or d.signal.id in ids]
        if moved:
            keep = [d for d in self.dead_letters if not (ids is None or d.signal.id in ids)]
            self.dead_letters.clear()
            self.dead_letters.extend(keep)
            self.redrive.extend(d.signal for d in moved)
        return moved


class _Pending:
    __slots__ = ("attempts", "deadline", "due", "error", "pos", "sig")

    def __init__(self, sig: Signal, pos: int) -> None:
        self.sig = sig
        self.pos = pos
        self.attempts = 0
        self.deadline = math.inf
        self.due = False
        self.error: str | None = None


class PersistentSubscription(Subscription):
    """A durable subscription (``bus.subscribe(pattern, handler, durable="name")``).

    See the module documentation for the delivery rules.
    """

    durable: str
    """The durable name the bus keeps the checkpoint and dead letters under."""

    @classmethod
    def _open(
        cls,
        bus: Bus,
        book: DurableBook,
        durable: str,
        pattern: str,
        handler: Handler,
        *,
        match: Callable[[Signal], bool] | None,
        ack_timeout: float,
        max_attempts: int,
        auto_ack: bool,
        max_in_flight: int,
        retry_delay: float,
        start: Literal["new", "first"] | int | datetime,
    ) -> PersistentSubscription:
        log = book.log
        if log is None:
            raise BusError("persistent subscriptions need the bus log; use log_size > 0")
        if not isinstance(durable, str) or not durable:
            raise BusError(f"durable must be a non-empty string, got {durable!r}")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise BusError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if not (isinstance(max_in_flight, int) and max_in_flight >= 1):
            raise BusError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if not ack_timeout > 0 or retry_delay < 0:
            raise BusError("ack_timeout must be > 0 and retry_delay >= 0")
        if any(s.durable == durable for s in book.active):
            raise BusError(
                f"durable subscription {durable!r} already has an active subscriber",
                details={"durable": durable},
            )
        state: DurableState | None = book.states.get(durable)
        if state is None:
            state = DurableState(durable, pattern, _start_checkpoint(log, start))
            book.states[durable] = state
        elif state.pattern != pattern:
            raise BusError(
                f"durable subscription {durable!r} was made for pattern {state.pattern!r}, "
                f"not {pattern!r}; use another name or delete_durable() it first",
                details={"durable": durable, "pattern": state.pattern},
            )
        sub = cls(
            bus,
            pattern,
            handler,
            name=durable,
            queue_size=max_in_flight,
            overflow=Overflow.BLOCK,
            match=match,
        )
        sub.durable = durable
        sub._book = book
        sub._state = state
        sub._ack_timeout = float(ack_timeout)
        sub._max_attempts = max_attempts
        sub._auto_ack = auto_ack
        sub._window = max_in_flight
        sub._retry_delay = float(retry_delay)
        sub._matcher = Router()
        sub._matcher.add(pattern, True, match=match)
        sub._next = state.checkpoint + 1
        sub._inflight = {}
        sub._by_id = {}
        sub._due = deque()
        sub._earliest = math.inf
        sub._redrive_seq = 0
        sub._redelivered = 0
        sub._dead_lettered = 0
        sub._lost = 0
        book.active.append(sub)
        sub._start()
        return sub

    # attributes set by _open
    _book: DurableBook
    _state: DurableState
    _ack_timeout: float
    _max_attempts: int
    _auto_ack: bool
    _window: int
    _retry_delay: float
    _matcher: Router
    _next: int
    _inflight: dict[int, _Pending]
    _by_id: dict[str, int]
    _due: deque[int]
    _earliest: float
    _redrive_seq: int
    _redelivered: int
    _dead_lettered: int
    _lost: int

    # -- public ---------------------------------------------------------------------------------

    @property
    def checkpoint(self) -> int:
        """Log position up to which every matching signal is settled."""
        return self._state.checkpoint

    async def ack(self, signal: Signal | str) -> bool:
        """Acknowledge a delivered signal (or its id); ``False`` if it is not in flight."""
        key = self._by_id.get(signal if isinstance(signal, str) else signal.id)
        if key is None or key not in self._inflight:
            return False
        self._settle(key)
        self._notify()
        return True

    async def nack(self, signal: Signal | str) -> bool:
        """Reject a delivered signal so it is delivered again (or dead-lettered) now."""
        key = self._by_id.get(signal if isinstance(signal, str) else signal.id)
        pending = self._inflight.get(key) if key is not None else None
        if pending is None or key is None:
            return False
        pending.error = "nack"
        self._reject(key, pending, time.monotonic())
        self._notify()
        return True

    def dead_letters(self) -> list[DeadLetter]:
        """This subscription's dead letters, oldest first."""
        return list(self._state.dead_letters)

    def in_flight(self) -> list[Signal]:
        """Signals delivered and not yet settled."""
        return [p.sig for p in self._inflight.values() if p.attempts]

    def statistics(self) -> SubscriptionStats:
        """Counters (an immutable snapshot)."""
        return dataclasses.replace(
            super().statistics(),
            queued=max(0, self._book.log.next - self._next) if self._book.log else 0,
            redelivered=self._redelivered,
            dead_lettered=self._dead_lettered,
            lost=self._lost,
            in_flight=len(self._inflight),
            checkpoint=self._state.checkpoint,
        )

    # -- machinery --------------------------------------------------------------------------------

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _offer(self, sig: Signal, pos: int) -> None:  # not routed through the bus router
        self._notify()

    def _idle(self) -> bool:
        if self._busy or self._due:
            return False
        if len(self._inflight) >= self._window:
            return True
        log = self._book.log
        caught_up = log is None or self._next >= log.next
        return caught_up and not self._state.redrive

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._active:
            if self._inflight and time.monotonic() >= self._earliest:
                self._expire(time.monotonic())
            key = self._next_work()
            if key is None:
                if self._idle_waiters and self._idle():
                    self._wake_idle()
                waiter = self._waiter = loop.create_future()
                timer = None
                if not self._inflight:
                    self._earliest = math.inf  # nothing can time out: no timer, no spinning
                if self._earliest != math.inf:
                    delay = max(0.0, self._earliest - time.monotonic())
                    timer = loop.call_later(delay, self._notify)
                try:
                    await waiter
                finally:
                    if timer is not None:
                        timer.cancel()
                continue
            await self._deliver(key)

    def _next_work(self) -> int | None:
        inflight = self._inflight
        while self._due:
            key = self._due.popleft()
            pending = inflight.get(key)
            if pending is not None and pending.due:
                pending.due = False
                return key
        if len(inflight) >= self._window:
            return None
        redrive = self._state.redrive
        if redrive:
            self._redrive_seq -= 1
            key = self._redrive_seq
            sig = redrive.popleft()
            inflight[key] = _Pending(sig, 0)
            self._by_id[sig.id] = key
            return key
        log = self._book.log
        assert log is not None
        while self._next < log.next:
            pos = self._next
            entry = log.get(pos)
            if entry is None:  # fell out of the bounded log before we read it
                first = log.first
                self._lost += first - pos
                self._next = first
                self._advance()
                continue
            self._next = pos + 1
            sig = entry[2]
            if self._matcher.route(sig):
                inflight[pos] = _Pending(sig, pos)
                self._by_id[sig.id] = pos
                return pos
            self._advance()
        return None

    def _advance(self) -> None:
        """Move the checkpoint to just before the oldest unsettled log position."""
        lowest = self._next
        for key in self._inflight:
            if key > 0:
                lowest = key
                break
        if lowest - 1 > self._state.checkpoint:
            self._state.checkpoint = lowest - 1

    async def _deliver(self, key: int) -> None:
        pending = self._inflight[key]
        pending.attempts += 1
        if pending.attempts > 1:
            self._redelivered += 1
        pending.deadline = time.monotonic() + self._ack_timeout
        self._earliest = min(self._earliest, pending.deadline)
        self._busy = True
        try:
            outcome = await self._call(pending.sig)
        finally:
            self._busy = False
        if self._inflight.get(key) is not pending:
            return  # settled while the handler ran (manual ack)
        if outcome == SKIPPED:
            self._settle(key)
        elif outcome == FAILED:
            pending.error = repr(self.last_error)
            self._reject(key, pending, time.monotonic())
        elif self._auto_ack:
            self._settle(key)

    def _reject(self, key: int, pending: _Pending, now: float) -> None:
        if pending.attempts >= self._max_attempts:
            self._dead_letter(key, pending)
            return
        if self._retry_delay <= 0:
            if not pending.due:
                pending.due = True
                self._due.append(key)
            pending.deadline = math.inf
        else:
            pending.deadline = now + self._retry_delay
            self._earliest = min(self._earliest, pending.deadline)

    def _expire(self, now: float) -> None:
        earliest = math.inf
        for key, pending in list(self._inflight.items()):
            if pending.due or not pending.attempts:
                continue
            if pending.deadline <= now:
                if pending.attempts >= self._max_attempts:
                    self._dead_letter(key, pending)
                else:
                    pending.due = True
                    pending.deadline = math.inf
                    self._due.append(key)
            elif pending.deadline < earliest:
                earliest = pending.deadline
        self._earliest = earliest

    def _dead_letter(self, key: int, pending: _Pending) -> None:
        self._state.dead_letters.append(
            DeadLetter(
                subscription=self.durable,
                signal=pending.sig,
                attempts=pending.attempts,
                error=pending.error,
                position=max(0, pending.pos),
                time=ns_to_datetime(time.time_ns()),
            )
        )
        self._dead_lettered += 1
        self._settle(key)

    def _settle(self, key: int) -> None:
        pending = self._inflight.pop(key, None)
        if pending is None:
            return
        if self._by_id.get(pending.sig.id) == key:
            del self._by_id[pending.sig.id]
        pending.due = False
        if key > 0:
            self._advance()


def _start_checkpoint(log: BusLog, start: Any) -> int:
    if start == "new":
        return log.next - 1
    if start == "first":
        return log.first - 1
    if isinstance(start, bool):
        pass
    elif isinstance(start, int):
        if start < 1:
            raise BusError(f"start position must be >= 1, got {start}")
        return start - 1
    elif isinstance(start, datetime):
        since = datetime_to_ns(start)
        for pos, ns, _sig in log.entries(log.first):
            if ns >= since:
                return pos - 1
        return log.next - 1
    raise BusError(
        f"start must be 'new', 'first', a log position or a datetime, got {start!r}",
        details={"start": repr(start)},
    )
