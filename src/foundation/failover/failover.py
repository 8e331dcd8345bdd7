"""Failover: the cluster leader re-places the agents of dead nodes, with their state.

Every node runs a :class:`Failover`. Each campaigns for the cluster lease
(``foundation.failover`` in the coordination bucket); the one that holds it is the **leader**
and the only one that takes failover and rebalancing decisions. The lease's fencing token is
the leader's **term**.

While it leads, the leader:

1. watches membership; when a node's record **expires** (crash, SIGKILL, partition: the node
   fenced itself before that) or is deleted (graceful leave), it confirms by a read of the node
   key that the record is really gone, then handles every agent the registry still assigns to
   that node;
2. sweeps the registry every ``sweep_interval`` for records whose owner is not a live member
   (events missed while it was not the leader, a previous leader that died mid-way);
3. for each such record: a **critical** agent is placed again (the agent's placement strategy,
   capabilities and resource request, never on the dead node) and **moved by CAS** to the target
   (``registry.move``: the record's epoch becomes the revision of that write, higher than any
   before). The target's reconciliation starts it: the fenced state store claims the state key
   with the new epoch by CAS and restores the last committed checkpoint (state plus the inbox
   position, so an ``at_least_once`` agent resumes right after the last signal it applied).
   A **non-critical** agent is removed from the registry (or placed again when
   ``non_critical="replace"``); its stored state is kept.

Leader uniqueness. The leader acts only while its lease is certainly valid (checked before
every write) and stamps every registry write with its term (``metadata["fdn.term"]`` and
``metadata["fdn.leader"]``). A record already stamped with a higher term means a newer leader
exists: this one steps down at once. A deposed leader's write based on a record a newer leader
has since written fails its CAS. See ``docs/failover.md`` for timings and limits.

The sender side, :class:`~foundation.messaging.policies.AwaitFailover`, is a ref policy (in
``foundation.messaging``). Failover takes the node it serves as a :class:`ClusterNode`: its
membership, registry, coordination, host (to activate an agent here) and client (to ask another
node to start one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from foundation import _tracing
from foundation._errors import (
    CASConflictError,
    ClusterError,
    LeaseLostError,
    NoCapacityError,
    PlacementError,
)
from foundation._wire import LEADER_KEY, LEADER_LEASE, TERM_KEY
from foundation.coordination.coordination import Coordination
from foundation.failover.batch import BatchDirector
from foundation.failover.rebalance import ClusterNode, Rebalancer
from foundation.failover.types import (
    DeposedError,
    Elector,
    FailoverEvent,
    FailoverOptions,
    FailoverStatistics,
    Tenure,
)
from foundation.hosting.admission import ledger_of
from foundation.hosting.clustered import cluster_spec
from foundation.membership.tenants import tenant_of
from foundation.messaging.envelope import encode_request
from foundation.placement.reservations import holding, positive, reserve_placed

log = logging.getLogger("foundation.failover")


class Failover:
    """The failover component of one node (campaigns; acts only while it leads).

    ``node`` is the node it serves (a :class:`foundation.Node`); ``elector`` acquires the leader
    lease (default: the node's coordination ``elect``).
    """

    def __init__(
        self,
        node: ClusterNode,
        *,
        elector: Elector | None = None,
        options: FailoverOptions | None = None,
    ) -> None:
        self.node = node
        self.options = options or FailoverOptions()
        self._elector = elector
        self._task: asyncio.Task[None] | None = None
        self._leadership: Tenure | None = None
        self._handle: Any = None  # the coordination campaign (one per node)
        self._kicks: set[asyncio.Future[Any]] = set()
        self._kick_queue: collections.deque[Any] = collections.deque()
        self._kick_workers = 0
        self._own_coordination: Any = None
        self._term = 0
        self._terms_led = 0
        self._wake = asyncio.Event()
        self._dead: dict[str, float] = {}  # node id -> monotonic time its loss was seen
        self._listeners: list[Callable[[FailoverEvent], Any]] = []
        self._counters = dict.fromkeys(
            ("moved", "removed", "pending", "conflicts", "forged_terms"), 0
        )
        self._last_failover: float | None = None
        self._leading = asyncio.Event()
        self._lead_task: asyncio.Future[None] | None = None
        self._rebalancing: asyncio.Future[None] | None = None
        self._stopped = False
        self.rebalancer: Rebalancer | None = (
            Rebalancer(
                node,
                interval=self.options.rebalance_interval,
                max_moves=self.options.max_moves,
            )
            if self.options.rebalance
            else None
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start campaigning (returns at once)."""
        membership = self.node.membership
        membership.add_listener(self._on_membership)
        self.node.registry.add_listener(self._on_registry)
        self._task = asyncio.create_task(self._campaign(), name=f"failover-{self.node.id}")

    async def stop(self) -> None:
        """Stop campaigning; resign the lease if held."""
        self._stopped = True
        with contextlib.suppress(Exception):
            self.node.membership.remove_listener(self._on_membership)
        with contextlib.suppress(Exception):
            self.node.registry.remove_listener(self._on_registry)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._kick_queue.clear()
        for kick in list(self._kicks):
            kick.cancel()
        self._kick_workers = 0
        lead = self._leadership
        self._leadership = None
        if lead is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lead.resign(), 2.0)
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(handle.resign(), 2.0)
        own, self._own_coordination = self._own_coordination, None
        if own is not None:
            with contextlib.suppress(Exception):
                await own.stop()

    @property
    def is_leader(self) -> bool:
        """True while this node holds the leader lease."""
        lead = self._leadership
        return lead is not None and lead.held

    @property
    def term(self) -> int:
        """Term of the current (or last) tenure of this node as leader; 0 if never led."""
        return self._term

    async def wait_leader(self) -> int:
        """Return this node's term once it leads."""
        await self._leading.wait()
        return self._term

    def add_listener(self, fn: Callable[[FailoverEvent], Any]) -> None:
        """Call ``fn(event)`` for every decision this node takes as leader."""
        self._listeners.append(fn)

    def statistics(self) -> FailoverStatistics:
        """Counters of the decisions taken here."""
        c = self._counters
        return FailoverStatistics(
            leader=self.is_leader,
            term=self._term,
            terms_led=self._terms_led,
            moved=c["moved"],
            removed=c["removed"],
            pending=c["pending"],
            conflicts=c["conflicts"],
            last_failover_seconds=self._last_failover,
        )

    # -- events ------------------------------------------------------------------------------

    def _on_membership(self, event: Any) -> None:
        if event.kind == "join" and self.rebalancer is not None:
            # Noted whether this node leads or not: a join seen around a change of leader (a
            # rolling restart drains the leader too) is filled by whichever node leads next.
            self.rebalancer.on_join(event.node_id)
            self._wake.set()
        if event.kind in ("expire", "leave") and event.node_id != self.node.id:
            self._dead.setdefault(event.node_id, time.monotonic())
            self._wake.set()
            rebalancing = self._rebalancing
            if rebalancing is not None and not rebalancing.done():
                # its hand-overs may wait on the lost node; the next step starts afresh
                rebalancing.cancel()

    def _on_registry(self, change: Any) -> None:
        record = change.record
        if change.kind == "put" and record is not None and not self._live(record.node):
            self._wake.set()

    def _emit(self, event: FailoverEvent) -> None:
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                log.exception("failover listener %r failed", fn)

    # -- campaign ----------------------------------------------------------------------------

    async def _elect(self) -> Tenure:
        if self._elector is not None:
            return await self._elector(self.options.lease_name)
        if self._handle is None:
            coordination = self.node.coordination
            if coordination is None:
                coordination = Coordination(self.node.client.nc, self.node.id)
                await coordination.start()
                self._own_coordination = coordination
            self._handle = await coordination.elect(self.options.lease_name)
        handle = self._handle
        term = await handle.wait_elected()
        return _CampaignTenure(handle, term)

    def _eligible(self) -> bool:
        """Only a node holding its own membership lease may lead (a fenced one may not)."""
        return bool(getattr(self.node.membership, "holds_lease", True))

    def wake(self) -> None:
        """Re-check now: the node's lease changed (it fenced or rejoined).

        A leader that fenced stops leading at once, even in the middle of a sweep (whose
        registry writes may be stuck on a cut data connection): the sweep is cancelled and the
        leader lease given up, so another node takes over without waiting for timeouts.
        """
        self._wake.set()
        task = self._lead_task
        if task is not None and not task.done() and not self._eligible():
            task.cancel()

    async def _campaign(self) -> None:
        while not self._stopped:
            if not self._eligible():
                # Fenced (e.g. its data connection is down while the lease link works): a
                # leader that cannot reach the registry would stall every failover.
                await asyncio.sleep(0.1)
                continue
            try:
                lead = await self._elect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("node %s: election attempt failed: %r", self.node.id, exc)
                await asyncio.sleep(0.2)
                continue
            self._leadership = lead
            self._term = lead.term
            self._terms_led += 1
            self._leading.set()
            log.info("node %s leads the cluster (term %d)", self.node.id, lead.term)
            self._emit(FailoverEvent("leader", "", self.node.id, None, 0, lead.term))
            self._lead_task = asyncio.ensure_future(self._lead(lead))
            try:
                try:
                    await self._lead_task
                except asyncio.CancelledError:
                    if self._eligible() or self._stopped:
                        raise  # cancelled from outside (stop), not by a fence
                    raise LeaseLostError(f"node {self.node.id} fenced while leading") from None
            except DeposedError as exc:
                log.warning("node %s: %s", self.node.id, exc.message)
                self._emit(FailoverEvent("deposed", "", self.node.id, None, 0, lead.term))
                with contextlib.suppress(Exception):
                    await lead.resign()
                self._handle = None  # campaign again from scratch
            except LeaseLostError:
                log.info("node %s lost the leader lease (term %d)", self.node.id, lead.term)
                if lead.held and not self._eligible():
                    log.warning("node %s is fenced: it gives the leader lease up", self.node.id)
                    with contextlib.suppress(Exception):
                        await lead.resign()
                    self._handle = None
            finally:
                self._lead_task = None
                self._leading.clear()
                if self._leadership is lead:
                    self._leadership = None

    async def _rebalance(self, rebalancer: Rebalancer, lead: Tenure) -> None:
        try:
            moves = await rebalancer.step(lead.term, lambda: lead.held)
        except Exception as exc:
            log.warning("node %s: rebalancing step failed: %r", self.node.id, exc)
            return
        for move in moves:
            self._emit(
                FailoverEvent(
                    "rebalanced",
                    move.agent_id,
                    move.from_node,
                    move.to_node,
                    move.epoch,
                    move.term,
                )
            )

    async def _lead(self, lead: Tenure) -> None:
        lost = asyncio.ensure_future(lead.wait_lost())
        try:
            self._wake.set()
            while lead.held and self._eligible():
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {waker, lost},
                        timeout=self.options.sweep_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waker.cancel()
                if lost.done() or not lead.held or not self._eligible():
                    break
                self._wake.clear()
                await self.sweep(lead)
                rebalancer = self.rebalancer
                busy = self._rebalancing is not None and not self._rebalancing.done()
                if rebalancer is not None and not busy and rebalancer.due() and lead.held:
                    # Beside the sweeps, never in front of them: a hand-over waits on its
                    # owner's answer, and a node lost meanwhile must fail over at once.
                    self._rebalancing = asyncio.ensure_future(self._rebalance(rebalancer, lead))
        finally:
            lost.cancel()
            with contextlib.suppress(BaseException):
                await lost
            rebalancing, self._rebalancing = self._rebalancing, None
            if rebalancing is not None:
                rebalancing.cancel()
                with contextlib.suppress(BaseException):
                    await rebalancing
        raise LeaseLostError(f"node {self.node.id} is no longer the leader")

    # -- decisions ---------------------------------------------------------------------------

    def _live(self, node_id: str) -> bool:
        if node_id == self.node.id:
            return True
        return bool(self.node.membership.is_live(node_id))

    async def _confirmed_gone(self, node_id: str) -> bool:
        """A read of the node key: True when its record is really gone (expired or deleted),
        or is another tenant's node (never a member for this tenant's agents)."""
        kv = getattr(self.node.membership, "kv", None)
        if kv is None:
            return not self._live(node_id)
        try:
            entry = await kv.get(node_id)
        except ClusterError:
            return False
        if entry is None:
            return True
        tenant = await tenant_of(self.node.membership, node_id)
        return tenant is not None and tenant != getattr(self.node, "tenant", tenant)

    async def sweep(self, lead: Tenure) -> int:
        """Handle every record whose owner is gone; returns how many were handled."""
        registry = self.node.registry
        orphans: dict[str, list[Any]] = {}
        for owner in registry.owners():  # per owner node, not per record: O(dead's agents)
            if not self._live(owner):
                orphans[owner] = registry.assigned_to(owner)
        handled = 0
        for dead, records in sorted(orphans.items()):
            if not await self._confirmed_gone(dead):
                continue
            seen = self._dead.pop(dead, None)
            started = time.monotonic()
            results = await self._recover_batch(lead, records)
            await self._release(dead, records, results)
            for result in results:
                if isinstance(result, DeposedError | LeaseLostError):
                    raise result
                if isinstance(result, BaseException):
                    log.warning("failover of an agent of %s failed: %r", dead, result)
                elif result:
                    handled += 1
            self._last_failover = time.monotonic() - (seen if seen is not None else started)
        return handled

    async def _release(self, dead: str, records: list[Any], results: list[Any]) -> None:
        """Drop the dead node's reservations of the agents this leader moved or removed (the
        dead node cannot; its ledger would otherwise keep them until it rejoins and sweeps)."""
        ledger = ledger_of(self.node.host.placement)
        tokens = [r.reservation for r, ok in zip(records, results, strict=True) if ok is True]
        if ledger is not None and any(tokens):
            try:
                await ledger.release(dead, tokens)
            except Exception as exc:
                log.info("failover: releasing reservations of %s: %r", dead, exc)

    async def _check_term(self, lead: Tenure, record: Any) -> None:
        """Stop acting if a newer leader exists; a stamp alone does not prove one.

        A record stamped with a higher term deposes this leader only when the leader lease
        (a CAS-written key) confirms it: another holder or a newer term. A stamp the lease
        does not back was not written by a leader (a forged or garbage request) and is
        overwritten by this leader's next write instead of stopping failover for good.
        """
        if not lead.held:
            raise LeaseLostError(f"node {self.node.id}: leader lease lapsed; not acting")
        stamped = record.metadata.get(TERM_KEY) if isinstance(record.metadata, Mapping) else None
        if (
            isinstance(stamped, int | float)
            and not isinstance(stamped, bool)
            and stamped > lead.term
            and await self._lease_confirms_newer(lead)
        ):
            raise DeposedError(
                f"record {record.agent_id!r} was written in term {stamped} > our term "
                f"{lead.term}; a newer leader exists",
                details={"agent_id": record.agent_id, "term": lead.term, "seen": stamped},
            )

    async def _lease_confirms_newer(self, lead: Tenure) -> bool:
        """True unless the leader lease shows this node still leading in ``lead.term``."""
        coordination = getattr(self.node, "coordination", None) or self._own_coordination
        if coordination is None or self._elector is not None:
            return True  # no lease to ask (a custom elector): believe the stamp, as before
        try:
            current = await coordination.leader(self.options.lease_name)
        except Exception as exc:
            log.warning("failover: cannot read the leader lease (%r); stepping down", exc)
            return True
        if current == (self.node.id, lead.term):
            self._counters["forged_terms"] += 1
            log.warning(
                "failover: a registry record carries a term stamp the leader lease does not "
                "back (we lead in term %d); ignoring it",
                lead.term,
            )
            return False
        return True

    def _stamp(self, lead: Tenure, record: Any) -> Any:
        metadata = dict(record.metadata)
        metadata[TERM_KEY] = lead.term
        metadata[LEADER_KEY] = self.node.id
        return msgspec.structs.replace(record, metadata=metadata)

    async def _recover_batch(self, lead: Tenure, records: list[Any]) -> list[Any]:
        """Recover ``records`` with ``concurrency`` workers; per record ``True``/``False``, the
        exception it raised, or ``None`` when the batch stopped first (this leader deposed).

        A fixed pool, not a task per record: tens of thousands of pending tasks are a heap the
        garbage collector walks again and again, long enough to cost the leader its lease.
        """
        director = self._director()
        results: list[Any] = [None] * len(records)
        todo = iter(enumerate(records))
        stop = False

        async def worker() -> None:
            nonlocal stop
            for i, record in todo:
                if stop:
                    return
                try:
                    results[i] = await self._recover(lead, record, director)
                except (DeposedError, LeaseLostError) as exc:
                    results[i] = exc
                    stop = True  # not the leader any more: leave the rest to the next one
                except Exception as exc:
                    results[i] = exc

        workers = min(self.options.concurrency, len(records))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return results

    def _director(self) -> BatchDirector:
        return BatchDirector(self.node)

    async def _recover(self, lead: Tenure, record: Any, director: BatchDirector) -> bool:
        """Move (or remove) one orphaned record by CAS; True when this leader changed it."""
        registry = self.node.registry
        dead = record.node
        for _ in range(4):
            await self._check_term(lead, record)
            try:
                if record.critical or self.options.non_critical == "replace":
                    return await self._replace(lead, record, dead, director)
                await registry.remove(record.agent_id, expected=record, tenant=record.tenant)
                self._counters["removed"] += 1
                self._emit(
                    FailoverEvent("removed", record.agent_id, dead, None, record.epoch, lead.term)
                )
                return True
            except CASConflictError:
                self._counters["conflicts"] += 1
                fresh = await registry.lookup(
                    record.agent_id, consistent=True, tenant=record.tenant
                )
                if fresh is None or fresh.node != dead:
                    if fresh is not None:
                        await self._check_term(lead, fresh)
                    return False
                record = fresh
        return False

    @_tracing.traced("failover", agent=lambda self, lead, record, *_: record.agent_id)
    async def _replace(self, lead: Tenure, record: Any, dead: str, director: BatchDirector) -> bool:
        required, resources = self._requirements(record)
        ledger = director.ledger

        async def place() -> str:
            return await director.place(
                record.agent_id,
                strategy=_strategy_of(record),
                capabilities=required,
                resources=resources,
                origin=self.node.id,
                exclude=[dead],
            )

        try:  # the target's resources are reserved by CAS before the record moves there
            target, token = await reserve_placed(ledger, record.agent_id, resources, place)
        except (NoCapacityError, PlacementError) as exc:
            self._counters["pending"] += 1
            self._emit(FailoverEvent("pending", record.agent_id, dead, None, record.epoch, 0))
            log.warning("no node can take %s now (%s); retrying", record.agent_id, exc.message)
            return False
        expected = msgspec.structs.replace(
            self._stamp(lead, record), resources=resources, reservation=token
        )

        async def move() -> Any:
            await self._check_term(lead, record)
            return await self.node.registry.move(
                record.agent_id, to=target, expected=expected, tenant=record.tenant
            )

        director.taken(target)
        try:
            moved = await holding(ledger, target, token, move())
        finally:
            director.done(target)
        self._counters["moved"] += 1
        self._kick(moved)
        self._emit(
            FailoverEvent("moved", record.agent_id, dead, moved.node, moved.epoch, lead.term)
        )
        return True

    def _kick(self, record: Any) -> None:
        """Ask the target to start the agent now (its reconciliation would, a little later).

        At most ``kick_concurrency`` start requests are in flight, sent by as many workers
        from one queue: a burst of activations on one target must not starve its event loop
        (and with it, its own lease renewals), and a failover of tens of thousands of agents
        must not hold a task per agent."""
        self._kick_queue.append(record)
        # counted when started and when their loop ends (not by done tasks, which leave the
        # set a turn later): a record queued meanwhile always has a worker to take it
        if self._kick_workers < self.options.kick_concurrency:
            self._kick_workers += 1
            task = asyncio.ensure_future(self._kick_worker())
            self._kicks.add(task)
            task.add_done_callback(self._kicks.discard)

    async def _kick_worker(self) -> None:
        try:
            while self._kick_queue:
                record = self._kick_queue.popleft()
                try:
                    await self._kick_one(record)
                except Exception as exc:
                    log.debug("start request for %s after a move failed: %r", record.agent_id, exc)
        finally:
            self._kick_workers -= 1

    async def _kick_one(self, record: Any) -> None:
        node = self.node
        if record.node == node.id:
            await node.host.activate(record)
            return
        await node.client.request(
            record.node,
            "start",
            encode_request(record.agent_id, None, epoch=record.epoch),
            timeout=max(1.0, node.client.call_timeout),
            agent_id=record.agent_id,
        )

    def _requirements(self, record: Any) -> tuple[list[str], dict[str, float]]:
        required = [*record.capabilities]
        resources: dict[str, float] = {}
        cls = self.node.host.types.get(record.type)
        spec = cluster_spec(cls) if cls is not None else None
        if spec is not None:
            required = [*spec.capabilities]
            resources = positive(spec.resources)
        if record.resources:  # what it holds now, even when this node does not know its class
            resources = positive(record.resources)
        if record.type:
            required.append(f"type:{record.type}")
        return sorted(set(required)), resources


def _strategy_of(record: Any) -> Any:
    placement = record.placement
    if isinstance(placement, Mapping):
        placement = placement.get("strategy") or placement.get("name")
    if not placement or placement == "local":
        return "least_loaded"
    return placement


# -- the coordination adapter -------------------------------------------------------------------


class _CampaignTenure:
    """One tenure of a coordination ``Leadership`` campaign, as a :class:`Tenure`."""

    def __init__(self, handle: Any, term: int) -> None:
        self._handle = handle
        self._term = int(term)

    @property
    def term(self) -> int:
        return self._term

    @property
    def held(self) -> bool:
        return bool(self._handle.is_leader) and self._handle.term == self._term

    async def wait_lost(self) -> None:
        while self.held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._handle.wait_lost(), 0.25)

    async def resign(self) -> None:
        await self._handle.resign()


__all__ = [
    "LEADER_KEY",
    "LEADER_LEASE",
    "TERM_KEY",
    "DeposedError",
    "Elector",
    "Failover",
    "FailoverEvent",
    "FailoverOptions",
    "FailoverStatistics",
    "Tenure",
]
