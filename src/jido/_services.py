"""``Services``: the extension points a :class:`~jido.Runtime` offers to the code it runs.

A service is any object registered under a kind (usually a protocol class): a tool source that
adds tools to LLM agents, a token budget, ... Layers above ``jido`` (the cluster layer, an
application) register theirs on ``runtime.services``; ``jido`` code looks them up by kind and
never imports those layers::

    rt.services.add(ToolSource, my_catalog)
    rt.services.all(ToolSource)        # [my_catalog]
"""

from __future__ import annotations

from typing import Any

__all__ = ["Services"]


class Services:
    """Objects registered by kind; several per kind, kept in registration order.

    A kind is usually a protocol class (which type checkers do not accept as ``type[T]``),
    so lookups are typed ``Any``: annotate the variable you assign them to.
    """

    __slots__ = ("_by_kind",)

    def __init__(self) -> None:
        self._by_kind: dict[Any, list[Any]] = {}

    def add(self, kind: Any, service: Any) -> None:
        """Register ``service`` under ``kind`` (after those already registered)."""
        self._by_kind.setdefault(kind, []).append(service)

    def remove(self, kind: Any, service: Any) -> None:
        """Unregister ``service`` from ``kind`` (no error when it is not registered)."""
        items = self._by_kind.get(kind)
        if items is not None and service in items:
            items.remove(service)

    def get(self, kind: Any) -> Any:
        """The first service registered under ``kind``, or ``None``."""
        items = self._by_kind.get(kind)
        return items[0] if items else None

    def all(self, kind: Any) -> list[Any]:
        """Every service registered under ``kind``, in registration order."""
        return list(self._by_kind.get(kind, ()))

    def __repr__(self) -> str:
        return f"Services({sum(len(v) for v in self._by_kind.values())} registered)"
