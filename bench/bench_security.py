"""Security: what TLS + authentication, the audit trail and its verification cost.

- a cross-node-style request (a responder on one connection, the caller on another) over
  TLS with operator/JWT authentication and server-enforced permissions, the caller using
  its attested subject, p50 vs the same request on a plain server in the same run;
- an audit append (hash chain, compare-and-set on the last sequence) p50 vs a raw
  JetStream publish to a plain stream on the same secure server;
- ``verify`` of a chain held in memory, records/s, vs hashing the same bytes alone;
- whole calls between real nodes: a cross-node ``ref.call`` and a ``Client`` call through the
  public subject (TLS + creds + the endpoint's authorization step and policy) vs the same
  calls with security off;
- ``spawn`` with the audit trail on vs off on the same secure nodes, in alternating rounds
  (the node's audit writer attached, then detached: nothing recorded), p50 and CPU per spawn.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from pydantic import BaseModel

from bench._harness import Row, Stats, sample_async_latency, until_answered
from foundation import Client, Node
from foundation.hosting.clustered import Clustered
from foundation.security import (
    AuditLog,
    NatsAuth,
    Principal,
    SecureNatsServer,
    principal_subject,
    secure_connect,
    verify_records,
    write_secure_setup,
)
from foundation.security._audit import GENESIS, canonical, record_hash
from foundation.testing import NatsServer
from jido import Action, ActionContext, Agent, Signal


class _CounterState(BaseModel):
    count: int = 0


class _Add(Action):
    """Add ``n``."""

    name = "add"

    class Params(BaseModel):
        n: int = 1

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"count": ctx.state.count + params.n}


async def _echo_rounds(
    responder_url: str, caller_url: str, subject: str, sub_subject: str, n: int, **auth: Any
) -> list[float]:
    node = await secure_connect(responder_url, auth.get("node"))
    caller = await secure_connect(caller_url, auth.get("client"))
    try:

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await node.subscribe(sub_subject, cb=echo)
        await node.flush()
        payload = b"x" * 256
        await until_answered(caller, subject)

        async def call() -> Any:
            return await caller.request(subject, payload, timeout=5)

        return await sample_async_latency(call, n=n, warmup=200)
    finally:
        await caller.close()
        await node.close()


def _chain(n: int) -> list[bytes]:
    out: list[bytes] = []
    prev = GENESIS
    for i in range(1, n + 1):
        data = canonical(
            {
                "v": 1,
                "seq": i,
                "prev": prev,
                "event": "agent.call",
                "tenant": "default",
                "principal": "client/alice",
                "subject": f"acc-{i % 1000}",
                "details": {"digest": "0" * 16},
                "node": "n1",
                "time": "2026-01-01T00:00:00.000000+00:00",
            }
        )
        out.append(data)
        prev = record_hash(data)
    return out


class _Counter(Agent):
    """A counter (the agent the node-level figures call)."""

    state_model = _CounterState
    actions = [_Add]
    routes = [("counter.add", _Add)]


class _ClusteredCounter(Clustered, _Counter, placement="local"):
    """The counter, clustered."""


_SIGNAL = Signal(type="counter.add", source="/bench", data={"n": 1})


async def _nodes(url: str, **security: Any) -> tuple[Node, Node]:
    a = Node(nats=url, name="ba", agents=[_ClusteredCounter], failover=False, **security)
    b = Node(nats=url, name="bb", agents=[_ClusteredCounter], failover=False, **security)
    await a.start()
    await b.start()
    return a, b


async def _node_figures(
    url: str, n: int, client: dict[str, Any], **security: Any
) -> tuple[list[float], list[float]]:
    """Cross-node call and Client call latencies on one cluster."""
    a, b = await _nodes(url, **security)
    run = uuid.uuid4().hex[:8]
    try:
        await a.spawn(_ClusteredCounter, id=f"acc-{run}", node="bb")
        ref = a.ref(f"acc-{run}")
        calls = await sample_async_latency(lambda: ref.call(_SIGNAL), n=n, warmup=100)
        async with Client(nats=url, **client) as c:
            cref = c.ref(f"acc-{run}")
            via_client = await sample_async_latency(lambda: cref.call(_SIGNAL), n=n, warmup=100)
        return calls, via_client
    finally:
        await b.stop()
        await a.stop()


async def _spawn_figures(
    url: str, rounds: int, per_round: int, **security: Any
) -> tuple[list[float], list[float], float, float]:
    """Spawn latencies with the audit trail on and off, and CPU per spawn of each, on one
    secure cluster: rounds alternate between the node's writer attached (every spawn queues a
    record, the writer appends them) and detached (nothing recorded)."""
    a, b = await _nodes(url, audit=True, **security)
    writer = b.security.audit
    assert writer is not None
    run = uuid.uuid4().hex[:8]
    ids = iter(range(10**9))

    async def spawn() -> Any:
        return await b.spawn(_ClusteredCounter, id=f"s-{run}-{next(ids)}")

    on: list[float] = []
    off: list[float] = []
    cpu_on: list[float] = []
    cpu_off: list[float] = []
    try:
        for _ in range(rounds):
            for into, cpu, attached in ((on, cpu_on, writer), (off, cpu_off, None)):
                b.security.audit = attached
                began = time.process_time()
                into += await sample_async_latency(spawn, n=per_round, warmup=5)
                if attached is not None:
                    await attached.flush()  # the trail keeps up (its cost is in the figure)
                cpu.append((time.process_time() - began) / (per_round + 5))
    finally:
        b.security.audit = writer
        await b.stop()
        await a.stop()
    return on, off, statistics.median(cpu_on), statistics.median(cpu_off)


async def _node_rows(setup: Any, quick: bool) -> list[Row]:
    plain = NatsServer()
    secure = SecureNatsServer(setup)
    await plain.astart()
    await secure.astart()
    try:
        return await _node_rows_on(setup, secure.url, plain.url, quick)
    finally:
        await secure.astop()
        await plain.astop()


async def _node_rows_on(setup: Any, secure_url: str, plain_url: str, quick: bool) -> list[Row]:
    n = 300 if quick else 3000
    creds = {"creds": setup.creds_for("node"), "tls_ca": setup.ca}
    client = {"creds": setup.creds_for("client"), "tls_ca": setup.ca}
    sec: tuple[list[float], ...] = ([], [])
    off: tuple[list[float], ...] = ([], [])
    for _ in range(2):  # interleaved: drift on a noisy machine hits every variant alike
        for acc, url, cl, kw in (
            (sec, secure_url, client, {**creds, "audit": True}),
            (off, plain_url, {}, {}),
        ):
            got = await _node_figures(url, n // 2, cl, **kw)
            for into, values in zip(acc, got, strict=True):
                into.extend(values)
    spawn_on, spawn_off, cpu_on, cpu_off = await _spawn_figures(
        secure_url, 4 if quick else 16, 15 if quick else 40, **creds
    )
    return [
        Row.from_stats(
            "security",
            "cross-node call, TLS + creds + endpoint step, p50",
            "s",
            Stats.of(sec[0]),
            "same call, security off",
            Stats.of(off[0]),
            target="≤ 1.15×",
        ),
        Row.from_stats(
            "security",
            "Client call via the public subject, TLS + creds + policy, p50",
            "s",
            Stats.of(sec[1]),
            "same call, security off",
            Stats.of(off[1]),
            target="≤ 1.15×",
        ),
        Row.from_stats(
            "security",
            "spawn with the audit trail on, p50",
            "s",
            Stats.of(spawn_on),
            "spawn with the trail off (same secure nodes, writer detached)",
            Stats.of(spawn_off),
            target="≤ 1.10×",
            note=(
                f"CPU per spawn (both nodes, one process) {cpu_on * 1e6:.0f} µs on vs "
                f"{cpu_off * 1e6:.0f} µs off ({cpu_on / cpu_off:.2f}×); records are batched "
                "by a background writer (20 ms linger)"
            ),
        ),
    ]


async def run(quick: bool) -> list[Row]:
    """Measure the security figures (``quick``: a few seconds)."""
    n = 500 if quick else 5000
    n_audit = 200 if quick else 2000
    n_verify = 20_000 if quick else 1_000_000
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-security-") as tmp:
        setup = write_secure_setup(tmp)
        plain = NatsServer()
        secure = SecureNatsServer(setup)
        await plain.astart()
        await secure.astart()
        try:
            node_auth = NatsAuth.of(creds=setup.creds_for("node"), tls_ca=setup.ca)
            client_auth = NatsAuth.of(creds=setup.creds_for("client"), tls_ca=setup.ca)
            me = Principal("client", "client")
            ours: list[float] = []
            base: list[float] = []
            # interleaved rounds so drift on a noisy machine hits both alike
            for _ in range(4):
                ours += await _echo_rounds(
                    secure.url,
                    secure.url,
                    principal_subject(me, "agent.default.acc-1"),
                    "foundation.from.*.*.agent.>",
                    n // 4,
                    node=node_auth,
                    client=client_auth,
                )
                base += await _echo_rounds(
                    plain.url,
                    plain.url,
                    "foundation.agent.default.acc-1",
                    "foundation.agent.>",
                    n // 4,
                )
            rows.append(
                Row.from_stats(
                    "security",
                    "request over TLS + JWT auth + permissions p50",
                    "s",
                    Stats.of(ours),
                    "same request, plain server",
                    Stats.of(base),
                    target="≤ 1.15× plain (a whole call: see docs/security.md)",
                    note="transport only; action authorization adds a dict lookup",
                )
            )

            nc = await secure_connect(secure.url, node_auth)
            try:
                js = nc.jetstream()
                log = AuditLog(js, node="n1", checkpoint_every=0)
                await log.ensure()
                await js.add_stream(
                    StreamConfig(name="FOUNDATION_SIGNALS", subjects=["foundation.durable.>"])
                )

                async def append() -> Any:
                    return await log.append("agent.call", subject="acc-1")

                async def raw() -> Any:
                    return await js.publish("foundation.durable.x", b"x" * 200)

                a: list[float] = []
                b: list[float] = []
                for _ in range(4):
                    a += await sample_async_latency(append, n=n_audit // 4, warmup=20)
                    b += await sample_async_latency(raw, n=n_audit // 4, warmup=20)
                rows.append(
                    Row.from_stats(
                        "security",
                        "audit append p50",
                        "s",
                        Stats.of(a),
                        "raw JetStream publish",
                        Stats.of(b),
                        note="one writer; several writers retry on a lost compare-and-set",
                    )
                )
            finally:
                await nc.close()
        finally:
            await secure.astop()
            await plain.astop()

        rows += await _node_rows(setup, quick)

    chain = _chain(n_verify)
    t0 = time.perf_counter()
    result = verify_records(chain)
    verify_s = time.perf_counter() - t0
    assert result.ok, result.problems
    t0 = time.perf_counter()
    for data in chain:
        record_hash(data)
    hash_s = time.perf_counter() - t0
    rows.append(
        Row.from_stats(
            "security",
            f"audit verify ({n_verify:,} records)",
            "records/s",
            Stats.of([n_verify / verify_s]),
            "SHA-256 of the same bytes alone",
            Stats.of([n_verify / hash_s]),
            better="higher",
            note="parse + canonical re-encode + hash + chain checks, one core",
        )
    )
    return rows
