"""AutoGen core workload (run in the peers virtualenv): ``python autogen_workload.py [--quick]``.

Uses ``autogen_core.SingleThreadedAgentRuntime`` with one ``RoutedAgent`` that answers a
``Ping`` message. Figures: send latency (sequential ``await runtime.send_message``), send
throughput (a batch of concurrent sends), publish latency (``publish_message`` to a topic the
agent subscribes to, until its handler ran), publish throughput (a batch of publishes, until
the handler has seen every one).
"""

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import autogen_core
from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    TypeSubscription,
    message_handler,
)

# No ``from __future__ import annotations`` here: AutoGen reads the handlers' annotations.


@dataclass
class Ping:
    """The request."""

    n: int


WAITERS: dict[str, Any] = {"fut": None, "left": 0}


class Echo(RoutedAgent):
    """Answers a sent ``Ping``; counts published ones and wakes the publisher when done."""

    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        if ctx.is_rpc:
            return message
        WAITERS["left"] -= 1
        fut = WAITERS["fut"]
        if WAITERS["left"] <= 0 and fut is not None and not fut.done():
            fut.set_result(None)
        return message


async def amain(quick: bool) -> dict[str, Any]:
    """Run every figure and return the samples."""
    lat_n = 500 if quick else 20_000
    tp_ops, tp_rounds = (1_000, 2) if quick else (20_000, 10)
    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", lambda: Echo())
    await runtime.add_subscription(TypeSubscription(topic_type="pings", agent_type="echo"))
    runtime.start()
    target = AgentId("echo", "default")
    topic = TopicId("pings", source="default")
    loop = asyncio.get_running_loop()
    perf = time.perf_counter
    figures: dict[str, Any] = {}

    for i in range(200):
        await runtime.send_message(Ping(i), target)
    lat = []
    for i in range(lat_n):
        t0 = perf()
        await runtime.send_message(Ping(i), target)
        lat.append(perf() - t0)
    figures["send_latency"] = {"unit": "s", "samples": lat}

    tps = []
    for r in range(tp_rounds + 1):
        t0 = perf()
        await asyncio.gather(*(runtime.send_message(Ping(i), target) for i in range(tp_ops)))
        if r:
            tps.append(tp_ops / (perf() - t0))
    figures["send_throughput"] = {"unit": "msg/s", "samples": tps}

    async def publish_batch(k: int) -> None:
        WAITERS["left"] = k
        WAITERS["fut"] = loop.create_future()
        for i in range(k):
            await runtime.publish_message(Ping(i), topic)
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
    await runtime.stop()
    return {"peer": "autogen-core", "version": autogen_core.__version__, "figures": figures}


def main() -> None:
    """Run the workload and print one JSON object of samples on the last line."""
    print(json.dumps(asyncio.run(amain("--quick" in sys.argv))))


if __name__ == "__main__":
    main()
