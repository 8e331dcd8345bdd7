"""``Journal``: a bounded in-memory record of signals and their causal links.

A signal's cause is the signal whose id is in its ``causationid`` extension (set by
:meth:`Signal.caused`). The journal answers, from a signal id: its cause, its direct effects,
the chain of causes up to the root, and every signal descending from it. Give one to a bus
(``Bus(journal=Journal())``) to record every published signal, or call :meth:`record`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

from jido._errors import ValidationError
from jido._signal import Signal

__all__ = ["Journal"]


class Journal:
    """Causality journal keeping the last ``max_entries`` signals (oldest forgotten first)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        """Keep at most ``max_entries`` signals."""
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValidationError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        """How many signals are kept."""
        self._signals: OrderedDict[str, Signal] = OrderedDict()
        self._effects: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._signals)

    def __contains__(self, signal_id: object) -> bool:
        return signal_id in self._signals

    def record(self, signal: Signal) -> None:
        """Record a signal (recording the same id again replaces it)."""
        sid = signal.id
        signals = self._signals
        if sid in signals:
            signals.move_to_end(sid)
        else:
            cause = signal.causation_id
            if cause is not None:
                self._effects.setdefault(cause, []).append(sid)
        signals[sid] = signal
        while len(signals) > self.max_entries:
            # Links from a forgotten cause to kept effects stay until those effects go too.
            old_id, old = signals.popitem(last=False)
            cause = old.causation_id
            if cause is not None:
                siblings = self._effects.get(cause)
                if siblings is not None:
                    with contextlib.suppress(ValueError):
                        siblings.remove(old_id)
                    if not siblings:
                        del self._effects[cause]

    def get(self, signal_id: str) -> Signal | None:
        """The recorded signal with that id, if any."""
        return self._signals.get(signal_id)

    def cause(self, signal_id: str) -> Signal | None:
        """The signal that caused ``signal_id`` (``None`` if it has no cause or it is gone)."""
        sig = self._signals.get(signal_id)
        if sig is None or sig.causation_id is None:
            return None
        return self._signals.get(sig.causation_id)

    def effects(self, signal_id: str) -> list[Signal]:
        """Signals directly caused by ``signal_id``, in recording order."""
        return [self._signals[i] for i in self._effects.get(signal_id, ()) if i in self._signals]

    def chain(self, signal_id: str) -> list[Signal]:
        """The causes of ``signal_id`` from the oldest known root down to the signal itself."""
        out: list[Signal] = []
        seen: set[str] = set()
        current = self._signals.get(signal_id)
        while current is not None and current.id not in seen:
            seen.add(current.id)
            out.append(current)
            parent = current.causation_id
            current = self._signals.get(parent) if parent is not None else None
        out.reverse()
        return out

    def descendants(self, signal_id: str) -> list[Signal]:
        """Every recorded signal caused, directly or not, by ``signal_id`` (breadth first)."""
        out: list[Signal] = []
        seen = {signal_id}
        frontier = [signal_id]
        while frontier:
            nxt: list[str] = []
            for sid in frontier:
                for child in self._effects.get(sid, ()):
                    if child not in seen and child in self._signals:
                        seen.add(child)
                        out.append(self._signals[child])
                        nxt.append(child)
            frontier = nxt
        return out

    def trace(self, trace_id: str) -> list[Signal]:
        """Recorded signals of one trace (see :attr:`Signal.trace_id`), in recording order."""
        return [s for s in self._signals.values() if s.trace_id == trace_id]

    def clear(self) -> None:
        """Forget everything."""
        self._signals.clear()
        self._effects.clear()
