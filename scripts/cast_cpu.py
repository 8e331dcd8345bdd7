"""Cross-node cast cost of a source tree, in CPU time: ``python scripts/cast_cpu.py [TREE]``.

Runs the cast loop of ``bench/bench_cluster.py`` with the sending and the hosting node in this
one process (so the CPU time counts both sides), against ``TREE`` (a checkout of any commit;
default: this one). CPU time, unlike wall time, holds still on a machine other work shares,
which makes it the figure to compare commits with, one run after another.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

TREE = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
sys.path[:0] = [str(TREE / "src"), str(TREE)]

from bench.bench_cluster import AGENTS, BUMP, ClusteredBench  # noqa: E402

from foundation import Node  # noqa: E402

try:
    from foundation.testing import NatsServer
except ImportError:  # a tree from before the test kit
    try:
        from foundation.nats.server import NatsServer  # type: ignore[no-redef]
    except ImportError:
        from foundation._server import NatsServer  # type: ignore[no-redef]


async def main(n: int) -> None:
    """Cast ``n`` signals after a warm-up; print casts per second of wall and of CPU time."""
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js")
        await server.astart()
        try:
            host = Node(nats=server.url, name="host", agents=AGENTS)
            driver = Node(nats=server.url, name="driver", agents=[])
            async with host, driver:
                await driver.membership.wait_members(["host"])
                ref = await driver.spawn(ClusteredBench, id="t", node="host")
                for _ in range(2000):
                    await ref.cast(BUMP)
                await ref.call(BUMP, timeout=60)
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(n):
                    await ref.cast(BUMP)
                await ref.call(BUMP, timeout=60)  # ordered after the casts: all applied
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"{TREE}: {n / wall:,.0f} casts/s wall, {n / cpu:,.0f} casts/s CPU")
        finally:
            await server.astop()


if __name__ == "__main__":
    asyncio.run(main(int(os.environ.get("CASTS", "20000"))))
