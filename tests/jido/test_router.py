"""Router: wildcards, order of results, predicates, add/remove/merge, bad patterns, properties."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jido import Route, Router, RoutingError, Signal, SignalError
from jido._router import pattern_matches, pattern_specificity


def targets(routes: list[Route]) -> list[Any]:
    return [r.target for r in routes]


def test_exact_and_wildcards() -> None:
    r = Router()
    r.add("order.item.created", "exact")
    r.add("order.*.created", "star")
    r.add("order.**", "dstar")
    r.add("**", "all")
    r.add("user.*", "user")
    assert targets(r.route("order.item.created")) == ["exact", "star", "dstar", "all"]
    assert targets(r.route("order.x.created")) == ["star", "dstar", "all"]
    assert targets(r.route("order")) == ["dstar", "all"]
    assert targets(r.route("order.a.b.c.d")) == ["dstar", "all"]
    assert targets(r.route("user.x")) == ["user", "all"]
    assert targets(r.route("user")) == ["all"]
    assert targets(r.route("user.x.y")) == ["all"]


def test_double_star_in_the_middle() -> None:
    r = Router()
    r.add("a.**.z", 1)
    assert targets(r.route("a.z")) == [1]
    assert targets(r.route("a.b.c.z")) == [1]
    assert r.route("a.b.c") == []
    r.add("**.z.**", 2)  # can match a.z.z.z in several ways: reported once
    assert targets(r.route("a.z.z.z")) == [1, 2]


def test_specificity_then_priority_then_registration() -> None:
    r = Router()
    r.add("**", "any", priority=100)
    r.add("a.*.*", "a**", priority=50)
    r.add("a.b.**", "ab-dstar")
    r.add("a.b.*", "ab*-low", priority=-5)
    r.add("a.*.c", "a*c")
    r.add("a.b.*", "ab*-first")
    r.add("a.b.*", "ab*-second")
    r.add("a.b.c", "exact", priority=-100)
    assert targets(r.route("a.b.c")) == [
        "exact",
        "a*c",
        "ab*-first",
        "ab*-second",
        "ab*-low",
        "ab-dstar",
        "a**",
        "any",
    ]


def test_specificity_triple() -> None:
    assert pattern_specificity(["a", "*", "**"]) == (1, 1, -1)
    ordered = ["a.b.c", "a.*.c", "a.b.**", "a.*.*", "a.**", "**"]
    keys = [pattern_specificity(p.split(".")) for p in ordered]
    assert keys == sorted(keys, reverse=True)


def test_signal_and_predicates() -> None:
    r = Router()
    r.add("pay.*", "big", match=lambda s: s.data["amount"] > 100)
    r.add("pay.*", "any")
    big = Signal(type="pay.in", source="/s", data={"amount": 500})
    small = Signal(type="pay.in", source="/s", data={"amount": 5})
    assert targets(r.route(big)) == ["big", "any"]
    assert targets(r.route(small)) == ["any"]
    assert targets(r.route("pay.in")) == ["any"]  # no signal: predicate routes left out


def test_predicate_that_raises_is_a_routing_error() -> None:
    r = Router()
    r.add("x", "t", match=lambda s: s.data["missing"])
    with pytest.raises(RoutingError) as exc:
        r.route(Signal(type="x", source="/s", data={}))
    assert exc.value.details["pattern"] == "x"


@pytest.mark.parametrize(
    "bad", ["", "a..b", ".a", "a.", "**.**", "a.**.**", "a*", "a.b*c", "a b", "a/b", "ü", 3]
)
def test_bad_patterns(bad: Any) -> None:
    with pytest.raises(RoutingError):
        Router().add(bad, "t")


@pytest.mark.parametrize("priority", [101, -101, 1.5, True, "1"])
def test_bad_priority(priority: Any) -> None:
    with pytest.raises(RoutingError):
        Router().add("a", "t", priority=priority)


def test_bad_match_and_bad_type() -> None:
    with pytest.raises(RoutingError):
        Router().add("a", "t", match="yes")  # type: ignore[arg-type]
    with pytest.raises(SignalError):
        Router().route("a..b")


def test_remove_merge_routes_and_cache_invalidation() -> None:
    r = Router()
    keep = r.add("a.*", "keep")
    gone = r.add("a.b", "gone")
    r.add("a.b", "other")
    assert targets(r.route("a.b")) == ["gone", "other", "keep"]  # cached now
    assert r.remove(gone) == 1
    assert targets(r.route("a.b")) == ["other", "keep"]
    assert r.remove("a.b", "nope") == 0
    assert r.remove("a.b") == 1
    assert targets(r.route("a.b")) == ["keep"]
    assert r.remove(gone) == 0
    other = Router([("a.b", "merged", 5), Route("z", "zed")])
    r.merge(other)
    assert targets(r.route("a.b")) == ["merged", "keep"]
    assert [x.pattern for x in r.routes()] == ["a.*", "a.b", "z"]
    assert len(r) == 3 and keep in r.routes()
    assert len(other) == 2  # merge copies
    r.remove(keep)
    r.remove("a.b")
    r.remove("z")
    assert len(r) == 0 and r.route("a.b") == []
    assert r._root.empty()  # branches pruned


def test_first_raises_when_nothing_matches() -> None:
    r = Router()
    r.add("a", 1)
    assert r.first("a").target == 1
    with pytest.raises(RoutingError):
        r.first("b")


def test_cache_is_bounded() -> None:
    r = Router()
    r.add("**", 1)
    for i in range(9000):
        r.route(f"t{i}")
    assert len(r._cache) <= 8192


# -- property: trie agrees with the brute-force reference matcher -------------------------

SEGS = ["a", "b", "c"]
pattern_seg = st.sampled_from([*SEGS, "*", "**"])
type_seg = st.sampled_from(SEGS)


def _valid(p: list[str]) -> bool:
    return all(not (x == y == "**") for x, y in itertools.pairwise(p))


patterns = st.lists(pattern_seg, min_size=1, max_size=5).filter(_valid).map(".".join)
types = st.lists(type_seg, min_size=1, max_size=6).map(".".join)


def reference(routes: list[tuple[str, int]], sig_type: str) -> list[int]:
    """Brute force: test every pattern, sort by (specificity desc, priority desc, index)."""
    hits = [(i, p, prio) for i, (p, prio) in enumerate(routes) if pattern_matches(p, sig_type)]
    hits.sort(key=lambda h: (tuple(-x for x in pattern_specificity(h[1].split("."))), -h[2], h[0]))
    return [i for i, _, _ in hits]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    routes=st.lists(st.tuples(patterns, st.integers(-100, 100)), max_size=25),
    probe=st.lists(types, min_size=1, max_size=8),
)
def test_trie_agrees_with_reference(routes: list[tuple[str, int]], probe: list[str]) -> None:
    r = Router()
    for i, (p, prio) in enumerate(routes):
        r.add(p, i, priority=prio)
    for sig_type in probe:
        expected = reference(routes, sig_type)
        assert targets(r.route(sig_type)) == expected
        assert targets(r.route(sig_type)) == expected  # cached answer is the same


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    routes=st.lists(st.tuples(patterns, st.integers(-3, 3)), min_size=1, max_size=15),
    drop=st.sets(st.integers(0, 14)),
    probe=st.lists(types, min_size=1, max_size=5),
)
def test_trie_agrees_after_removals(
    routes: list[tuple[str, int]], drop: set[int], probe: list[str]
) -> None:
    r = Router()
    made = [r.add(p, i, priority=prio) for i, (p, prio) in enumerate(routes)]
    for sig_type in probe:
        r.route(sig_type)  # fill the cache
    for i in drop:
        if i < len(made):
            r.remove(made[i])
    kept = [(p, prio) if i not in drop else ("__gone__", 0) for i, (p, prio) in enumerate(routes)]
    for sig_type in probe:
        expected = [i for i in reference([k for k in kept if k[0] != "__gone__"], sig_type)]
        alive = [i for i in range(len(routes)) if i not in drop]
        assert targets(r.route(sig_type)) == [alive[j] for j in expected]
