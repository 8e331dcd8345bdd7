"""``Catalog``: a named collection of actions to list, search and expose as tools."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from typing import Any

from jido._action import Action
from jido._errors import DefinitionError

__all__ = ["Catalog"]


class Catalog:
    """Actions by name, searchable by name, description, category and tag.

    Iterating a catalog yields its action classes (in registration order), so a catalog can be
    passed wherever a tool set is expected (``execute_tool_call(name, args, catalog)``)::

        catalog = Catalog([Deposit, Withdraw])
        catalog.search("deposit")            # substring of name or description
        catalog.list(category="banking", tag="money")
        catalog.to_tools("anthropic")
    """

    def __init__(self, actions: Iterable[type[Action]] = ()) -> None:
        self._by_name: dict[str, type[Action]] = {}
        self.register(*actions)

    def register(self, *actions: type[Action]) -> None:
        """Add actions; a different action under an existing name raises ``DefinitionError``."""
        for act in actions:
            if not (isinstance(act, type) and issubclass(act, Action)):
                raise DefinitionError(
                    f"a catalog holds Action classes, got {act!r}", details={"got": repr(act)}
                )
            prev = self._by_name.get(act.name)
            if prev is not None and prev is not act:
                raise DefinitionError(
                    f"the catalog already has an action named {act.name!r} "
                    f"({prev.__qualname__}); give {act.__qualname__} another name",
                    details={"name": act.name, "actions": [prev.__qualname__, act.__qualname__]},
                )
            self._by_name[act.name] = act

    def unregister(self, name: str) -> None:
        """Remove the action called ``name`` (no error if absent)."""
        self._by_name.pop(name, None)

    def get(self, name: str) -> type[Action] | None:
        """The action called ``name``, or ``None``."""
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> type[Action]:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no action named {name!r}; known: {', '.join(sorted(self._by_name)) or '(none)'}"
            ) from None

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._by_name
        return isinstance(item, type) and self._by_name.get(getattr(item, "name", "")) is item

    def __iter__(self) -> Iterator[type[Action]]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> builtins.list[str]:
        """Action names, sorted."""
        return sorted(self._by_name)

    def categories(self) -> builtins.list[str]:
        """Every category in use, sorted."""
        return sorted({a.category for a in self._by_name.values() if a.category})

    def tags(self) -> builtins.list[str]:
        """Every tag in use, sorted."""
        return sorted({t for a in self._by_name.values() for t in a.tags})

    def list(
        self,
        *,
        category: str | None = None,
        tag: str | None = None,
        tags: Iterable[str] = (),
    ) -> builtins.list[type[Action]]:
        """Actions in ``category`` carrying ``tag`` and all of ``tags`` (filters optional),
        sorted by name."""
        wanted = set(tags)
        if tag is not None:
            wanted.add(tag)
        out = [
            a
            for a in self._by_name.values()
            if (category is None or a.category == category) and wanted <= set(a.tags)
        ]
        return sorted(out, key=lambda a: a.name)

    def search(
        self,
        query: str = "",
        *,
        category: str | None = None,
        tag: str | None = None,
        tags: Iterable[str] = (),
    ) -> builtins.list[type[Action]]:
        """Actions whose name, description, category or tags contain every word of ``query``
        (case-insensitive), within the optional filters. Name matches rank first."""
        words = query.lower().split()
        scored: builtins.list[tuple[int, str, type[Action]]] = []
        for act in self.list(category=category, tag=tag, tags=tags):
            name = act.name.lower()
            haystack = " ".join(
                [name, act.description.lower(), (act.category or "").lower(), *act.tags]
            ).lower()
            if all(w in haystack for w in words):
                rank = 0 if any(w in name for w in words) or not words else 1
                scored.append((rank, act.name, act))
        scored.sort(key=lambda x: (x[0], x[1]))
        return [a for _, _, a in scored]

    def to_tools(self, format: Any = "openai") -> builtins.list[dict[str, Any]]:
        """Tool descriptions of every action (see ``Action.to_tool``), sorted by name."""
        return [self._by_name[n].to_tool(format) for n in self.names()]
