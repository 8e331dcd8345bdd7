"""Garbage-collection pauses, measured against the lease they put at risk.

A full (generation 2) collection of CPython holds the GIL for as long as it takes to visit
every tracked object: every thread of the process stands still, the lease thread included.
With many resident agents that is long enough to matter (on a 2-core machine a node with the
default lease fenced itself at about 80,000 resident agents), and a pause longer than a node's
fence window (``lease_ttl - fence_margin``, 0.75 s by default) makes the node fence itself
although nothing else was wrong.

:class:`PauseWatch` times every collection through :data:`gc.callbacks` (one per process, shared
by its nodes): each pause is observed in ``foundation_gc_pause_seconds{generation}``, and a
pause longer than half the shortest fence window of the process's nodes is logged as a
warning (at most once a minute) naming the pause, the objects tracked and what to change.
The cost is two callbacks per collection, about a microsecond each.
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
from typing import Any, Final

from foundation import _metrics

log = logging.getLogger("foundation.membership")

#: Warn when a pause exceeds this share of the shortest fence window.
WARN_SHARE: Final = 0.5
#: At most one warning per this many seconds.
WARN_EVERY: Final = 60.0


class PauseWatch:
    """Times the process's garbage collections while at least one node is registered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles = itertools.count(1)
        self._windows: dict[int, float] = {}
        self._started = 0.0
        self._installed = False
        self._last_warning = -WARN_EVERY
        self.longest = 0.0
        """The longest pause seen so far (seconds)."""
        self._observe = [_metrics.GC_PAUSE_DURATION.labels(str(g)).observe for g in range(3)]

    def register(self, window: float) -> int:
        """Watch on behalf of a node that fences after ``window`` seconds; returns a handle."""
        with self._lock:
            handle = next(self._handles)
            self._windows[handle] = window
            if not self._installed:
                gc.callbacks.append(self._callback)
                self._installed = True
            return handle

    def unregister(self, handle: int) -> None:
        """Stop watching for a node (the callback goes when the last node goes)."""
        with self._lock:
            self._windows.pop(handle, None)
            if not self._windows and self._installed:
                gc.callbacks.remove(self._callback)
                self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        generation = info.get("generation", 2)
        self._observe[generation if generation in (0, 1, 2) else 2](elapsed)
        if elapsed > self.longest:
            self.longest = elapsed
        windows = self._windows
        if not windows:
            return
        window = min(windows.values())
        if elapsed > WARN_SHARE * window:
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY:
                self._last_warning = now
                log.warning(
                    "a garbage collection (generation %s) paused this process for %.2f s; a "
                    "node fences itself after %.2f s without a lease renewal: raise "
                    "lease_ttl (Node(lease_ttl=...), foundation node --lease-ttl) or host fewer "
                    "agents per process",
                    generation,
                    elapsed,
                    window,
                )


WATCH: Final = PauseWatch()
"""The process's pause watch (nodes register when their membership starts)."""


__all__ = ["WARN_EVERY", "WARN_SHARE", "WATCH", "PauseWatch"]
