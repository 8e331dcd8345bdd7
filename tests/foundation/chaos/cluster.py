"""A reusable chaos test cluster: M NATS servers, N node processes, fault hooks, a history.

```python
async with ChaosCluster(tmp_path, nodes=3, servers=1) as cc:
    ids = await cc.spawn(DurableCounter, 6)
    await cc.publish(ids[0])                 # acked by JetStream -> recorded as an Ack
    await cc.call(ids[1])                    # a reply -> Ack; an error -> Unsure
    cc.kill_node("n2")                       # SIGKILL (records the critical agents it owned)
    await cc.wait_recovered()                # each comes back elsewhere -> Serving
    await cc.collect()                       # state and registry histories, terms, finals
    cc.history.assert_ok(budget=cc.budget)   # the four invariants
```

The driver is an in-process :class:`foundation.Node` that hosts no agent type (so placement
never chooses it) and does not campaign for leadership: leaders are node processes only. The
state and registry buckets are created by the fixture first with their whole history kept, so
every committed write (its revision, epoch, checkpoint seq and writer pid) can be read back at
the end; nodes open the existing buckets as they are.

Faults: :meth:`kill_node` (SIGKILL), :meth:`pause_node` / :meth:`resume_node` (SIGSTOP /
SIGCONT), :meth:`restart_node`, :meth:`kill_server` / :meth:`restart_server` (including the
stream leader: :meth:`stream_leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nats.js.errors
import orjson

from foundation import _wire as wire
from foundation._errors import CorruptRecordError
from foundation._node import Node
from foundation.coordination.coordination import COORD_MARKER_TTL
from foundation.failover.failover import LEADER_KEY, TERM_KEY
from foundation.hosting.state import ACTIVATION_MARK
from foundation.messaging.inbox import send_to_inbox
from foundation.messaging.policies import AwaitFailover
from foundation.nats.kv import KV, BucketSpec, connect
from foundation.registry.registry import RegistryRecord
from foundation.testing import LocalCluster, NatsCluster, NatsProxy, NatsServer
from jido import JidoError, Signal
from jido._store import Checkpoint
from tests.foundation.chaos.history import (
    Assignment,
    FinalState,
    History,
    Kill,
    Serving,
    StateWrite,
    Term,
    applied_ids,
)
from tests.foundation.conftest import node_cluster

APP = "tests.foundation.chaos.app:AGENTS"

#: Generous bound on "back in service" for the chaos suite on a loaded 2-core CI machine; the
#: real figure (p50/p99) is measured by ``bench/bench_failover.py``.
DEFAULT_BUDGET = 15.0

_KEEP_ALL = 1_000_000  # revisions kept per key in the recorded buckets


class ChaosCluster:
    """Start NATS (1 or 3 servers) and N node processes; inject faults; record a history."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        nodes: int = 3,
        servers: int = 1,
        app: str = APP,
        budget: float = DEFAULT_BUDGET,
        call_timeout: float = 8.0,
        proxy: bool = False,
    ) -> None:
        self.tmp_path = tmp_path
        self.node_names = [f"n{i + 1}" for i in range(nodes)]
        self.servers = servers
        self.app = app
        self.budget = budget
        self.call_timeout = call_timeout
        self.history = History()
        self.nats: NatsServer | NatsCluster | None = None
        self.procs: LocalCluster | None = None
        self.driver: Node | None = None
        self.pids: dict[int, str] = {}
        self._counter = itertools.count()
        self.killed: set[str] = set()
        self._terms_watch: Any = None
        self._terms_task: asyncio.Task[None] | None = None
        self._want_proxy = proxy
        self.proxy: NatsProxy | None = None  # node processes connect through it when set

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """NATS URL(s) of the cluster."""
        assert self.nats is not None
        return self.nats.url

    async def start(self) -> Self:
        """Start NATS, pre-create the recorded buckets, the driver and the node processes."""
        if self.servers == 1:
            srv = NatsServer(store_dir=self.tmp_path / "js")
            await srv.astart()
            self.nats = srv
        else:
            cluster = NatsCluster(self.servers, store_root=self.tmp_path / "cluster")
            await asyncio.to_thread(cluster.start)
            self.nats = cluster
        # The recorded buckets first, keeping every revision (nodes then open them as they are).
        nc = await connect(self.url, name="chaos-setup")
        try:
            # (Not the coordination bucket: its keys expire by per-message TTL, which needs a
            # history of one. Leader terms are recorded by a live watch instead.)
            for bucket in (wire.STATE_BUCKET, wire.REGISTRY_BUCKET):
                await KV.open(nc, BucketSpec(bucket, history=_KEEP_ALL))
        finally:
            await nc.close()
        # The driver never leads (leaders are node processes only) but waits through failovers.
        self.driver = Node(
            nats=self.url,
            name="driver",
            call_timeout=self.call_timeout,
            failover=False,
            ref_policy=AwaitFailover(),
        )
        await self.driver.start()
        coord = await KV.open(
            self.driver.nc,
            BucketSpec(
                wire.COORD_BUCKET,
                marker_ttl=COORD_MARKER_TTL,
                description="foundation leases, locks, barriers",
            ),
        )
        self._terms_watch = coord.watch("lease.>")
        await self._terms_watch.start()
        self._terms_task = asyncio.create_task(self._record_terms(self._terms_watch))
        nodes_url = self.url
        if self._want_proxy:
            assert isinstance(self.nats, NatsServer), "the proxy fronts a single server"
            self.proxy = await NatsProxy(self.nats.port).start()
            nodes_url = self.proxy.url
        self.procs = node_cluster(nodes_url, app=self.app, log_dir=self.tmp_path / "logs")
        await self.procs.start_nodes(*self.node_names)
        await self.wait_ready(*self.node_names)
        self._note_pids()
        return self

    async def wait_ready(self, *names: str, within: float = 30.0) -> None:
        """Return once every named node answers a ping on its private subject (serving
        requests) and the driver's membership view holds it live (a spawn target again)."""
        node = self._node()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for name in names:
            while True:
                try:
                    await node.nc.request(node.subjects.node(name, "ping"), b"{}", timeout=1.0)
                    break
                except Exception:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.05)  # polling a starting process, not the cluster
        # Answering pings is not enough to be a spawn target: the driver must see it live too.
        await node.membership.wait_members(names, timeout=max(0.1, deadline - loop.time()))

    def _note_pids(self) -> None:
        assert self.procs is not None
        for name, proc in self.procs.nodes.items():
            self.pids[proc.pid] = name

    async def _record_terms(self, watch: Any) -> None:
        async for entry in watch:
            if entry.deleted:
                continue
            try:
                value = orjson.loads(entry.value)
            except orjson.JSONDecodeError:
                continue
            holder = value.get("holder") if isinstance(value, dict) else None
            if holder is None:
                continue
            term = int(value.get("term") or 0) or entry.revision
            self.history.terms.append(Term(term, str(holder)))

    async def aclose(self) -> None:
        """Stop everything that was started (node processes, driver, NATS)."""
        if self._terms_watch is not None:
            await self._terms_watch.stop()
        if self._terms_task is not None:
            self._terms_task.cancel()
            with contextlib.suppress(BaseException):
                await self._terms_task
        if self.procs is not None:
            await self.procs.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.driver is not None:
            with contextlib.suppress(Exception):
                await self.driver.stop()
        if isinstance(self.nats, NatsServer):
            await self.nats.astop()
        elif isinstance(self.nats, NatsCluster):
            await asyncio.to_thread(self.nats.stop)

    async def __aenter__(self) -> Self:
        try:
            return await self.start()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- agents and load ---------------------------------------------------------------------

    def _node(self) -> Node:
        assert self.driver is not None
        return self.driver

    async def spawn(self, cls: type, n: int, *, on: str | None = None) -> list[str]:
        """Spawn ``n`` agents of ``cls`` (placed by their strategy, or on node ``on``)."""
        node = self._node()
        ids = [f"{cls.__name__.lower()}-{next(self._counter)}" for _ in range(n)]
        for agent_id in ids:
            await node.spawn(cls, id=agent_id, node=on)
        return ids

    def _signal(self, agent_id: str, **data: Any) -> Signal:
        return Signal(type="chaos.apply", source="/chaos", subject=agent_id, data=data)

    async def call(self, agent_id: str, *, work: float = 0.0) -> bool:
        """One ``apply`` by request/reply; recorded as acked (reply) or unsure (error)."""
        sig = self._signal(agent_id, work=work)
        self.history.send(agent_id, sig.id)
        try:
            await self._node().ref(agent_id).call(sig, timeout=self.call_timeout)
        except JidoError:
            self.history.unsure_of(agent_id, sig.id)
            return False
        self.history.ack(agent_id, sig.id, time.monotonic())
        return True

    async def publish(self, agent_id: str, **data: Any) -> bool:
        """One ``apply`` (with ``data``) through the agent's JetStream inbox; acked once
        JetStream stored it."""
        sig = self._signal(agent_id, **data)
        self.history.send(agent_id, sig.id)
        try:
            await send_to_inbox(self._node().nc.jetstream(), agent_id, sig)
        except Exception:
            self.history.unsure_of(agent_id, sig.id)
            return False
        self.history.ack(agent_id, sig.id, time.monotonic())
        return True

    async def load(
        self,
        agents: list[str],
        *,
        durable: list[str] = (),
        until: asyncio.Event,  # type: ignore[assignment]
    ) -> int:
        """Drive load until ``until`` is set: one caller per call agent, one publisher per
        durable agent; returns the number of acked signals."""
        acked = 0

        async def caller(agent_id: str, durable_agent: bool) -> None:
            nonlocal acked
            while not until.is_set():
                ok = await (self.publish(agent_id) if durable_agent else self.call(agent_id))
                acked += ok
                if durable_agent:
                    await asyncio.sleep(0.01)  # pace the publisher (inbox drains meanwhile)

        tasks = [asyncio.create_task(caller(a, False)) for a in agents]
        tasks += [asyncio.create_task(caller(a, True)) for a in durable]
        await asyncio.gather(*tasks)
        return acked

    # -- faults ------------------------------------------------------------------------------

    def owned_by(self, node_name: str, *, critical: bool = True) -> tuple[str, ...]:
        """Agents the registry (driver's cache) assigns to ``node_name``."""
        reg = self._node().registry
        return tuple(r.agent_id for r in reg.assigned_to(node_name) if r.critical or not critical)

    def kill_node(self, name: str) -> Kill:
        """SIGKILL node ``name``; record the kill with the critical agents it owned."""
        assert self.procs is not None
        kill = Kill(name, time.monotonic(), self.owned_by(name))
        self.procs.kill(name)
        self.killed.add(name)
        self.history.kills.append(kill)
        return kill

    def pause_node(self, name: str) -> Kill:
        """SIGSTOP node ``name``; recorded like a kill (its agents must come back elsewhere)."""
        assert self.procs is not None
        kill = Kill(name, time.monotonic(), self.owned_by(name))
        self.procs.pause(name)
        self.history.kills.append(kill)
        return kill

    def cut_data_link(self, name: str) -> Kill:
        """Cut only node ``name``'s data connection (its lease and control links keep working);
        recorded like a kill (its agents must come back elsewhere)."""
        assert self.proxy is not None, "start the cluster with proxy=True"
        kill = Kill(name, time.monotonic(), self.owned_by(name))
        self.proxy.cut(f"foundation-node-{name}")
        self.history.kills.append(kill)
        return kill

    def heal_data_link(self, name: str) -> None:
        """Let node ``name``'s data connection flow again."""
        assert self.proxy is not None
        self.proxy.heal(f"foundation-node-{name}")

    def resume_node(self, name: str) -> None:
        """SIGCONT node ``name``."""
        assert self.procs is not None
        self.procs.resume(name)

    async def drain_node(self, name: str, *, within: float = 60.0) -> None:
        """SIGTERM node ``name`` — it drains: hands every agent over with its state, leaves the
        membership and exits — and wait until it has exited and left."""
        assert self.procs is not None
        await self.procs.stop_node(name, within=within)
        await self.procs.wait_left(name)

    def leader(self) -> str | None:
        """Holder of the highest leadership term seen so far (the leader as last observed)."""
        terms = self.history.terms
        return max(terms, key=lambda t: t.term).holder if terms else None

    async def wait_owning(self, name: str, at_least: int, *, within: float) -> float:
        """Wait until the registry assigns at least ``at_least`` agents to node ``name``;
        returns the seconds it took. Raises ``AssertionError`` (with the assignment of every
        node) when it has not happened within ``within`` seconds."""
        node = self._node()
        loop = asyncio.get_running_loop()
        started = loop.time()
        registry = node.registry
        while len(registry.assigned_to(name)) < at_least:
            seen = registry.version
            remaining = started + within - loop.time()
            if remaining <= 0:
                counts = registry.counts_by_node()
                raise AssertionError(
                    f"node {name} still holds {counts.get(name, 0)} agents after {within:.0f} s, "
                    f"expected at least {at_least} (by node: {counts})"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(registry.wait_change(after=seen), remaining)
        return loop.time() - started

    async def restart_node(self, name: str) -> None:
        """Start node ``name`` again (after a kill) and wait until it has joined."""
        assert self.procs is not None
        await self.procs.wait_left(name)
        await self.procs.start_nodes(name)
        await self.wait_ready(name)
        self.killed.discard(name)
        self._note_pids()

    def _cluster(self) -> NatsCluster:
        if not isinstance(self.nats, NatsCluster):
            raise RuntimeError("server faults need a multi-server cluster (servers=3)")
        return self.nats

    async def kill_server(self, i: int) -> None:
        """SIGKILL NATS server ``i`` (its data is kept)."""
        await asyncio.to_thread(self._cluster().kill_server, i)

    async def restart_server(self, i: int) -> None:
        """Start NATS server ``i`` again and wait until the cluster is ready."""
        await asyncio.to_thread(self._cluster().restart_server, i)

    async def stream_leader(self, stream: str) -> int:
        """Index of the server leading ``stream``."""
        return await asyncio.to_thread(self._cluster().stream_leader, stream)

    # -- observation -------------------------------------------------------------------------

    async def whoami(self, agent_id: str, *, timeout: float) -> str | None:  # noqa: ASYNC109
        """Name of the node running ``agent_id`` (asks the agent), or None on error."""
        sig = Signal(type="chaos.whoami", source="/chaos", subject=agent_id)
        try:
            out = await self._node().ref(agent_id).call(sig, timeout=timeout)
        except JidoError:
            return None
        return self.pids.get(int(out.get("pid", 0)), f"pid-{out.get('pid')}")

    async def wait_recovered(self, kill: Kill, *, within: float | None = None) -> None:
        """Probe every critical agent of ``kill`` until it answers from another node (recorded
        as :class:`Serving`); gives up on an agent after ``within`` seconds (default: twice the
        budget), leaving the checker to report it."""
        limit = within if within is not None else 2 * self.budget

        async def one(agent_id: str) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit
            while (remaining := deadline - loop.time()) > 0:
                where = await self.whoami(agent_id, timeout=min(remaining, self.call_timeout))
                if where is not None and where != kill.node:
                    self.history.serving.append(Serving(agent_id, where, time.monotonic()))
                    return
                if where is None:
                    await asyncio.sleep(0.05)  # the call failed outright: try again shortly

        await asyncio.gather(*(one(a) for a in kill.critical))

    async def wait_applied(self, agents: list[str], *, within: float = 60.0) -> None:
        """Wait until every acked signal of ``agents`` shows in their state (bounded)."""
        acked: dict[str, set[str]] = {}
        for ack in self.history.acks:
            acked.setdefault(ack.agent, set()).add(ack.signal_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for agent_id in agents:
            want = acked.get(agent_id, set())
            while loop.time() < deadline:
                state = await self.state(agent_id)
                if state is not None and want <= set(applied_ids(state)):
                    break
                await asyncio.sleep(0.05)

    async def state(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's state as a dict (via its owner), or None when it cannot answer."""
        try:
            model = await self._node().ref(agent_id).state(timeout=self.call_timeout)
        except JidoError:
            return None
        return dict(model.model_dump(mode="json"))

    async def collect(self, agents: list[str]) -> History:
        """Read final states, the state and registry histories and the leader terms."""
        for agent_id in agents:
            state = await self.state(agent_id)
            if state is not None:
                self.history.finals.append(
                    FinalState(agent_id, int(state.get("count", 0)), applied_ids(state))
                )
        await self._read_writes()
        await self._read_assignments()
        await self._report_unapplied()
        return self.history

    async def _report_unapplied(self) -> None:
        """Print, for any agent missing acked signals, how many still wait in its inbox stream
        (shown with a failure: tells a slow inbox from a lost signal)."""
        from foundation.messaging.inbox import INBOX_STREAM, inbox_subject

        acked: dict[str, set[str]] = {}
        for ack in self.history.acks:
            acked.setdefault(ack.agent, set()).add(ack.signal_id)
        js = self._node().nc.jetstream()
        for final in self.history.finals:
            missing = acked.get(final.agent, set()) - set(final.applied)
            if not missing:
                continue
            try:
                info = await js.stream_info(
                    INBOX_STREAM, subjects_filter=inbox_subject(final.agent)
                )
                waiting = sum((info.state.subjects or {}).values())
            except Exception as exc:
                waiting = -1
                print(f"inbox info failed: {exc!r}")
            print(
                f"{final.agent}: {len(missing)} acked signals not applied; "
                f"{waiting} messages still in its inbox stream"
            )

    def summary(self) -> dict[str, int]:
        """Sizes of the recorded history (what the checker looked at)."""
        h = self.history
        return {
            "acks": len(h.acks),
            "unsure": len(h.unsure),
            "writes": len(h.writes),
            "assignments": len(h.assignments),
            "leader_moves": sum(1 for a in h.assignments if a.term is not None),
            "terms": len({t.term for t in h.terms}),
            "kills": len(h.kills),
            "recovered": len(h.serving),
            "finals": len(h.finals),
        }

    async def state_revision(self) -> int:
        """Last revision written to the state bucket so far."""
        info = await self._node().nc.jetstream().stream_info(wire.kv_stream(wire.STATE_BUCKET))
        return int(info.state.last_seq or 0)

    async def _stream(self, stream: str) -> AsyncIterator[tuple[int, str, bytes, dict[str, str]]]:
        """Every message of ``stream``, one at a time (a long run's history does not fit in
        memory as a list: each state write carries the whole list of applied ids)."""
        js = self._node().nc.jetstream()
        info = await js.stream_info(stream)
        first, last = int(info.state.first_seq or 0), int(info.state.last_seq or 0)
        for seq in range(max(first, 1), last + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            yield seq, msg.subject or "", msg.data or b"", dict(msg.headers or {})

    async def _read_writes(self) -> None:
        prefix = wire.kv_subject(wire.STATE_BUCKET, wire.agent_key(wire.DEFAULT_TENANT, ""))
        last_seq: dict[str, int] = {}
        async for seq, subject, data, headers in self._stream(wire.kv_stream(wire.STATE_BUCKET)):
            if not data or headers.get(wire.HDR_KV_OPERATION):
                continue
            agent_id = subject[len(prefix) :]
            try:
                cp = Checkpoint.from_bytes(data, key=agent_id)
            except Exception:
                continue
            marker = bool(cp.meta.get(ACTIVATION_MARK)) and cp.seq == 0
            activation = marker or last_seq.get(agent_id) == cp.seq
            last_seq[agent_id] = cp.seq
            pid = int(cp.state.get("pid", 0) or 0)
            writer = None if activation else self.pids.get(pid)
            self.history.writes.append(
                StateWrite(agent_id, seq, cp.epoch, cp.seq, _digest(cp.state), writer, activation)
            )

    async def _read_assignments(self) -> None:
        async for seq, _subject, data, headers in self._stream(
            wire.kv_stream(wire.REGISTRY_BUCKET)
        ):
            if not data or headers.get(wire.HDR_KV_OPERATION):
                continue
            try:
                rec = RegistryRecord.decode(data, seq)
            except CorruptRecordError:
                continue  # a value no node wrote (the chaos tests may forge some)
            term = rec.metadata.get(TERM_KEY)
            leader = rec.metadata.get(LEADER_KEY)
            stamped = isinstance(term, int) and seq == rec.epoch
            self.history.assignments.append(
                Assignment(
                    rec.agent_id,
                    seq,
                    rec.node,
                    rec.epoch,
                    term=term if stamped else None,
                    writer=str(leader) if stamped and leader else None,
                )
            )


def _digest(state: Any) -> dict[str, Any]:
    """What the checker compares of a committed state, in constant size: the count, the writer
    and a hash of the applied ids (equal states give equal digests, different ones differ)."""
    applied = state.get("applied", []) if isinstance(state, dict) else []
    return {
        "count": state.get("count") if isinstance(state, dict) else None,
        "pid": state.get("pid") if isinstance(state, dict) else None,
        "applied": len(applied),
        "applied_sha256": applied_digest(applied),
    }


def applied_digest(ids: list[str] | tuple[str, ...]) -> str:
    """The hash a state digest holds of its applied ids (compare a prefix of the sent ids)."""
    return hashlib.sha256(orjson.dumps(list(ids))).hexdigest()[:16]


def new_id() -> str:
    """A fresh unique id."""
    return uuid.uuid4().hex[:12]


__all__ = ["APP", "DEFAULT_BUDGET", "ChaosCluster", "applied_digest"]
