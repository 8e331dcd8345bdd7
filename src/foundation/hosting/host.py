"""``AgentHost``: the agents one node runs, and how they start, stop, fence and move.

The host owns the node's local set: agents running here (clustered or not), activations under
way, agents **parked** for a hand-over (reconciliation leaves them alone) and the fenced state.
Everything that starts or stops an agent on this node goes through it:

* **activation** (:meth:`AgentHost.activate`): once per agent, fenced at the registry epoch (the
  state store claims the state key by CAS first), plus the agent's inbox when it is delivered at
  least once;
* **waiting for a local agent** (:meth:`AgentHost.wait_local`): a request for an agent the
  registry assigns here but that is not running yet waits for its activation, or for the rejoin
  of a fenced node that is taking its lease back;
* **fencing** (:meth:`AgentHost.on_fenced` / :meth:`AgentHost.on_rejoined`): the membership's
  callbacks when the lease is lost and held again;
* **reconciliation** (:meth:`AgentHost.reconcile`): make the running set match the registry;
* **hand-over** (:meth:`AgentHost.hand_over`): the one way an agent leaves this node for another
  with its state (rebalancing and drain both use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec

from foundation import _tracing
from foundation._errors import (
    InvalidRequestError,
    NodeDrainingError,
    NodeUnavailableError,
    NotOwnerError,
    PlacementError,
)
from foundation._events import NodeEvents
from foundation._hooks import TaskSet
from foundation.hosting.admission import move_reserved
from foundation.hosting.clustered import ClusterSpec, cluster_spec, type_name_of
from foundation.hosting.state import KVStateStore
from foundation.membership.membership import Membership
from foundation.membership.tenants import refuse_foreign_node
from foundation.placement.placement import PlacementDirector
from foundation.registry.registry import ClusterRegistry, RegistryRecord
from jido import (
    AgentNotFoundError,
    AgentStoppedError,
    DefinitionError,
    FencedError,
    JidoError,
    Runtime,
    StoreError,
)

log = logging.getLogger("foundation.node")

RELEASED = "released"
"""Stop reason of an agent its node let go of (moved, handed over, fenced, stopped from the
cluster). A request still queued then was never handled, so the node answers it
``NotOwnerError`` and the ref looks for the agent's owner again."""


#: Agents settled between two yields of a full reconciliation.
_SWEEP_SLICE = 500


def released(exc: AgentStoppedError) -> bool:
    """True when ``exc`` says the node let the agent go before handling the request."""
    return exc.details.get("reason") == RELEASED


class Inbox(Protocol):
    """A running inbox of one at-least-once agent (see ``foundation.messaging.inbox``)."""

    async def stop(self) -> None:
        """Stop consuming (what was not acknowledged is redelivered to the next owner)."""
        ...


OpenInbox = Callable[[str, Any, int, Callable[[BaseException], None]], Awaitable[Inbox]]
"""``open_inbox(agent_id, agent_ref, after_seq, on_stopped)`` starts the inbox of an agent."""

StartRemote = Callable[[RegistryRecord, "dict[str, Any] | None"], Awaitable[None]]
"""``start_remote(record, state)`` asks the owner named by ``record`` to start the agent."""


class AgentHost:
    """The local agents of one node (see the module docs).

    Created with the node; :meth:`bind` gives it the runtime, store, registry and membership
    once the node's start-up has opened them.
    """

    def __init__(
        self,
        node_id: str,
        *,
        types: Mapping[str, type],
        call_timeout: float,
        counters: dict[str, int],
        tasks: TaskSet,
    ) -> None:
        self.node_id = node_id
        self.types = types
        self.call_timeout = call_timeout
        self.counters = counters
        self.tasks = tasks
        self.runtime: Runtime = None  # type: ignore[assignment]
        self.state_store: KVStateStore = None  # type: ignore[assignment]
        self.registry: ClusterRegistry = None  # type: ignore[assignment]
        self.membership: Membership = None  # type: ignore[assignment]
        self.placement: PlacementDirector = None  # type: ignore[assignment]
        self._open_inbox: OpenInbox | None = None
        self._start_remote: StartRemote | None = None
        self.local: dict[str, Any] = {}  # agent id -> jido AgentRef (running here)
        self.starting: dict[str, asyncio.Future[Any]] = {}
        self.unclustered: set[str] = set()
        self.parked: set[str] = set()  # agents being handed over: not restarted here
        self._stopping_ids: set[str] = set()
        self._inboxes: dict[str, Inbox] = {}
        self.durable: set[str] = set()  # local agents whose casts go through their inbox
        self.fenced = False
        self.fenced_event = asyncio.Event()
        self._unfenced = asyncio.Event()  # set while not fenced (see wait_local)
        self._unfenced.set()
        self.draining = False
        self.reconcile_wake = asyncio.Event()
        # Registry changes about this node's agents: reconciled alone, not by a full sweep (a
        # sweep per change is O(agents) per spawn); anything else wakes a full sweep.
        self._dirty: set[str] = set()
        self._full = True
        self.fence_listeners: list[Callable[[], None]] = []
        """Called (synchronously) when the node fences, before its agents stop."""
        self.events = NodeEvents()
        """The node's recent fences (and, from its security, denials)."""
        self.admit: Callable[[str], Awaitable[None]] | None = None
        """Called with an agent id before a virtual activation claims it; raises to refuse."""

    def bind(
        self,
        *,
        runtime: Runtime,
        state_store: KVStateStore,
        registry: ClusterRegistry,
        membership: Membership,
        placement: PlacementDirector,
        open_inbox: OpenInbox,
        start_remote: StartRemote,
    ) -> None:
        """Give the host the parts it runs agents with (the node's runtime stage)."""
        self.runtime = runtime
        self.state_store = state_store
        self.registry = registry
        self.membership = membership
        self.placement = placement
        self._open_inbox = open_inbox
        self._start_remote = start_remote
        runtime.add_listener(self._on_agent_event)

    # -- lookups -------------------------------------------------------------------------------

    def local_ref(self, agent_id: str) -> Any:
        """The running local agent ``agent_id`` (``None`` if not here, or fenced)."""
        if self.fenced and agent_id not in self.unclustered:
            return None
        return self.local.get(agent_id)

    def spec_of(self, type_name: str) -> ClusterSpec | None:
        """The cluster spec of the hosted agent type ``type_name`` (``None`` if not hosted)."""
        cls = self.types.get(type_name)
        return cluster_spec(cls) if cls is not None else None

    def not_here(self, agent_id: str) -> NotOwnerError:
        """The error that tells a caller to look ``agent_id``'s owner up again."""
        record = self.registry.cached(agent_id) if self.registry is not None else None
        return NotOwnerError(
            f"node {self.node_id} does not run agent {agent_id!r}; look up its owner again",
            details={
                "agent_id": agent_id,
                "node": self.node_id,
                "owner": record.node if record is not None else None,
            },
        )

    def load(self) -> dict[str, Any]:
        """The load this node publishes in its membership record: its agents, and the
        resources reserved here (``{"agents": 3, "cpu": 1.5}``)."""
        reserved = getattr(self.placement, "reservations", None)
        totals = reserved.reserved(self.node_id) if reserved is not None else {}
        return {**totals, "agents": len(self.local)}

    # -- waiting for a local agent -------------------------------------------------------------

    async def wait_local(self, agent_id: str, deadline: float) -> Any:
        """The local agent ``agent_id`` once it runs here (``None``: not here, look again).

        An agent the registry assigns here but that is not running yet (starting, or the node
        is rejoining after a fence) is waited for, up to ``deadline``. Never returns a
        clustered agent while the node is fenced.
        """
        ref = self.local_ref(agent_id)
        if ref is not None:
            return ref
        if agent_id in self.parked:
            return None  # being handed over: the caller follows the registry
        pending = self.starting.get(agent_id)
        if pending is None:
            record = self.registry.cached(agent_id)
            if record is None or record.node != self.node_id:
                return None
            if self.fenced:
                if not await self.wait_rejoined(deadline):
                    return None
                ref = self.local_ref(agent_id)  # the rejoin may have started it already
                if ref is not None:
                    return ref
            self.wake_full()
            pending = self._start_future(agent_id)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        with contextlib.suppress(TimeoutError, JidoError):
            await asyncio.wait_for(asyncio.shield(pending), remaining)
        return self.local_ref(agent_id)

    async def wait_rejoined(self, deadline: float) -> bool:
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
        return not self.fenced

    def _start_future(self, agent_id: str) -> asyncio.Future[Any]:
        fut = self.starting.get(agent_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.starting[agent_id] = fut
        return fut

    # -- activation ----------------------------------------------------------------------------

    async def handle_start(self, agent_id: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        """Serve a ``start`` request: activate ``agent_id`` here if the registry says so."""
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
            record = await self.registry.lookup(agent_id, consistent=True)
        if record is None or record.node != self.node_id:
            raise self.not_here(agent_id)
        if self.fenced:
            # Placed here (by a node that already sees this node's new record, or one that has
            # not seen the old one expire yet): the record assigning the agent here is what
            # counts, so let the fence end and the rejoin finish rather than refuse; a spawn
            # refused now would leave its record here anyway. ``activate`` still refuses while
            # fenced, and a node that never rejoins answers when the wait ends.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unfenced.wait(), self.call_timeout * 0.9)
        state = extra.get("state")
        await self.activate(
            record,
            state=state if isinstance(state, dict) else None,
            fresh=bool(extra.get("fresh")),
        )
        return {"node": self.node_id, "epoch": record.epoch}

    @_tracing.traced("activate", agent=lambda self, record, **_: record.agent_id)
    async def activate(
        self, record: RegistryRecord, *, state: dict[str, Any] | None = None, fresh: bool = False
    ) -> Any:
        """Start the agent of ``record`` here (once), fenced at ``record.epoch``."""
        agent_id = record.agent_id
        ref = self.local.get(agent_id)
        if ref is not None:
            return ref
        fut = self.starting.get(agent_id)
        if fut is not None and getattr(fut, "_fdn_running", False):
            return await asyncio.shield(fut)
        fut = self._start_future(agent_id)
        fut._fdn_running = True  # type: ignore[attr-defined]
        try:
            if self.fenced or self.draining:
                raise NodeDrainingError(
                    f"node {self.node_id} is not accepting agents now",
                    details={"node": self.node_id, "fenced": self.fenced},
                )
            cls = self.types.get(record.type)
            if cls is None:
                raise DefinitionError(
                    f"node {self.node_id} does not host agent type {record.type!r}; start it "
                    "with that class in its agents list",
                    details={"node": self.node_id, "type": record.type},
                )
            spec = cluster_spec(cls)
            checkpoint = await self.state_store.activate(
                agent_id, int(record.epoch), agent_type=record.type, fresh=fresh
            )
            initial = state if checkpoint is None else None
            ref = await self.runtime.start(cls, id=agent_id, state=initial)
            self.local[agent_id] = ref
            self.counters["starts"] += 1
            if spec is not None and spec.delivery == "at_least_once":
                after = int(checkpoint.meta.get("stream_seq", 0)) if checkpoint else 0
                try:
                    await self._start_inbox(agent_id, ref, after)
                except Exception as exc:
                    # Without its inbox the agent would never see its signals: undo the start
                    # so the next reconciliation (or start request) tries again.
                    await self.stop_local(agent_id)
                    raise StoreError(
                        f"agent {agent_id!r}: its inbox could not be started ({exc!r}); the "
                        "agent was stopped and will be started again on the next reconciliation",
                        details={"agent_id": agent_id, "node": self.node_id},
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
            if self.starting.get(agent_id) is fut:
                del self.starting[agent_id]

    async def _start_inbox(self, agent_id: str, ref: Any, after_seq: int) -> None:
        assert self._open_inbox is not None
        inbox: Inbox | None = None

        def stopped(error: BaseException) -> None:
            # The inbox gave up on its own (not stopped by us): restart agent and inbox.
            if (
                inbox is not None
                and self._inboxes.get(agent_id) is inbox
                and agent_id in self.local
            ):
                log.warning(
                    "node %s: inbox of %s stopped (%r); restarting", self.node_id, agent_id, error
                )
                self.tasks.spawn(self._restart_durable(agent_id))

        inbox = await self._open_inbox(agent_id, ref, after_seq, stopped)
        self._inboxes[agent_id] = inbox
        self.durable.add(agent_id)

    async def _restart_durable(self, agent_id: str) -> None:
        await self.stop_local(agent_id)
        self.wake_full()

    # -- stopping ------------------------------------------------------------------------------

    def add_unclustered(self, agent_id: str, ref: Any) -> None:
        """Note an agent started here outside the registry (a class without the mixin)."""
        self.local[agent_id] = ref
        self.unclustered.add(agent_id)

    async def stop_unclustered(self, agent_id: str) -> bool:
        """Stop an agent started here outside the registry; False if ``agent_id`` is not one."""
        if agent_id not in self.unclustered:
            return False
        self.unclustered.discard(agent_id)
        self.local.pop(agent_id, None)
        await self.runtime.stop(agent_id)
        return True

    async def stop_local(self, agent_id: str, *, release: bool = True) -> bool:
        """Stop the local copy of ``agent_id`` (its state stays in the store)."""
        ref = self.local.pop(agent_id, None)
        self.durable.discard(agent_id)
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
            log.info("node %s: %s stopped with %s", self.node_id, agent_id, exc.type)
        finally:
            self._stopping_ids.discard(agent_id)
            if release:
                self.state_store.release(agent_id)
        self.counters["stops"] += 1
        return True

    async def _on_agent_event(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        agent_id = getattr(event, "agent_id", "")
        if kind in ("stopped", "crashed") and agent_id in self.local:
            if agent_id in self._stopping_ids:
                return
            # Stopped on its own (fenced, finished, crashed beyond its restart budget).
            self.local.pop(agent_id, None)
            self.unclustered.discard(agent_id)
            self.durable.discard(agent_id)
            inbox = self._inboxes.pop(agent_id, None)
            if inbox is not None:
                self.tasks.spawn(inbox.stop())
            self.state_store.release(agent_id)
            reason = getattr(event, "reason", None)
            if reason == "fenced" or isinstance(getattr(event, "error", None), FencedError):
                self.counters["fenced_stops"] += 1
                self.events.add("fenced", agent=agent_id, detail="a newer owner exists")
                log.warning(
                    "node %s: agent %s fenced (a newer owner exists)", self.node_id, agent_id
                )

    # -- fencing -------------------------------------------------------------------------------

    async def on_fenced(self, *_: Any) -> None:
        """The lease could not be renewed in time: stop every agent before it can expire.

        From this moment the state store refuses every write (no network needed to refuse),
        no signal is dispatched to a local agent, and all clustered agents stop concurrently.
        """
        self.fenced = True
        self._unfenced.clear()
        self.state_store.fence()
        ids = [a for a in self.local if a not in self.unclustered]
        log.warning("node %s: lease lost, fencing %d agents", self.node_id, len(ids))
        self.events.add("fence", detail=f"lease lost: {len(ids)} agent(s) stopped")
        for listener in self.fence_listeners:
            listener()  # e.g. the failover: a fenced node gives the leader lease up
        self.counters["fenced_stops"] += len(ids)
        await asyncio.gather(*(self.stop_local(a) for a in ids), return_exceptions=True)
        if self.fenced:
            self.fenced_event.set()

    async def on_rejoined(self, *_: Any) -> None:
        """The lease is held again: restart whatever the registry still assigns here."""
        self.state_store.unfence()
        self.fenced = False
        self.fenced_event.clear()
        self._unfenced.set()
        self.wake_full()

    # -- reconciliation ------------------------------------------------------------------------

    async def run_reconciler(
        self, interval: float, reconcile: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``reconcile`` when woken (:meth:`wake_full`) and every ``interval`` seconds;
        a wake-up by registry changes of this node's agents reconciles just those."""
        wake = self.reconcile_wake
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives in
            # the turn the wake-up completes, and this loop (so Node.stop) would go on forever
            cm = asyncio.timeout(interval)
            with contextlib.suppress(TimeoutError):
                async with cm:
                    await wake.wait()
            wake.clear()
            full = self._full or cm.expired()
            self._full = False
            dirty, self._dirty = self._dirty, set()
            try:
                if full:
                    await reconcile()
                elif dirty and not (self.fenced or self.draining):
                    for agent_id in dirty:
                        await self._settle(agent_id, self.registry.cached(agent_id))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: reconciliation failed", self.node_id)

    def wake_full(self) -> None:
        """Run a full reconciliation soon."""
        self._full = True
        self.reconcile_wake.set()

    def on_registry_change(self, change: Any) -> None:
        """Registry listener: note a change that concerns an agent of this node."""
        record, previous = change.record, change.previous
        for rec in (record, previous):
            if rec is not None and rec.node == self.node_id:
                self._dirty.add(rec.agent_id)
                self.reconcile_wake.set()
                return

    async def reconcile(self) -> None:
        """Make the agents running here match the registry once (start assigned, stop moved)."""
        assigned = {r.agent_id: r for r in self.registry.assigned_to(self.node_id)}
        for i, agent_id in enumerate(list(self.local)):
            await self._settle(agent_id, assigned.get(agent_id))
            if i % _SWEEP_SLICE == 0:
                await asyncio.sleep(0)  # a sweep over 100k agents must not hold the loop
        for i, (agent_id, record) in enumerate(list(assigned.items())):
            if self.fenced or self.draining:
                return  # fenced (or draining) during the sweep: nothing more starts here
            await self._settle(agent_id, record)
            if i % _SWEEP_SLICE == 0:
                await asyncio.sleep(0)

    async def _settle(self, agent_id: str, record: RegistryRecord | None) -> None:
        """Make agent ``agent_id`` run here exactly when ``record`` assigns it here."""
        if agent_id in self.unclustered:
            return  # runs here only, outside the registry
        mine = record is not None and record.node == self.node_id
        if agent_id in self.local:
            if (
                mine
                and record is not None
                and self.state_store.epoch_of(agent_id) in (None, int(record.epoch))
            ):
                return
            await self.stop_local(agent_id)  # moved, removed, or re-assigned at a new epoch
        if record is None or not mine or agent_id in self.local or agent_id in self.parked:
            return
        starting = self.starting.get(agent_id)
        if starting is not None and getattr(starting, "_fdn_running", False):
            return  # an activation is under way (a bare waiter does not count)
        if record.type not in self.types:
            return
        try:
            await self.activate(record)
        except FencedError:
            log.info("node %s: %s is owned by a newer epoch; not starting", self.node_id, agent_id)
        except NodeDrainingError:
            # fenced or draining: a state of the node (logged once, where it changed), not one
            # warning per agent, which at tens of thousands of agents is itself a stall
            log.debug("node %s: not starting %s (fenced or draining)", self.node_id, agent_id)
        except JidoError as exc:
            log.warning("node %s: could not start %s: %s", self.node_id, agent_id, exc)

    # -- placement and hand-over ---------------------------------------------------------------

    async def place(
        self,
        agent_cls: type,
        spec: ClusterSpec,
        agent_id: str,
        *,
        away: bool = False,
        on: str | None = None,
    ) -> str:
        """A node for ``agent_id`` (``away``: any node but this one, for a hand-over).

        ``on``: that node, which must be a live member (``NodeUnavailableError`` otherwise: a
        record claimed for a node that is not there would only be moved by the failover).
        """
        if on is not None:
            live = not self.fenced if on == self.node_id else self.membership.is_live(on)
            if not live:
                await refuse_foreign_node(self.membership, self.registry.tenant, on)
                raise NodeUnavailableError(
                    f"node {on!r} is not a live member: wait for it to join, or let placement "
                    "choose",
                    details={"node": on},
                )
            return on
        local = away and spec.placement == "local"
        return str(
            await self.placement.place(
                agent_id,
                strategy="least_loaded" if local else spec.placement,
                capabilities=[*spec.capabilities, f"type:{type_name_of(agent_cls)}"],
                resources=dict(spec.resources),
                origin=self.node_id,
                exclude=[self.node_id] if away else (),
            )
        )

    async def hand_over_all(self) -> None:
        """Drain: hand every clustered agent running here over to a node placed for it."""
        for agent_id in list(self.local):
            if agent_id in self.unclustered:
                continue
            try:
                await self.hand_over_placed(agent_id)
            except JidoError as exc:
                log.warning("node %s: could not hand %s over: %s", self.node_id, agent_id, exc)

    async def hand_over_placed(self, agent_id: str) -> None:
        """Hand ``agent_id`` over to a node placed for it, or stop it here if none fits."""
        record = await self.registry.lookup(agent_id, consistent=True)
        cls = self.types.get(record.type) if record is not None else None
        spec = cluster_spec(cls) if cls is not None else None
        if record is None or cls is None or spec is None or record.node != self.node_id:
            await self.stop_local(agent_id)
            return
        try:
            target = await self.place(cls, spec, agent_id, away=True)
        except PlacementError:
            await self.stop_local(agent_id)
            return
        await self.hand_over(agent_id, to=target, record=record)

    @_tracing.traced("hand_over", agent=lambda self, agent_id, **_: agent_id)
    async def hand_over(
        self,
        agent_id: str,
        *,
        to: str,
        metadata: Mapping[str, Any] | None = None,
        record: RegistryRecord | None = None,
    ) -> dict[str, Any]:
        """Hand ``agent_id`` over from this node (its owner) to node ``to``, with its state.

        The agent is parked (reconciliation will not restart it) and stopped — the runtime lets
        the command in progress finish and commits its final checkpoint — then its resources
        are reserved on ``to`` and its registry record moves there by CAS (the epoch grows;
        ``metadata`` is stamped on it; ``NoCapacityError`` if ``to`` is full), and
        ``to`` is asked to start it. No two copies run: the old one stops before the record
        moves. ``record`` is the owner's record when the caller has just read it.
        """
        if record is None:
            record = await self.registry.lookup(agent_id, consistent=True)
        if record is None or record.node != self.node_id:
            raise NotOwnerError(
                f"node {self.node_id} does not own {agent_id!r}; nothing to hand over",
                details={"agent_id": agent_id, "node": self.node_id},
            )
        self.parked.add(agent_id)
        try:
            await self.stop_local(agent_id)
            expected = record
            if metadata:
                expected = msgspec.structs.replace(
                    record, metadata={**record.metadata, **dict(metadata)}
                )
            moved = await move_reserved(self, agent_id, to=to, expected=expected)
        except BaseException:
            self.parked.discard(agent_id)
            self.reconcile_wake.set()  # restart it here: the record did not move
            raise
        self.parked.discard(agent_id)
        assert self._start_remote is not None
        with contextlib.suppress(NodeUnavailableError):
            await self._start_remote(moved, None)
        return {"agent_id": agent_id, "from": self.node_id, "to": to, "epoch": moved.epoch}


def state_dict(state: Any) -> dict[str, Any] | None:
    """An agent's initial state as a dict (from a mapping or a pydantic model; ``None`` kept)."""
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


__all__ = [
    "RELEASED",
    "AgentHost",
    "Inbox",
    "OpenInbox",
    "StartRemote",
    "released",
    "state_dict",
]
