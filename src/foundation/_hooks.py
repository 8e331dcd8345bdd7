"""Small shared helpers of the cluster layer: user callbacks, durations, background tasks."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any


def seconds(value: float | timedelta) -> float:
    """Return ``value`` in seconds (a ``timedelta`` or a number of seconds)."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def call_hook(fn: Callable[..., Any] | None, *args: Any, log: logging.Logger) -> None:
    """Call a user callback (sync or async); log and swallow its exception.

    A failing callback must not break the lease, membership or election loop that fired it.
    """
    if fn is None:
        return
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("callback %r failed", fn)


class TaskSet:
    """Background tasks of one node (request handlers, cast flushes, inbox restarts).

    Each task is held until it finishes; :meth:`cancel` ends those still running when the node
    stops.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel(self) -> None:
        """Cancel every running task and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
