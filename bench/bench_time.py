"""Time and activation: spawn rate vs agents registered, a schedule whose owner is killed,
reactivation of a passivated agent.

* **spawn rate vs registered** — a driver node spawns agents into a 3-node cluster (the driver
  and two ``foundation node`` processes, least-loaded placement) with 16 spawns in flight; the
  rate is measured over a window of spawns once 1,000, 10,000 and 100,000 (smoke: 1,000 and
  3,000) agents are registered. Baseline: the same run's rate at 1,000 registered (target: the
  rate at 100,000 ≥ 0.8× the rate at 1,000).
* **schedule fired after its owner is killed** — an agent on a node process arms a schedule
  2.5 s ahead; 1 s before it is due the process is SIGKILLed. Figure: how late the schedule
  fired (on the new owner) after its due time. Baseline: the same schedule with no kill.
  Target: within lease + 1 s (the membership lease is 1 s by default).
* **reactivation** — a call to a passivated agent of a ``jido.Runtime`` (state and schedules
  committed to a ``MemoryStore``; the call starts it again) vs a call to a running agent; and
  the same on a cluster node in the caller's process: a call to a passivated *virtual* agent
  (its record gone from the registry, its state in the KV bucket) activates it — placement, a
  compare-and-set claim, the state read back — vs a call to it once resident. Target: p99 ≤
  5 ms.

* **nats-server's message scheduler** (2.12+; considered for durable schedules, it fires with no
  node up) — how late ``n`` messages published with ``Nats-Schedule: @at <time>`` reach a
  consumer of their target subject, vs how late the same number of agent ``Schedule``
  directives (one per agent of a ``jido.Runtime``, due at the same offsets) run their action.

``python -m bench --only time`` runs it; ``python -m bench.bench_time --max N`` runs only the
spawn-rate figure up to N registered agents and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from bench._harness import Row, Stats
from foundation._node import Node
from foundation.hosting.clustered import Clustered
from foundation.testing import LocalCluster, NatsServer
from jido import Action, ActionContext, Agent, MemoryStore, Runtime, Schedule, Signal

ROOT = Path(__file__).resolve().parents[1]
APP = "bench.bench_time:AGENTS"
WINDOW = 500  # spawns timed at each mark
IN_FLIGHT = 16


class Noop(Action):
    """Do nothing (a spawned agent is only registered and started)."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {}


# type names fixed so that ``python -m bench.bench_time`` (module ``__main__``) and the node
# processes (module ``bench.bench_time``) name the types alike
class Ticket(Clustered, Agent, placement="least_loaded", type_name="bench.bench_time:Ticket"):
    """The smallest clustered agent."""

    actions = [Noop]
    routes = [("ticket.noop", Noop)]


class AlarmState(BaseModel):
    """When the alarm is due, and each firing: (pid of the process, wall time)."""

    due: float = 0.0
    fired: list[tuple[int, float]] = Field(default_factory=list)


class ArmAt(Action):
    """Schedule ``alarm.ring`` for the unix time ``at``."""

    class Params(BaseModel):
        at: float

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        ring = Signal(type="alarm.ring", source="/timer")
        delay = max(0.0, params.at - time.time())
        return {"due": params.at}, Schedule(ring, delay=delay, key="ring")


class Ring(Action):
    """Record when the alarm fired."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"fired": [*ctx.state.fired, (os.getpid(), time.time())]}


class Pid(Action):
    """Answer with the pid of the process running the agent."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"pid": os.getpid()}


class Alarm(
    Clustered, Agent, critical=True, placement="least_loaded", type_name="bench.bench_time:Alarm"
):
    """A critical agent with one durable schedule."""

    state_model = AlarmState
    actions = [ArmAt, Ring, Pid]
    routes = [("alarm.arm", ArmAt), ("alarm.ring", Ring), ("alarm.pid", Pid)]


class Visitor(
    Clustered, Agent, virtual=True, idle_timeout=0.001, type_name="bench.bench_time:Visitor"
):
    """A virtual agent, passivated by the node's sweep once idle (reactivation on a node)."""

    actions = [Noop]
    routes = [("ticket.noop", Noop)]


class Reminder(Agent):
    """An agent with one schedule (the baseline of the server-scheduler figure)."""

    state_model = AlarmState
    actions = [ArmAt, Ring]
    routes = [("alarm.arm", ArmAt), ("alarm.ring", Ring)]


class Session(Agent):
    """A keyed agent passivated by hand in the reactivation figure."""

    actions = [Noop]
    routes = [("ticket.noop", Noop)]


AGENTS: list[type[Agent]] = [Ticket, Alarm]
NOOP = Signal(type="ticket.noop", source="/bench")


# -- spawn rate ------------------------------------------------------------------------------------


async def _spawn_upto(driver: Node, start: int, stop: int) -> float:
    """Spawn agents ``start`` .. ``stop - 1``; return the seconds it took."""
    ids = iter(range(start, stop))
    t0 = time.perf_counter()

    async def worker() -> None:
        for i in ids:
            await driver.spawn(Ticket, id=f"t{i}")

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return time.perf_counter() - t0


async def spawn_rates(url: str, marks: list[int], log_dir: Path) -> dict[int, float]:
    """Spawns per second measured over :data:`WINDOW` spawns at each number registered."""
    rates: dict[int, float] = {}
    async with LocalCluster(
        nats=url,
        nodes=["s1", "s2"],
        app=APP,
        pythonpath=[ROOT],
        cwd=ROOT,
        log_dir=log_dir,
        ready_timeout=60.0,
    ):
        driver = Node(nats=url, name="driver", agents=AGENTS)
        async with driver:
            await driver.membership.wait_members(["s1", "s2", "driver"])
            done = 0
            for mark in marks:
                await _spawn_upto(driver, done, mark)
                took = await _spawn_upto(driver, mark, mark + WINDOW)
                done = mark + WINDOW
                rates[mark] = WINDOW / took
                spread = driver.registry.counts_by_node()
                print(
                    f"  spawn rate at {mark} registered: {rates[mark]:.0f}/s {spread}", flush=True
                )
    return rates


# -- schedule after a kill -------------------------------------------------------------------------


async def _late(driver: Node, procs: LocalCluster, n: int, *, kill: bool) -> float:
    """Seconds between the due time and the firing of one schedule (owner killed or not)."""
    agent_id = f"alarm-{'k' if kill else 'c'}{n}"
    ref = await driver.spawn(Alarm, id=agent_id, node="s1")
    pid = (await ref.call(Signal(type="alarm.pid", source="/bench")))["pid"]
    due = time.time() + 2.5
    await ref.call(Signal(type="alarm.arm", source="/bench", data={"at": due}))
    if kill:
        await asyncio.sleep(max(0.0, due - 1.0 - time.time()))
        procs.kill("s1")
    while True:
        try:
            state = await ref.state()
        except Exception:  # the owner is gone: the ref looks for the next one
            await asyncio.sleep(0.05)
            continue
        fired = getattr(state, "fired", [])
        if fired:
            if len(fired) != 1 or (kill and fired[0][0] == pid):
                raise AssertionError(f"{agent_id} fired {fired} (owner pid {pid})")
            return float(fired[0][1]) - due
        await asyncio.sleep(0.05)


async def kill_lateness(url: str, rounds: int, log_dir: Path) -> tuple[list[float], list[float]]:
    """How late a schedule fires when its owner is SIGKILLed 1 s before due, and without."""
    killed: list[float] = []
    control: list[float] = []
    async with LocalCluster(
        nats=url,
        nodes=[],
        app=APP,
        pythonpath=[ROOT],
        cwd=ROOT,
        log_dir=log_dir,
        ready_timeout=60.0,
    ) as procs:
        await procs.start_nodes("s1", "s2")
        driver = Node(nats=url, name="driver", agents=AGENTS)
        async with driver:
            await driver.membership.wait_members(["s1", "s2"])
            for n in range(rounds):
                control.append(await _late(driver, procs, n, kill=False))
                killed.append(await _late(driver, procs, n, kill=True))
                await driver.membership.wait_gone("s1")
                await procs.restart_node("s1")
                await driver.membership.wait_members(["s1"])
    return killed, control


# -- reactivation ------------------------------------------------------------------------------


async def reactivation(n: int) -> tuple[list[float], list[float]]:
    """Latency of a call that reactivates a passivated agent, and of a call to a running one."""
    cold: list[float] = []
    warm: list[float] = []
    async with Runtime(MemoryStore()) as rt:
        refs = [rt.ref(f"s{i}", cls=Session) for i in range(n)]
        for ref in refs:
            await ref.call(NOOP)
        for ref in refs:
            await rt.passivate(ref.id)
            t0 = time.perf_counter()
            await ref.call(NOOP)  # starts it again from the store
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await ref.call(NOOP)
            warm.append(time.perf_counter() - t0)
    return cold, warm


async def node_reactivation(url: str, n: int) -> tuple[list[float], list[float]]:
    """On a node in this process: a call that reactivates a passivated virtual agent, and the
    call right after it (the agent resident)."""
    cold: list[float] = []
    warm: list[float] = []
    # the sweep runs only when called here, so no agent passivates between the two calls
    node = Node(
        nats=url, name="reactivate", agents=[Visitor], failover=False, reconcile_interval=3600
    )
    async with node:
        refs = [node.ref(f"visitor-{i}", cls=Visitor) for i in range(n)]
        for ref in refs:
            await ref.call(NOOP)  # first activation: the state is committed
        await asyncio.sleep(0.01)  # past the idle timeout
        await node.reconcile()  # passivates every one of them
        passivated = node.host.counters.get("passivations", 0)
        if passivated < n:
            raise RuntimeError(f"only {passivated} of {n} agents passivated")
        for ref in refs:
            t0 = time.perf_counter()
            await ref.call(NOOP)  # activated again: claim, state from the bucket
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await ref.call(NOOP)
            warm.append(time.perf_counter() - t0)
    return cold, warm


# -- nats-server's message scheduler vs agent schedules ------------------------------------------

_STEP = 0.004  # seconds between consecutive due times


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def server_scheduler_lateness(url: str, n: int) -> list[float]:
    """How late nats-server's scheduler delivers ``n`` ``@at`` messages to a consumer."""
    import nats

    nc = await nats.connect(url)
    try:
        config: dict[str, Any] = {
            "name": "BENCH_SCHED",
            "subjects": ["sched.>", "fire.>"],
            "allow_msg_schedules": True,
        }
        reply = orjson.loads(
            (await nc.request("$JS.API.STREAM.CREATE.BENCH_SCHED", orjson.dumps(config))).data
        )
        if "error" in reply:
            raise RuntimeError(f"the server has no message scheduler: {reply['error']}")
        js = nc.jetstream()
        due: dict[str, float] = {}
        late: list[float] = []
        done = asyncio.Event()

        async def on_fire(msg: Any) -> None:
            late.append(time.time() - due[msg.subject.rsplit(".", 1)[1]])
            await msg.ack()
            if len(late) >= n:
                done.set()

        sub = await js.subscribe("fire.>", cb=on_fire, manual_ack=True)
        start = time.time() + 1.0 + n * 0.0005  # after every publish is stored
        for i in range(n):
            due[str(i)] = start + i * _STEP
            headers = {
                "Nats-Schedule": f"@at {_rfc3339(due[str(i)])}",
                "Nats-Schedule-Target": f"fire.{i}",
            }
            await js.publish(f"sched.{i}", b"ring", headers=headers)
        await asyncio.wait_for(done.wait(), 60)
        await sub.unsubscribe()
        return late
    finally:
        await nc.close()


async def agent_schedule_lateness(n: int) -> list[float]:
    """How late ``n`` agents' schedules (due at the same offsets) run their action."""
    async with Runtime(MemoryStore()) as rt:
        refs = [await rt.start(Reminder, id=f"r{i}") for i in range(n)]
        start = time.time() + 1.0
        dues = [start + i * _STEP for i in range(n)]
        for ref, due in zip(refs, dues, strict=True):
            await ref.call(Signal(type="alarm.arm", source="/bench", data={"at": due}))
        await asyncio.sleep(max(0.0, dues[-1] - time.time()) + 2.0)  # all due, and run
        late: list[float] = []
        for ref, due in zip(refs, dues, strict=True):
            fired = (await ref.state()).fired  # type: ignore[attr-defined]
            if len(fired) != 1:
                raise AssertionError(f"{ref.id} fired {len(fired)} times, not once")
            late.append(float(fired[0][1]) - due)
        return late


async def run(quick: bool) -> list[Row]:
    """Measure the time-and-activation figures (``quick``: a few seconds for CI)."""
    marks = [1000, 3000] if quick else [1000, 10_000, 100_000]
    rows: list[Row] = []
    cold, warm = await reactivation(200 if quick else 5000)
    rows.append(
        Row.from_stats(
            "time",
            "call to a passivated agent (reactivation)",
            "s",
            Stats.of(cold),
            "call to a running agent",
            Stats.of(warm),
            target="p99 ≤ 5 ms",
        )
    )
    with tempfile.TemporaryDirectory(prefix="bench-time-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js")
        await server.astart()
        try:
            cold, warm = await node_reactivation(server.url, 100 if quick else 1000)
            rows.append(
                Row.from_stats(
                    "time",
                    "call to a passivated virtual agent, node in this process (reactivation)",
                    "s",
                    Stats.of(cold),
                    "call to it once resident",
                    Stats.of(warm),
                    target="p99 ≤ 5 ms",
                )
            )
            n_sched = 100 if quick else 1000
            theirs = await server_scheduler_lateness(server.url, n_sched)
            ours = await agent_schedule_lateness(n_sched)
            rows.append(
                Row.from_stats(
                    "time",
                    f"nats-server message scheduler: lateness of {n_sched:,} @at messages",
                    "s",
                    Stats.of(theirs),
                    "agent Schedule directives due alike (jido.Runtime)",
                    Stats.of(ours),
                    note="considered for durable schedules; see docs/time.md",
                )
            )
            killed, control = await kill_lateness(server.url, 1 if quick else 3, Path(tmp))
            rows.append(
                Row.from_stats(
                    "time",
                    "schedule fired after its owner was SIGKILLed 1 s before due (lateness)",
                    "s",
                    Stats.of(killed),
                    "same schedule, no kill",
                    Stats.of(control),
                    target="≤ lease + 1 s (2 s)",
                )
            )
        finally:
            await server.astop()
        server = NatsServer(store_dir=Path(tmp) / "js2")
        await server.astart()
        try:
            rates = await spawn_rates(server.url, marks, Path(tmp))
        finally:
            await server.astop()
    base = rates[marks[0]]
    for mark in marks[1:]:
        rows.append(
            Row(
                "time",
                f"spawn rate into 3 nodes at {mark:,} registered",
                "agents/s",
                rates[mark],
                f"rate at {marks[0]:,} registered",
                base,
                better="higher",
                target="≥ 0.8× the rate at 1,000",
            )
        )
    return rows


def main() -> None:
    """``--max N``: only the spawn-rate curve up to N registered agents."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max", type=int, default=100_000)
    args = parser.parse_args()
    marks = [m for m in (1000, 10_000, 100_000) if m <= args.max]

    async def go() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-time-") as tmp:
            server = NatsServer(store_dir=Path(tmp) / "js")
            await server.astart()
            try:
                rates = await spawn_rates(server.url, marks, Path(tmp))
            finally:
                await server.astop()
        for mark, rate in rates.items():
            print(f"{mark:>7} registered: {rate:8.0f} spawns/s ({rate / rates[marks[0]]:.2f}×)")

    asyncio.run(go())


if __name__ == "__main__":
    main()
