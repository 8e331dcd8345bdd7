"""Dashboard: what watching a cluster costs, against same-run baselines.

Two in-process nodes on one real ``nats-server``; node ``a`` calls order desks hosted by ``b``.

- cross-node ``call`` p50 while a dashboard on ``a`` refreshes every 0.1 s (10× the default
  rate) and ``/metrics`` is scraped in a loop, vs the same calls with no dashboard (rounds
  interleaved, so machine drift hits both alike);
- one refresh (``Dashboard.collect``: membership, registry cache, the other node's statistics
  over NATS, the leader lease) vs its floor, one raw nats-py request/reply;
- a ``/metrics`` scrape over HTTP vs the same client fetching a body of the same size from a
  bare ``asyncio`` HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import nats

from bench._harness import Row, Stats, nats_server, sample_async_latency
from foundation._node import Node
from foundation.demo_app import AGENTS, ClusteredOrderDesk
from foundation.observability.dashboard import Dashboard
from jido import Signal


def _order(n: int) -> Signal:
    return Signal(type="order.place", source="/bench", data={"order_id": f"o{n}", "amount": 1})


async def _static_server(body: bytes) -> tuple[asyncio.Server, int]:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def run(quick: bool) -> list[Row]:
    """Measure the dashboard figures (``quick``: a few seconds)."""
    n_calls = 400 if quick else 4000
    n_agents = 50 if quick else 1000
    n_collect = 50 if quick else 500
    n_scrape = 50 if quick else 500
    rows: list[Row] = []
    async with nats_server() as url:
        a = Node(nats=url, name="bench-a", agents=AGENTS, failover=False)
        b = Node(nats=url, name="bench-b", agents=AGENTS, failover=False)
        await a.start()
        await b.start()
        try:
            await a.membership.wait_members(["bench-a", "bench-b"])
            desks = [f"desk-{i}" for i in range(n_agents)]
            for agent_id in desks:
                await a.spawn(ClusteredOrderDesk, id=agent_id, node="bench-b")
            refs = [a.ref(d) for d in desks[:8]]
            counter = iter(range(10**9))

            async def call() -> Any:
                n = next(counter)
                return await refs[n % len(refs)].call(_order(n))

            # 1. calls with and without a busy dashboard, interleaved rounds
            without: list[float] = []
            watched: list[float] = []
            async with httpx.AsyncClient(timeout=10.0) as http:
                rounds = 4 if quick else 10
                for _ in range(rounds):
                    without += await sample_async_latency(call, n=n_calls // rounds, warmup=50)
                    async with Dashboard(a, refresh=0.1) as dash:
                        stop = asyncio.Event()

                        async def scrape(d: Dashboard = dash, s: asyncio.Event = stop) -> None:
                            while not s.is_set():
                                await http.get(d.url + "metrics")
                                await asyncio.sleep(0.1)

                        scraper = asyncio.create_task(scrape())
                        try:
                            watched += await sample_async_latency(
                                call, n=n_calls // rounds, warmup=50
                            )
                        finally:
                            stop.set()
                            await scraper
            rows.append(
                Row.from_stats(
                    "dashboard",
                    "cross-node call p50, dashboard refreshing 10/s + /metrics scraped 10/s",
                    "s",
                    Stats.of(watched),
                    "same calls, no dashboard",
                    Stats.of(without),
                    target="≤ 1.05×",
                    extra={"agents": n_agents},
                )
            )

            # 2. one refresh vs one raw request/reply (its floor: one statistics round trip)
            raw = await nats.connect(url)
            try:

                async def respond(msg: Any) -> None:
                    await msg.respond(b"{}")

                sub = await raw.subscribe("bench.echo", cb=respond)
                await raw.flush()

                async def echo() -> Any:
                    return await raw.request("bench.echo", b"{}", timeout=5)

                async with Dashboard(a, refresh=3600) as dash:
                    ours = await sample_async_latency(dash.collect, n=n_collect, warmup=10)
                base = await sample_async_latency(echo, n=n_collect, warmup=10)
                await sub.unsubscribe()
            finally:
                await raw.close()
            rows.append(
                Row.from_stats(
                    "dashboard",
                    f"one refresh (collect), 2 nodes, {n_agents} agents",
                    "s",
                    Stats.of(ours),
                    "raw nats-py request/reply",
                    Stats.of(base),
                    extra={"agents": n_agents},
                )
            )

            # 3. a /metrics scrape vs the same-size static body from a bare asyncio server
            async with Dashboard(a, refresh=3600) as dash, httpx.AsyncClient() as http:
                body = dash.metrics().encode()
                server, port = await _static_server(body)
                try:
                    metrics_url = dash.url + "metrics"
                    static_url = f"http://127.0.0.1:{port}/"

                    async def scrape_ours() -> Any:
                        return await http.get(metrics_url)

                    async def scrape_static() -> Any:
                        return await http.get(static_url)

                    s_ours: list[float] = []
                    s_base: list[float] = []
                    for _ in range(4):
                        s_ours += await sample_async_latency(scrape_ours, n=n_scrape // 4, warmup=5)
                        s_base += await sample_async_latency(
                            scrape_static, n=n_scrape // 4, warmup=5
                        )
                finally:
                    server.close()
                    await server.wait_closed()
            rows.append(
                Row.from_stats(
                    "dashboard",
                    f"/metrics scrape over HTTP ({len(body):,} bytes)",
                    "s",
                    Stats.of(s_ours),
                    "bare asyncio server, same-size static body",
                    Stats.of(s_base),
                    extra={"bytes": len(body)},
                )
            )
        finally:
            await b.stop()
            await a.stop()
    return rows
