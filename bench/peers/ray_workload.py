"""Ray actors workload (run in the peers virtualenv): ``python ray_workload.py [--quick]``.

Figures: actor creation rate (actors/s until every new actor answered one call), 1:1 call
latency (sequential ``ray.get(actor.ping.remote())``), calls/s into one actor (a batch of
pipelined calls, then ``ray.get`` of all), memory per idle actor (USS of every process of
the Ray session, before and after starting N idle actors, divided by N).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any


def main() -> None:
    """Run the workload and print one JSON object of samples on the last line."""
    import psutil
    import ray

    quick = "--quick" in sys.argv
    create_rounds, create_n = (1, 2) if quick else (3, 8)
    lat_n = 200 if quick else 3_000
    tp_ops, tp_rounds = (500, 2) if quick else (5_000, 5)
    idle_n = 2 if quick else 16

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )

    @ray.remote(num_cpus=0)
    class Echo:
        def ping(self, x: int = 0) -> int:
            return x

    def tree_uss() -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += p.memory_full_info().uss
        return total

    figures: dict[str, Any] = {}
    # warm up the session (workers, GCS) with one actor
    warm = Echo.remote()
    ray.get(warm.ping.remote())

    rates = []
    for _ in range(create_rounds):
        t0 = time.perf_counter()
        actors = [Echo.remote() for _ in range(create_n)]
        ray.get([a.ping.remote() for a in actors])
        rates.append(create_n / (time.perf_counter() - t0))
        for a in actors:
            ray.kill(a)
    figures["creation_rate"] = {"unit": "actors/s", "samples": rates}

    for _ in range(50):
        ray.get(warm.ping.remote())
    lat = []
    for i in range(lat_n):
        t0 = time.perf_counter()
        ray.get(warm.ping.remote(i))
        lat.append(time.perf_counter() - t0)
    figures["call_latency"] = {"unit": "s", "samples": lat}

    tps = []
    ray.get([warm.ping.remote(i) for i in range(tp_ops)])
    for _ in range(tp_rounds):
        t0 = time.perf_counter()
        ray.get([warm.ping.remote(i) for i in range(tp_ops)])
        tps.append(tp_ops / (time.perf_counter() - t0))
    figures["call_throughput"] = {"unit": "calls/s", "samples": tps}

    time.sleep(1.0)  # let workers of killed actors exit before the memory baseline
    before = tree_uss()
    idle = [Echo.remote() for _ in range(idle_n)]
    ray.get([a.ping.remote() for a in idle])
    after = tree_uss()
    figures["idle_memory"] = {"unit": "B", "samples": [(after - before) / idle_n]}
    ray.shutdown()
    print(json.dumps({"peer": "ray", "version": ray.__version__, "figures": figures}))


if __name__ == "__main__":
    main()
