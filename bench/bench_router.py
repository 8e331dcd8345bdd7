"""Router matching against 100 / 10,000 / 100,000 mixed routes, with same-run baselines.

Route sets are generated deterministically: about 80 % exact three-segment patterns
(``domain.entity.action``), 15 % with one ``*`` and 5 % with a ``**`` tail (``domain.**``,
``domain.entity.**``). Probe types are drawn from the exact routes plus some unknown types.

Figures (throughputs, higher is better):

* ``route()`` on repeated types (the per-type result cache hit path, what a running agent
  sees) versus a plain ``dict.get`` of the type string in an exact-match table — the floor of
  any lookup; target ≥ 500k matches/s at 10k routes;
* ``route()`` on types it has not cached (the trie walk plus sort, cache cleared before each
  call) versus a brute-force matcher testing every route's compiled regular expression —
  the obvious alternative, and the reference the property tests compare against. The trie's
  rate barely moves from 100 to 100k routes while the brute force falls linearly.
"""

from __future__ import annotations

import gc
import random
import re
import time
from collections.abc import Callable
from typing import Any

from bench._harness import Row, Stats
from jido import Router

GROUP = "router"


def _words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def build(n_routes: int, seed: int = 7) -> tuple[Router, list[str], list[str]]:
    """A router with ``n_routes`` mixed routes, its patterns and probe types."""
    rng = random.Random(seed)
    domains = _words("d", max(4, int(n_routes**0.34)))
    entities = _words("e", max(4, int(n_routes**0.34)))
    actions = _words("a", max(4, int(n_routes**0.34)))
    router = Router()
    patterns: list[str] = []
    exact: list[str] = []
    seen: set[str] = set()
    while len(patterns) < n_routes:
        d, e, a = rng.choice(domains), rng.choice(entities), rng.choice(actions)
        kind = rng.random()
        if kind < 0.80:
            p = f"{d}.{e}.{a}"
        elif kind < 0.95:
            p = rng.choice([f"{d}.*.{a}", f"{d}.{e}.*", f"*.{e}.{a}"])
        else:
            p = rng.choice([f"{d}.**", f"{d}.{e}.**"])
        if p in seen:
            continue
        seen.add(p)
        patterns.append(p)
        if "*" not in p:
            exact.append(p)
        router.add(p, len(patterns), priority=rng.randint(-5, 5))
    probes = [rng.choice(exact) for _ in range(900)] + [f"zz.{i}.none" for i in range(100)]
    rng.shuffle(probes)
    return router, patterns, probes


def _compile(pattern: str) -> re.Pattern[str]:
    """Regex for a pattern, matched against ``"." + type``."""
    rx = ""
    for seg in pattern.split("."):
        if seg == "**":
            rx += r"(?:\.[^.]+)*"
        elif seg == "*":
            rx += r"\.[^.]+"
        else:
            rx += r"\." + re.escape(seg)
    return re.compile(rx)


def _rate(fn: Callable[[str], Any], probes: list[str], *, ops: int, rounds: int) -> Stats:
    n = len(probes)
    for i in range(min(ops, 2000)):
        fn(probes[i % n])
    out: list[float] = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(ops):
                fn(probes[i % n])
            out.append(ops / (time.perf_counter() - t0))
    finally:
        if gc_was:
            gc.enable()
    return Stats.of(out)


async def run(quick: bool) -> list[Row]:
    """Measure and return the rows."""
    sizes = [100, 10_000] if quick else [100, 10_000, 100_000]
    ops = 5_000 if quick else 100_000
    rounds = 3 if quick else 5
    rows: list[Row] = []
    miss_rates: dict[int, float] = {}
    for size in sizes:
        router, patterns, probes = build(size)
        table = {p: [p] for p in patterns if "*" not in p}
        cached = _rate(router.route, probes, ops=ops, rounds=rounds)
        floor = _rate(table.get, probes, ops=ops, rounds=rounds)
        rows.append(
            Row.from_stats(
                GROUP,
                f"route() repeated types, {size:,} routes",
                "matches/s",
                cached,
                "dict.get of the type (exact table)",
                floor,
                better="higher",
                target="≥ 500k/s at 10k routes" if size == 10_000 else "",
            )
        )

        def miss(t: str, router: Router = router) -> Any:
            router._cache.clear()
            return router.route(t)

        uncached = _rate(miss, probes, ops=max(1000, ops // 10), rounds=rounds)
        miss_rates[size] = uncached.median
        compiled = [(_compile(p), p) for p in patterns]

        def brute(t: str, compiled: list[tuple[re.Pattern[str], str]] = compiled) -> Any:
            dotted = "." + t
            return [p for rx, p in compiled if rx.fullmatch(dotted)]

        brute_ops = max(20, min(ops // 10, 2_000_000 // size))
        rows.append(
            Row.from_stats(
                GROUP,
                f"route() uncached (trie), {size:,} routes",
                "matches/s",
                uncached,
                "brute force: every route's regex",
                _rate(brute, probes, ops=brute_ops, rounds=rounds),
                better="higher",
            )
        )
    if len(miss_rates) > 1:
        small, large = min(miss_rates), max(miss_rates)
        rows[-1].note = (
            f"trie rate {large // small}× routes → {miss_rates[small] / miss_rates[large]:.2f}× "
            "slower"
        )
    return rows
