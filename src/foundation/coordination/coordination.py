"""Coordination primitives on JetStream KV compare-and-set: elections, locks, barriers, config.

Every primitive is a key in the ``foundation_coord`` bucket (the config map has its own
bucket) written with ``create`` (expect revision 0) or ``update(last=rev)``, with a
per-message TTL so the key frees itself when its holder dies. See ``docs/coordination.md``.

**Leader election** (:meth:`Coordination.elect`). A :class:`Leadership` campaigns in the
background: it creates ``lease.<name>`` with a TTL; of any number of contenders exactly one
create succeeds. The winner renews by CAS every ``ttl / 4``; the others watch the key and try
again the moment it is deleted or expires. The **term** of a tenure is the KV revision of the
create that won it: terms grow strictly, a term names exactly one holder, and it is the fencing
token to attach to whatever the leader writes.

Guarantee and limits: a holder considers itself leader only while
``now < (send time of its last acknowledged write) + ttl - margin``, which is before the server
can expire the key, so two holders never both *believe* they lead at the same moment, provided
clocks on both sides advance at the same rate (no clock synchronisation is needed) and the
holder's process is not paused between checking :attr:`Leadership.is_leader` and acting. A pause
(GC, SIGSTOP) can still make an old leader act late: guard effects with the term (fencing
token), e.g. a CAS write that records the term and refuses smaller ones.

**Locks** (:meth:`Coordination.lock`) are the same lease used once: ``async with
coord.lock("name", ttl) as token`` waits for the key, holds it (renewed in the background) and
deletes it by CAS on exit. ``token`` (the create revision) grows with every acquisition. If the
lock was lost while held (renewals failed until its TTL ran out), leaving the block raises
:class:`LeaseLostError`, and :attr:`Lock.lost` became true the moment it was lost.

**Barriers** (:meth:`Coordination.barrier`) wait until ``n`` participants have arrived (one key
each); a barrier name is single use (use a fresh name per round).

**Config** (:attr:`Coordination.config`): a cluster-wide JSON map with CAS and a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient

import jido
from foundation import _wire as wire
from foundation._errors import (
    BarrierError,
    CASConflictError,
    ClusterError,
    CorruptRecordError,
    KeyExistsError,
    LeaseLostError,
)
from foundation._hooks import call_hook, seconds
from foundation._ids import check_token
from foundation.nats.kv import KV, BucketSpec, KVEntry, Watch
from foundation.nats.lease import KVLease

log = logging.getLogger("foundation.coordination")

#: Default lease of an election.
DEFAULT_ELECTION_TTL = timedelta(seconds=1)
#: Default lease of a lock.
DEFAULT_LOCK_TTL = timedelta(seconds=5)
#: How long the server keeps the marker of an expired coordination key.
COORD_MARKER_TTL = timedelta(seconds=30)


class _Lease:
    """A :class:`KVLease` held by a renewal task in the background and reported once lost
    (shared by elections and locks)."""

    def __init__(
        self, kv: KV, key: str, holder: str, ttl: float, on_lost: Callable[[], None]
    ) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.interval = ttl / 4
        self.on_lost = on_lost
        self.lease = KVLease(kv, key, ttl, min(0.25 * ttl, 1.0))
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.held = False

    @property
    def token(self) -> int:
        """Fencing token of the current (or last) tenure."""
        return self.lease.token

    def _payload(self) -> bytes:
        return orjson.dumps(
            {"holder": self.holder, "term": self.token, "renewed_at": time.time(), "ttl": self.ttl}
        )

    def _expire_check(self) -> None:
        if self.held:
            self._lose()

    def _lose(self) -> None:
        if not self.held:
            return
        self.held = False
        self.lease.disarm_expiry()
        self.on_lost()

    @property
    def valid(self) -> bool:
        return self.held and self.lease.unexpired

    async def try_acquire(self) -> bool:
        """One create attempt; True if we now hold the key."""
        try:
            await self.lease.create(self._payload())
        except KeyExistsError:
            return False
        self.held = True
        self.lease.arm_expiry(self._expire_check)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._renew_loop())
        return True

    async def _renew_loop(self) -> None:
        stop = self._stop
        while self.held and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if stop.is_set() or not self.held:
                return
            try:
                # The revision is recorded even if lost meanwhile, for a correct release.
                await self.lease.renew(self._payload())
            except CASConflictError:
                self._lose()  # expired (or deleted) under us
                return
            except ClusterError as exc:
                log.debug("lease %s: renewal failed: %r", self.key, exc)
                continue
            if self.held:
                self.lease.arm_expiry(self._expire_check)

    async def release(self) -> bool:
        """Delete the key by CAS if still held; False if it had been lost."""
        self._stop.set()
        if self._task is not None:
            # Let an in-flight renewal finish so its revision is known for the CAS delete.
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        was_held = self.held and self.lease.revision > 0
        self.held = False
        self.lease.disarm_expiry()
        if not was_held:
            return False
        return await self.lease.release()


async def _wait_absent(kv: KV, key: str, within: float) -> None:
    """Return when ``key`` is absent (or after ``within`` seconds, to re-check)."""
    async with kv.watch(key) as watch:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                async for entry in watch:
                    if entry.deleted:
                        return


class Leadership:
    """A campaign for leadership of ``name``; see :meth:`Coordination.elect`.

    Read :attr:`is_leader` (checked against the lease clock, so it turns false on time even if
    no callback ran), :attr:`term` (the fencing token of the current tenure) and
    :attr:`leader` (the holder last observed). ``on_elected(term)`` and ``on_lost(term)`` are
    called (sync or async) on each change.
    """

    def __init__(
        self,
        coord: Coordination,
        name: str,
        *,
        ttl: float,
        on_elected: Callable[[int], Any] | None,
        on_lost: Callable[[int], Any] | None,
    ) -> None:
        self.name = check_token("election name", name, key=True)
        self._coord = coord
        kv = coord._coord_kv()
        self._key = wire.lease_key(name)
        self._lease = _Lease(kv, self._key, coord.holder, ttl, self._on_lease_lost)
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._elected = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._term = 0
        self.leader: str | None = None
        """Holder of the lease as last observed (this holder's id while leading)."""
        self.terms: list[int] = []
        """Every term this contender has held, in order."""
        self._stopped = False
        self._callbacks: set[asyncio.Task[None]] = set()

    @property
    def is_leader(self) -> bool:
        """True while this contender certainly holds the lease."""
        return self._lease.valid

    @property
    def term(self) -> int | None:
        """Fencing token of the current tenure (None when not leading)."""
        return self._lease.token if self.is_leader else None

    def _on_lease_lost(self) -> None:
        term = self._term
        self._elected.clear()
        self._lost.set()
        self.leader = None
        log.warning("%s lost leadership of %s (term %d)", self._coord.holder, self.name, term)
        task = asyncio.get_running_loop().create_task(call_hook(self._on_lost, term, log=log))
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    async def wait_elected(self) -> int:
        """Wait until this contender leads; returns the term."""
        await self._elected.wait()
        return self._term

    async def wait_lost(self) -> None:
        """Wait until a tenure of this contender ends (lost or resigned)."""
        await self._lost.wait()

    def start(self) -> None:
        """Start campaigning in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._campaign())

    async def _campaign(self) -> None:
        lease = self._lease
        kv = lease.kv
        while not self._stopped:
            if not lease.held:
                try:
                    won = await lease.try_acquire()
                except ClusterError as exc:
                    log.debug("election %s: %r", self.name, exc)
                    won = False
                if won:
                    self._term = lease.token
                    self.terms.append(lease.token)
                    self.leader = self._coord.holder
                    self._lost.clear()
                    self._elected.set()
                    await call_hook(self._on_elected, lease.token, log=log)
                    continue
                with contextlib.suppress(ClusterError):
                    current = await kv.get(self._key)
                    if current is not None:
                        self.leader = str(orjson.loads(current.value).get("holder"))
                try:
                    await _wait_absent(kv, self._key, lease.ttl)
                except ClusterError:
                    await asyncio.sleep(lease.interval)
            else:
                await self._lost.wait()

    async def resign(self) -> None:
        """Stop campaigning and give the lease up at once (others take over immediately)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        was = self._lease.held
        await self._lease.release()
        if was:
            self._elected.clear()
            self._lost.set()
            await call_hook(self._on_lost, self._term, log=log)


class Lock:
    """A distributed lock; ``async with lock as token`` (see :meth:`Coordination.lock`)."""

    def __init__(self, coord: Coordination, name: str, ttl: float, timeout: float | None) -> None:
        self.name = check_token("lock name", name, key=True)
        self._coord = coord
        self._timeout = timeout
        self.lost = False
        """True once the lock was lost while held (its critical section may overlap another)."""
        self._lease = _Lease(
            coord._coord_kv(), wire.lock_key(name), coord.holder, ttl, self._mark_lost
        )

    def _mark_lost(self) -> None:
        self.lost = True

    @property
    def token(self) -> int:
        """Fencing token of the current acquisition (0 before)."""
        return self._lease.token

    @property
    def held(self) -> bool:
        """True while the lock is certainly held."""
        return self._lease.valid

    async def acquire(self) -> int:
        """Wait for the lock (up to the timeout); returns the fencing token."""
        loop = asyncio.get_running_loop()
        deadline = None if self._timeout is None else loop.time() + self._timeout
        while True:
            if await self._lease.try_acquire():
                self.lost = False
                return self._lease.token
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise jido.TimeoutError(
                    f"lock {self.name!r} not acquired within {self._timeout}s; it is held by "
                    "another holder (retry later or raise the timeout)",
                    details={"lock": self.name},
                )
            wait = self._lease.ttl if remaining is None else min(remaining, self._lease.ttl)
            await _wait_absent(self._lease.kv, self._lease.key, wait)

    async def release(self) -> None:
        """Release; raises :class:`LeaseLostError` if the lock had been lost meanwhile."""
        ok = await self._lease.release()
        if not ok or self.lost:
            self.lost = True
            raise LeaseLostError(
                f"lock {self.name!r} (token {self._lease.token}) was lost while held: its TTL "
                "ran out before renewal; the protected work may have overlapped another holder",
                details={"lock": self.name, "token": self._lease.token},
            )

    async def __aenter__(self) -> int:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A change of the cluster config map."""

    key: str
    """Config key."""
    value: Any
    """New value (None when deleted)."""
    revision: int
    """KV revision of the change (use as ``last=`` for a CAS update)."""
    deleted: bool = False
    """True when the key was deleted."""


class ClusterConfig:
    """Cluster-wide configuration: JSON values by key, with CAS and a watch."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    async def get(self, key: str, default: Any = None) -> Any:
        """Current value of ``key`` (``default`` when absent)."""
        entry = await self.kv.get(key)
        return default if entry is None else orjson.loads(entry.value)

    async def get_entry(self, key: str) -> ConfigChange | None:
        """Value and revision of ``key`` (for a later CAS ``update``)."""
        entry = await self.kv.get(key)
        return None if entry is None else _change(entry)

    async def put(self, key: str, value: Any) -> int:
        """Set ``key`` unconditionally; returns the revision."""
        return await self.kv.put(key, orjson.dumps(value))

    async def create(self, key: str, value: Any) -> int:
        """Set ``key`` only if absent (:class:`KeyExistsError` otherwise)."""
        return await self.kv.create(key, orjson.dumps(value))

    async def update(self, key: str, value: Any, *, last: int) -> int:
        """Set ``key`` only if its revision is still ``last`` (:class:`CASConflictError`)."""
        return await self.kv.update(key, orjson.dumps(value), last=last)

    async def delete(self, key: str, *, last: int | None = None) -> None:
        """Delete ``key`` (CAS-guarded when ``last`` is given)."""
        await self.kv.delete(key, last=last)

    async def items(self) -> dict[str, Any]:
        """Every key and value now."""
        return {k: orjson.loads(e.value) for k, e in (await self.kv.items()).items()}

    @contextlib.asynccontextmanager
    async def watch(self, pattern: str = ">") -> AsyncIterator[AsyncIterator[ConfigChange]]:
        """``async with config.watch() as changes: async for ch in changes`` — current values
        first, then every change."""
        async with self.kv.watch(pattern) as watch:
            yield _changes(watch)


def _change(entry: KVEntry) -> ConfigChange:
    if entry.deleted:
        return ConfigChange(entry.key, None, entry.revision, True)
    return ConfigChange(entry.key, orjson.loads(entry.value), entry.revision)


async def _changes(watch: Watch) -> AsyncIterator[ConfigChange]:
    async for entry in watch:
        yield _change(entry)


class Coordination:
    """Leader election, locks, barriers and cluster config for one holder (usually a node).

    ``holder`` identifies this participant (a node id). Start with ``await coord.start()`` or
    ``async with``.
    """

    def __init__(self, nc: NatsClient, holder: str, *, replicas: int | None = None) -> None:
        self.nc = nc
        self.holder = check_token("holder id", holder, key=True)
        self._replicas = replicas
        self._kv: KV | None = None
        self._config: ClusterConfig | None = None
        self._leaderships: list[Leadership] = []

    async def start(self) -> None:
        """Open the buckets (idempotent)."""
        self._kv = await KV.open(
            self.nc,
            BucketSpec(
                wire.COORD_BUCKET,
                marker_ttl=COORD_MARKER_TTL,
                description="foundation leases, locks, barriers",
            ),
            replicas=self._replicas,
        )
        cfg = await KV.open(
            self.nc,
            BucketSpec(wire.CONFIG_BUCKET, description="foundation cluster config"),
            replicas=self._replicas,
        )
        self._config = ClusterConfig(cfg)

    async def stop(self) -> None:
        """Resign every leadership started here."""
        for lead in self._leaderships:
            with contextlib.suppress(Exception):
                await lead.resign()
        self._leaderships.clear()

    async def __aenter__(self) -> Coordination:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _coord_kv(self) -> KV:
        if self._kv is None:
            raise ClusterError("coordination is not started; call await coord.start() first")
        return self._kv

    @property
    def config(self) -> ClusterConfig:
        """The cluster-wide config map."""
        if self._config is None:
            raise ClusterError("coordination is not started; call await coord.start() first")
        return self._config

    async def elect(
        self,
        name: str,
        *,
        ttl: float | timedelta = DEFAULT_ELECTION_TTL,
        on_elected: Callable[[int], Any] | None = None,
        on_lost: Callable[[int], Any] | None = None,
    ) -> Leadership:
        """Campaign for leadership of ``name`` in the background; returns the handle.

        ``ttl`` (whole seconds) bounds how long the group is leaderless after the leader dies:
        a new leader takes over within ``ttl`` of the last renewal.
        """
        ttl_s = seconds(ttl)
        if ttl_s < 1 or ttl_s != int(ttl_s):
            raise ClusterError(
                "an election ttl must be a whole number of seconds >= 1",
                details={"ttl": ttl_s},
            )
        lead = Leadership(self, name, ttl=ttl_s, on_elected=on_elected, on_lost=on_lost)
        self._leaderships.append(lead)
        lead.start()
        return lead

    async def leader(self, name: str) -> tuple[str, int] | None:
        """The current holder and term of election ``name`` read from the server, or None."""
        entry = await self._coord_kv().get(
            wire.lease_key(check_token("election name", name, key=True))
        )
        if entry is None:
            return None
        try:
            data = orjson.loads(entry.value)
            return str(data["holder"]), int(data.get("term") or entry.revision)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptRecordError(
                f"lease {name!r} holds a value no contender wrote; delete the key "
                f"{wire.lease_key(name)!r} in {wire.COORD_BUCKET} to repair it",
                details={"bucket": wire.COORD_BUCKET, "key": wire.lease_key(name)},
            ) from exc

    def lock(
        self,
        name: str,
        ttl: float | timedelta = DEFAULT_LOCK_TTL,
        *,
        timeout: float | None = None,
    ) -> Lock:
        """A distributed lock: ``async with coord.lock("name", ttl) as token: ...``.

        ``ttl`` (whole seconds) frees the lock if the holder dies; while held it is renewed.
        ``timeout`` bounds the wait (:class:`jido.TimeoutError`). ``token`` grows with every
        acquisition of the lock: use it as a fencing token.
        """
        ttl_s = seconds(ttl)
        if ttl_s < 1 or ttl_s != int(ttl_s):
            raise ClusterError(
                "a lock ttl must be a whole number of seconds >= 1", details={"ttl": ttl_s}
            )
        return Lock(self, name, ttl_s, timeout)

    async def barrier(
        self,
        name: str,
        n: int,
        *,
        member: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the wait
        ttl: float | timedelta = timedelta(minutes=10),
    ) -> list[str]:
        """Arrive at barrier ``name`` and wait until ``n`` members have; returns them sorted.

        ``member`` defaults to this holder plus a unique suffix. Arrival keys expire after
        ``ttl``. A barrier name is single use. Raises :class:`BarrierError` if more than ``n``
        arrive and :class:`jido.TimeoutError` after ``timeout``.
        """
        if n < 1:
            raise BarrierError("a barrier needs n >= 1", details={"n": n})
        kv = self._coord_kv()
        prefix = wire.barrier_prefix(check_token("barrier name", name, key=True))
        me = check_token("member", member or f"{self.holder}-{uuid.uuid4().hex[:8]}", key=True)
        ttl_s = int(seconds(ttl))
        async with kv.watch(f"{prefix}.*") as watch:
            try:
                await kv.create(
                    f"{prefix}.{me}",
                    orjson.dumps({"holder": self.holder}),
                    ttl=timedelta(seconds=max(1, ttl_s)),
                )
            except KeyExistsError as exc:
                raise BarrierError(
                    f"member {me!r} already arrived at barrier {name!r}",
                    details={"barrier": name, "member": me},
                ) from exc
            arrived: set[str] = set()
            try:
                async with asyncio.timeout(timeout):
                    async for entry in watch:
                        member_id = entry.key[len(prefix) + 1 :]
                        if entry.deleted:
                            arrived.discard(member_id)
                        else:
                            arrived.add(member_id)
                        if entry.delta > 0 or me not in arrived:
                            continue  # decide once every arrival up to our own is seen
                        if len(arrived) > n:
                            raise BarrierError(
                                f"barrier {name!r} of size {n} got {len(arrived)} arrivals; "
                                "use a fresh barrier name per round",
                                details={"barrier": name, "n": n, "arrived": sorted(arrived)},
                            )
                        if len(arrived) == n:
                            return sorted(arrived)
            except TimeoutError as exc:
                raise jido.TimeoutError(
                    f"barrier {name!r}: {len(arrived)} of {n} arrived within {timeout}s",
                    details={"barrier": name, "n": n, "arrived": sorted(arrived)},
                ) from exc
        raise BarrierError(f"barrier {name!r} watch ended early", details={"barrier": name})


__all__ = [
    "DEFAULT_ELECTION_TTL",
    "DEFAULT_LOCK_TTL",
    "ClusterConfig",
    "ConfigChange",
    "Coordination",
    "Leadership",
    "Lock",
]
