"""Our runtime on the peers' workloads (run with the project's interpreter in a fresh process).

``python -m bench.peers.ours_workload [--quick]`` prints one JSON object of samples, in the
same shape as the peers' scripts. The same figures as Ray's and AutoGen's:

* ``creation_rate`` — agents started per second until every new agent answered one call;
* ``call_latency`` — sequential ``ref.call`` of a no-op action (Ray: ``ray.get(a.ping.remote())``;
  AutoGen: ``await runtime.send_message``);
* ``call_throughput`` — a batch of concurrent calls into one agent, until all answered;
* ``publish_latency`` / ``publish_throughput`` — fire-and-forget ``ref.cast`` until the agent's
  action has run (AutoGen: ``publish_message`` to a topic the agent subscribes to);
* ``idle_memory`` — resident memory per idle agent (measured first, in this fresh process).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

from pydantic import BaseModel

from bench._harness import rss_bytes
from jido import Action, Agent, Runtime, Signal

WAITERS: dict[str, Any] = {"fut": None, "left": 0}


class Ping(Action):
    """Answer with nothing (the no-op of the call figures)."""

    async def run(self, params: Any, ctx: Any) -> Any:
        return None


class Hit(Action):
    """Count a fire-and-forget message and wake the publisher when all have arrived."""

    async def run(self, params: Any, ctx: Any) -> Any:
        WAITERS["left"] -= 1
        fut = WAITERS["fut"]
        if WAITERS["left"] <= 0 and fut is not None and not fut.done():
            fut.set_result(None)
        return None


class EchoState(BaseModel):
    """No state to speak of."""

    n: int = 0


class Echo(Agent):
    """The peers' echo agent, in our runtime."""

    state_model = EchoState
    actions = [Ping, Hit]
    routes = [("bench.ping", Ping), ("bench.hit", Hit)]
    mailbox_size = 1_000_000


PING = Signal(type="bench.ping", source="/bench")
HIT = Signal(type="bench.hit", source="/bench")


async def amain(quick: bool) -> dict[str, Any]:
    """Run every figure and return the samples."""
    idle_n = 2_000 if quick else 20_000
    create_rounds, create_n = (2, 200) if quick else (5, 2_000)
    lat_n = 500 if quick else 20_000
    tp_ops, tp_rounds = (1_000, 2) if quick else (20_000, 10)
    perf = time.perf_counter
    loop = asyncio.get_running_loop()
    figures: dict[str, Any] = {}
    async with Runtime() as rt:
        gc.collect()
        before = rss_bytes()
        for i in range(idle_n):
            await rt.start(Echo, id=f"idle-{i}")
        gc.collect()
        figures["idle_memory"] = {"unit": "B", "samples": [(rss_bytes() - before) / idle_n]}
        rates = []
        for r in range(create_rounds):
            t0 = perf()
            refs = [await rt.start(Echo, id=f"c{r}-{i}") for i in range(create_n)]
            await asyncio.gather(*(ref.call(PING) for ref in refs))
            rates.append(create_n / (perf() - t0))
        figures["creation_rate"] = {"unit": "agents/s", "samples": rates}

    async with Runtime() as rt:
        ref = await rt.start(Echo, id="echo")
        for _ in range(200):
            await ref.call(PING)
        lat = []
        for _ in range(lat_n):
            t0 = perf()
            await ref.call(PING)
            lat.append(perf() - t0)
        figures["call_latency"] = {"unit": "s", "samples": lat}

        tps = []
        for r in range(tp_rounds + 1):
            t0 = perf()
            await asyncio.gather(*(ref.call(PING) for _ in range(tp_ops)))
            if r:
                tps.append(tp_ops / (perf() - t0))
        figures["call_throughput"] = {"unit": "calls/s", "samples": tps}

        async def publish_batch(k: int) -> None:
            WAITERS["left"] = k
            WAITERS["fut"] = loop.create_future()
            for _ in range(k):
                await ref.cast(HIT)
            await WAITERS["fut"]

        plat = []
        for i in range(lat_n + 200):
            t0 = perf()
            await publish_batch(1)
            if i >= 200:
                plat.append(perf() - t0)
        figures["publish_latency"] = {"unit": "s", "samples": plat}

        ptps = []
        for r in range(tp_rounds + 1):
            t0 = perf()
            await publish_batch(tp_ops)
            if r:
                ptps.append(tp_ops / (perf() - t0))
        figures["publish_throughput"] = {"unit": "msg/s", "samples": ptps}
    return {"peer": "ours", "version": "jido", "figures": figures}


def main() -> None:
    """Run the workload and print one JSON object of samples on the last line."""
    print(json.dumps(asyncio.run(amain("--quick" in sys.argv))))


if __name__ == "__main__":
    main()
