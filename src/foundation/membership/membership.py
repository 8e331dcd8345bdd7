"""Cluster membership: node records with TTL leases, versioned snapshots, self-fencing.

Each node owns one key of the ``foundation_nodes`` bucket (its id). It creates the key with a
per-message TTL (the **lease**) and renews it by CAS (``update(last=rev)``) on every heartbeat,
carrying its current load. When a node dies, its last write expires and the server writes a
delete marker that every watcher sees as an ``expire`` event; a graceful leave deletes the key
(a ``leave`` event).

Timings (defaults; see ``docs/cluster.md``):

- ``lease_ttl`` = 1 s: the server's per-message TTL (whole seconds, one at least). The record
  expires 1 s after the node's last successful renewal.
- ``heartbeat_interval`` = 0.25 s: four renewal chances per lease.
- ``fence_margin`` = 0.25 s: a node that has not had a renewal acknowledged for
  ``lease_ttl - fence_margin`` (0.75 s, counted from the moment it *sent* the last renewal that
  was acknowledged, which is no later than the server's write) fences itself: ``on_fenced``
  runs, so its agents stop *before* the lease can expire and anyone else can take over.
- A crashed node is seen as expired 0.75-1.0 s after its crash (plus delivery, milliseconds).

Self-fencing then rejoin: after fencing, the node keeps trying. If its old record is still
there (renewals were slow but arrived), the renewal CAS succeeds and the lease is simply held
again; if the record expired, the node creates a new one (a new ``join``). Either way
``on_rejoined`` runs. ``holds_lease`` can be checked synchronously before acting.
``rejoining`` is true while the write that takes the lease back after a fence is in flight:
from just before it is sent (other nodes may see the record, and route requests here, as soon
as it lands) until the lease counts as held (``holds_lease``) or the write failed. A request
arriving meanwhile can wait for ``on_rejoined`` instead of being refused.

Renewing from a thread: given ``renew_connect`` (a factory for a second NATS connection; nodes
pass one), renewals run on an event loop of their own in a daemon thread, so a node whose own
event loop is busy for a while (a burst of activations on a loaded machine) keeps its lease
instead of fencing itself. A node whose loop is *stuck* must still lose it: the thread renews
only while the node's loop has ticked within ``loop_stall_limit`` (2 s by default); after that
it lets the lease lapse, other nodes see the node expire, and the node's own state writes are
refused (``holds_lease`` is false). A stopped process (SIGSTOP) stops its threads too.

Views: :class:`MembershipSnapshot` is immutable and versioned (the version only moves
forward); :meth:`MembershipSnapshot.diff` compares two; :meth:`Membership.events` is an async
stream of :class:`MembershipEvent` (``join``, ``leave``, ``expire``, ``update``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient

from foundation import _metrics
from foundation import _wire as wire
from foundation._errors import (
    CASConflictError,
    ClusterError,
    KeyExistsError,
    LeaseLostError,
    NatsUnavailableError,
)
from foundation._hooks import call_hook, seconds
from foundation._ids import check_token
from foundation.membership import pauses
from foundation.membership.loop_thread import LoopThread, thread_stack
from foundation.membership.view import (
    EventKind,
    EventStream,
    MembershipDiff,
    MembershipEvent,
    MembershipSnapshot,
    MembershipView,
    NodeRecord,
)
from foundation.nats.kv import KV, BucketSpec, KVEntry, Op
from foundation.nats.lease import KVLease

log = logging.getLogger("foundation.membership")

#: Default lease (per-message TTL of the node record).
DEFAULT_LEASE_TTL = timedelta(seconds=1)
#: Default time between two renewals.
DEFAULT_HEARTBEAT_INTERVAL = timedelta(milliseconds=250)
#: Default safety margin: fence this long before the lease could expire.
DEFAULT_FENCE_MARGIN = timedelta(milliseconds=250)
#: With renewals in a thread: the longest the node's own event loop may go without running
#: before the thread stops renewing (a stuck node must lose its lease).
DEFAULT_LOOP_STALL_LIMIT = timedelta(seconds=2)
#: How long the server keeps the delete marker of an expired record.
NODE_MARKER_TTL = timedelta(seconds=30)


class Membership(MembershipView):
    """This node's lease in the cluster plus a live view of every member.

    ``node_id=None`` makes an observer that only watches. ``tenant``: the node's tenant (in its
    record); the view then holds that tenant's members only (``None``: every member, and a
    record of the default tenant). Use as an async context manager or :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self,
        nc: NatsClient,
        node_id: str | None,
        *,
        tenant: str | None = None,
        capabilities: Iterable[str] = (),
        resources: Mapping[str, float] | None = None,
        load: Callable[[], Mapping[str, float]] | None = None,
        host: str | None = None,
        version: str = "",
        wire_features: Iterable[str] = (),
        on_fenced: Callable[[LeaseLostError], Any] | None = None,
        on_rejoined: Callable[[NodeRecord], Any] | None = None,
        lease_ttl: float | timedelta = DEFAULT_LEASE_TTL,
        heartbeat_interval: float | timedelta = DEFAULT_HEARTBEAT_INTERVAL,
        fence_margin: float | timedelta = DEFAULT_FENCE_MARGIN,
        replicas: int | None = None,
        renew_connect: Callable[[], Awaitable[NatsClient]] | None = None,
        loop_stall_limit: float | timedelta = DEFAULT_LOOP_STALL_LIMIT,
        link_down: Callable[[float], str | None] | None = None,
    ) -> None:
        self.nc = nc
        self.node_id = check_token("node id", node_id, key=True) if node_id is not None else None
        self.tenant = tenant
        self.foreign: dict[str, str] = {}
        """Live nodes of other tenants (id -> tenant): not members, but their tenants are served."""
        self.lease_ttl = seconds(lease_ttl)
        self.heartbeat_interval = seconds(heartbeat_interval)
        self.fence_margin = seconds(fence_margin)
        if self.lease_ttl < 1 or self.lease_ttl != int(self.lease_ttl):
            raise ClusterError(
                f"lease_ttl must be a whole number of seconds >= 1 (got {self.lease_ttl}); the "
                "server keeps per-message TTLs in whole seconds",
                details={"lease_ttl": self.lease_ttl},
            )
        if not 0 < self.fence_margin < self.lease_ttl:
            raise ClusterError(
                "fence_margin must be between 0 and lease_ttl",
                details={"fence_margin": self.fence_margin, "lease_ttl": self.lease_ttl},
            )
        if not 0 < self.heartbeat_interval <= (self.lease_ttl - self.fence_margin) / 2:
            raise ClusterError(
                "heartbeat_interval must leave at least two renewals before the node fences "
                "(<= (lease_ttl - fence_margin) / 2)",
                details={"heartbeat_interval": self.heartbeat_interval},
            )
        self._capabilities = tuple(capabilities)
        self._resources = dict(resources or {})
        self._load = load
        self._host = host or socket.gethostname()
        self._version = version
        self._wire_features = tuple(wire_features)
        self._status = "up"
        self._started_at = time.time()
        self.on_fenced = on_fenced
        self.on_rejoined = on_rejoined
        self._replicas = replicas
        self.kv: KV | None = None
        MembershipView.__init__(self)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_seen: dict[str, float] = {}
        self._lease: KVLease | None = None  # this node's record (opened by start)
        self._fenced = False
        self._joined = False
        self._left = False
        self._running = False
        self._renew_now = asyncio.Event()
        self._wake: Callable[[], None] = self._renew_now.set
        self._hb_task: asyncio.Task[None] | None = None
        self._renew_connect = renew_connect
        self.loop_stall_limit = seconds(loop_stall_limit)
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._main_thread = threading.get_ident()
        self._tick = 0.0  # monotonic time the node's own loop last ran its tick
        self._lease_thread: LoopThread | None = None
        self._pause_watch = 0  # handle in pauses.WATCH while this node holds a lease
        self._lease_done: concurrent.futures.Future[None] | None = None
        self._lease_nc: NatsClient | None = None
        self._stall_logged = False
        self._link_down = link_down
        self._link_logged = False
        # Set (from whichever thread saw it) when a renewal found the lease gone; cleared once
        # the node's own loop has fenced. While set, the lease is not held and no rejoin starts.
        self._lost = False
        self._fence_pending = False  # on_fenced still running: no rejoin until the agents stopped
        # True while a write that may take the lease back after a completed fence is in flight:
        # set by the renewing side just before sending it (once it lands, other nodes may see
        # the record and route here), cleared when its outcome is known.
        self._rejoining = False
        self.fence_count = 0
        """How many times this node fenced itself."""
        self.rejoin_count = 0
        """How many times it got its lease back after fencing."""

    # -- properties ------------------------------------------------------------------------

    @property
    def fenced(self) -> bool:
        """True while this node has fenced itself (lease not renewed in time)."""
        return self._fenced

    @property
    def rejoining(self) -> bool:
        """True while this node, fenced, has a write in flight that may take its lease back.

        Set before the write (renewing the old record or creating a new one) is sent and
        cleared only after :attr:`holds_lease` turned true or the write failed, so whenever
        other nodes can see that record (and route requests here again) and the write has not
        failed, one of the two is true. It grants nothing: a request seeing it may wait for
        ``on_rejoined``, never act before it.
        """
        return self._rejoining and self._fenced and self._running and not self._left

    @property
    def holds_lease(self) -> bool:
        """True if this node's lease is certainly still valid now (check before acting)."""
        return (
            self._joined
            and not self._fenced
            and not self._lost
            and not self._left
            and self._lease is not None
            and self._lease.unexpired
        )

    @property
    def record(self) -> NodeRecord:
        """This node's current record (as it would be written now)."""
        if self.node_id is None:
            raise ClusterError("an observer membership has no record of its own")
        return NodeRecord(
            id=self.node_id,
            host=self._host,
            pid=os.getpid(),
            capabilities=self._capabilities,
            resources=self._resources,
            load=dict(self._load()) if self._load is not None else {},
            version=self._version,
            wire_features=self._wire_features,
            started_at=self._started_at,
            status=self._status,
            tenant=self.tenant or wire.DEFAULT_TENANT,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _bucket(self) -> BucketSpec:
        return BucketSpec(
            wire.NODES_BUCKET,
            marker_ttl=NODE_MARKER_TTL,
            description="foundation node records (TTL leases)",
        )

    def _request_timeout(self) -> float:
        return max(0.2, self.lease_ttl - self.fence_margin)

    async def start(self) -> None:
        """Open the bucket, load the current members, join (unless observer), start renewing."""
        self._main_loop = asyncio.get_running_loop()
        self._main_thread = threading.get_ident()
        self.kv = await KV.open(
            self.nc, self._bucket(), replicas=self._replicas, timeout=self._request_timeout()
        )
        if self.node_id is not None:
            self._lease = KVLease(self.kv, self.node_id, self.lease_ttl, self.fence_margin)
            self._pause_watch = pauses.WATCH.register(self.lease_ttl - self.fence_margin)
        self._running = True
        watch = self.kv.watch()
        await watch.start()
        self._tasks.append(asyncio.create_task(self._watch_loop(watch)))
        try:
            await watch.wait_caught_up()
            self._tasks.append(asyncio.create_task(self._sweep_loop()))
            if self.node_id is not None:
                if self._renew_connect is not None:
                    await self._open_lease_thread()
                await self._join(self.kv, wait=True)
                if self._lease_thread is not None:
                    self._tick = time.monotonic()
                    self._tasks.append(asyncio.create_task(self._tick_loop()))
                    self._lease_done = self._lease_thread.submit(self._threaded_renewals())
                else:
                    self._hb_task = asyncio.create_task(
                        self._heartbeat_loop(self.kv, self._renew_now)
                    )
                    self._tasks.append(self._hb_task)
        except BaseException:
            await self.stop(leave=False)  # leave nothing running behind a failed start
            raise

    async def stop(self, *, leave: bool = True) -> None:
        """Stop renewing (deleting the record first when ``leave``) and stop watching."""
        if leave and self._joined and not self._left:
            with contextlib.suppress(ClusterError):
                await self.leave()
        self._running = False
        self._cancel_fence_timer()
        await self._close_lease_thread()
        if self._pause_watch:
            pauses.WATCH.unregister(self._pause_watch)
            self._pause_watch = 0
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> Membership:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def leave(self) -> None:
        """Leave gracefully: delete our record (watchers see ``leave``) and stop renewing."""
        self._left = True
        self._cancel_fence_timer()
        await self._close_lease_thread()
        hb = self._hb_task
        if hb is not None and not hb.done():
            # Let an in-flight renewal finish so the delete below uses the latest revision.
            self._renew_now.set()
            await asyncio.wait({hb}, timeout=self.lease_ttl)
        lease = self._lease
        if (
            self.kv is not None
            and self.node_id is not None
            and lease is not None
            and lease.revision
            and not await lease.release(via=self.kv)
        ):
            # Our revision moved (a renewal we did not see land): delete what is there if it
            # is still this process's record.
            current = await self.kv.get(self.node_id)
            if current is not None:
                rec = NodeRecord.decode(current.value, current.revision)
                if rec.pid == os.getpid() and rec.started_at == self._started_at:
                    with contextlib.suppress(CASConflictError):
                        await self.kv.delete(self.node_id, last=current.revision)
        self._joined = False

    async def set_status(self, status: str) -> None:
        """Publish a new status (``up`` or ``draining``) at once."""
        self._status = status
        self._wake()

    def update_capacity(
        self,
        *,
        capabilities: Iterable[str] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        """Change what this node offers; published with the next heartbeat."""
        if capabilities is not None:
            self._capabilities = tuple(capabilities)
        if resources is not None:
            self._resources = dict(resources)
        self._wake()

    # -- lease -----------------------------------------------------------------------------

    def _on_main(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the node's own loop (now, when already there)."""
        loop = self._main_loop
        if loop is None or threading.get_ident() == self._main_thread:
            fn(*args)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _arm_fence_timer(self) -> None:
        self._cancel_fence_timer()
        if self._left or not self._running or self._lease is None:
            return
        self._lease.arm_expiry(self._fence_due)

    def _cancel_fence_timer(self) -> None:
        if self._lease is not None:
            self._lease.disarm_expiry()

    def _fence_due(self) -> None:
        if not self._fenced and not self._left:
            self._fence("lease not renewed within lease_ttl - fence_margin")

    def _fence(self, why: str) -> None:
        if self._fenced:
            self._lost = False  # the node's loop knows (on_fenced ran or is running)
            return
        # Pending is set before the loss is cleared, so that the renewing thread never sees
        # both clear (and starts a rejoin) before on_fenced has run.
        self._fenced = True
        self._fence_pending = True
        self._lost = False  # the node's loop now knows (a rejoin waits for on_fenced below)
        self.fence_count += 1
        err = LeaseLostError(
            f"node {self.node_id} fenced itself: {why}; its agents must stop now",
            details={"node": self.node_id, "reason": why},
        )
        log.warning("%s", err.message)
        self._tasks.append(asyncio.create_task(self._run_on_fenced(err)))

    async def _run_on_fenced(self, err: LeaseLostError) -> None:
        try:
            await call_hook(self.on_fenced, err, log=log)
        finally:
            self._fence_pending = False

    def _node_lease(self) -> KVLease:
        assert self._lease is not None, "the lease is opened by start() of a member"
        return self._lease

    async def _join(self, kv: KV, *, wait: bool) -> None:
        assert self.node_id is not None
        lease = self._node_lease()
        deadline = time.monotonic() + 2 * self.lease_ttl + 1
        while True:
            try:
                await lease.create(self.record.encode(), via=kv)
            except KeyExistsError:
                # A previous incarnation's record is still there: it expires within the TTL.
                if not wait or time.monotonic() > deadline:
                    raise ClusterError(
                        f"node id {self.node_id!r} is held by a live node; choose another name "
                        "or stop the other node",
                        details={"node": self.node_id},
                    ) from None
                await self._wait_key_gone(self.node_id, self.lease_ttl)
                continue
            self._on_main(self._arm_fence_timer)
            self._joined = True
            return

    async def _wait_key_gone(self, key: str, within: float) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: key not in self._snapshot.members), within
                )

    async def _heartbeat_loop(self, kv: KV, wake: asyncio.Event, *, threaded: bool = False) -> None:
        assert self.node_id is not None
        lease = self._node_lease()
        while self._running and not self._left:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.heartbeat_interval)
            wake.clear()
            if self._left or not self._running:
                return
            if threaded and time.monotonic() - self._tick > self.loop_stall_limit:
                # The node's own loop has not run for too long: it is stuck, not just busy.
                # Let the lease lapse so that the cluster fails its agents over.
                if not self._stall_logged:
                    self._stall_logged = True
                    log.warning(
                        "node %s: its event loop has not run for over %.1f s; letting the "
                        "lease lapse; the loop's thread is at:\n%s",
                        self.node_id,
                        self.loop_stall_limit,
                        thread_stack(self._main_thread),
                    )
                continue
            self._stall_logged = False
            if threaded and await self._give_up_if_link_down(kv):
                continue
            try:
                if self._joined and lease.revision:
                    # After a completed fence, this renewal may end it (the record was kept).
                    self._rejoining = self._fenced and not self._fence_pending
                    sent = time.monotonic()
                    await lease.renew(self.record.encode(), via=kv)
                    self._on_main(self._arm_fence_timer)
                    _metrics.LEASE_RENEWAL_DURATION.labels(self.node_id).observe(
                        time.monotonic() - sent
                    )
                else:
                    if self._lost or self._fence_pending:
                        # The node's loop has not fenced yet (its agents may still run):
                        # a new lease now would let them act on the one that was lost.
                        continue
                    # Say so before the record exists: once the create lands, other nodes
                    # route requests here again, possibly before this thread (or this loop,
                    # when renewing on it) has even read the reply.
                    self._rejoining = self._fenced
                    await self._join(kv, wait=False)
                if self._fenced and not self._fence_pending:
                    self._fenced = False  # the lease counts as held again before ...
                    self._rejoining = False  # ... rejoining stops (one of them is true)
                    self.rejoin_count += 1
                    log.info("node %s holds its lease again", self.node_id)
                    self._on_main(self._notify_rejoined)
            except CASConflictError:
                # Our record expired or was replaced: the lease is gone. Fence (if not yet)
                # and create a fresh record on the next beat.
                self._lost = True
                self._joined = False
                lease.forget()
                self._on_main(self._fence, "the lease expired or was taken")
            except (NatsUnavailableError, ClusterError, TimeoutError) as exc:
                log.debug("node %s: renewal failed: %r", self.node_id, exc)
            finally:
                self._rejoining = False  # the write's outcome is known (held, or not)

    async def _give_up_if_link_down(self, kv: KV) -> bool:
        """On the renewal thread: True (skip this renewal) while the data link is down.

        The lease connection works but the node's data connection does not (a gray failure):
        its agents can be neither reached nor saved. The node fences (its loop stops them) and
        gives its record up at once, so the cluster fails them over without waiting for the
        TTL; once the link answers again, the next beat joins anew.
        """
        reason = self._link_down(self._tick) if self._link_down is not None else None
        if reason is None:
            if self._link_logged:
                self._link_logged = False
                log.info("node %s: its data connection answers again", self.node_id)
            return False
        if not self._link_logged:
            self._link_logged = True
            log.warning("node %s: %s; giving its lease up", self.node_id, reason)
        lease = self._node_lease()
        if self._joined and lease.revision:
            self._lost = True  # holds_lease is false from now on, on every thread
            self._on_main(self._fence, reason)
            self._joined = False
            with contextlib.suppress(Exception):  # if this fails too, the TTL ends the lease
                await lease.release(via=kv)
        return True

    def _notify_rejoined(self) -> None:
        self._tasks.append(asyncio.create_task(call_hook(self.on_rejoined, self.record, log=log)))

    # -- renewing from a thread ------------------------------------------------------------

    async def _open_lease_thread(self) -> None:
        """Start the renewal thread and connect its own NATS client (before the first join)."""
        assert self._renew_connect is not None
        thread = LoopThread(f"foundation-lease-{self.node_id}")
        thread.start()
        self._lease_thread = thread
        try:
            await asyncio.wrap_future(thread.submit(self._lease_connect()))
        except BaseException:
            await self._close_lease_thread()
            raise

    async def _lease_connect(self) -> None:
        assert self._renew_connect is not None
        self._lease_nc = await self._renew_connect()

    async def _tick_loop(self) -> None:
        """Mark, on the node's own loop, that the loop runs (read by the renewal thread)."""
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(self.heartbeat_interval)

    async def _threaded_renewals(self) -> None:
        """Runs on the renewal thread: open the bucket on its connection and keep renewing."""
        nc = self._lease_nc
        assert nc is not None and self._lease_thread is not None
        wake = asyncio.Event()
        thread = self._lease_thread
        self._wake = lambda: thread.call_soon(wake.set)
        kv: KV | None = None
        while kv is None and self._running and not self._left:
            try:
                kv = await KV.open(
                    nc,
                    self._bucket(),
                    replicas=self.kv.replicas if self.kv is not None else self._replicas,
                    timeout=self._request_timeout(),
                )
            except (NatsUnavailableError, ClusterError, TimeoutError) as exc:
                log.debug("node %s: lease bucket not reachable yet: %r", self.node_id, exc)
                await asyncio.sleep(self.heartbeat_interval)
        if kv is not None:
            await self._heartbeat_loop(kv, wake, threaded=True)

    async def _close_lease_thread(self) -> None:
        """Let the renewal thread finish its in-flight renewal, then stop it."""
        thread = self._lease_thread
        if thread is None:
            return
        self._lease_thread = None
        wake_thread, self._wake = self._wake, self._renew_now.set
        done = self._lease_done
        if done is not None and not done.done():
            wake_thread()  # it sees the stop flags at once
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), self.lease_ttl)
        nc = self._lease_nc
        self._lease_nc = None
        if nc is not None and thread.running:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(thread.submit(nc.close())), 2.0)
        await asyncio.to_thread(thread.stop)

    async def _apply(self, entry: KVEntry | None, node_id: str, kind: EventKind | None) -> None:
        snap = self._snapshot
        members = dict(snap.members)
        revision = max(snap.revision, entry.revision if entry is not None else 0)
        emit: tuple[EventKind, NodeRecord | None] | None = None
        if entry is not None and not entry.deleted:
            try:
                record = NodeRecord.decode(entry.value, entry.revision)
            except (msgspec.DecodeError, RecursionError):
                log.warning("ignoring undecodable node record %r", node_id)
                return
            if self.tenant is not None and record.tenant != self.tenant:
                self.foreign[node_id] = record.tenant  # another tenant's node: not a member
                return
            old = members.get(node_id)
            members[node_id] = record
            self._last_seen[node_id] = time.monotonic()
            if old is None:
                emit = ("join", record)
            elif (old.status, old.capabilities, old.resources) != (
                record.status,
                record.capabilities,
                record.resources,
            ):
                emit = ("update", record)
        else:
            old = members.pop(node_id, None)
            self._last_seen.pop(node_id, None)
            self.foreign.pop(node_id, None)
            if old is None:
                if entry is not None:
                    self._snapshot = MembershipSnapshot(snap.version, revision, snap.members)
                return
            if kind is None:
                assert entry is not None
                kind = "expire" if entry.op is Op.EXPIRE else "leave"
            emit = (kind, old)
        async with self._changed:
            self._snapshot = MembershipSnapshot(
                snap.version + 1, revision, MappingProxyType(members)
            )
            self._changed.notify_all()
        if emit is not None:
            await self._emit(emit[0], node_id, emit[1])

    async def _watch_loop(self, watch: Any) -> None:
        try:
            async for entry in watch:
                if entry.revision <= self._snapshot.revision:
                    continue  # already applied (the view only moves forward)
                await self._apply(entry, entry.key, None)
        finally:
            # Bounded: on a connection that is already gone, unsubscribing may never finish.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.stop(), self.lease_ttl)

    async def _sweep_loop(self) -> None:
        """Safety net for missed expiry markers (e.g. a long disconnect): re-check members
        not seen for two leases against the server."""
        assert self.kv is not None
        while True:
            await asyncio.sleep(self.lease_ttl)
            limit = time.monotonic() - 2 * self.lease_ttl - self.heartbeat_interval
            for node_id, seen in list(self._last_seen.items()):
                if seen >= limit or node_id == self.node_id:
                    continue
                try:
                    current = await self.kv.get(node_id)
                except ClusterError:
                    continue
                if current is None and node_id in self._snapshot.members:
                    await self._apply(None, node_id, "expire")
                elif current is not None:
                    self._last_seen[node_id] = time.monotonic()


__all__ = [
    "DEFAULT_FENCE_MARGIN",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_LEASE_TTL",
    "EventStream",
    "Membership",
    "MembershipDiff",
    "MembershipEvent",
    "MembershipSnapshot",
    "NodeRecord",
]
