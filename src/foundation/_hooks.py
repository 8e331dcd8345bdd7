"""Small shared helpers for user callbacks and durations in the cluster layer."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
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
