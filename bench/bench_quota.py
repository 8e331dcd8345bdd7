"""Quotas: what their checks cost a cross-node call, and whether a tenant at its quota slows
another tenant down.

One embedded ``nats-server`` on loopback; every agent runs in a node process of its own tenant
(``python -m bench.bench_quota --host URL NAME TENANT AGENT``), the callers are nodes of this
process. Tenants here are soft tenants (one NATS account): their agents, registry keys and
quotas are apart, the server and the machine's CPUs are shared.

Figures (each with its same-run baseline):

* cross-node ``call`` p50 with quotas set (every limit of the tenant set, none reached) vs the
  same calls with no quota, in alternating rounds on the same nodes, so drift hits both
  (target ≤ 1.05×). The checks on the call path: one token-bucket take at the sender and one
  at the owner's endpoint (``check_ns``: one of them timed alone).
* tenant B's call p99 while tenant A floods: a third process of tenant A sends twice A's
  ``max_calls_per_second`` (200/s) to A's agent (its node admits the quota; the rest is refused
  with ``QuotaExceededError``, mostly by the sending node), while B's caller times sequential
  calls to B's agent on another node; baseline: B's p99 with A idle. The flood is on and off in
  alternating phases on the wall clock (2 s each, 8 cycles), and each of B's calls counts for
  the phase it ran in, so drift in the machine's load hits both sides (target ≤ 1.20×). A full
  run adds A sending ten times a quota of 50/s (what the refusals themselves cost B) and A
  sending exactly its quota, nothing refused (what A's admitted load alone costs B on shared
  CPUs).
* the 2× figure again with each tenant's processes on a CPU of its own (Linux, 2 CPUs or
  more): A's node and flood on the first CPU, B's node and this process (B's caller) on the
  second, the ``nats-server`` both tenants share left free to run on any. It separates what
  crosses from A to B through the cluster (the shared server, the quota's refusals) from the
  CPU time A's processes take from B's on a shared core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import Row, Stats, quantile, sample_async_latency
from bench.bench_cluster import AGENTS, BUMP, ClusteredBench
from foundation import Node, Quota, QuotaExceededError
from foundation.testing import NatsServer

GROUP = "quotas"
ROOT = Path(__file__).resolve().parents[1]

#: Every limit set, none reached by the benchmark.
GENEROUS = Quota(
    max_agents=10**6,
    max_state_bytes=10**12,
    max_calls_per_second=10**7,
    max_casts_per_second=10**7,
    max_llm_tokens_per_minute=10**9,
)


async def _host(url: str, name: str, tenant: str, agent_id: str) -> None:
    """A node process of ``tenant`` running agent ``agent_id`` until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Node(nats=url, name=name, tenant=tenant, agents=AGENTS, failover=False) as node:
        await node.spawn(ClusteredBench, id=agent_id, node=name)
        print("host ready", flush=True)
        await stop.wait()


def _flooding(t: float, start: float, period: float) -> bool:
    """Whether the flood is on at wall-clock time ``t`` (on and off phases of ``period`` s)."""
    return t >= start and int((t - start) / period) % 2 == 0


async def _flood(
    url: str, tenant: str, agent_id: str, rate: float, start: float, period: float, end: float
) -> None:
    """Call ``agent_id`` at ``rate`` calls per second in the "on" phases from ``start`` (wall
    clock) until ``end``; print what happened."""
    async with Node(nats=url, name=f"flood-{tenant}", tenant=tenant, failover=False) as node:
        ref = node.ref(agent_id)
        counts: dict[str, float] = {"ok": 0, "refused": 0, "failed": 0, "seconds": 0.0}
        gate = asyncio.Semaphore(500)

        async def one() -> None:
            try:
                await ref.call(BUMP)
                counts["ok"] += 1
            except QuotaExceededError:
                counts["refused"] += 1
            except Exception:
                counts["failed"] += 1
            finally:
                gate.release()

        tasks: set[asyncio.Task[None]] = set()
        tick = 0.01
        print("flood ready", flush=True)
        owed = 0.0
        last = time.time()
        while (now := time.time()) < end:
            if _flooding(now, start, period):
                counts["seconds"] += now - last
                owed += rate * (now - last)
                while owed >= 1:
                    await gate.acquire()
                    task = asyncio.ensure_future(one())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    owed -= 1
            last = now
            await asyncio.sleep(tick)
        await asyncio.gather(*tasks)
        print("result " + json.dumps(counts), flush=True)


def _pinnable() -> list[int]:
    """Two CPUs to give one tenant each (empty where affinity cannot be set)."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, allowed)  # a sandbox may refuse it: then no pinned row
    except OSError:
        return []
    cpus = sorted(allowed)
    return cpus[:2] if len(cpus) >= 2 else []


def _pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of process ``pid`` (0: this one) on ``cpus`` only."""
    tasks = Path(f"/proc/{pid or os.getpid()}/task")
    for tid in tasks.iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid.name), cpus)


async def _spawn(*args: str, ready: str) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_quota",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"{args[:2]} exited: {b''.join(lines[-20:]).decode('replace')}")
        lines.append(line)
        if ready.encode() in line:
            return proc


async def _result(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    out: dict[str, Any] = {}
    while line := await proc.stdout.readline():
        if line.startswith(b"result "):
            out = json.loads(line[7:])
    await proc.wait()
    return out


async def _seen(driver: Node, host: str, tenant: str, quota: Quota | None) -> None:
    """Wait until node ``host`` enforces ``quota`` (its ``stats`` reply shows it)."""
    want = quota.limits() if quota is not None else None
    while True:
        stats = await driver.client.request(host, "stats", b"{}")
        rows = (stats.get("quotas") or {}).get(tenant)
        have = (
            {k: float(v["limit"]) for k, v in rows.items() if v["limit"] is not None}
            if rows
            else None
        )
        if have == want:
            return
        await asyncio.sleep(0.02)


async def run(quick: bool) -> list[Row]:
    """Measure the quota figures (``quick``: a few seconds for CI)."""
    rounds = 1 if quick else 10
    n_call = 300 if quick else 800
    flood_quota = 200.0
    rows: list[Row] = []
    procs: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="bench-quota-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js")
        await server.astart()
        try:
            url = server.url
            procs.append(await _spawn("--host", url, "qa", "acme", "a1", ready="host ready"))
            procs.append(await _spawn("--host", url, "qb", "globex", "b1", ready="host ready"))
            driver_a = Node(nats=url, name="driver-a", tenant="acme", failover=False)
            driver_b = Node(nats=url, name="driver-b", tenant="globex", failover=False)
            async with driver_a, driver_b:
                # each tenant's nodes see their own tenant's members only
                await driver_a.membership.wait_members(["qa"])
                await driver_b.membership.wait_members(["qb"])
                await driver_a.registry.wait_change(after=0)
                rows.append(await _overhead(driver_a, rounds, n_call))
                rows.append(await _isolation(url, driver_a, driver_b, flood_quota, 2, quick))
                if cpus := _pinnable():
                    # the tenants' processes on CPUs of their own, the server shared
                    everywhere = os.sched_getaffinity(0)
                    _pin(procs[0].pid, {cpus[0]})
                    _pin(procs[1].pid, {cpus[1]})
                    _pin(0, {cpus[1]})
                    try:
                        rows.append(
                            await _isolation(
                                url, driver_a, driver_b, flood_quota, 2, quick, pin=cpus[0]
                            )
                        )
                    finally:
                        for pid in (procs[0].pid, procs[1].pid, 0):
                            _pin(pid, everywhere)
                if not quick:
                    # far above a small quota: what refusals cost B
                    rows.append(await _isolation(url, driver_a, driver_b, 50.0, 10, quick))
                    # exactly at the quota, nothing refused: what A's admitted load costs B
                    rows.append(await _isolation(url, driver_a, driver_b, flood_quota, 1, quick))
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    await asyncio.wait_for(_result(proc), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await server.astop()
    return rows


async def _overhead(driver: Node, rounds: int, n: int) -> Row:
    ref = driver.ref("a1")
    await sample_async_latency(lambda: ref.call(BUMP), n=0, warmup=300)
    plain: list[float] = []
    checked: list[float] = []
    for _ in range(rounds):
        await driver.set_quota("acme", None)
        await _seen(driver, "qa", "acme", None)
        plain += await sample_async_latency(lambda: ref.call(BUMP), n=n, warmup=50)
        await driver.set_quota("acme", GENEROUS)
        await _seen(driver, "qa", "acme", GENEROUS)
        checked += await sample_async_latency(lambda: ref.call(BUMP), n=n, warmup=50)
    # the check alone, in this process (the same code the owner runs per call)
    check = driver.quotas.admit_delivery
    reps = 100_000
    t0 = time.perf_counter()
    for _ in range(reps):
        check("call")
    check_ns = (time.perf_counter() - t0) / reps * 1e9
    await driver.set_quota("acme", None)
    return Row.from_stats(
        GROUP,
        "cross-node call p50, every quota set (2 processes)",
        "s",
        Stats.of(checked),
        "the same call, no quota (alternating rounds)",
        Stats.of(plain),
        target="≤ 1.05×",
        extra={"rounds": rounds, "check_ns": round(check_ns)},
    )


async def _isolation(
    url: str,
    driver_a: Node,
    driver_b: Node,
    quota: float,
    times: int,
    quick: bool,
    pin: int | None = None,
) -> Row:
    ref_b = driver_b.ref("b1")
    await driver_a.set_quota("acme", Quota(max_calls_per_second=quota))
    await _seen(driver_a, "qa", "acme", Quota(max_calls_per_second=quota))
    await sample_async_latency(lambda: ref_b.call(BUMP), n=0, warmup=300)
    period, cycles = (1.0, 2) if quick else (2.0, 8)
    start = time.time() + 3.0  # the flood process is up by then
    end = start + 2 * period * cycles
    rate = times * quota
    flood = await _spawn(
        "--flood", url, "acme", "a1", str(rate), str(start), str(period), str(end), ready="ready"
    )
    if pin is not None:
        _pin(flood.pid, {pin})  # tenant A's CPU
    loaded: list[float] = []
    alone: list[float] = []
    settle = 0.1  # samples this close to a phase change are not counted
    try:
        await asyncio.sleep(max(0.0, start - time.time()))
        perf = time.perf_counter
        while (t0 := time.time()) < end:
            p0 = perf()
            await ref_b.call(BUMP)
            took = perf() - p0
            phase = _flooding(t0, start, period)
            if phase != _flooding(t0 - settle, start, period) or phase != _flooding(
                t0 + took + settle, start, period
            ):
                continue
            (loaded if phase else alone).append(took)
    finally:
        counts = await _result(flood)
    await driver_a.set_quota("acme", None)
    ours, base = Stats.of(loaded), Stats.of(alone)
    # below the p99 too: on a noisy machine the baseline's own tail hides A's effect
    loaded.sort()
    alone.sort()
    tails = {
        f"b_p{round(q * 100)}_{side}": quantile(samples, q)
        for q in (0.90, 0.95)
        for side, samples in (("loaded", loaded), ("alone", alone))
    }
    on = float(counts.get("seconds") or 1.0)
    pinned = ", each tenant on a CPU of its own" if pin is not None else ""
    return Row(
        group=GROUP,
        name=(
            f"tenant B call p99 while tenant A sends {times}x its calls/s quota ({quota:g}/s)"
            + pinned
        ),
        unit="s",
        ours=ours.p99,
        baseline_name="tenant B call p99, tenant A idle (alternating phases)",
        baseline=base.p99,
        p99=ours.p99,
        baseline_p99=base.p99,
        target="≤ 1.20×",
        note=(
            f"A's quota {quota:g} calls/s; A sends {rate:g}/s, the excess is refused"
            if times > 1
            else f"A's quota {quota:g} calls/s; A sends exactly that, nothing refused"
        )
        + ("; A's processes on one CPU, B's on another, nats-server on any" if pinned else "")
        + f"; B's p95 {tails['b_p95_loaded'] / tails['b_p95_alone']:.2f}×",
        extra={
            "n": ours.n,
            "baseline_n": base.n,
            "b_p50_loaded": ours.median,
            "b_p50_alone": base.median,
            **tails,
            "phases_s": period,
            "cycles": cycles,
            "a_admitted_per_s": round(counts.get("ok", 0) / on, 1),
            "a_refused_per_s": round(counts.get("refused", 0) / on, 1),
            "a_failed": counts.get("failed", 0),
            "pinned": pin is not None,
        },
    )


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--host"]:
        asyncio.run(_host(*argv[1:5]))
    elif argv[:1] == ["--flood"]:
        url, tenant, agent_id, *times = argv[1:8]
        rate, start, period, end = map(float, times)
        asyncio.run(_flood(url, tenant, agent_id, rate, start, period, end))
    else:
        for row in asyncio.run(run(quick="--smoke" in argv)):
            print(row.to_dict())


if __name__ == "__main__":
    _main(sys.argv[1:])
