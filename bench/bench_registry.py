"""Cluster registry and coordination: claim, lookup, lock, against same-run baselines.

- claim (``ClusterRegistry.claim``: typed record, msgspec encode, create-if-absent, cache
  update) p50 vs a raw nats-py ``kv.create`` of the same bytes on the same server, and vs the
  same raw create on a bucket a nats-py watcher follows (the registry's cache is a watch);
- cached lookup (``registry.lookup(id)``) vs a plain ``dict.get`` of the same records;
- consistent lookup (``lookup(id, consistent=True)``) vs raw nats-py ``kv.get``;
- lock acquire+release (``async with coord.lock(...)``) vs raw ``kv.create`` + ``kv.delete``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import nats

from bench._harness import Row, Stats, nats_server, sample_async_latency
from foundation.coordination.coordination import Coordination
from foundation.nats.kv import connect
from foundation.registry.registry import ClusterRegistry, RegistryRecord


async def run(quick: bool) -> list[Row]:
    """Measure the registry figures (``quick``: about a second)."""
    n = 300 if quick else 3000
    n_lookup = 20_000 if quick else 200_000
    n_lock = 100 if quick else 1000
    rows: list[Row] = []
    async with nats_server() as url:
        nc = await connect(url)
        raw_nc = await nats.connect(url)
        try:
            registry = ClusterRegistry(nc)
            await registry.start()
            raw_kv = await raw_nc.jetstream().create_key_value(bucket="bench_raw_registry")
            sample = RegistryRecord(agent_id="x", node="n1", type="Account").encode()

            ids = itertools.count()
            raw_ids = itertools.count()

            async def claim() -> Any:
                return await registry.claim(f"a{next(ids)}", node="n1", type="Account")

            async def raw_create() -> Any:
                return await raw_kv.create(f"default.a{next(raw_ids)}", sample)

            # Interleave the two so drift on a noisy machine hits both alike.
            ours: list[float] = []
            base: list[float] = []
            for _ in range(4):
                ours += await sample_async_latency(claim, n=n // 4, warmup=20)
                base += await sample_async_latency(raw_create, n=n // 4, warmup=20)
            rows.append(
                Row.from_stats(
                    "registry",
                    "claim (create-if-absent) p50",
                    "s",
                    Stats.of(ours),
                    "raw nats-py kv.create",
                    Stats.of(base),
                    target="≤ 1.3× raw",
                )
            )

            # The registry keeps a watched cache, so every claim also arrives back through a
            # watch; the same raw create with a nats-py watcher on its bucket shows that cost.
            watched_kv = await raw_nc.jetstream().create_key_value(bucket="bench_raw_watched")
            watcher = await watched_kv.watchall()
            w_ids = itertools.count()

            async def raw_create_watched() -> Any:
                return await watched_kv.create(f"default.a{next(w_ids)}", sample)

            ours2: list[float] = []
            base2: list[float] = []
            for _ in range(4):
                ours2 += await sample_async_latency(claim, n=n // 4, warmup=20)
                base2 += await sample_async_latency(raw_create_watched, n=n // 4, warmup=20)
            await watcher.stop()  # type: ignore[no-untyped-call]
            rows.append(
                Row.from_stats(
                    "registry",
                    "claim p50 vs a watched raw bucket",
                    "s",
                    Stats.of(ours2),
                    "raw kv.create + nats-py watcher",
                    Stats.of(base2),
                    note="like for like: both sides receive their own write back",
                )
            )

            known = [f"a{i}" for i in range(min(1000, next(ids)))]
            table = {k: registry.cached(k) for k in known}
            cyc = itertools.cycle(known)
            cyc2 = itertools.cycle(known)

            async def cached() -> Any:
                return await registry.lookup(next(cyc))

            async def plain() -> Any:
                return table.get(next(cyc2))

            rows.append(
                Row.from_stats(
                    "registry",
                    "lookup from cache p50",
                    "s",
                    Stats.of(await sample_async_latency(cached, n=n_lookup, warmup=1000)),
                    "dict.get (awaited the same way)",
                    Stats.of(await sample_async_latency(plain, n=n_lookup, warmup=1000)),
                    note="bounded staleness: see docs/cluster.md",
                )
            )

            cyc3 = itertools.cycle(known)
            cyc4 = itertools.cycle(known)

            async def consistent() -> Any:
                return await registry.lookup(next(cyc3), consistent=True)

            async def raw_get() -> Any:
                return await raw_kv.get(f"default.{next(cyc4)}")

            rows.append(
                Row.from_stats(
                    "registry",
                    "consistent lookup p50",
                    "s",
                    Stats.of(await sample_async_latency(consistent, n=n, warmup=50)),
                    "raw nats-py kv.get",
                    Stats.of(await sample_async_latency(raw_get, n=n, warmup=50)),
                )
            )

            coord = Coordination(nc, "bench")
            await coord.start()

            async def locked() -> None:
                async with coord.lock("bench", ttl=5):
                    pass

            async def raw_lock() -> None:
                rev = await raw_kv.create("lock.bench", b"x")
                await raw_kv.delete("lock.bench", last=rev)

            rows.append(
                Row.from_stats(
                    "coordination",
                    "lock acquire+release p50",
                    "s",
                    Stats.of(await sample_async_latency(locked, n=n_lock, warmup=10)),
                    "raw nats-py kv.create + kv.delete",
                    Stats.of(await sample_async_latency(raw_lock, n=n_lock, warmup=10)),
                )
            )
            await coord.stop()
            await registry.stop()
        finally:
            await nc.close()
            await raw_nc.close()
    return rows


if __name__ == "__main__":
    for row in asyncio.run(run(quick=True)):
        print(row)
