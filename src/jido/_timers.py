"""Durable schedules: the timer book of one agent, committed with its checkpoint.

A :class:`~jido.Schedule` directive is written into the agent's checkpoint (its ``timers``
field) in the same write as the state change of the command that returned it, and the runtime
arms it from there; an agent started again from the store (a restart of the process, a new
owner in a cluster) re-arms every schedule its last checkpoint carries.

Exactly once: when a schedule fires, its signal goes into the agent's mailbox but the schedule
stays in the committed table ("firing") until the command handling that signal commits; that
commit drops it (a cron schedule moves on to its next time). A stop or crash between the firing
and that commit leaves the schedule in the store, so whoever starts the agent next fires it
again, once; a commit after the firing never fires it again. A schedule that came due while
nobody ran the agent fires as soon as the agent is started (a cron schedule fires once for all
the times it missed, then keeps its rhythm from then on).

Table format (plain data, so every store can keep it)::

    {key: {"signal": <Signal.to_dict()>, "due": <unix seconds>, "cron": <expr, optional>}}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from jido._directive import Cancel, Directive, Schedule
from jido._signal import Signal

__all__ = ["TimerBook", "next_due"]

Table = dict[str, dict[str, Any]]


def next_due(d: Schedule, now: float | None = None) -> float:
    """Unix time at which schedule ``d`` is next due, counted from ``now`` (default: now)."""
    t = time.time() if now is None else now
    if d.cron is not None:
        return float(croniter(d.cron, datetime.fromtimestamp(t, UTC)).get_next(float))
    return t + float(d.delay or 0.0)


def _record(d: Schedule, due: float) -> dict[str, Any]:
    rec: dict[str, Any] = {"signal": d.signal.to_dict(), "due": due}
    if d.cron is not None:
        rec["cron"] = d.cron
    return rec


def _fresh(sig: Signal) -> Signal:
    """The same signal with a new id and time (each firing of a cron schedule is its own)."""
    return Signal(
        sig.type,
        sig.source,
        sig.data,
        subject=sig.subject,
        dataschema=sig.dataschema,
        datacontenttype=sig.datacontenttype,
        **sig.extensions,
    )


class TimerBook:
    """The schedules of one agent: armed ones, and fired ones whose command has not committed.

    ``fire(key)`` is called on the event loop when schedule ``key`` is due; the agent's server
    turns it into a mailbox entry with :meth:`take`.
    """

    __slots__ = ("_fire", "_loop", "armed", "firing", "planned")

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[str], None]) -> None:
        self._loop = loop
        self._fire = fire
        # key -> (timer handle or None when disarmed, directive, unix due time)
        self.armed: dict[str, tuple[asyncio.TimerHandle | None, Schedule, float]] = {}
        # id of the signal put into the mailbox -> (key, directive, due time it fired for)
        self.firing: dict[str, tuple[str, Schedule, float]] = {}
        # due times computed for a commit, used when the directive is armed right after it
        self.planned: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self.armed or self.firing)

    # -- arming ----------------------------------------------------------------------------------

    def arm(self, d: Schedule, due: float | None = None) -> None:
        """Arm ``d`` (replacing a schedule under the same key) for ``due`` (default: planned)."""
        key = d.schedule_key
        planned = self.planned.pop(key, None)
        when = due if due is not None else planned if planned is not None else next_due(d)
        self.cancel(key)
        handle = self._loop.call_later(max(0.0, when - time.time()), self._fire, key)
        self.armed[key] = (handle, d, when)

    def cancel(self, key: str) -> bool:
        """Cancel schedule ``key``; ``False`` if none is armed under it."""
        entry = self.armed.pop(key, None)
        if entry is None:
            return False
        if entry[0] is not None:
            entry[0].cancel()
        return True

    def disarm(self) -> None:
        """Cancel every timer but keep the entries (the table still commits them)."""
        for key, (handle, d, due) in list(self.armed.items()):
            if handle is not None:
                handle.cancel()
            self.armed[key] = (None, d, due)

    def restore(self, table: Mapping[str, Mapping[str, Any]]) -> None:
        """Arm every schedule of a committed ``table`` (a due time in the past fires at once)."""
        for key, rec in table.items():
            sig = Signal.from_dict(rec["signal"])
            cron = rec.get("cron")
            d = Schedule(sig, cron=cron, key=key) if cron else Schedule(sig, delay=0.0, key=key)
            self.arm(d, float(rec["due"]))

    # -- firing ----------------------------------------------------------------------------------

    def take(self, key: str) -> Signal | None:
        """Schedule ``key`` is due: the signal to deliver (``None`` if it is no longer armed).

        The schedule stays committed as firing until :meth:`settle` is called with the
        signal's id; a cron schedule is armed again for its next time.
        """
        entry = self.armed.pop(key, None)
        if entry is None:
            return None
        handle, d, due = entry
        if handle is not None:
            handle.cancel()
        sig = d.signal
        if d.cron is not None:
            sig = _fresh(sig)
            self.arm(d, next_due(d, max(due, time.time())))
        self.firing[sig.id] = (key, d, due)
        return sig

    def settle(self, signal_id: str) -> bool:
        """The fired signal ``signal_id`` is being handled: its firing leaves the next commit."""
        return self.firing.pop(signal_id, None) is not None

    # -- the committed form ----------------------------------------------------------------------

    def table(self, effects: Iterable[Directive] = ()) -> Table:
        """The table to commit: what is armed and firing, after ``effects`` are carried out.

        Due times of new schedules are computed here and kept for :meth:`arm`, so the time
        committed is the time armed.
        """
        out = self.snapshot()
        self.planned.clear()
        for eff in effects:
            if isinstance(eff, Schedule):
                key = eff.schedule_key
                due = next_due(eff)
                self.planned[key] = due
                out[key] = _record(eff, due)
            elif isinstance(eff, Cancel):
                out.pop(eff.key, None)
        return out

    def snapshot(self) -> Table:
        """The table as it stands (armed and firing), with no side effect: for a commit made
        in the middle of a command (an AI agent's journal), which must not drop them."""
        out: Table = {k: _record(d, due) for k, (_h, d, due) in self.armed.items()}
        for key, d, due in self.firing.values():
            # a firing not yet handled wins over the next time of the same cron schedule
            out[key] = _record(d, due)
        return out

    def schedules(self) -> dict[str, Schedule]:
        """Armed schedules by key."""
        return {k: d for k, (_h, d, _due) in self.armed.items()}

    def earliest(self) -> float | None:
        """The earliest due time of an armed or firing schedule (``None``: none)."""
        times = [due for _h, _d, due in self.armed.values()]
        times.extend(due for _k, _d, due in self.firing.values())
        return min(times) if times else None


def has_timer_effects(effects: Iterable[Directive]) -> bool:
    """True when ``effects`` schedule or cancel something (the timer table changes)."""
    return any(isinstance(e, Schedule | Cancel) for e in effects)


def earliest_due(table: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The earliest due time in a committed table (``None`` when it is empty)."""
    return min((float(r["due"]) for r in table.values()), default=None)
