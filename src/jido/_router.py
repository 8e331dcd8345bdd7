"""``Router``: maps signal types to targets through a trie of dot-separated segments.

Patterns are signal types whose segments may also be wildcards:

* ``*`` matches exactly one segment (``order.*.created`` matches ``order.item.created``);
* ``**`` matches zero or more segments (``order.**`` matches ``order``, ``order.created`` and
  ``order.item.created``; ``**`` alone matches every type).

A pattern may hold several ``**`` but never two side by side (``a.**.**`` is rejected: it
means the same as ``a.**``). Other segments follow the signal type rules (``[A-Za-z0-9_-]+``).

**Order of results.** ``route()`` returns every matching route sorted by, in turn:

1. specificity, most specific first. The specificity of a pattern is the triple
   ``(exact, single, -multi)`` compared lexicographically, larger first, where ``exact`` is its
   number of literal segments, ``single`` its number of ``*`` and ``multi`` its number of
   ``**``. So ``a.b.c`` > ``a.*.c`` = ``a.b.*`` > ``a.b.**`` > ``a.*.*`` > ``a.**`` > ``**``.
2. priority, higher first (an integer from -100 to 100, default 0);
3. registration order, earlier first (a merged route counts as registered when merged).

A route may carry a ``match`` predicate, called with the signal; the route is kept only if it
returns true. When ``route()`` is given a bare type string there is no signal to test, so
routes with a predicate are left out. Results per type string are cached (the cache is
cleared on every change), so repeated types cost one dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from jido._errors import JidoError, RoutingError
from jido._signal import validate_type

if TYPE_CHECKING:
    from jido._signal import Signal

__all__ = ["Route", "Router", "pattern_matches", "pattern_specificity", "validate_pattern"]

MIN_PRIORITY = -100
MAX_PRIORITY = 100

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_\-]+")
_CACHE_MAX = 8192

Predicate = Callable[["Signal"], bool]


def validate_pattern(pattern: object) -> tuple[str, ...]:
    """Check a route pattern and return its segments; raise :class:`jido.RoutingError`."""
    if not isinstance(pattern, str):
        raise RoutingError(
            f"route pattern must be a string, got {type(pattern).__name__}",
            details={"pattern": repr(pattern)},
        )
    if not pattern:
        raise RoutingError(
            "route pattern is empty; use e.g. 'order.created', 'order.*' or 'order.**'",
            details={"pattern": pattern},
        )
    segments = tuple(pattern.split("."))
    previous = ""
    for index, segment in enumerate(segments):
        if not segment:
            raise RoutingError(
                f"route pattern {pattern!r} has an empty segment at position {index}",
                details={"pattern": pattern, "position": index},
            )
        if segment == "**":
            if previous == "**":
                raise RoutingError(
                    f"route pattern {pattern!r} has '**.**'; one '**' already matches any "
                    "number of segments",
                    details={"pattern": pattern, "position": index},
                )
        elif segment != "*" and _SEGMENT_RE.fullmatch(segment) is None:
            raise RoutingError(
                f"route pattern {pattern!r} has an invalid segment {segment!r}; use letters, "
                "digits, '_', '-', or a whole-segment wildcard '*' / '**'",
                details={"pattern": pattern, "segment": segment, "position": index},
            )
        previous = segment
    return segments


def pattern_specificity(segments: Iterable[str]) -> tuple[int, int, int]:
    """Return ``(exact, single, -multi)`` for pattern segments (larger is more specific)."""
    exact = single = multi = 0
    for segment in segments:
        if segment == "*":
            single += 1
        elif segment == "**":
            multi += 1
        else:
            exact += 1
    return exact, single, -multi


def pattern_matches(pattern: str, type: str) -> bool:
    """Reference matcher: does ``pattern`` match signal ``type``? (Simple, not fast.)"""
    pat = validate_pattern(pattern)
    segs = type.split(".")

    def go(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(segs)
        head = pat[i]
        if head == "**":
            return any(go(i + 1, k) for k in range(j, len(segs) + 1))
        if j == len(segs):
            return False
        return (head == "*" or head == segs[j]) and go(i + 1, j + 1)

    return go(0, 0)


class Route:
    """One route: a pattern, a target, a priority and an optional ``match`` predicate."""

    __slots__ = ("_order", "_segments", "match", "pattern", "priority", "target")

    pattern: str
    """The pattern this route matches (see the module doc for wildcards)."""
    target: Any
    """What the route leads to (an action, a handler, anything the caller dispatches on)."""
    priority: int
    """Priority from -100 to 100; higher wins among equally specific routes."""
    match: Predicate | None
    """Optional predicate on the signal; the route applies only when it returns true."""

    def __init__(
        self,
        pattern: str,
        target: Any,
        *,
        priority: int = 0,
        match: Predicate | None = None,
    ) -> None:
        self._segments = validate_pattern(pattern)
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or not MIN_PRIORITY <= priority <= MAX_PRIORITY
        ):
            raise RoutingError(
                f"route priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, "
                f"got {priority!r}",
                details={"pattern": pattern, "priority": repr(priority)},
            )
        if match is not None and not callable(match):
            raise RoutingError(
                f"route match must be a callable taking the signal, got {match!r}",
                details={"pattern": pattern},
            )
        self.pattern = pattern
        self.target = target
        self.priority = priority
        self.match = match
        self._order: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    @property
    def specificity(self) -> tuple[int, int, int]:
        """``(exact, single, -multi)`` segment counts; larger tuples are more specific."""
        return pattern_specificity(self._segments)

    def _set_seq(self, seq: int) -> None:
        exact, single, multi = pattern_specificity(self._segments)
        self._order = (-exact, -single, -multi, -self.priority, seq)

    def __repr__(self) -> str:
        return f"Route({self.pattern!r}, {self.target!r}, priority={self.priority})"


class _Node:
    __slots__ = ("children", "dstar", "routes", "star")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.dstar: _Node | None = None
        self.routes: list[Route] = []

    def empty(self) -> bool:
        return not (self.children or self.star or self.dstar or self.routes)


def _collect(node: _Node, segs: list[str], i: int, n: int, out: list[Route]) -> None:
    while True:
        dstar = node.dstar
        if dstar is not None:
            for j in range(i, n + 1):
                _collect(dstar, segs, j, n, out)
        if i == n:
            if node.routes:
                out.extend(node.routes)
            return
        star = node.star
        if star is not None:
            _collect(star, segs, i + 1, n, out)
        child = node.children.get(segs[i])
        if child is None:
            return
        node = child
        i += 1


def _sort_key(route: Route) -> tuple[int, int, int, int, int]:
    return route._order


class Router:
    """Routes signal types to targets; see the module doc for patterns and result order.

    ``router.add("order.*.created", target, priority=10)``; ``router.route(signal)`` returns
    the matching :class:`Route` objects, most specific first.
    """

    def __init__(self, routes: Iterable[Route | tuple[Any, ...]] = ()) -> None:
        """Make a router, optionally from routes or ``(pattern, target[, priority])`` tuples."""
        self._root = _Node()
        self._routes: list[Route] = []
        self._seq = 0
        self._cache: dict[str, tuple[tuple[Route, ...], bool]] = {}
        for item in routes:
            if isinstance(item, Route):
                self._insert(item)
            elif isinstance(item, tuple) and len(item) in (2, 3):
                self.add(item[0], item[1], priority=item[2] if len(item) == 3 else 0)
            else:
                raise RoutingError(
                    f"a route must be a Route or (pattern, target[, priority]), got {item!r}",
                    details={"route": repr(item)},
                )

    def __len__(self) -> int:
        return len(self._routes)

    def add(
        self,
        pattern: str,
        target: Any,
        *,
        priority: int = 0,
        match: Predicate | None = None,
    ) -> Route:
        """Add a route and return it. Raises :class:`jido.RoutingError` for a bad pattern."""
        route = Route(pattern, target, priority=priority, match=match)
        self._insert(route)
        return route

    def _insert(self, route: Route) -> None:
        self._seq += 1
        route._set_seq(self._seq)
        node = self._root
        for segment in route._segments:
            if segment == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            elif segment == "**":
                if node.dstar is None:
                    node.dstar = _Node()
                node = node.dstar
            else:
                child = node.children.get(segment)
                if child is None:
                    child = node.children[segment] = _Node()
                node = child
        node.routes.append(route)
        self._routes.append(route)
        self._cache.clear()

    def remove(self, route: Route | str, target: Any = ...) -> int:
        """Remove a route object, or every route with a pattern (and, if given, that target).

        Returns how many routes were removed.
        """
        if isinstance(route, Route):
            doomed = [r for r in self._routes if r is route]
        else:
            validate_pattern(route)
            doomed = [
                r
                for r in self._routes
                if r.pattern == route and (target is ... or r.target == target)
            ]
        for r in doomed:
            self._unlink(r)
        if doomed:
            ids = {id(r) for r in doomed}
            self._routes = [r for r in self._routes if id(r) not in ids]
            self._cache.clear()
        return len(doomed)

    def _unlink(self, route: Route) -> None:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for segment in route._segments:
            nxt: _Node | None
            if segment == "*":
                nxt = node.star
            elif segment == "**":
                nxt = node.dstar
            else:
                nxt = node.children.get(segment)
            if nxt is None:
                return
            path.append((node, segment))
            node = nxt
        node.routes = [r for r in node.routes if r is not route]
        # Prune empty branches so removed patterns cost nothing at match time.
        for parent, segment in reversed(path):
            child = (
                parent.star
                if segment == "*"
                else parent.dstar
                if segment == "**"
                else parent.children.get(segment)
            )
            if child is None or not child.empty():
                break
            if segment == "*":
                parent.star = None
            elif segment == "**":
                parent.dstar = None
            else:
                del parent.children[segment]

    def merge(self, other: Router) -> Router:
        """Add copies of every route of ``other`` (in its order) to this router; returns self."""
        for r in other.routes():
            self._insert(Route(r.pattern, r.target, priority=r.priority, match=r.match))
        return self

    def routes(self) -> list[Route]:
        """All routes in registration order."""
        return list(self._routes)

    def clear(self) -> None:
        """Remove every route."""
        self._root = _Node()
        self._routes = []
        self._cache.clear()

    def _lookup(self, sig_type: str) -> tuple[tuple[Route, ...], bool]:
        validate_type(sig_type)
        out: list[Route] = []
        segs = sig_type.split(".")
        _collect(self._root, segs, 0, len(segs), out)
        if len(out) > 1:
            out = list(dict.fromkeys(out))  # a pattern with several '**' may match twice
            out.sort(key=_sort_key)
        found = tuple(out)
        has_predicates = any(r.match is not None for r in found)
        cache = self._cache
        if len(cache) >= _CACHE_MAX:
            del cache[next(iter(cache))]
        entry = cache[sig_type] = (found, has_predicates)
        return entry

    def route(self, signal: Signal | str) -> list[Route]:
        """Return the routes matching a signal (or a bare type string), best first.

        An empty list when nothing matches; a malformed type string raises
        :class:`jido.SignalError` (``details['attribute'] == 'type'``).
        """
        if signal.__class__ is str:
            sig_type: str = signal
            entry = self._cache.get(sig_type) or self._lookup(sig_type)
            if not entry[1]:
                return list(entry[0])
            return [r for r in entry[0] if r.match is None]
        sig_type = signal.type  # type: ignore[union-attr]
        entry = self._cache.get(sig_type) or self._lookup(sig_type)
        if not entry[1]:
            return list(entry[0])
        return [r for r in entry[0] if r.match is None or self._test(r, signal)]  # type: ignore[arg-type]

    @staticmethod
    def _test(route: Route, signal: Signal) -> bool:
        predicate = route.match
        assert predicate is not None
        try:
            return bool(predicate(signal))
        except JidoError:
            raise
        except Exception as exc:
            raise RoutingError(
                f"the match predicate of route {route.pattern!r} raised "
                f"{type(exc).__name__}: {exc}",
                details={"pattern": route.pattern, "signal_type": signal.type},
                cause=exc,
            ) from exc

    def first(self, signal: Signal | str) -> Route:
        """Return the best route, or raise :class:`jido.RoutingError` when none matches."""
        found = self.route(signal)
        if not found:
            sig_type = signal if isinstance(signal, str) else signal.type
            raise RoutingError(
                f"no route matches signal type {sig_type!r}; add a route for it",
                details={"signal_type": sig_type},
            )
        return found[0]
