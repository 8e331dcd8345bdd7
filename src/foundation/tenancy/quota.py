"""``Quota``: what one tenant may use, and :class:`QuotaStore`, where quotas are kept.

Quotas live in the :data:`~foundation._wire.QUOTA_BUCKET` KV bucket, one key per tenant
(``quota.<tenant>``, JSON). Every node watches the bucket, so a quota set by an admin on one
node (``node.set_quota(...)``, ``foundation quota set``) is enforced by every node as soon as
its watch delivers the change (milliseconds); nodes decide from that watched copy, never from a
read per request.

```python
await node.set_quota("acme", Quota(max_agents=1000, max_calls_per_second=5000))
node.quota("acme")        # Quota(max_agents=1000, ..., max_calls_per_second=5000.0, ...)
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field

from foundation import _wire as wire
from foundation._errors import CorruptRecordError
from foundation._ids import check_token
from foundation.nats.kv import KV, BucketSpec, KVEntry, Watch

log = logging.getLogger("foundation.tenancy")

__all__ = ["QUOTA_FIELDS", "Quota", "QuotaStore", "quota_key"]


class Quota(BaseModel):
    """What one tenant may use across the whole cluster; ``None`` (the default) is no limit.

    How each limit is enforced (see ``docs/tenancy.md``):

    * ``max_agents`` — at spawn and at virtual activation, counted from the registry plus the
      admissions still on their way to it, decided by compare-and-set: exact;
    * ``max_state_bytes`` — at every commit, the sum of the tenant's committed checkpoints;
    * ``max_calls_per_second`` / ``max_casts_per_second`` — at the endpoint of the node that
      runs the agent, each node allowing its share (limit / live nodes) from a token bucket;
    * ``max_llm_tokens_per_minute`` — reserved before each model call, reconciled after it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_agents: int | None = Field(default=None, ge=0)
    """Clustered agents registered at once (spawned or activated)."""
    max_state_bytes: int | None = Field(default=None, ge=0)
    """Bytes of committed agent state (the checkpoints of the tenant's running agents)."""
    max_calls_per_second: float | None = Field(default=None, gt=0)
    """Calls delivered to the tenant's agents per second, over the cluster."""
    max_casts_per_second: float | None = Field(default=None, gt=0)
    """Casts delivered to the tenant's agents per second, over the cluster."""
    max_llm_tokens_per_minute: int | None = Field(default=None, ge=0)
    """LLM tokens (input and output) used by the tenant's agents per minute."""

    def limits(self) -> dict[str, float]:
        """The limits that are set, by field name."""
        return {k: float(v) for k, v in self.model_dump().items() if v is not None}


#: The quota fields, in display order.
QUOTA_FIELDS: tuple[str, ...] = tuple(Quota.model_fields)


def quota_key(tenant: str) -> str:
    """The key of ``tenant``'s quota in :data:`~foundation._wire.QUOTA_BUCKET`."""
    return f"quota.{tenant}"


Listener = Callable[[str, Quota | None], None]
ChangeListener = Callable[[str, Quota | None, int], None]


class QuotaStore:
    """The quotas of every tenant: read from a watched local copy, written to the KV bucket.

    Start it with ``await store.start()`` (returns once the copy is caught up). The bucket also
    holds the usage keys of :mod:`foundation.tenancy.usage` (:attr:`kv`).
    """

    def __init__(self, nc: NatsClient, *, replicas: int | None = None) -> None:
        self.nc = nc
        self._replicas = replicas
        self.kv: KV = None  # type: ignore[assignment]
        self._quotas: dict[str, Quota] = {}
        self._revision = 0
        self._changed = asyncio.Condition()
        self._listeners: list[Listener] = []
        self._changes: list[ChangeListener] = []
        self._watch: Watch | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the bucket and fill the copy of every tenant's quota."""
        self.kv = await KV.open(
            self.nc,
            BucketSpec(wire.QUOTA_BUCKET, description="foundation tenant quotas and usage"),
            replicas=self._replicas,
        )
        self._watch = self.kv.watch("quota.>")
        await self._watch.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(self._watch))
        await self._watch.wait_caught_up()

    async def stop(self) -> None:
        """Stop watching (the copy stays readable, frozen)."""
        if self._watch is not None:
            await self._watch.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self, watch: Watch) -> None:
        async for entry in watch:
            valid, quota = self._apply(entry)
            if valid and watch.caught_up:
                tenant = entry.key.removeprefix("quota.")
                for fn in list(self._changes):
                    try:
                        fn(tenant, quota, entry.revision)
                    except Exception:
                        log.exception("quota change listener %r failed", fn)
            async with self._changed:
                self._revision = max(self._revision, entry.revision)
                self._changed.notify_all()

    def _apply(self, entry: KVEntry) -> tuple[bool, Quota | None]:
        """Apply one watched write; ``(False, None)`` for one that is not a quota."""
        tenant = entry.key.removeprefix("quota.")
        quota: Quota | None = None
        if not entry.deleted:
            try:
                quota = decode_quota(entry.value, entry.key)
            except CorruptRecordError as exc:
                log.warning("ignoring a quota write: %s", exc)
                return False, None
        if quota is None:
            self._quotas.pop(tenant, None)
        else:
            self._quotas[tenant] = quota
        for fn in list(self._listeners):
            try:
                fn(tenant, quota)
            except Exception:
                log.exception("quota listener %r failed", fn)
        return True, quota

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(tenant, quota)`` after every change of a quota (``None``: removed)."""
        self._listeners.append(fn)

    def add_change_listener(self, fn: ChangeListener) -> None:
        """Call ``fn(tenant, quota, revision)`` for every change made after :meth:`start`
        (not for the quotas the copy started with)."""
        self._changes.append(fn)

    def get(self, tenant: str) -> Quota | None:
        """``tenant``'s quota from the watched copy (``None``: no quota)."""
        return self._quotas.get(tenant)

    def tenants(self) -> list[str]:
        """Tenants that have a quota, sorted."""
        return sorted(self._quotas)

    async def set(self, tenant: str, quota: Quota | None) -> None:
        """Set (``None``: remove) ``tenant``'s quota; returns once this copy holds it."""
        key = quota_key(check_token("tenant", tenant, key=True))
        if quota is None:
            revision = await self.kv.delete(key)
        else:
            revision = await self.kv.put(key, quota.model_dump_json(exclude_none=True).encode())
        async with self._changed:
            await self._changed.wait_for(lambda: self._revision >= revision)

    async def wait(self, tenant: str, quota: Quota | None) -> None:
        """Return once the watched copy holds ``quota`` for ``tenant``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._quotas.get(tenant) == quota)

    async def read(self, tenant: str) -> Quota | None:
        """``tenant``'s quota read from the server now (not the watched copy)."""
        entry = await self.kv.get(quota_key(check_token("tenant", tenant, key=True)))
        if entry is None or entry.deleted:
            return None
        return decode_quota(entry.value, entry.key)


def decode_quota(data: bytes, key: str = "") -> Quota:
    """A :class:`Quota` from its stored JSON; ``CorruptRecordError`` if it is not one."""
    try:
        return Quota.model_validate_json(data)
    except ValueError as exc:
        raise CorruptRecordError(
            f"quota {key!r} is not a valid Quota: set it again with `foundation quota set`",
            details={"bucket": wire.QUOTA_BUCKET, "key": key},
            cause=exc,
        ) from exc


def describe(quota: Quota | None) -> dict[str, Any]:
    """Every quota field of ``quota`` (``None`` where unlimited), JSON-safe."""
    return {f: getattr(quota, f) if quota is not None else None for f in QUOTA_FIELDS}
