"""A node's recent notable events (:class:`NodeEvents`): fences and authorization denials.

What the registry and the membership do not show: the node fenced itself, an agent stopped
because a newer owner exists, a caller was refused. The node's ``stats`` reply carries the last
ones, numbered, so the dashboard merges each event once however often it asks.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

__all__ = ["NodeEvents"]

#: Events kept per node (and sent with its ``stats``).
KEPT = 32


class NodeEvents:
    """The last :data:`KEPT` notable events of one node, each with a sequence number."""

    def __init__(self, size: int = KEPT) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = 0

    def add(self, kind: str, *, agent: str | None = None, detail: str = "") -> None:
        """Record one event (``kind``: ``fence``, ``fenced``, ``denied`` ...)."""
        self._seq += 1
        self._items.append(
            {
                "seq": self._seq,
                "time": time.time(),
                "kind": kind,
                "agent": agent,
                "detail": detail[:300],
            }
        )

    def recent(self) -> list[dict[str, Any]]:
        """The events kept, oldest first."""
        return list(self._items)
