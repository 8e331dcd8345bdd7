"""Resource reservations: what each node has promised to the agents placed on it.

The placement director chooses a node from cached views (membership, registry, this ledger's
watched cache). That choice is a proposal only: the resources are **taken** by a
compare-and-set on the chosen node's ledger, which refuses what does not fit. Two spawners that
both saw ``cpu: 0.5`` free on a node race on one key; one wins, the other's write fails its CAS,
it re-reads the ledger, finds the node full and places again. No node is ever over-committed,
whatever the number of concurrent spawners, failovers and hand-overs.

**Ledger.** One key per node in the ``foundation_reservations`` bucket, ``<tenant>.<node_id>``
→ ``{"entries": {token: {"agent", "resources", "at"}}}``. A reservation is one entry under a
fresh random token; the agent's registry record carries the same token (``reservation``) and
the resources, so the ledger and the registry can be compared entry by entry. Agents that ask
for no resources take no entry (the ledger costs nothing on their spawn path).

**Who writes.** Anyone reserves on any node (the spawner, the failover leader, the owner handing
an agent over), always by CAS against the capacity the node declares in its membership record.
Releases are made by the owner of the ledger, driven by the registry (the truth about where
agents run): when a record assigned here is removed, moved away or re-reserved, its token is
released. So stopping an agent, passivating it, removing it or moving it away never needs a
hook of its own. Exceptions: a placer whose registry write failed releases what it reserved at
once, and the failover leader releases the tokens of a dead node's agents it moved or removed
(the dead node cannot).

**Sweep.** The owner compares its ledger with the registry every ``sweep_interval`` seconds
(and at start): an entry no record assigned here carries is dropped once it is older than
``grace`` (it was reserved by a placer that died before its registry write); a record assigned
here whose token has no entry gets one back (even beyond capacity: the agent runs here). Both
only write when they find a difference.

Why a per-node ledger and not just resources in the registry records: the sum of a node's
records is exact, but two claims of *different* agents on one node are two writes to two keys,
and nothing orders them; a CAS on one per-node key is what serialises them. Why per-agent
entries and not running totals: adding and removing a token is idempotent (a retried release
never subtracts twice), and a leak can be found and repaired by comparing with the registry.

Cost: one CAS per placement that asks for resources (plus a retry per lost race); the value
grows with the number of reserving agents on a node (about 80 bytes each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NatsClient

from foundation import _wire as wire
from foundation._errors import CASConflictError, KeyExistsError, NoCapacityError
from foundation._ids import check_token
from foundation.membership.view import NodeRecord
from foundation.nats.kv import KV, BucketSpec, KVEntry, Watch
from foundation.placement.placement import PlacementDirector
from foundation.registry.registry import ClusterRegistry, RegistryChange

log = logging.getLogger("foundation.placement")

T = TypeVar("T")

#: Seconds an entry no registry record carries is kept (a placement between its reservation
#: and its registry write).
DEFAULT_GRACE = 60.0
#: Seconds between two comparisons of a node's ledger with the registry.
DEFAULT_SWEEP_INTERVAL = 5.0
_CAS_TRIES = 100
_EPSILON = 1e-9


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One reservation: an agent's resources on one node."""

    agent: str
    """The agent it was made for."""
    resources: dict[str, float]
    """What is reserved."""
    at: float = 0.0
    """Unix time it was made."""


class Ledger(msgspec.Struct, frozen=True, kw_only=True):
    """The reservations of one node (the value of its key)."""

    entries: dict[str, Entry] = msgspec.field(default_factory=dict)
    """Token -> entry."""

    def totals(self) -> dict[str, float]:
        """Reserved amount per resource."""
        out: dict[str, float] = {}
        for entry in self.entries.values():
            for name, amount in entry.resources.items():
                out[name] = out.get(name, 0.0) + float(amount)
        return out


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Ledger)
_EMPTY = Ledger()

CapacityOf = Callable[[str], Mapping[str, float]]
"""``capacity_of(node_id)``: the capacity a node declares (``{}`` when unknown)."""


def positive(resources: Mapping[str, float] | None) -> dict[str, float]:
    """The requested resources worth reserving (amounts > 0)."""
    return {k: float(v) for k, v in (resources or {}).items() if v > 0}


class ReservationLedger:
    """The reservation ledgers of a tenant's nodes, with a watched cache (see module docs).

    ``node_id``: the node this process runs; it keeps (releases, sweeps) its own ledger.
    ``None`` makes a ledger that only reserves and reads. ``capacity_of`` gives a node's
    declared capacity (default: from ``membership``).
    """

    def __init__(
        self,
        nc: NatsClient,
        node_id: str | None,
        *,
        registry: ClusterRegistry | None = None,
        membership: Any = None,
        capacity_of: CapacityOf | None = None,
        tenant: str = wire.DEFAULT_TENANT,
        replicas: int | None = None,
        grace: float = DEFAULT_GRACE,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
    ) -> None:
        self.nc = nc
        self.node_id = node_id
        self.tenant = check_token("tenant", tenant, key=True)
        self.registry = registry
        self._membership = membership
        self._capacity_of = capacity_of
        self._replicas = replicas
        self.grace = grace
        self.sweep_interval = sweep_interval
        self.kv: KV | None = None
        # node id -> (revision, ledger, its totals): placement reads the totals per candidate
        self._cache: dict[str, tuple[int, Ledger, dict[str, float]]] = {}
        self._watch: Watch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._to_release: set[str] = set()
        self._wake = asyncio.Event()
        self.released = 0
        """Tokens this node released from its own ledger (counter)."""

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the bucket, fill the cache, and (owner) start keeping this node's ledger."""
        self.kv = await KV.open(
            self.nc,
            BucketSpec(wire.RESERVATIONS_BUCKET, description="foundation resource reservations"),
            replicas=self._replicas,
        )
        self._watch = self.kv.watch(f"{self.tenant}.>")
        await self._watch.start()
        self._tasks.append(asyncio.create_task(self._watch_loop(self._watch)))
        await self._watch.wait_caught_up()
        if self.node_id is not None and self.registry is not None:
            self.registry.add_listener(self._on_registry)
            self._tasks.append(
                asyncio.create_task(self._keep(), name=f"reservations-{self.node_id}")
            )

    async def stop(self) -> None:
        """Stop watching and keeping (the cache stays readable)."""
        if self.registry is not None:
            self.registry.remove_listener(self._on_registry)
        with contextlib.suppress(Exception):  # agents handed over just now (a drain)
            await asyncio.wait_for(self._flush(), 2.0)
        if self._watch is not None:
            with contextlib.suppress(Exception):
                await self._watch.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _key(self, node_id: str) -> str:
        return f"{self.tenant}.{check_token('node id', node_id, key=True)}"

    async def _watch_loop(self, watch: Watch) -> None:
        async for entry in watch:
            self._apply_entry(entry)

    def _apply_entry(self, entry: KVEntry) -> None:
        node_id = entry.key.partition(".")[2]
        ledger = _EMPTY
        if not entry.deleted:
            try:
                ledger = _DECODER.decode(entry.value)
            except msgspec.DecodeError:
                log.warning("ignoring an unreadable reservation ledger %r", entry.key)
                return
        self._apply(node_id, entry.revision, ledger)

    def _apply(self, node_id: str, revision: int, ledger: Ledger) -> None:
        current = self._cache.get(node_id)
        if current is None or current[0] < revision:
            self._cache[node_id] = (revision, ledger, ledger.totals())

    # -- reads ---------------------------------------------------------------------------------

    def ledger(self, node_id: str) -> Ledger:
        """The cached ledger of ``node_id`` (empty when it has none)."""
        cached = self._cache.get(node_id)
        return cached[1] if cached is not None else _EMPTY

    def reserved(self, node_id: str) -> dict[str, float]:
        """What is reserved on ``node_id`` per resource, from the cache."""
        cached = self._cache.get(node_id)
        return dict(cached[2]) if cached is not None else {}

    def fits(self, node: NodeRecord, resources: Mapping[str, float] | None) -> bool:
        """True when ``resources`` fit in what ``node`` has free now, as cached (a hint: only
        :meth:`reserve` decides)."""
        reserved = self.reserved(node.id)
        return all(
            float(node.resources.get(name, 0.0)) - reserved.get(name, 0.0) + _EPSILON >= amount
            for name, amount in positive(resources).items()
        )

    def capacity(self, node_id: str) -> dict[str, float]:
        """The capacity ``node_id`` declares (``{}`` when it is not a known member)."""
        if self._capacity_of is not None:
            return dict(self._capacity_of(node_id))
        snapshot = getattr(self._membership, "snapshot", None)
        record: NodeRecord | None = snapshot.get(node_id) if snapshot is not None else None
        return dict(record.resources) if record is not None else {}

    async def read(self, node_id: str) -> tuple[int, Ledger]:
        """The ledger of ``node_id`` read from the server now (revision 0: no key yet)."""
        assert self.kv is not None
        entry = await self.kv.get(self._key(node_id))
        if entry is None:
            return 0, _EMPTY  # no key (or a tombstone): the next write creates it
        self._apply_entry(entry)
        return entry.revision, _DECODER.decode(entry.value)

    # -- writes --------------------------------------------------------------------------------

    async def _write(self, node_id: str, revision: int, ledger: Ledger) -> int:
        assert self.kv is not None
        key = self._key(node_id)
        data = _ENCODER.encode(ledger)
        if revision == 0:
            rev = await self.kv.create(key, data)
        else:
            rev = await self.kv.update(key, data, last=revision)
        self._apply(node_id, rev, ledger)
        return rev

    async def _change(
        self, node_id: str, edit: Callable[[Ledger, bool], Ledger | None]
    ) -> Ledger | None:
        """Apply ``edit(ledger, fresh)`` by CAS until it lands; ``edit`` returns ``None`` for
        "nothing to write". The first try uses the cache; every retry reads the server."""
        cached = self._cache.get(node_id)
        if cached is not None:
            revision, ledger, fresh = cached[0], cached[1], False
        else:
            (revision, ledger), fresh = await self.read(node_id), True
        for _ in range(_CAS_TRIES):
            new = edit(ledger, fresh)
            if new is None and not fresh:
                revision, ledger = await self.read(node_id)
                fresh = True
                continue
            if new is None:
                return None
            try:
                await self._write(node_id, revision, new)
                return new
            except (CASConflictError, KeyExistsError):
                revision, ledger = await self.read(node_id)
                fresh = True
        raise CASConflictError(
            f"the reservation ledger of node {node_id!r} kept changing; retry",
            details={"node": node_id},
        )

    async def reserve(
        self, node_id: str, agent_id: str, resources: Mapping[str, float] | None
    ) -> str:
        """Reserve ``resources`` on ``node_id`` for ``agent_id``; the reservation's token.

        Decided by CAS against the node's declared capacity: raises :class:`NoCapacityError`
        (``details["missing"]``: per lacking resource, the amount asked and what is free)
        when it does not fit. Nothing to reserve returns ``""`` without a write.
        """
        wanted = positive(resources)
        if not wanted:
            return ""
        token = uuid.uuid4().hex[:16]
        capacity = self.capacity(node_id)
        lacking: dict[str, dict[str, Any]] = {}

        def edit(ledger: Ledger, fresh: bool) -> Ledger | None:
            lacking.clear()
            totals = ledger.totals()
            for name, amount in wanted.items():
                free = float(capacity.get(name, 0.0)) - totals.get(name, 0.0)
                if free + _EPSILON < amount:
                    lacking[name] = {"asked": amount, "free": {node_id: max(0.0, free)}}
            if lacking:
                return None
            entry = Entry(agent=agent_id, resources=wanted, at=time.time())
            return Ledger(entries={**ledger.entries, token: entry})

        if await self._change(node_id, edit) is None:
            what = "; ".join(
                f"{name}: {m['asked']:g} asked, {m['free'][node_id]:g} free of "
                f"{float(capacity.get(name, 0.0)):g}"
                for name, m in lacking.items()
            )
            raise NoCapacityError(
                f"node {node_id!r} cannot take agent {agent_id!r} ({what}); add capacity or "
                "place it elsewhere",
                details={"agent_id": agent_id, "node": node_id, "missing": dict(lacking)},
            )
        return token

    async def release(self, node_id: str, tokens: Iterable[str]) -> int:
        """Drop the reservations ``tokens`` from ``node_id``'s ledger; how many were there."""
        drop = {t for t in tokens if t}
        if not drop:
            return 0
        found = 0

        def edit(ledger: Ledger, fresh: bool) -> Ledger | None:
            nonlocal found
            present = drop & ledger.entries.keys()
            found = len(present)
            if not present:
                return None
            return Ledger(entries={t: e for t, e in ledger.entries.items() if t not in drop})

        await self._change(node_id, edit)
        return found

    # -- keeping this node's ledger ------------------------------------------------------------

    def _on_registry(self, change: RegistryChange) -> None:
        previous = change.previous
        if previous is None or previous.node != self.node_id or not previous.reservation:
            return
        record = change.record
        if (
            change.kind == "delete"
            or record is None
            or record.node != self.node_id
            or record.reservation != previous.reservation
        ):
            self._to_release.add(previous.reservation)
            self._wake.set()

    async def _keep(self) -> None:
        last_sweep: float | None = None
        while True:
            if last_sweep is not None:
                timeout = max(0.0, last_sweep + self.sweep_interval - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                await self._flush()
                if last_sweep is None or time.monotonic() - last_sweep >= self.sweep_interval:
                    last_sweep = time.monotonic()
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node %s: keeping the reservation ledger: %r", self.node_id, exc)
                await asyncio.sleep(0.5)

    async def _flush(self) -> None:
        """Release the tokens the registry listener queued (one CAS for all of them)."""
        if self._to_release and self.node_id is not None:
            tokens, self._to_release = self._to_release, set()
            try:
                self.released += await self.release(self.node_id, tokens)
            except Exception:
                self._to_release |= tokens  # the next round tries again
                raise

    async def sweep(self) -> tuple[int, int]:
        """Compare this node's ledger with the registry and repair it (see module docs);
        returns (entries dropped, entries restored)."""
        assert self.node_id is not None and self.registry is not None
        registry = self.registry
        counts = [0, 0]

        def edit(ledger: Ledger, fresh: bool) -> Ledger | None:
            held = {r.reservation: r for r in registry.assigned_to(str(self.node_id))}
            held.pop("", None)
            now = time.time()
            entries = dict(ledger.entries)
            stale = [t for t, e in entries.items() if t not in held and now - e.at > self.grace]
            missing = [r for t, r in held.items() if t not in entries and positive(r.resources)]
            counts[:] = [len(stale), len(missing)]
            if not stale and not missing:
                return None
            for token in stale:
                del entries[token]
            for record in missing:
                entries[record.reservation] = Entry(
                    agent=record.agent_id, resources=positive(record.resources), at=now
                )
            return Ledger(entries=entries)

        if await self._change(self.node_id, edit) is None:
            return 0, 0
        if counts[1]:
            log.warning(
                "node %s: %d agents assigned here had no reservation; restored",
                self.node_id,
                counts[1],
            )
        return counts[0], counts[1]


async def open_placement(
    nc: NatsClient, node_id: str | None, membership: Any, registry: ClusterRegistry
) -> PlacementDirector:
    """A node's placement director counting reservations, with its ledger started (the
    registry's tenant; ``node_id`` keeps its own ledger). Stop it with :func:`stop_placement`."""
    ledger = ReservationLedger(
        nc, node_id, registry=registry, membership=membership, tenant=registry.tenant
    )
    await ledger.start()
    return PlacementDirector(membership, registry, reservations=ledger)


async def stop_placement(director: PlacementDirector) -> None:
    """Stop the reservation ledger of a director made by :func:`open_placement`."""
    ledger = director.reservations
    if isinstance(ledger, ReservationLedger):
        await ledger.stop()


async def reserve_placed(
    ledger: ReservationLedger | None,
    agent_id: str,
    resources: Mapping[str, float] | None,
    place: Callable[[], Awaitable[str]],
    *,
    forced: bool = False,
    tries: int = 16,
) -> tuple[str, str]:
    """Place ``agent_id`` with ``place()`` and reserve its resources there; (node, token).

    A node that turns out full when reserving (its cached view was stale) is left to the next
    ``place()``, which sees the ledger just read; ``forced`` (an explicit target) raises at
    once. ``place()`` raises :class:`NoCapacityError` when no node fits any more.
    """
    last: NoCapacityError | None = None
    for _ in range(tries):
        target = await place()
        if ledger is None or not positive(resources):
            return target, ""
        try:
            return target, await ledger.reserve(target, agent_id, resources)
        except NoCapacityError as exc:
            if forced:
                raise
            last = exc
    assert last is not None
    raise last


async def holding(
    ledger: ReservationLedger | None, node_id: str, token: str, write: Awaitable[T]
) -> T:
    """Await ``write`` (the registry write that records the reservation ``token`` on
    ``node_id``); if it fails, the reservation is released before the error propagates."""
    try:
        return await write
    except BaseException:
        if ledger is not None and token:
            with contextlib.suppress(Exception):
                await ledger.release(node_id, [token])
        raise


__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_SWEEP_INTERVAL",
    "CapacityOf",
    "Entry",
    "Ledger",
    "ReservationLedger",
    "holding",
    "open_placement",
    "positive",
    "reserve_placed",
    "stop_placement",
]
