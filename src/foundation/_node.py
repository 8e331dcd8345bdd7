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

``Node`` is the facade: configuration, the stages, and ``spawn`` / ``ref`` / ``drain`` /
``statistics``. The work is done by one object per job: the :class:`~foundation.hosting.host.
AgentHost` (agents running here, activation, fencing, reconciliation, hand-over), the
:class:`~foundation.messaging.endpoint.Endpoint` (the op table of the node's private subject) with
its :class:`~foundation.messaging.agent_ops.AgentOps`, the :class:`~foundation.messaging.client.
NodeClient` (requests and cast batches to other nodes), and the :class:`~foundation.messaging.
locator.NodeLocator` that refs reach the cluster through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client as NatsClient

from foundation import _metrics, _tracing
from foundation import _wire as wire
from foundation._errors import ClusterError, NodeDrainingError
from foundation._hooks import TaskSet
from foundation._node_ops import ControlOps, open_connections, start_endpoint, start_spawned
from foundation._node_types import NodeStatistics, Stage
from foundation.coordination.coordination import Coordination
from foundation.failover.failover import Failover, FailoverOptions
from foundation.hosting.admission import claim_placed
from foundation.hosting.clustered import cluster_spec, type_name_of
from foundation.hosting.host import AgentHost, state_dict
from foundation.hosting.state import KVStateStore
from foundation.hosting.virtual import open_wakeups, passivate_idle
from foundation.hosting.wakeups import Wakeups
from foundation.membership.link_probe import LinkProbe
from foundation.membership.membership import DEFAULT_LEASE_TTL, Membership
from foundation.membership.tenants import check_tenant
from foundation.messaging.agent_ops import AgentOps
from foundation.messaging.client import NodeClient, NodeLocator
from foundation.messaging.cluster_bus import ClusterBus
from foundation.messaging.durable import InboxOpener
from foundation.messaging.endpoint import Endpoint
from foundation.messaging.envelope import (
    WIRE_FEATURES,
    Subjects,
    check_agent_id,
    check_token,
    encode_request,
)
from foundation.messaging.policies import AwaitFailover
from foundation.messaging.ref import ClusterRef, FailFast, UnreachablePolicy
from foundation.nats.kv import KV, BucketSpec
from foundation.nats.redact import redact_url
from foundation.placement.placement import PlacementDirector
from foundation.placement.reservations import open_placement, stop_placement
from foundation.registry.registry import ClusterRegistry, RegistryRecord
from foundation.security import NatsAuth, NodeSecurity, Policy, auth_of
from foundation.tenancy import QuotaAdmin, TenantQuotas
from jido import AgentNotFoundError, JidoError, Runtime, Services

log = logging.getLogger("foundation.node")

_STOP_STEP_LIMIT = 30.0
"""Seconds one step of ``Node.stop`` may take before it is abandoned (logged)."""
_AGENTS_STOP_LIMIT = 120.0
"""Seconds stopping every local agent may take (each finishes its command in progress)."""

_COUNTERS = [
    "calls_in",
    "casts_in",
    "forwarded",
    "calls_out",
    "spawns",
    "starts",
    "stops",
    "fenced_stops",
]

__all__ = ["Node", "NodeDrainingError", "NodeStatistics", "Stage"]


def _version() -> str:
    try:
        return importlib.metadata.version("foundation-agents")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _failover_options(failover: bool | FailoverOptions, tenant: str) -> FailoverOptions | None:
    options = failover if isinstance(failover, FailoverOptions) else FailoverOptions()
    if options.lease_name == wire.LEADER_LEASE:  # each tenant elects its own leader
        options = dataclasses.replace(options, lease_name=wire.leader_lease(tenant))
    return options if failover else None


def _default_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:20]
    return f"{host or 'node'}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Node(QuotaAdmin):
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
            :class:`~foundation.failover.failover.FailoverOptions`.
        creds, tls_ca, nkey_seed, token, auth: credentials and TLS of every connection the node
            opens (:class:`~foundation.security.NatsAuth`); policy: who may send what to which
            agent; audit: the audit trail (default: on with credentials). See docs/security.md.
        services: extension points for the agents run here (``node.services``, the runtime's
            ``jido.Services``): ``jido.ai`` tool sources and token budgets, for example.
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
        creds: str | os.PathLike[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        nkey_seed: str | os.PathLike[str] | None = None,
        token: str | None = None,
        auth: NatsAuth | None = None,
        policy: Policy | None = None,
        audit: bool | None = None,
        services: Services | None = None,
    ) -> None:
        self.id: str = check_token("node name", name) if name is not None else _default_name()
        self.tenant = check_token("tenant", tenant)
        self._nats = nats
        self.security = NodeSecurity(
            auth_of(auth, creds=creds, tls_ca=tls_ca, nkey_seed=nkey_seed, token=token),
            policy=policy,
            audit=audit,
        )
        self.call_timeout = float(call_timeout)
        self._failover_options = _failover_options(failover, self.tenant)
        self.services = services if services is not None else Services()
        self.failover: Failover | None = None
        self.ref_policy: UnreachablePolicy = ref_policy or (
            AwaitFailover() if self._failover_options is not None else FailFast()
        )
        self.subjects = Subjects()
        self.resources = dict(resources or {})
        self.metadata = dict(metadata or {})
        self._store_dir = store_dir
        self._lease_ttl = lease_ttl
        self._reconcile_interval = reconcile_interval
        self._types: dict[str, type] = {type_name_of(cls): cls for cls in agents}
        self.capabilities: tuple[str, ...] = tuple(
            sorted({*capabilities, *(f"type:{t}" for t in self._types)})
        )
        self.stage = Stage.CREATED
        self._stage_done: dict[Stage, asyncio.Event] = {}
        self._started_at = 0.0
        self._server: Any = None
        self.nc: NatsClient = None  # type: ignore[assignment]
        self._control_nc: NatsClient | None = None
        self.url = ""
        self.runtime: Runtime = None  # type: ignore[assignment]
        self.registry: ClusterRegistry = None  # type: ignore[assignment]
        self.membership: Membership = None  # type: ignore[assignment]
        self.placement: PlacementDirector = None  # type: ignore[assignment]
        self.coordination: Coordination | None = None
        self.bus: ClusterBus | None = None
        self.state_store: KVStateStore = None  # type: ignore[assignment]
        self.client: NodeClient = None  # type: ignore[assignment]
        self.endpoint: Endpoint | None = None
        self._kv: dict[str, KV] = {}
        self._tasks = TaskSet()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self.host = AgentHost(
            self.id,
            types=self._types,
            call_timeout=self.call_timeout,
            counters=self._counters,
            tasks=self._tasks,
        )
        self.agent_ops: AgentOps | None = None
        self._wakeups: Wakeups | None = None
        self.quotas = TenantQuotas(self.tenant, self.id)
        self._link_probe: LinkProbe | None = None
        self.locator = NodeLocator(
            self.id,
            host=self.host,
            tenant=self.tenant,
            call_timeout=self.call_timeout,
            ref_policy=self.ref_policy,
            counters=self._counters,
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
                self.host.run_reconciler(self._reconcile_interval, self.reconcile),
                name=f"reconcile-{self.id}",
            )
            self._enter(Stage.RECONCILE)
            if self._failover_options is not None:
                self.failover = Failover(self, options=self._failover_options)
                self.host.fence_listeners.append(self.failover.wake)  # a fenced node stops leading
                await self.failover.start()
                self.security.watch_failover(self.failover)
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
        step = functools.partial(_stop_step, self.id)
        if self.failover is not None:
            await step("failover", self.failover.stop())
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()  # awaited by wait(): its CancelledError is not ours
            await step("reconciliation", asyncio.wait({self._reconcile_task}))
            self._reconcile_task = None
        endpoint = self.endpoint
        if stage >= Stage.TRANSPORT or (endpoint is not None and endpoint.subscribed):
            if endpoint is not None:
                await endpoint.stop(step)
            if self.bus is not None:
                await step("cluster bus", self.bus.close())
        if self.client is not None:  # casts already accepted still go out
            await step("pending casts", self.client.flush_casts())
        if len(self._tasks):
            await step("request tasks", self._tasks.cancel())
        await step("quotas", self.quotas.stop())
        if self._wakeups is not None:
            await step("wakeups", self._wakeups.stop())
        await step("audit trail", self.security.close())
        if self.runtime is not None:
            await step("agents", self.runtime.__aexit__(None, None, None), _AGENTS_STOP_LIMIT)
        self.host.local.clear()
        if self.coordination is not None:
            await step("coordination", self.coordination.stop())
        if self.placement is not None:
            await step("reservations", stop_placement(self.placement))
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

    # -- stages ------------------------------------------------------------------------------------

    async def _start_connect(self) -> None:
        await open_connections(self)

    async def _start_buckets(self) -> None:
        self._kv["state"] = await KV.open(
            self.nc, BucketSpec(wire.STATE_BUCKET, description="foundation agent state")
        )

    async def _start_membership(self) -> None:
        assert self._control_nc is not None
        lease = f"foundation-node-{self.id}-lease"
        self.membership = Membership(
            self._control_nc,
            self.id,
            tenant=self.tenant,
            capabilities=list(self.capabilities),
            resources=self.resources,
            load=self.host.load,
            on_fenced=self.host.on_fenced,
            on_rejoined=self.host.on_rejoined,
            lease_ttl=DEFAULT_LEASE_TTL if self._lease_ttl is None else self._lease_ttl,
            version=_version(),
            wire_features=WIRE_FEATURES,
            renew_connect=functools.partial(self.security.connect, self.url, name=lease),
            link_down=self._link_probe.down if self._link_probe is not None else None,
        )
        await self.membership.start()

    async def _start_registry(self) -> None:
        self.registry = ClusterRegistry(self.nc, tenant=self.tenant)
        await self.registry.start()
        self.registry.add_listener(self.host.on_registry_change)
        self.placement = await open_placement(self.nc, self.id, self.membership, self.registry)

    async def _start_coordination(self) -> None:
        # Leases (leader, locks) are timing-critical like the membership lease: control link.
        assert self._control_nc is not None
        self.coordination = Coordination(self._control_nc, self.id)
        await self.coordination.start()

    async def _start_runtime(self) -> None:
        self.state_store = KVStateStore(self._kv["state"], owner=self.id, tenant=self.tenant)
        membership = self.membership
        self.state_store.lease_check = lambda: membership.holds_lease
        self.runtime = Runtime(store=self.state_store, services=self.services)
        await self.runtime.__aenter__()
        self.client = NodeClient(
            self.nc,
            self.id,
            subjects=self.subjects,
            call_timeout=self.call_timeout,
            membership=membership,
            tasks=self._tasks,
        )
        self.host.bind(
            runtime=self.runtime,
            state_store=self.state_store,
            registry=self.registry,
            membership=membership,
            placement=self.placement,
            open_inbox=InboxOpener(
                self.nc, tenant=self.tenant, replicas=self._kv["state"].replicas
            ),
            start_remote=self.client.start_remote,
        )
        self.locator.bind(
            registry=self.registry, membership=membership, client=self.client, nc=self.nc
        )

    async def _start_transport(self) -> None:
        endpoint = Endpoint(self.nc, self.id, subjects=self.subjects, tasks=self._tasks)
        ops = self.agent_ops = AgentOps(
            self.host, self.locator, tenant=self.tenant, subjects=self.subjects
        )
        ops.install(endpoint)
        ControlOps(self).install(endpoint)
        _metrics.install(self, endpoint)
        self.endpoint = endpoint
        await self.quotas.start(self)
        replicas = self._kv["state"].replicas
        self._wakeups = await open_wakeups(self.host, self.nc, self.tenant, replicas)
        await self.security.start(self, endpoint)
        public = self.security.public(ops.public, self.subjects)
        await start_endpoint(self, endpoint, public)
        self.bus = ClusterBus(self.nc, replicas=replicas)
        await self.bus.start()

    # -- connection events -------------------------------------------------------------------------

    async def _on_disconnect(self) -> None:
        closing = self.nc is None or self.nc.is_closed or self.nc.is_draining  # our own stop
        log.log(
            logging.DEBUG if closing else logging.INFO, "node %s: NATS connection lost", self.id
        )

    async def _on_reconnect(self) -> None:
        log.info("node %s: NATS connection restored", self.id)
        self.host.wake_full()

    # -- fencing -----------------------------------------------------------------------------------

    @property
    def fenced(self) -> bool:
        """True while this node has fenced itself (its lease could not be renewed in time)."""
        return self.host.fenced

    async def wait_fenced(self) -> None:
        """Return once this node has fenced itself (immediately if it is fenced now)."""
        await self.host.fenced_event.wait()

    # -- reconciliation ----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the agents running here match the registry once (start assigned, stop moved)."""
        if self.host.fenced or self.stage >= Stage.DRAINING:
            return
        await self.host.reconcile()
        await passivate_idle(self.host, self._wakeups)

    # -- public API --------------------------------------------------------------------------------

    def ref(
        self, agent_id: str, *, cls: type | None = None, tenant: str | None = None
    ) -> ClusterRef:
        """A location-transparent reference to agent ``agent_id`` (no lookup happens yet);
        ``cls``: its class (a virtual type's agent is activated by the ref when needed); another
        ``tenant`` than this node's is a ``WrongTenantError`` (a node serves its tenant only)."""
        check_tenant(self.tenant, tenant, node=self.id, agent_id=agent_id)
        if cls is None and self.registry is not None:
            record = self.registry.cached(agent_id)
            cls = self._types.get(record.type) if record is not None else None
        return ClusterRef(self.locator, agent_id, tenant=self.tenant, agent_cls=cls)

    @_tracing.traced("spawn", agent=lambda self, cls, id=None, **_: id)
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
        initial = state_dict(state)
        spec = cluster_spec(agent_cls)
        if spec is None:
            self.host.add_unclustered(
                agent_id, await self.runtime.start(agent_cls, id=agent_id, state=initial)
            )
            return ClusterRef(self.locator, agent_id, tenant=self.tenant, agent_cls=agent_cls)
        if self.host.draining:
            raise NodeDrainingError(
                f"node {self.id} is draining; spawn from another node",
                details={"node": self.id},
            )
        async with self.quotas.admitting(agent_id):  # QuotaExceededError over max_agents
            record = await claim_placed(
                self.host, agent_cls, spec, agent_id, on=node, metadata=metadata
            )
        self._counters["spawns"] += 1
        self.security.record("agent.spawn", subject=agent_id, details={"node": record.node})
        await start_spawned(self, record, initial)
        return ClusterRef(self.locator, agent_id, tenant=self.tenant, agent_cls=agent_cls)

    async def stop_agent(self, agent_id: str) -> None:
        """Stop an agent wherever it runs and remove it from the registry (its state is kept)."""
        self._check_running()
        if await self.host.stop_unclustered(agent_id):
            return
        record = await self.registry.lookup(agent_id, consistent=True)
        if record is None:
            raise AgentNotFoundError(
                f"no agent {agent_id!r} is registered", details={"agent_id": agent_id}
            )
        await self.registry.remove(agent_id, expected=record)
        self.security.record("agent.stop", subject=agent_id, details={"node": record.node})
        if record.node == self.id:
            await self.host.stop_local(agent_id)
        elif self.locator.is_live(record.node):
            with contextlib.suppress(JidoError):
                await self.client.request(record.node, "stop", encode_request(agent_id))

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
        self.host.draining = True
        self.stage = Stage.DRAINING
        self.security.record("node.drain", subject=self.id)
        with contextlib.suppress(Exception):
            await self.membership.set_status("draining")
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconcile_task
            self._reconcile_task = None
        await self.host.hand_over_all()
        with contextlib.suppress(Exception):
            await self.membership.leave()
        await self.stop()

    async def _hand_over(self, agent_id: str) -> None:
        """Drain one agent: hand it over to a node placed for it, or stop it if none fits."""
        await self.host.hand_over_placed(agent_id)

    def statistics(self) -> NodeStatistics:
        """An immutable snapshot of this node's counters and state."""
        ops = self.agent_ops
        return NodeStatistics(
            node_id=self.id,
            stage=self.stage.name.lower(),
            agents=len(self.host.local),
            **self._counters,
            fenced=self.host.fenced,
            draining=self.host.draining,
            uptime=time.monotonic() - self._started_at if self._started_at else 0.0,
            nats_url=redact_url(self.url),
            agent_ids=tuple(sorted(self.host.local)),
            casts_backlogged=len(ops.backlog) if ops is not None else 0,
            casts_refused=ops.backlog.refused if ops is not None else 0,
        )

    def local_agents(self) -> list[str]:
        """Ids of the agents running on this node now."""
        return sorted(self.host.local)

    async def wait_agent(self, agent_id: str, *, node: str | None = None) -> RegistryRecord:
        """Return the registry record of ``agent_id`` once it exists (on ``node`` if given)."""
        while True:
            record = await self.registry.lookup(agent_id, consistent=True)
            if record is not None and (node is None or record.node == node):
                return record
            await self.registry.wait_change()


async def _stop_step(
    node_id: str, what: str, aw: Awaitable[Any], limit: float = _STOP_STEP_LIMIT
) -> None:
    """Run one step of ``Node.stop``: its errors are logged, and a step that does not finish
    within ``limit`` seconds is abandoned with a warning, so stopping always ends."""
    try:
        await asyncio.wait_for(aw, limit)
    except TimeoutError:
        log.warning("node %s: stopping %s took longer than %.0f s; abandoned", node_id, what, limit)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # stop itself was cancelled; a cancelled step (the reconciler) is not
    except Exception as exc:
        log.debug("node %s: stopping %s: %r", node_id, what, exc)
