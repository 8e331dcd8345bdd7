"""``Node``: one process of the cluster, hosting clustered agents.

```python
async with Node(agents=[ClusteredAccount]) as node:        # embedded NATS
    ref = await node.spawn(ClusteredAccount, id="acc-1")    # placed anywhere in the cluster
    await ref.call(Signal(type="account.deposit", source="/app", data={"amount": 5}))
    record = await node.registry.lookup("acc-1")            # .node, .epoch
```

Start-up runs named stages in a fixed order (:class:`Stage`); stop runs them in reverse:

1. ``connect`` — connect to NATS (or start an embedded ``nats-server`` when no URL is given);
2. ``buckets`` — open (create idempotently) the KV buckets, with the replication factor set
   from the cluster size;
3. ``membership`` — register this node's record with a TTL lease renewed by heartbeats and
   watch the others (join/leave/expire events); losing the lease fences the node;
4. ``registry`` — start the watched registry cache and ``node.coordination`` (leader
   election, locks, barriers, config; its leases share the membership's control connection);
5. ``runtime`` — the local ``jido.Runtime`` with the fenced :class:`KVStateStore`;
6. ``transport`` — one subscription to this node's private subjects, one (queue group) to
   the public agent subjects, and the cluster bus;
7. ``reconcile`` — the loop that makes the agents running here match the registry, then the
   failover component (campaigns for the cluster leader lease; the leader re-places the agents
   of dead nodes).

The lease-keeping parts (membership heartbeats, coordination leases) use a second NATS
connection, so a flood of agent traffic on the data connection never delays a renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib.metadata
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from foundation import _wire as wire
from foundation._cast_backlog import CastBacklog
from foundation._clustered import ClusterSpec, cluster_spec, type_name_of
from foundation._coordination import Coordination
from foundation._errors import (
    ClusterError,
    InvalidRequestError,
    NodeUnavailableError,
    NotOwnerError,
    PlacementError,
)
from foundation._failover import AwaitFailover, Failover, FailoverOptions
from foundation._kv import KV, BucketSpec, connect
from foundation._link_probe import LinkProbe
from foundation._membership import DEFAULT_LEASE_TTL, Membership
from foundation._placement import PlacementDirector
from foundation._rebalance import OPS as REBALANCE_OPS
from foundation._rebalance import handle_op as handle_rebalance_op
from foundation._ref import RELEASED, ClusterRef, FailFast, UnreachablePolicy, released
from foundation._registry import ClusterRegistry, RegistryRecord
from foundation._state import KVStateStore
from foundation._transport import (
    CAST_BATCH_BYTES,
    OPS,
    WIRE_FEATURES,
    Request,
    Subjects,
    check_agent_id,
    check_size,
    check_token,
    decode_cast_batch,
    decode_public_signal,
    decode_reply,
    decode_request,
    encode_cast,
    encode_cast_batch,
    encode_error,
    encode_ok,
    encode_reply_within,
    encode_request,
    public_meta,
    public_timeout,
)
from jido import (
    AgentNotFoundError,
    AgentStoppedError,
    DefinitionError,
    FencedError,
    JidoError,
    MailboxFullError,
    Runtime,
    Signal,
    StoreError,
)

log = logging.getLogger("foundation.node")

_STOP_STEP_LIMIT = 30.0
"""Seconds one step of ``Node.stop`` may take before it is abandoned (logged)."""
_AGENTS_STOP_LIMIT = 120.0
"""Seconds stopping every local agent may take (each finishes its command in progress)."""

__all__ = ["Node", "NodeDrainingError", "NodeStatistics", "Stage"]


class Stage(enum.IntEnum):
    """Start-up stages of a :class:`Node`, in order (stop runs them in reverse)."""

    CREATED = 0
    CONNECT = 1
    BUCKETS = 2
    MEMBERSHIP = 3
    REGISTRY = 4
    RUNTIME = 5
    TRANSPORT = 6
    RECONCILE = 7
    RUNNING = 8
    DRAINING = 9
    STOPPED = 10


class NodeDrainingError(ClusterError):
    """The node is draining (or stopped) and accepts no new agents. Spawn on another node."""

    type = "node_draining"
    default_retryable = True


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """An immutable snapshot of a node's counters (see :meth:`Node.statistics`)."""

    node_id: str
    stage: str
    agents: int
    calls_in: int
    casts_in: int
    forwarded: int
    calls_out: int
    spawns: int
    starts: int
    stops: int
    fenced_stops: int
    fenced: bool
    draining: bool
    uptime: float
    nats_url: str
    agent_ids: tuple[str, ...] = field(default_factory=tuple)
    casts_backlogged: int = 0
    """Casts waiting in per-agent backlogs now (full mailbox or agent starting)."""
    casts_refused: int = 0
    """Casts refused so far: backlog full, agent absent, or mailbox full past the timeout."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "node_id": self.node_id,
            "stage": self.stage,
            "agents": self.agents,
            "calls_in": self.calls_in,
            "casts_in": self.casts_in,
            "forwarded": self.forwarded,
            "calls_out": self.calls_out,
            "spawns": self.spawns,
            "starts": self.starts,
            "stops": self.stops,
            "fenced_stops": self.fenced_stops,
            "fenced": self.fenced,
            "draining": self.draining,
            "uptime": self.uptime,
            "nats_url": self.nats_url,
            "casts_backlogged": self.casts_backlogged,
            "casts_refused": self.casts_refused,
        }


def _version() -> str:
    try:
        return importlib.metadata.version("foundation-agents")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _default_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:20]
    return f"{host or 'node'}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


Listener = Callable[[Any], Awaitable[None] | None]

_YIELD_MASK = 0xFF  # yield to the event loop every 256 casts sent or received


class Node:
    """A cluster node: joins the cluster, hosts clustered agents and reaches all of them.

    Args:
        nats: NATS URL(s) (``"nats://host:4222"``, comma-separated for several), or ``None`` to
            start an embedded ``nats-server`` (JetStream, loopback, free port) stopped on exit.
        name: the node id (a subject token); a unique id by default. ``node.id == name``.
        agents: the agent classes this node can host (clustered or not).
        capabilities: extra capabilities offered for placement (each hosted type is offered as
            ``type:<type_name>`` automatically).
        resources: capacity offered for resource-aware placement (``{"cpu": 4}``).
        tenant: the tenant whose agents this node serves.
        call_timeout: default timeout of ``call`` / ``state`` through refs, in seconds.
        ref_policy: what refs do when an owner is unreachable (default: wait for the failover
            within the caller's timeout when ``failover`` is on, else fail fast).
        store_dir: JetStream data directory of the embedded server (default: temporary).
        lease_ttl: membership lease in seconds (``None``: the membership default).
        reconcile_interval: period of the full reconciliation sweep, in seconds.
        failover: run the failover component (campaign for the cluster leader lease; while
            leading, re-place the agents of dead nodes): ``True`` (default), ``False``, or
            :class:`~foundation._failover.FailoverOptions`.
    """

    def __init__(
        self,
        nats: str | Sequence[str] | None = None,
        name: str | None = None,
        agents: Iterable[type] = (),
        *,
        capabilities: Iterable[str] = (),
        resources: Mapping[str, float] | None = None,
        tenant: str = wire.DEFAULT_TENANT,
        call_timeout: float = 5.0,
        ref_policy: UnreachablePolicy | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        lease_ttl: float | None = None,
        reconcile_interval: float = 1.0,
        metadata: Mapping[str, Any] | None = None,
        failover: bool | FailoverOptions = True,
    ) -> None:
        self.id: str = check_token("node name", name) if name is not None else _default_name()
        self.tenant = check_token("tenant", tenant)
        self._nats = nats
        self.call_timeout = float(call_timeout)
        self._failover_options: FailoverOptions | None = (
            failover
            if isinstance(failover, FailoverOptions)
            else (FailoverOptions() if failover else None)
        )
        self.failover: Failover | None = None
        self._parked: set[str] = set()  # agents being handed over: not restarted here
        self.ref_policy: UnreachablePolicy = ref_policy or (
            AwaitFailover() if self._failover_options is not None else FailFast()
        )
        self.subjects = Subjects()
        self.resources = dict(resources or {})
        self.metadata = dict(metadata or {})
        self._store_dir = store_dir
        self._lease_ttl = lease_ttl
        self._reconcile_interval = reconcile_interval
        self._types: dict[str, type] = {}
        for cls in agents:
            self._types[type_name_of(cls)] = cls
        self.capabilities: tuple[str, ...] = tuple(
            sorted({*capabilities, *(f"type:{t}" for t in self._types)})
        )
        self.stage = Stage.CREATED
        self._stage_done: dict[Stage, asyncio.Event] = {}
        self._started_at = 0.0
        self._server: Any = None
        self.nc: NatsClient = None  # type: ignore[assignment]
        self._control_nc: NatsClient | None = None
        self._link_probe: LinkProbe | None = None
        self.url = ""
        self.runtime: Runtime = None  # type: ignore[assignment]
        self.registry: ClusterRegistry = None  # type: ignore[assignment]
        self.membership: Membership = None  # type: ignore[assignment]
        self.placement: PlacementDirector = None  # type: ignore[assignment]
        self.coordination: Coordination | None = None
        self.bus: Any = None
        self.state_store: KVStateStore = None  # type: ignore[assignment]
        self._kv: dict[str, KV] = {}
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._local: dict[str, Any] = {}  # agent id -> jido AgentRef (clustered, running here)
        self._starting: dict[str, asyncio.Future[Any]] = {}
        self._unclustered: set[str] = set()
        self._reconcile_wake = asyncio.Event()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._stopping_ids: set[str] = set()
        self._inboxes: dict[str, Any] = {}
        self._durable: set[str] = set()  # local agents whose casts go through their inbox
        self._fenced = False
        self._fenced_event = asyncio.Event()
        self._unfenced = asyncio.Event()  # set while not fenced (see _wait_local)
        self._unfenced.set()
        self._draining = False
        self._stopped = asyncio.Event()
        # casts waiting to go out, per destination node (see _cast_remote / _flush_casts)
        self._cast_out: dict[str, list[bytes]] = {}
        self._cast_out_bytes: dict[str, int] = {}
        self._cast_flush_scheduled = False
        self._backlog = CastBacklog(
            self._wait_local,
            timeout=lambda: self.call_timeout,
            spawn=self._spawn_task,
            owner=self.id,
            not_here=self._not_here,
        )
        self._counters = dict.fromkeys(
            (
                "calls_in",
                "casts_in",
                "forwarded",
                "calls_out",
                "spawns",
                "starts",
                "stops",
                "fenced_stops",
            ),
            0,
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _enter(self, stage: Stage) -> None:
        self.stage = stage
        self._stage_done.setdefault(stage, asyncio.Event()).set()

    async def wait_stage(self, stage: Stage) -> None:
        """Return once the node has reached ``stage``."""
        if self.stage >= stage:
            return
        await self._stage_done.setdefault(stage, asyncio.Event()).wait()

    async def wait_started(self) -> None:
        """Return once start-up has finished (stage ``RUNNING``)."""
        await self.wait_stage(Stage.RUNNING)

    async def wait_stopped(self) -> None:
        """Return once the node has stopped."""
        await self._stopped.wait()

    async def start(self) -> None:
        """Run the start-up stages in order; on failure, undo what was done and re-raise."""
        if self.stage != Stage.CREATED:
            raise ClusterError(f"node {self.id} was already started", details={"node": self.id})
        self._started_at = time.monotonic()
        try:
            await self._start_connect()
            self._enter(Stage.CONNECT)
            await self._start_buckets()
            self._enter(Stage.BUCKETS)
            await self._start_membership()
            self._enter(Stage.MEMBERSHIP)
            await self._start_registry()
            await self._start_coordination()
            self._enter(Stage.REGISTRY)
            await self._start_runtime()
            self._enter(Stage.RUNTIME)
            await self._start_transport()
            self._enter(Stage.TRANSPORT)
            self._reconcile_task = asyncio.create_task(
                self._reconcile_loop(), name=f"reconcile-{self.id}"
            )
            self._enter(Stage.RECONCILE)
            if self._failover_options is not None:
                self.failover = Failover(self, options=self._failover_options)
                await self.failover.start()
        except BaseException:
            await self._teardown()
            raise
        self._enter(Stage.RUNNING)

    async def stop(self) -> None:
        """Stop the node: local agents, transport, runtime, registry, membership, connection.

        Agents are stopped, not handed over: their records stay assigned to this node (use
        :meth:`drain` first to move them away).
        """
        if self.stage == Stage.STOPPED:
            return
        await self._teardown()

    async def _teardown(self) -> None:
        stage = self.stage
        step = self._teardown_step
        if self.failover is not None:
            await step("failover", self.failover.stop())
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            await step("reconciliation", self._reconcile_task)
            self._reconcile_task = None
        if stage >= Stage.TRANSPORT or self._subs:
            for sub in self._subs:
                await step("unsubscribe", sub.unsubscribe())
            self._subs.clear()
            if self.bus is not None:
                await step("cluster bus", self.bus.close())
        await step("pending casts", self._flush_casts())  # casts already accepted still go out
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await step("request tasks", asyncio.gather(*self._tasks, return_exceptions=True))
        if self.runtime is not None:
            await step("agents", self.runtime.__aexit__(None, None, None), _AGENTS_STOP_LIMIT)
        self._local.clear()
        if self.coordination is not None:
            await step("coordination", self.coordination.stop())
        if self.registry is not None:
            await step("registry", self.registry.stop())
        if self.membership is not None:
            await step("membership", self.membership.stop())
        if self._link_probe is not None:
            await step("link probe", self._link_probe.stop())
        for nc in (self.nc, self._control_nc):
            if nc is not None:
                await step("drain connection", nc.drain())
                await step("close connection", nc.close())
        if self._server is not None:
            await step("embedded server", self._server.astop())
            self._server = None
        self.stage = Stage.STOPPED
        self._stopped.set()

    async def _teardown_step(
        self, what: str, aw: Awaitable[Any], limit: float = _STOP_STEP_LIMIT
    ) -> None:
        """Run one step of ``stop``: its errors are logged, and a step that does not finish
        within ``limit`` seconds is abandoned with a warning, so stopping always ends."""
        try:
            await asyncio.wait_for(aw, limit)
        except TimeoutError:
            log.warning(
                "node %s: stopping %s took longer than %.0f s; abandoned", self.id, what, limit
            )
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # stop itself was cancelled; a cancelled step (the reconciler) is not
        except Exception as exc:
            log.debug("node %s: stopping %s: %r", self.id, what, exc)

    # -- stages ------------------------------------------------------------------------------------

    async def _start_connect(self) -> None:
        if self._nats is None:
            from foundation._server import NatsServer

            self._server = NatsServer(store_dir=self._store_dir)
            await self._server.astart()
            self.url = self._server.url
        elif isinstance(self._nats, str):
            self.url = self._nats
        else:
            self.url = ",".join(self._nats)
        self.nc = await connect(
            self.url,
            name=f"foundation-node-{self.id}",
            on_disconnect=self._on_disconnect,
            on_reconnect=self._on_reconnect,
        )
        # The lease gets its own connection, so heartbeat acks never queue behind a flood of
        # agent traffic on the data connection (that would fence a healthy, busy node).
        self._control_nc = await connect(self.url, name=f"foundation-node-{self.id}-control")
        # ... and is given up when the data connection stops answering (a gray failure).
        self._link_probe = LinkProbe(self.nc)
        await self._link_probe.start()

    async def _start_buckets(self) -> None:
        self._kv["state"] = await KV.open(
            self.nc, BucketSpec(wire.STATE_BUCKET, description="foundation agent state")
        )

    async def _start_membership(self) -> None:
        assert self._control_nc is not None
        self.membership = Membership(
            self._control_nc,
            self.id,
            capabilities=list(self.capabilities),
            resources=self.resources,
            load=self._load,
            on_fenced=self._on_fenced,
            on_rejoined=self._on_rejoined,
            lease_ttl=DEFAULT_LEASE_TTL if self._lease_ttl is None else self._lease_ttl,
            version=_version(),
            wire_features=WIRE_FEATURES,
            renew_connect=lambda: connect(self.url, name=f"foundation-node-{self.id}-lease"),
            link_down=self._link_probe.down if self._link_probe is not None else None,
        )
        await self.membership.start()

    async def _start_registry(self) -> None:
        self.registry = ClusterRegistry(self.nc, tenant=self.tenant)
        await self.registry.start()
        self.registry.add_listener(self._on_record_change)
        self.placement = PlacementDirector(self.membership, self.registry)

    async def _start_coordination(self) -> None:
        # Leases (leader, locks) are timing-critical like the membership lease: control link.
        assert self._control_nc is not None
        self.coordination = Coordination(self._control_nc, self.id)
        await self.coordination.start()

    async def _start_runtime(self) -> None:
        self.state_store = KVStateStore(self._kv["state"], owner=self.id, tenant=self.tenant)
        membership = self.membership
        self.state_store.lease_check = lambda: membership.holds_lease
        self.runtime = Runtime(store=self.state_store)
        await self.runtime.__aenter__()
        self.runtime.add_listener(self._on_agent_event)

    async def _start_transport(self) -> None:
        from foundation._cluster_bus import ClusterBus

        self._subs.append(
            await self.nc.subscribe(
                self.subjects.node_wildcard(self.id), cb=self._on_node_msg, pending_msgs_limit=-1
            )
        )
        self._subs.append(
            await self.nc.subscribe(
                self.subjects.agent_wildcard,
                queue=self.subjects.agent_queue,
                cb=self._on_public_msg,
                pending_msgs_limit=-1,
            )
        )
        await self.nc.flush()
        replicas = self._kv["state"].replicas
        self.bus = ClusterBus(self.nc, replicas=replicas)
        await self.bus.start()

    # -- connection events -------------------------------------------------------------------------

    async def _on_disconnect(self) -> None:
        log.info("node %s: NATS connection lost", self.id)

    async def _on_reconnect(self) -> None:
        log.info("node %s: NATS connection restored", self.id)
        self._reconcile_wake.set()

    def _load(self) -> dict[str, Any]:
        return {"agents": len(self._local)}

    # -- helpers used by ClusterRef ----------------------------------------------------------------

    def _local_ref(self, agent_id: str) -> Any:
        if self._fenced and agent_id not in self._unclustered:
            return None
        return self._local.get(agent_id)

    def _is_live(self, node_id: str) -> bool:
        if node_id == self.id:
            return not self._fenced
        return bool(self.membership.is_live(node_id))

    async def _record_of(self, agent_id: str, *, consistent: bool) -> Any:
        return await self.registry.lookup(agent_id, consistent=consistent)

    def _agent_class_of(self, agent_id: str) -> type | None:
        record = self.registry.cached(agent_id)
        return self._types.get(record.type) if record is not None else None

    async def _wait_local(self, agent_id: str, deadline: float) -> Any:
        """The local agent ``agent_id`` once it runs here (``None``: not here, look again).

        An agent the registry assigns here but that is not running yet (starting, or the node
        is rejoining after a fence) is waited for, up to ``deadline``. Never returns a
        clustered agent while the node is fenced.
        """
        ref = self._local_ref(agent_id)
        if ref is not None:
            return ref
        if agent_id in self._parked:
            return None  # being handed over: the caller follows the registry
        pending = self._starting.get(agent_id)
        if pending is None:
            record = self.registry.cached(agent_id)
            if record is None or record.node != self.id:
                return None
            if self._fenced:
                if not await self._wait_rejoined(deadline):
                    return None
                ref = self._local_ref(agent_id)  # the rejoin may have started it already
                if ref is not None:
                    return ref
            self._reconcile_wake.set()
            pending = self._start_future(agent_id)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        with contextlib.suppress(TimeoutError, JidoError):
            await asyncio.wait_for(asyncio.shield(pending), remaining)
        return self._local_ref(agent_id)

    async def _wait_rejoined(self, deadline: float) -> bool:
        """While fenced: True once the node has rejoined, if it is taking its lease back.

        The lease is renewed from its own thread. When the old record expired during the fence,
        that thread creates a new one, and other nodes route requests here again as soon as it
        lands: before the thread has even seen the reply, and before this loop has run the
        rejoin handler (which unfences the state store and restarts the agents). A request
        arriving then waits for that handler instead of being refused. It waits only when the
        membership holds the lease again or is taking it back (``rejoining``: set after the
        fence completed, just before the write); a node that is still fencing (on_fenced
        running) or without a lease answers at once (the caller looks again). Waiting grants
        nothing: the request goes on only once the handler has run.
        """
        membership = self.membership
        if not (membership.holds_lease or membership.rejoining):
            return False
        remaining = min(deadline - asyncio.get_running_loop().time(), self.membership.lease_ttl)
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._unfenced.wait(), remaining)
        return not self._fenced

    def _start_future(self, agent_id: str) -> asyncio.Future[Any]:
        fut = self._starting.get(agent_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._starting[agent_id] = fut
        return fut

    async def _cast_remote(
        self, ref: ClusterRef, signal: Signal, meta: Mapping[str, Any] | None
    ) -> None:
        record = await self._record_of(ref.id, consistent=False)
        if record is None:
            record = await self._record_of(ref.id, consistent=True)
        if record is None:
            raise AgentNotFoundError(
                f"no agent {ref.id!r} is registered in the cluster; spawn it first",
                details={"agent_id": ref.id},
            )
        if self._delivery_of(record) == "at_least_once":
            # The agent's record decides, never what this node happens to know: the cast
            # returns once JetStream holds it in the agent's inbox.
            await self._publish_durable(ref.id, signal, meta)
            return
        if record.node == self.id:
            local = self._local_ref(ref.id)
            if local is None:
                raise NotOwnerError(
                    f"agent {ref.id!r} is assigned here but not running yet",
                    details={"agent_id": ref.id},
                )
            await local.cast(signal, meta=meta)
            return
        if not self._is_live(record.node):
            raise NodeUnavailableError(
                f"agent {ref.id!r} is owned by node {record.node!r}, which is not a live member",
                details={"agent_id": ref.id, "node": record.node},
            )
        c = self._counters
        c["calls_out"] += 1
        item = encode_cast(ref.id, signal, meta)
        check_size(item, self.nc.max_payload, f"cast to agent {ref.id!r}")
        await self._queue_cast(record.node, item)
        if not c["calls_out"] & _YIELD_MASK:
            # A burst of casts never suspends by itself: let heartbeats (the lease) run.
            await asyncio.sleep(0)

    async def _queue_cast(self, node_id: str, item: bytes) -> None:
        """Add one encoded cast to the batch bound for ``node_id``.

        Casts issued in the same event-loop turn to one node leave as one ``casts`` message
        (a JSON array, in order), published when the turn ends or when the batch reaches
        :data:`CAST_BATCH_BYTES`. A cast too large for a batch goes alone (after the batch, so
        order is kept) and a publish error reaches the caller as before.
        """
        nc = self.nc
        if nc.is_closed:
            raise NodeUnavailableError(
                "this node's NATS connection is closed", details={"node": self.id}
            )
        if len(item) > CAST_BATCH_BYTES or not self._serves_casts(node_id):
            await self._flush_casts_to(node_id)
            await nc.publish(self.subjects.node(node_id, "cast"), item)
            return
        batch = self._cast_out.get(node_id)
        if batch is None:
            self._cast_out[node_id] = [item]
            self._cast_out_bytes[node_id] = len(item)
        else:
            batch.append(item)
            self._cast_out_bytes[node_id] += len(item) + 1
            if self._cast_out_bytes[node_id] > CAST_BATCH_BYTES:
                await self._flush_casts_to(node_id)
                return
        if not self._cast_flush_scheduled:
            self._cast_flush_scheduled = True
            self._spawn_task(self._flush_casts())

    def _serves_casts(self, node_id: str) -> bool:
        """True if ``node_id`` understands ``casts`` batches (its record lists the feature)."""
        record = self.membership.snapshot.get(node_id)
        return record is not None and "casts" in record.wire_features

    async def _flush_casts_to(self, node_id: str) -> None:
        """Publish the pending casts for ``node_id`` now (before a request to it, keeping order).

        The batch is taken and handed to ``publish`` without suspending in between, and nats-py
        queues the message before its first suspension, so messages to a node leave in the
        order their casts were issued.
        """
        batch = self._cast_out.pop(node_id, None)
        if batch is None:
            return
        del self._cast_out_bytes[node_id]
        await self.nc.publish(self.subjects.node(node_id, "casts"), encode_cast_batch(batch))

    async def _flush_casts(self) -> None:
        """Publish every pending cast batch (runs once per event-loop turn that queued casts)."""
        self._cast_flush_scheduled = False
        while self._cast_out:
            node_id = next(iter(self._cast_out))
            try:
                await self._flush_casts_to(node_id)
            except Exception as exc:
                log.warning("node %s: casts to node %s not sent: %s", self.id, node_id, exc)

    async def _publish_durable(
        self, agent_id: str, signal: Signal, meta: Mapping[str, Any] | None
    ) -> None:
        from foundation._inbox import send_to_inbox

        await send_to_inbox(
            self.nc.jetstream(),
            agent_id,
            signal,
            tenant=self.tenant,
            max_payload=self.nc.max_payload,
        )

    def _spec_of_record(self, record: RegistryRecord) -> ClusterSpec | None:
        cls = self._types.get(record.type)
        return cluster_spec(cls) if cls is not None else None

    def _delivery_of(self, record: RegistryRecord) -> str:
        """The agent's delivery mode: from its record (a record written before the field
        existed falls back to the class, when this node knows it)."""
        if record.delivery:
            return record.delivery
        spec = self._spec_of_record(record)
        return spec.delivery if spec is not None else "at_most_once"

    # -- transport handlers ------------------------------------------------------------------------

    def _spawn_task(self, coro: Awaitable[Any], name: str | None = None) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_node_msg(self, msg: Msg) -> None:
        op = msg.subject[msg.subject.rfind(".") + 1 :]
        if op == "casts":
            await self._handle_casts(msg)
        elif op == "cast":
            await self._handle_cast(msg)
        elif op == "call":
            self._spawn_task(self._handle_call(msg))
        else:
            self._spawn_task(self._handle_control(op, msg))

    async def _respond(self, msg: Msg, data: bytes) -> None:
        if msg.reply:
            data = encode_reply_within(data, self.nc.max_payload, "this request")
            with contextlib.suppress(Exception):
                await self.nc.publish(msg.reply, data)

    def _not_here(self, agent_id: str) -> NotOwnerError:
        record = self.registry.cached(agent_id) if self.registry is not None else None
        return NotOwnerError(
            f"node {self.id} does not run agent {agent_id!r}; look up its owner again",
            details={
                "agent_id": agent_id,
                "node": self.id,
                "owner": record.node if record is not None else None,
            },
        )

    async def _handle_casts(self, msg: Msg) -> None:
        """Apply a batch of casts in order, each exactly as a single ``cast`` would be."""
        try:
            items = decode_cast_batch(msg.data)
        except JidoError as exc:
            log.warning("node %s: casts batch dropped: %s", self.id, exc)
            return
        for item in items:
            if isinstance(item, JidoError):
                self._counters["casts_in"] += 1
                log.warning("node %s: cast failed: %s", self.id, item)
                continue
            await self._apply_cast(item)

    async def _handle_cast(self, msg: Msg) -> None:
        try:
            req = decode_request(msg.data)
        except JidoError as exc:
            self._counters["casts_in"] += 1
            log.warning("node %s: cast failed: %s", self.id, exc)
            return
        await self._apply_cast(req)

    async def _apply_cast(self, req: Request) -> None:
        """Apply one cast received on this node's subject without ever waiting for its agent.

        Called in the subscription callback, so it must not block: a cast whose agent cannot
        take it now (mailbox full, still starting) waits in that agent's backlog, and so does
        every later cast to it (see :mod:`foundation._cast_backlog`).
        """
        c = self._counters
        c["casts_in"] += 1
        if not c["casts_in"] & _YIELD_MASK:
            await asyncio.sleep(0)  # a flood of casts must not starve the lease heartbeats
        signal = req.signal
        if signal is None:
            log.warning("node %s: cast to %s without a signal dropped", self.id, req.agent_id)
            return
        agent_id = req.agent_id
        try:
            if agent_id in self._durable:
                # A direct cast to an inbox agent (an old or a raw sender) joins its inbox, so
                # it is ordered and applied exactly once like every other signal to it.
                await self._publish_durable(agent_id, signal, req.meta)
                return
            if agent_id not in self._backlog:
                local = self._local_ref(agent_id)
                if local is not None:
                    try:
                        await local.cast(signal, meta=req.meta)
                        return
                    except MailboxFullError:
                        pass
            self._backlog.add(agent_id, signal, req.meta)
        except JidoError as exc:
            log.warning("node %s: cast to %s failed: %s", self.id, agent_id, exc)

    async def _handle_call(self, msg: Msg) -> None:
        self._counters["calls_in"] += 1
        try:
            req = decode_request(msg.data)
            local = self._local_ref(req.agent_id)
            if local is None:
                timeout = req.timeout if req.timeout is not None else self.call_timeout
                local = await self._wait_local(
                    req.agent_id, asyncio.get_running_loop().time() + timeout
                )
                if local is None:
                    raise self._not_here(req.agent_id)
            if req.signal is None:
                raise InvalidRequestError(
                    "a call request needs a signal ('s')", details={"field": "s"}
                )
            try:
                if req.agent_id in self._backlog:
                    # casts wait for this agent: the call goes behind them, in order
                    timeout = req.timeout if req.timeout is not None else self.call_timeout
                    deadline = asyncio.get_running_loop().time() + timeout
                    result = await self._backlog.call(req.agent_id, req.signal, req.meta, deadline)
                else:
                    result = await local.call(req.signal, timeout=req.timeout, meta=req.meta)
            except AgentStoppedError as exc:
                if not released(exc):
                    raise
                # let go (moved, handed over) while the call waited: never handled, so the
                # caller may look up the new owner and send it there
                raise self._not_here(req.agent_id) from exc
            data = encode_ok(result)
        except Exception as exc:
            data = encode_error(exc)
        await self._respond(msg, data)

    async def _handle_control(self, op: str, msg: Msg) -> None:
        try:
            if op == "ping":
                result: Any = {"node": self.id, "agents": len(self._local)}
            elif op == "stats":
                result = self.statistics().to_dict()
            else:
                req = decode_request(msg.data)
                if op == "state":
                    local = self._local_ref(req.agent_id) or await self._wait_local(
                        req.agent_id, asyncio.get_running_loop().time() + self.call_timeout
                    )
                    if local is None:
                        raise self._not_here(req.agent_id)
                    result = (await local.state()).model_dump(mode="json")
                elif op == "start":
                    result = await self._handle_start(req.agent_id, req.extra)
                elif op == "stop":
                    result = {"stopped": await self._stop_local(req.agent_id)}
                elif op in REBALANCE_OPS:
                    result = await handle_rebalance_op(self, op, req.agent_id, req.extra)
                else:
                    raise InvalidRequestError(
                        f"unknown node op {op[:40]!r}; ops are {', '.join((*OPS, *REBALANCE_OPS))}",
                        details={"field": "op"},
                    )
            data = encode_ok(result)
        except Exception as exc:
            data = encode_error(exc)
        await self._respond(msg, data)

    async def _on_public_msg(self, msg: Msg) -> None:
        self._spawn_task(self._handle_public(msg))

    async def _handle_public(self, msg: Msg) -> None:
        try:
            tenant, agent_id = self.subjects.parse_agent(msg.subject)
            if tenant != self.tenant:
                raise AgentNotFoundError(
                    f"tenant {tenant!r} is not served by this cluster's nodes (they serve "
                    f"{self.tenant!r}); send to {self.subjects.agent(agent_id, self.tenant)}",
                    details={"tenant": tenant, "agent_id": agent_id},
                )
            signal = decode_public_signal(msg.headers, msg.data)
            timeout = public_timeout(msg.headers, self.call_timeout)
            meta = public_meta(msg.headers)
            ref = ClusterRef(self, agent_id, tenant=tenant)
            if not msg.reply:
                await ref.cast(signal, meta=meta)
                return
            self._counters["forwarded"] += 1
            result = await ref.call(signal, timeout=timeout, meta=meta)
            data = encode_ok(result)
        except Exception as exc:
            if not msg.reply:
                log.warning("node %s: public cast to %s failed: %s", self.id, msg.subject, exc)
                return
            data = encode_error(exc)
        await self._respond(msg, data)

    # -- agent activation --------------------------------------------------------------------------

    async def _handle_start(self, agent_id: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        epoch = extra.get("epoch")
        for name, ok in (
            ("epoch", epoch is None or (isinstance(epoch, int) and not isinstance(epoch, bool))),
            ("state", extra.get("state") is None or isinstance(extra.get("state"), dict)),
            ("fresh", isinstance(extra.get("fresh", False), bool)),
        ):
            if not ok:
                raise InvalidRequestError(
                    f"start request field {name!r} has the wrong type", details={"field": name}
                )
        record = self.registry.cached(agent_id)
        if isinstance(epoch, int) and (record is None or record.epoch < epoch):
            # The claim or move is not in our watched cache yet: wait for the watch to deliver
            # that revision (usually already on its way) rather than read the server.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.registry.wait_version(epoch), 1.0)
            record = self.registry.cached(agent_id)
        if record is None or not isinstance(epoch, int) or record.epoch != epoch:
            record = await self._record_of(agent_id, consistent=True)
        if record is None or record.node != self.id:
            raise self._not_here(agent_id)
        if self._fenced:
            # Placed here (by a node that already sees this node's new record, or one that has
            # not seen the old one expire yet): the record assigning the agent here is what
            # counts, so let the fence end and the rejoin finish rather than refuse; a spawn
            # refused now would leave its record here anyway. ``_activate`` still refuses while
            # fenced, and a node that never rejoins answers when the wait ends.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unfenced.wait(), self.call_timeout * 0.9)
        state = extra.get("state")
        await self._activate(
            record,
            state=state if isinstance(state, dict) else None,
            fresh=bool(extra.get("fresh")),
        )
        return {"node": self.id, "epoch": record.epoch}

    async def _activate(
        self, record: RegistryRecord, *, state: dict[str, Any] | None = None, fresh: bool = False
    ) -> Any:
        """Start the agent of ``record`` here (once), fenced at ``record.epoch``."""
        agent_id = record.agent_id
        ref = self._local.get(agent_id)
        if ref is not None:
            return ref
        fut = self._starting.get(agent_id)
        if fut is not None and getattr(fut, "_fdn_running", False):
            return await asyncio.shield(fut)
        fut = self._start_future(agent_id)
        fut._fdn_running = True  # type: ignore[attr-defined]
        try:
            if self._fenced or self._draining:
                raise NodeDrainingError(
                    f"node {self.id} is not accepting agents now",
                    details={"node": self.id, "fenced": self._fenced},
                )
            cls = self._types.get(record.type)
            if cls is None:
                raise DefinitionError(
                    f"node {self.id} does not host agent type {record.type!r}; start it with "
                    "that class in its agents list",
                    details={"node": self.id, "type": record.type},
                )
            spec = cluster_spec(cls)
            checkpoint = await self.state_store.activate(
                agent_id, int(record.epoch), agent_type=record.type, fresh=fresh
            )
            initial = state if checkpoint is None else None
            ref = await self.runtime.start(cls, id=agent_id, state=initial)
            self._local[agent_id] = ref
            self._counters["starts"] += 1
            if spec is not None and spec.delivery == "at_least_once":
                after = int(checkpoint.meta.get("stream_seq", 0)) if checkpoint else 0
                try:
                    await self._start_inbox(agent_id, ref, after)
                except Exception as exc:
                    # Without its inbox the agent would never see its signals: undo the start
                    # so the next reconciliation (or start request) tries again.
                    await self._stop_local(agent_id)
                    raise StoreError(
                        f"agent {agent_id!r}: its inbox could not be started ({exc!r}); the "
                        "agent was stopped and will be started again on the next reconciliation",
                        details={"agent_id": agent_id, "node": self.id},
                        retryable=True,
                        cause=exc,
                    ) from exc
            if not fut.done():
                fut.set_result(ref)
            return ref
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters that gave up must not warn
            raise
        finally:
            if self._starting.get(agent_id) is fut:
                del self._starting[agent_id]

    async def _start_inbox(self, agent_id: str, ref: Any, after_seq: int) -> None:
        from foundation._inbox import AgentInbox, Delivered, ensure_inbox_stream

        js = self.nc.jetstream()
        if not getattr(self, "_inbox_stream_ready", False):
            await ensure_inbox_stream(js, replicas=self._kv["state"].replicas)
            self._inbox_stream_ready = True

        async def deliver_batch(items: Sequence[tuple[Signal, int]]) -> Delivered:
            # One mailbox turn: the signals are applied in order and their state is committed
            # with the last applied stream sequence in ONE CAS write, before any directive runs
            # or anything is acked. A failed commit (FencedError included) raises: nothing acked.
            out = await ref.call_batch(
                [signal for signal, _ in items], metas=[{"stream_seq": seq} for _, seq in items]
            )
            return Delivered(out.applied, out.error)

        def stopped(error: BaseException) -> None:
            # The inbox gave up on its own (not stopped by us): restart agent and inbox.
            if self._inboxes.get(agent_id) is inbox and agent_id in self._local:
                log.warning(
                    "node %s: inbox of %s stopped (%r); restarting", self.id, agent_id, error
                )
                self._spawn_task(self._restart_durable(agent_id))

        inbox = AgentInbox(
            js,
            agent_id,
            deliver_batch=deliver_batch,
            tenant=self.tenant,
            after_seq=after_seq,
            on_stopped=stopped,
        )
        await inbox.start()
        self._inboxes[agent_id] = inbox
        self._durable.add(agent_id)

    async def _restart_durable(self, agent_id: str) -> None:
        await self._stop_local(agent_id)
        self._reconcile_wake.set()

    async def _stop_local(self, agent_id: str, *, release: bool = True) -> bool:
        """Stop the local copy of ``agent_id`` (its state stays in the store)."""
        ref = self._local.pop(agent_id, None)
        self._durable.discard(agent_id)
        inbox = self._inboxes.pop(agent_id, None)
        if inbox is not None:
            with contextlib.suppress(Exception):
                await inbox.stop()
        if ref is None:
            return False
        self._stopping_ids.add(agent_id)
        try:
            await self.runtime.stop(agent_id, reason=RELEASED)
        except AgentNotFoundError:
            pass
        except JidoError as exc:  # e.g. the final checkpoint was refused: it stopped anyway
            log.info("node %s: %s stopped with %s", self.id, agent_id, exc.type)
        finally:
            self._stopping_ids.discard(agent_id)
            if release:
                self.state_store.release(agent_id)
        self._counters["stops"] += 1
        return True

    async def _on_agent_event(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        agent_id = getattr(event, "agent_id", "")
        if kind in ("stopped", "crashed") and agent_id in self._local:
            if agent_id in self._stopping_ids:
                return
            # Stopped on its own (fenced, finished, crashed beyond its restart budget).
            self._local.pop(agent_id, None)
            self._unclustered.discard(agent_id)
            self._durable.discard(agent_id)
            inbox = self._inboxes.pop(agent_id, None)
            if inbox is not None:
                self._spawn_task(inbox.stop())
            self.state_store.release(agent_id)
            reason = getattr(event, "reason", None)
            if reason == "fenced" or isinstance(getattr(event, "error", None), FencedError):
                self._counters["fenced_stops"] += 1
                log.warning("node %s: agent %s fenced (a newer owner exists)", self.id, agent_id)

    # -- membership callbacks ----------------------------------------------------------------------

    async def _on_fenced(self, *_: Any) -> None:
        """The lease could not be renewed in time: stop every agent before it can expire.

        From this moment the state store refuses every write (no network needed to refuse),
        no signal is dispatched to a local agent, and all clustered agents stop concurrently.
        """
        self._fenced = True
        self._unfenced.clear()
        self.state_store.fence()
        ids = [a for a in self._local if a not in self._unclustered]
        log.warning("node %s: lease lost, fencing %d agents", self.id, len(ids))
        if self.failover is not None:
            self.failover.wake()  # a fenced node gives the leader lease up
        self._counters["fenced_stops"] += len(ids)
        await asyncio.gather(*(self._stop_local(a) for a in ids), return_exceptions=True)
        if self._fenced:
            self._fenced_event.set()

    async def _on_rejoined(self, *_: Any) -> None:
        """The lease is held again: restart whatever the registry still assigns here."""
        self.state_store.unfence()
        self._fenced = False
        self._fenced_event.clear()
        self._unfenced.set()
        self._reconcile_wake.set()

    @property
    def fenced(self) -> bool:
        """True while this node has fenced itself (its lease could not be renewed in time)."""
        return self._fenced

    async def wait_fenced(self) -> None:
        """Return once this node has fenced itself (immediately if it is fenced now)."""
        await self._fenced_event.wait()

    # -- reconciliation ----------------------------------------------------------------------------

    def _on_record_change(self, *_: Any) -> None:
        self._reconcile_wake.set()

    async def _reconcile_loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives in
            # the turn the wake-up completes, and this loop (so Node.stop) would go on forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._reconcile_interval):
                    await self._reconcile_wake.wait()
            self._reconcile_wake.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: reconciliation failed", self.id)

    async def reconcile(self) -> None:
        """Make the agents running here match the registry once (start assigned, stop moved)."""
        if self._fenced or self.stage >= Stage.DRAINING:
            return
        assigned = {r.agent_id: r for r in self.registry.assigned_to(self.id)}
        for agent_id in list(self._local):
            if agent_id in self._unclustered:
                continue  # runs here only, outside the registry
            record = assigned.get(agent_id)
            if record is None:
                await self._stop_local(agent_id)
            elif self.state_store.epoch_of(agent_id) not in (None, int(record.epoch)):
                await self._stop_local(agent_id)  # re-assigned with a new epoch: restart
        for agent_id, record in assigned.items():
            starting = self._starting.get(agent_id)
            if agent_id in self._local or agent_id in self._parked:
                continue
            if starting is not None and getattr(starting, "_fdn_running", False):
                continue  # an activation is under way (a bare waiter does not count)
            if record.type not in self._types:
                continue
            try:
                await self._activate(record)
            except FencedError:
                log.info("node %s: %s is owned by a newer epoch; not starting", self.id, agent_id)
            except JidoError as exc:
                log.warning("node %s: could not start %s: %s", self.id, agent_id, exc)

    # -- public API --------------------------------------------------------------------------------

    def ref(self, agent_id: str, *, tenant: str | None = None) -> ClusterRef:
        """A location-transparent reference to agent ``agent_id`` (no lookup happens yet)."""
        cls = None
        if self.registry is not None:
            record = self.registry.cached(agent_id)
            cls = self._types.get(record.type) if record is not None else None
        return ClusterRef(self, agent_id, tenant=tenant or self.tenant, agent_cls=cls)

    async def spawn(
        self,
        agent_cls: type,
        id: str | None = None,
        *,
        state: Mapping[str, Any] | Any = None,
        node: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ClusterRef:
        """Place, register and start an agent; returns its :class:`ClusterRef`.

        A clustered class (``Clustered`` mixin) is placed by its strategy (or on ``node`` when
        given), claimed in the registry (``AlreadyRegisteredError`` if the id is taken) and
        started on the target with one direct request. A class without the mixin runs on this
        node only, unregistered, exactly as on a plain ``jido.Runtime``.
        """
        self._check_running()
        agent_id = check_agent_id(id if id is not None else uuid.uuid4().hex)
        initial = _state_dict(state)
        spec = cluster_spec(agent_cls)
        if spec is None:
            ref = await self.runtime.start(agent_cls, id=agent_id, state=initial)
            self._local[agent_id] = ref
            self._unclustered.add(agent_id)
            return ClusterRef(self, agent_id, tenant=self.tenant, agent_cls=agent_cls)
        if self._draining:
            raise NodeDrainingError(
                f"node {self.id} is draining; spawn from another node",
                details={"node": self.id},
            )
        type_name = type_name_of(agent_cls)
        target = node or await self._place(agent_cls, spec, agent_id)
        record = await self.registry.claim(
            agent_id,
            node=target,
            type=type_name,
            critical=spec.critical,
            capabilities=list(spec.capabilities),
            placement=spec.to_dict()["placement"],
            metadata=dict(metadata or {}),
            delivery=spec.delivery,
        )
        self._counters["spawns"] += 1
        if target == self.id:
            await self._activate(record, state=initial, fresh=True)
        else:
            await self._start_remote(record, initial, fresh=True)
        return ClusterRef(self, agent_id, tenant=self.tenant, agent_cls=agent_cls)

    async def _place(self, agent_cls: type, spec: ClusterSpec, agent_id: str) -> str:
        return str(
            await self.placement.place(
                agent_id,
                strategy=spec.placement,
                capabilities=[*spec.capabilities, f"type:{type_name_of(agent_cls)}"],
                resources=dict(spec.resources),
                origin=self.id,
            )
        )

    async def _start_remote(
        self, record: RegistryRecord, state: dict[str, Any] | None, *, fresh: bool = False
    ) -> None:
        extra: dict[str, Any] = {"epoch": record.epoch, "fresh": fresh}
        if state:
            extra["state"] = state
        payload = encode_request(record.agent_id, None, **extra)
        check_size(payload, self.nc.max_payload, f"start of agent {record.agent_id!r}")
        try:
            msg = await self.nc.request(
                self.subjects.node(record.node, "start"), payload, timeout=self.call_timeout
            )
            decode_reply(msg.data)
        except (NoRespondersError, NatsTimeoutError) as exc:
            # The record stays: the target's reconciliation (or failover) starts the agent.
            raise NodeUnavailableError(
                f"node {record.node!r} did not confirm the start of {record.agent_id!r}; it stays "
                "registered there and starts when that node reconciles",
                details={"agent_id": record.agent_id, "node": record.node},
                cause=exc,
            ) from exc

    async def stop_agent(self, agent_id: str) -> None:
        """Stop an agent wherever it runs and remove it from the registry (its state is kept)."""
        self._check_running()
        if agent_id in self._unclustered:
            self._unclustered.discard(agent_id)
            self._local.pop(agent_id, None)
            await self.runtime.stop(agent_id)
            return
        record = await self._record_of(agent_id, consistent=True)
        if record is None:
            raise AgentNotFoundError(
                f"no agent {agent_id!r} is registered", details={"agent_id": agent_id}
            )
        await self.registry.remove(agent_id, expected=record)
        if record.node == self.id:
            await self._stop_local(agent_id)
        elif self._is_live(record.node):
            with contextlib.suppress(NoRespondersError, NatsTimeoutError, JidoError):
                msg = await self.nc.request(
                    self.subjects.node(record.node, "stop"),
                    encode_request(agent_id),
                    timeout=self.call_timeout,
                )
                decode_reply(msg.data)

    def _check_running(self) -> None:
        if self.stage != Stage.RUNNING:
            raise NodeDrainingError(
                f"node {self.id} is not running (stage {self.stage.name.lower()})",
                details={"node": self.id, "stage": self.stage.name.lower()},
            )

    async def drain(self) -> None:
        """Hand every clustered agent over to other nodes (with its state), then leave.

        New spawns are refused from the start; each agent is stopped here (its last checkpoint
        is committed), its record is moved by CAS to a placed target with a new epoch, and the
        target is asked to start it. Agents for which no other node qualifies stay registered
        here (a leader's failover re-places them once this node's record is gone). Then the
        node leaves the membership and stops.
        """
        if self.stage != Stage.RUNNING:
            return
        self._draining = True
        self.stage = Stage.DRAINING
        with contextlib.suppress(Exception):
            await self.membership.set_status("draining")
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconcile_task
            self._reconcile_task = None
        for agent_id in list(self._local):
            if agent_id in self._unclustered:
                continue
            try:
                await self._hand_over(agent_id)
            except JidoError as exc:
                log.warning("node %s: could not hand %s over: %s", self.id, agent_id, exc)
        with contextlib.suppress(Exception):
            await self.membership.leave()
        await self.stop()

    async def _hand_over(self, agent_id: str) -> None:
        record = await self._record_of(agent_id, consistent=True)
        cls = self._types.get(record.type) if record is not None else None
        spec = cluster_spec(cls) if cls is not None else None
        if record is None or cls is None or spec is None or record.node != self.id:
            await self._stop_local(agent_id)
            return
        try:
            target = await self._place_excluding(cls, spec, agent_id)
        except PlacementError:
            await self._stop_local(agent_id)
            return
        await self._stop_local(agent_id)
        moved = await self.registry.move(agent_id, to=target, expected=record)
        with contextlib.suppress(NodeUnavailableError):
            await self._start_remote(moved, None)

    async def _place_excluding(self, cls: type, spec: ClusterSpec, agent_id: str) -> str:
        return str(
            await self.placement.place(
                agent_id,
                strategy=spec.placement if spec.placement != "local" else "least_loaded",
                capabilities=[*spec.capabilities, f"type:{type_name_of(cls)}"],
                resources=dict(spec.resources),
                origin=self.id,
                exclude=[self.id],
            )
        )

    def statistics(self) -> NodeStatistics:
        """An immutable snapshot of this node's counters and state."""
        c = self._counters
        return NodeStatistics(
            node_id=self.id,
            stage=self.stage.name.lower(),
            agents=len(self._local),
            calls_in=c["calls_in"],
            casts_in=c["casts_in"],
            forwarded=c["forwarded"],
            calls_out=c["calls_out"],
            spawns=c["spawns"],
            starts=c["starts"],
            stops=c["stops"],
            fenced_stops=c["fenced_stops"],
            fenced=self._fenced,
            draining=self._draining,
            uptime=time.monotonic() - self._started_at if self._started_at else 0.0,
            nats_url=self.url,
            agent_ids=tuple(sorted(self._local)),
            casts_backlogged=len(self._backlog),
            casts_refused=self._backlog.refused,
        )

    def local_agents(self) -> list[str]:
        """Ids of the agents running on this node now."""
        return sorted(self._local)

    async def wait_agent(self, agent_id: str, *, node: str | None = None) -> Any:
        """Return the registry record of ``agent_id`` once it exists (on ``node`` if given)."""
        while True:
            record = await self._record_of(agent_id, consistent=True)
            if record is not None and (node is None or record.node == node):
                return record
            await self.registry.wait_change()


def _state_dict(state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    dump = getattr(state, "model_dump", None)
    if callable(dump):
        result: dict[str, Any] = dump(mode="json")
        return result
    if isinstance(state, Mapping):
        return dict(state)
    raise DefinitionError(
        f"initial state must be a mapping or a pydantic model, got {type(state).__name__}"
    )
