"""The distributed agent registry: one JetStream KV record per agent.

Key ``<tenant>.<agent_id>`` in the ``foundation_registry`` bucket → :class:`RegistryRecord`
(owner node, epoch, type, capabilities, critical flag, placement, status, metadata).

Writes are compare-and-set only:

- :meth:`ClusterRegistry.claim` is ``create`` (expect revision 0). Of any number of concurrent
  claims of one id, exactly one wins; the others get :class:`AlreadyRegisteredError` naming the
  owner.
- :meth:`~ClusterRegistry.move` and :meth:`~ClusterRegistry.update` are ``update(last=rev)``
  against the record the caller read; a lost race raises :class:`CASConflictError`.
- :meth:`~ClusterRegistry.remove` deletes (CAS-guarded when ``expected`` is given).

**Epoch (fencing token).** A record's ``epoch`` is the KV revision of the write that gave the
current owner the record (the claim, or the last move). Revisions grow strictly across the whole
bucket, so an agent's epoch grows with every claim and move, even across remove and re-claim:
an older owner always holds a smaller epoch. Updates that do not change the owner keep the
epoch.

**Reads.** Lookups (by id, capability, type, metadata, node) are served from a local cache fed
by a KV watch. Its ``version`` (the highest revision applied) only moves forward. Staleness is
bounded by the watch delivery delay (typically well under a millisecond on a LAN) while
connected; this node's own writes are in the cache before the write returns (read your
writes); while disconnected from NATS the cache can lag without bound and catches up on
reconnect. Use ``lookup(id, consistent=True)`` to read the server instead. Decisions
(ownership) are never taken from a cached read: they go through CAS.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from nats.aio.client import Client as NatsClient

from foundation import _wire as wire
from foundation._errors import (
    AlreadyRegisteredError,
    ClusterError,
    CorruptRecordError,
    KeyExistsError,
)
from foundation._ids import KEY_TOKEN_RE, check_token
from foundation.nats.kv import KV, BucketSpec, KVEntry, Watch

log = logging.getLogger("foundation.registry")


class RegistryRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where an agent lives and what it is (the value stored per agent)."""

    agent_id: str
    """Agent id (unique within its tenant)."""
    node: str
    """Id of the owner node."""
    tenant: str = wire.DEFAULT_TENANT
    """Tenant."""
    epoch: int = 0
    """Fencing token: the revision at which the owner got the record (see module docs)."""
    type: str = ""
    """Agent type name."""
    capabilities: tuple[str, ...] = ()
    """Capabilities the agent offers (for lookups by capability)."""
    critical: bool = False
    """Critical agents are re-placed on failover; others are dropped."""
    placement: Any = None
    """Placement strategy and options the agent was placed with."""
    status: str = "active"
    """``active``, ``moving``, ``stopping``... (free-form, set by the cluster core)."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """User metadata (JSON-safe)."""
    delivery: Literal["", "at_most_once", "at_least_once"] = ""
    """Delivery mode of the agent's signals, fixed when it was claimed (``""``: written by a
    node that predates the field; senders then fall back to the class, if they know it)."""
    resources: dict[str, float] = msgspec.field(default_factory=dict)
    """Resources the agent holds on its owner (``{"cpu": 0.5}``; see placement.reservations)."""
    reservation: str = ""
    """Token of its entry in the owner's reservation ledger (``""``: nothing reserved)."""
    updated_at: float = 0.0
    """Unix time of the write."""
    revision: int = 0
    """KV revision this record was read at (not stored); the CAS token for the next write."""

    @property
    def key(self) -> str:
        """Registry key ``<tenant>.<agent_id>``."""
        return wire.agent_key(self.tenant, self.agent_id)

    def encode(self) -> bytes:
        """Stored JSON (without the revision)."""
        return _ENCODER.encode(msgspec.structs.replace(self, revision=0))

    @classmethod
    def decode(cls, data: bytes, revision: int, key: str | None = None) -> RegistryRecord:
        """Parse stored JSON read at ``revision`` (a stored epoch of 0 means "this revision").

        Raises :class:`CorruptRecordError` when the value is not a record a node wrote (bad
        JSON, wrong shape, an invalid node id, or a record filed under another key).
        """
        try:
            rec = _DECODER.decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _corrupt(key, f"not a registry record ({exc})") from exc
        if not KEY_TOKEN_RE.match(rec.node) or rec.epoch < 0:
            raise _corrupt(key, f"invalid owner {rec.node[:40]!r} or epoch {rec.epoch}")
        if key is not None and rec.key != key:
            raise _corrupt(key, f"it describes {rec.key[:80]!r}")
        return msgspec.structs.replace(rec, revision=revision, epoch=rec.epoch or revision)


def _corrupt(key: str | None, reason: str) -> CorruptRecordError:
    return CorruptRecordError(
        f"registry record {key!r} is corrupt: {reason}; remove the key or spawn the agent again",
        details={"bucket": wire.REGISTRY_BUCKET, "key": key, "reason": reason[:200]},
    )


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(RegistryRecord)


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """A change applied to the registry cache."""

    kind: Literal["put", "delete"]
    """``put`` (claim, move, update) or ``delete`` (removed)."""
    key: str
    """Registry key."""
    record: RegistryRecord | None
    """The new record (``put``) or the last known one (``delete``)."""
    previous: RegistryRecord | None
    """The record before the change, if cached."""
    version: int
    """Cache version after the change."""


Listener = Callable[[RegistryChange], Any]


class ClusterRegistry:
    """The cluster-wide agent registry with a watched local cache.

    ``tenant`` is the default tenant of the calls that take an agent id, and the only one the
    cache holds (it watches ``<tenant>.>``): soft tenants sharing one account never see each
    other's records in their caches. A cached read for another tenant reads the server. Start
    it with ``await registry.start()`` (or ``async with``) before use.
    """

    def __init__(
        self, nc: NatsClient, *, tenant: str = wire.DEFAULT_TENANT, replicas: int | None = None
    ) -> None:
        self.nc = nc
        self.tenant = check_token("tenant", tenant, key=True)
        self._prefix = f"{self.tenant}."
        self._replicas = replicas
        self.kv: KV | None = None
        self._cache: dict[str, RegistryRecord] = {}
        self._by_node: dict[str, set[str]] = {}
        # spread group -> owner node -> agents: kept per change so placement is not O(agents)
        self._groups: dict[str, dict[str, int]] = {}
        self._key_rev: dict[str, int] = {}
        self._synced = 0
        self._waiters = 0
        self._version = 0
        self._changed = asyncio.Condition()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._watch: Watch | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the bucket and fill the cache (returns once it is caught up)."""
        self.kv = await KV.open(
            self.nc,
            BucketSpec(wire.REGISTRY_BUCKET, description="foundation agent registry"),
            replicas=self._replicas,
        )
        self._watch = self.kv.watch(f"{self.tenant}.>")
        await self._watch.start()
        self._task = asyncio.create_task(self._watch_loop(self._watch))
        await self._watch.wait_caught_up()

    async def stop(self) -> None:
        """Stop watching (the cache stays readable, frozen)."""
        if self._watch is not None:
            await self._watch.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> ClusterRegistry:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _kv(self) -> KV:
        if self.kv is None:
            raise ClusterError("the registry is not started; call await registry.start() first")
        return self.kv

    def _key(self, agent_id: str, tenant: str | None) -> str:
        return wire.agent_key(
            check_token("tenant", tenant or self.tenant, key=True),
            check_token("agent id", agent_id, key=True),
        )

    # -- cache -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Highest KV revision applied to the cache (only moves forward).

        Own writes are applied at once, so this can run ahead of :attr:`synced_revision`.
        """
        return self._version

    async def _apply(self, key: str, record: RegistryRecord | None, revision: int) -> None:
        # Per key, only a newer revision replaces what is cached (our own writes can race the
        # watch delivering older revisions); tombstones are remembered for the same reason.
        if self._key_rev.get(key, 0) >= revision or not key.startswith(self._prefix):
            return  # (a write for another tenant is not cached: the cache is this tenant's)
        self._key_rev[key] = revision
        previous = self._cache.get(key)
        if previous is not None:
            self._by_node.get(previous.node, set()).discard(key)
            self._count_groups(previous, -1)
        if record is not None:
            self._cache[key] = record
            self._by_node.setdefault(record.node, set()).add(key)
            self._count_groups(record, 1)
        else:
            self._cache.pop(key, None)
        self._version = max(self._version, revision)
        if self._waiters:
            async with self._changed:
                self._changed.notify_all()
        if not self._listeners:
            return
        change = RegistryChange(
            "put" if record is not None else "delete",
            key,
            record if record is not None else previous,
            previous,
            self._version,
        )
        for fn in list(self._listeners):
            try:
                result = fn(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("registry listener %r failed", fn)

    def _count_groups(self, record: RegistryRecord, delta: int) -> None:
        for group in _groups_of(record):
            per_node = self._groups.setdefault(group, {})
            n = per_node.get(record.node, 0) + delta
            if n > 0:
                per_node[record.node] = n
            else:
                per_node.pop(record.node, None)

    async def _watch_loop(self, watch: Watch) -> None:
        async for entry in watch:
            await self._on_entry(entry)
            self._synced = max(self._synced, entry.revision)
            if self._waiters:
                async with self._changed:
                    self._changed.notify_all()

    async def _on_entry(self, entry: KVEntry) -> None:
        if self._key_rev.get(entry.key, 0) >= entry.revision:
            return  # our own write, already applied when it returned
        if entry.deleted:
            await self._apply(entry.key, None, entry.revision)
            return
        try:
            record = RegistryRecord.decode(entry.value, entry.revision, entry.key)
        except CorruptRecordError as exc:
            # The last valid record (if any) stays in the cache: garbage written over a key
            # must not stop or move the agent it names.
            log.warning("ignoring a registry write: %s", exc)
            return
        await self._apply(entry.key, record, entry.revision)

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(change)`` (sync or async) after every change applied to the cache."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    async def wait_change(self, *, after: int | None = None) -> int:
        """Wait until the cache version exceeds ``after`` (default: the current version)."""
        base = self._version if after is None else after
        await self._wait(lambda: self._version > base)
        return self._version

    @property
    def synced_revision(self) -> int:
        """Stream position the watch has applied in order: every write up to it is cached."""
        return self._synced

    async def wait_version(self, version: int) -> None:
        """Wait until every registry write up to revision ``version`` is in the cache."""
        await self._wait(lambda: self._synced >= version)

    async def _wait(self, pred: Callable[[], bool]) -> None:
        self._waiters += 1
        try:
            async with self._changed:
                await self._changed.wait_for(pred)
        finally:
            self._waiters -= 1

    # -- writes ----------------------------------------------------------------------------

    async def claim(
        self,
        agent_id: str,
        *,
        node: str,
        type: str = "",
        critical: bool = False,
        capabilities: Iterable[str] = (),
        placement: Any = None,
        metadata: Mapping[str, Any] | None = None,
        status: str = "active",
        tenant: str | None = None,
        delivery: Literal["", "at_most_once", "at_least_once"] = "",
        resources: Mapping[str, float] | None = None,
        reservation: str = "",
    ) -> RegistryRecord:
        """Register ``agent_id`` on ``node`` if no one holds it (create-if-absent).

        Returns the record (its ``epoch`` is the claim's revision). Raises
        :class:`AlreadyRegisteredError` naming the owner if the id is taken. ``resources`` and
        ``reservation``: what the agent reserved on ``node`` (``placement.reservations``).
        """
        key = self._key(agent_id, tenant)
        check_token("node id", node, key=True)
        record = RegistryRecord(
            agent_id=agent_id,
            tenant=tenant or self.tenant,
            node=node,
            type=type,
            critical=critical,
            capabilities=tuple(capabilities),
            placement=placement,
            status=status,
            metadata=dict(metadata or {}),
            delivery=delivery,
            resources=dict(resources or {}),
            reservation=reservation,
            updated_at=time.time(),
        )
        kv = self._kv()
        try:
            rev = await kv.create(key, record.encode())
        except KeyExistsError as exc:
            current = await self.lookup(agent_id, consistent=True, tenant=tenant)
            raise AlreadyRegisteredError(
                agent_id,
                current.node if current is not None else "?",
                epoch=current.epoch if current is not None else None,
                tenant=tenant or self.tenant,
            ) from exc
        stored = msgspec.structs.replace(record, revision=rev, epoch=rev)
        await self._apply(key, stored, rev)
        return stored

    async def move(
        self,
        agent_id: str,
        *,
        to: str,
        expected: RegistryRecord,
        status: str | None = None,
        tenant: str | None = None,
    ) -> RegistryRecord:
        """Give the agent to node ``to`` by CAS against ``expected``; the epoch grows.

        Raises :class:`CASConflictError` if the record changed since ``expected`` was read.
        """
        key = self._key(agent_id, tenant)
        check_token("node id", to, key=True)
        new = msgspec.structs.replace(
            expected,
            node=to,
            epoch=0,  # "the revision of this write"
            status=status or expected.status,
            updated_at=time.time(),
        )
        rev = await self._kv().update(key, new.encode(), last=expected.revision)
        stored = msgspec.structs.replace(new, revision=rev, epoch=rev)
        await self._apply(key, stored, rev)
        return stored

    async def update(
        self,
        agent_id: str,
        *,
        expected: RegistryRecord,
        status: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        capabilities: Iterable[str] | None = None,
        placement: Any = None,
        tenant: str | None = None,
    ) -> RegistryRecord:
        """Change status/metadata/capabilities/placement by CAS; owner and epoch are kept."""
        key = self._key(agent_id, tenant)
        new = msgspec.structs.replace(
            expected,
            status=status if status is not None else expected.status,
            metadata=dict(metadata) if metadata is not None else expected.metadata,
            capabilities=(
                tuple(capabilities) if capabilities is not None else expected.capabilities
            ),
            placement=placement if placement is not None else expected.placement,
            updated_at=time.time(),
        )
        rev = await self._kv().update(key, new.encode(), last=expected.revision)
        stored = msgspec.structs.replace(new, revision=rev)
        await self._apply(key, stored, rev)
        return stored

    async def remove(
        self,
        agent_id: str,
        *,
        expected: RegistryRecord | None = None,
        tenant: str | None = None,
    ) -> None:
        """Remove the record; CAS-guarded by ``expected`` when given (else unconditional)."""
        key = self._key(agent_id, tenant)
        rev = await self._kv().delete(key, last=expected.revision if expected is not None else None)
        await self._apply(key, None, rev)

    # -- reads -----------------------------------------------------------------------------

    async def lookup(
        self, agent_id: str, *, consistent: bool = False, tenant: str | None = None
    ) -> RegistryRecord | None:
        """The record of ``agent_id`` (``.node``, ``.epoch``...) or None if not registered.

        From the local cache by default; ``consistent=True`` reads the server (and refreshes
        the cache with what it read). Another ``tenant``'s record is always read from the server.
        """
        if not consistent and (tenant is None or tenant == self.tenant):
            # Hot path: no validation needed, an invalid id is simply not in the cache.
            return self._cache.get(f"{tenant or self.tenant}.{agent_id}")
        key = self._key(agent_id, tenant)
        entry = await self._kv().get(key)
        if entry is None:
            return None
        record = RegistryRecord.decode(entry.value, entry.revision, key)
        await self._apply(key, record, entry.revision)
        return record

    def cached(self, agent_id: str, *, tenant: str | None = None) -> RegistryRecord | None:
        """The cached record of ``agent_id`` (synchronous)."""
        return self._cache.get(f"{tenant or self.tenant}.{agent_id}")

    def records(self, *, tenant: str | None = None) -> list[RegistryRecord]:
        """Every cached record (of ``tenant`` if given: none of another tenant is cached; use
        :meth:`scan`), sorted by key."""
        out = sorted(self._cache.values(), key=lambda r: r.key)
        return [r for r in out if tenant is None or r.tenant == tenant]

    def assigned_to(self, node_id: str) -> list[RegistryRecord]:
        """Cached records owned by ``node_id``, sorted by key."""
        return [self._cache[k] for k in sorted(self._by_node.get(node_id, ()))]

    def by_capability(self, capability: str, *, tenant: str | None = None) -> list[RegistryRecord]:
        """Cached records whose agent offers ``capability``."""
        return [r for r in self.records(tenant=tenant) if capability in r.capabilities]

    def by_type(self, agent_type: str, *, tenant: str | None = None) -> list[RegistryRecord]:
        """Cached records of agents of type ``agent_type``."""
        return [r for r in self.records(tenant=tenant) if r.type == agent_type]

    def by_metadata(self, *, tenant: str | None = None, **match: Any) -> list[RegistryRecord]:
        """Cached records whose metadata contains every ``key=value`` given."""
        return [
            r
            for r in self.records(tenant=tenant)
            if all(k in r.metadata and r.metadata[k] == v for k, v in match.items())
        ]

    def find(
        self, predicate: Callable[[RegistryRecord], bool], *, tenant: str | None = None
    ) -> list[RegistryRecord]:
        """Cached records for which ``predicate(record)`` is true."""
        return [r for r in self.records(tenant=tenant) if predicate(r)]

    def counts_by_node(self) -> dict[str, int]:
        """Number of cached agents per owner node."""
        return {n: len(keys) for n, keys in self._by_node.items() if keys}

    def group_counts(self, group: str) -> dict[str, int]:
        """Agents per owner node of spread group ``group`` (records of that type, or whose
        ``metadata['group']`` is ``group``); kept up to date per change, O(nodes)."""
        return dict(self._groups.get(group, {}))

    def owners(self) -> list[str]:
        """Ids of the nodes that own at least one cached record, sorted."""
        return sorted(n for n, keys in self._by_node.items() if keys)

    async def scan(self, *, tenant: str | None = None) -> list[RegistryRecord]:
        """Every record read from the server now (consistent, slower than :meth:`records`)."""
        pattern = f"{check_token('tenant', tenant, key=True)}.>" if tenant else ">"
        items = await self._kv().items(pattern)
        out: list[RegistryRecord] = []
        for key, entry in sorted(items.items()):
            try:
                out.append(RegistryRecord.decode(entry.value, entry.revision, key))
            except CorruptRecordError as exc:
                log.warning("scan skips a record: %s", exc)
        return out


def _groups_of(record: RegistryRecord) -> set[str]:
    """The spread groups a record counts in: its type and its metadata group."""
    out = {record.type}
    group = record.metadata.get("group") if record.metadata else None
    if isinstance(group, str):
        out.add(group)
    return out


__all__ = ["ClusterRegistry", "RegistryChange", "RegistryRecord"]
