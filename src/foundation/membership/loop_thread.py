"""``LoopThread``: an asyncio event loop of its own, in a daemon thread.

Work that must keep its timing while the main event loop is busy runs here. The lease renewal is
the case in point: a node whose event loop is held for a second by a burst of agent activations
is alive, and should keep its lease, yet a renewal scheduled on that loop would wait for the
burst and the node would fence itself. A thread still gets the interpreter every few
milliseconds (the GIL switch interval), so a renewal loop here keeps its beat.

Objects bound to an event loop (a NATS client, ``asyncio.Event``) must be created and used
inside this loop: pass coroutines to :meth:`LoopThread.submit`, and reach back to the caller's
loop with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
import traceback
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class LoopThread:
    """An event loop running in a daemon thread; start it, submit coroutines, stop it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        """Start the thread (and its loop)."""
        if not self._started:
            self._started = True
            self._thread.start()

    @property
    def running(self) -> bool:
        """True while the thread runs its loop."""
        return self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run ``coro`` on this loop; its result arrives in the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Any, *args: Any) -> None:
        """Call ``fn(*args)`` on this loop's thread (thread-safe)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs here, stop the loop, join the thread, close the loop.

        Blocking: call it from a worker thread (``asyncio.to_thread``) when an event loop is
        running in the calling thread.
        """
        if not self._started or self.loop.is_closed():
            return
        if self._thread.is_alive():

            async def _cancel_all() -> None:
                me = asyncio.current_task()
                # Cancelling can start new tasks (a client's reconnect logic does): repeat
                # until none is left, so that no coroutine outlives the loop.
                for _ in range(20):
                    tasks = [t for t in asyncio.all_tasks() if t is not me]
                    if not tasks:
                        return
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)

            fut = self.submit(_cancel_all())
            with contextlib.suppress(
                concurrent.futures.TimeoutError, concurrent.futures.CancelledError
            ):
                fut.result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


def thread_stack(thread_id: int | None, depth: int = 12) -> str:
    """The innermost ``depth`` frames of thread ``thread_id``, formatted (what holds a stalled
    event loop, seen from another thread)."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    if frame is None:
        return "  (unknown)"
    return "".join(traceback.format_stack(frame, limit=depth)).rstrip()
