"""The usage quotas are decided on, kept in the quota bucket next to the quotas.

* **Agents** (:class:`AgentAdmissions`): a spawn or a virtual activation first wins an
  admission by compare-and-set on ``agents.<tenant>``, which holds the recent admissions. The
  use counted is the union of the tenant's ids in the registry cache and the admissions the
  cache may not show yet, so two nodes spawning at once each see the other's admission and the
  limit is exact. An admission counts until a later admission finds its record in the cache
  and notes the record's revision (from then on it counts only on a node whose cache is behind
  that revision), or until :data:`ADMISSION_WINDOW` passes (a spawn that failed). An agent
  removed within the window of its admission may so be counted a few seconds too long: the
  error is on the safe side.
* **State bytes** (:class:`StateBytes`): every node knows the committed size of each agent it
  runs (from the bytes it writes and those it activates) and publishes its total under
  ``bytes.<tenant>.<node>`` with a TTL (a dead node's total expires with it; the same record
  carries the node's calls and casts admitted in the last second, for reports). A commit is
  refused when this node's total (with the commit) plus the others' published totals would
  exceed the limit. Concurrent growth on other nodes since their last publication
  (:data:`PUBLISH_INTERVAL`) is what can pass the limit.
* **LLM tokens** (:class:`TokenWindows`, a ``jido.ai.TokenBudget``): each model call reserves
  its estimate (prompt and ``max_tokens``) in the current minute's key
  ``tokens.<tenant>.<minute>`` by compare-and-set, and reconciles it after the call with the
  tokens used. A reservation is never released early: a node killed mid-call leaves it counted
  until the minute ends, so the tenant never uses more than the limit within a minute beyond
  what a call uses over its estimate (at most one call's prompt under-estimate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson

from foundation._errors import CASConflictError, ClusterError, QuotaExceededError
from foundation.nats.kv import KV, KVEntry, Watch

log = logging.getLogger("foundation.tenancy")

__all__ = [
    "ADMISSION_WINDOW",
    "PUBLISH_INTERVAL",
    "AgentAdmissions",
    "ChainedBudget",
    "StateBytes",
    "TokenWindows",
]

ADMISSION_WINDOW = 10.0
"""Seconds an admission stays in ``agents.<tenant>`` (a claimed record reaches every registry
cache well within it)."""
PUBLISH_INTERVAL = 1.0
"""Seconds between two publications of a node's state-bytes total (sooner after a change)."""
_CAS_TRIES = 50
_TOKEN_WINDOW_TTL = timedelta(minutes=3)


async def _cas(
    kv: KV, key: str, change: Callable[[dict[str, Any]], dict[str, Any] | None], **put: Any
) -> dict[str, Any] | None:
    """Read ``key`` (a JSON object), apply ``change`` and write it back by compare-and-set,
    again until the write wins; ``change`` returning ``None`` writes nothing."""
    for _ in range(_CAS_TRIES):
        entry = await kv.get(key)
        current = orjson.loads(entry.value) if entry is not None and entry.value else {}
        new = change(current)
        if new is None:
            return None
        data = orjson.dumps(new)
        try:
            if entry is None:
                await kv.create(key, data, **put)
            else:
                await kv.update(key, data, last=entry.revision, **put)
            return new
        except CASConflictError:
            continue
    raise ClusterError(
        f"usage key {key!r} kept changing under concurrent writers; retry",
        details={"key": key},
        retryable=True,
    )


class AgentAdmissions:
    """Admits new agents of one tenant against ``max_agents`` (see the module docs)."""

    def __init__(
        self,
        kv: KV,
        tenant: str,
        registered: Callable[[], dict[str, int]],
        synced: Callable[[], int],
    ) -> None:
        self.kv = kv
        self.tenant = tenant
        self._registered = registered
        self._synced = synced
        self.key = f"agents.{tenant}"

    async def admit(self, agent_id: str, limit: int) -> None:
        """Admit ``agent_id`` or raise :class:`QuotaExceededError` (nothing is claimed)."""

        def change(current: dict[str, Any]) -> dict[str, Any]:
            now, synced = time.time(), self._synced()
            registered = self._registered()
            pending: dict[str, list[float]] = {}
            counted = set(registered)
            for other, (expires, rev) in current.get("pending", {}).items():
                if not rev and other in registered:
                    rev = registered[other]  # claimed: from now on the caches tell
                if rev and rev <= synced:
                    if expires > now:
                        pending[other] = [expires, rev]
                    continue  # in this cache (or removed since): the registry counts it
                if expires > now or rev:
                    pending[other] = [expires, rev]
                    counted.add(other)
            if agent_id not in counted and len(counted) >= limit:
                raise QuotaExceededError(
                    "max_agents", used=len(counted), limit=limit, tenant=self.tenant
                )
            pending[agent_id] = [now + ADMISSION_WINDOW, registered.get(agent_id, 0)]
            return {"pending": pending}

        await _cas(self.kv, self.key, change)

    async def withdraw(self, agent_id: str) -> None:
        """Drop ``agent_id``'s admission (its claim failed); best effort."""

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            pending = dict(current.get("pending", {}))
            if pending.pop(agent_id, None) is None:
                return None
            return {"pending": pending}

        with contextlib.suppress(ClusterError):
            await _cas(self.kv, self.key, change)


class StateBytes:
    """The committed state bytes of one tenant, as one node sees them (see the module docs).

    ``limit()`` gives the tenant's ``max_state_bytes`` now (``None``: none). Keys are the
    state store's agent keys.
    """

    def __init__(
        self,
        kv: KV,
        tenant: str,
        node_id: str,
        limit: Callable[[], int | None],
        rates: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.kv = kv
        self._rates = rates
        self.tenant = tenant
        self.node_id = node_id
        self._limit = limit
        self.sizes: dict[str, int] = {}
        self.total = 0
        self.others: dict[str, int] = {}
        self.other_rates: dict[str, dict[str, int]] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: Watch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.on_refused: Callable[[QuotaExceededError, str], None] | None = None

    @property
    def used(self) -> int:
        """The tenant's committed state bytes over the cluster, as known here."""
        return self.total + sum(self.others.values())

    async def start(self) -> None:
        """Watch the other nodes' totals and publish this node's."""
        self._watch = self.kv.watch(f"bytes.{self.tenant}.*")
        await self._watch.start()
        loop = asyncio.get_running_loop()
        self._watch_task = loop.create_task(self._watch_loop(self._watch))
        self._task = loop.create_task(self._publish_loop())
        await self._watch.wait_caught_up()

    async def stop(self) -> None:
        """Stop publishing and watching (the key expires on its own)."""
        if self._watch is not None:
            await self._watch.stop()
        for task in (self._task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._watch_task = None

    async def _watch_loop(self, watch: Watch) -> None:
        async for entry in watch:
            self._apply(entry)

    def _apply(self, entry: KVEntry) -> None:
        node = entry.key.rsplit(".", 1)[-1]
        if node == self.node_id:
            return
        if entry.deleted or not entry.value:
            self.others.pop(node, None)
            self.other_rates.pop(node, None)
            return
        with contextlib.suppress(ValueError, TypeError, KeyError):
            data = orjson.loads(entry.value)
            self.others[node] = int(data.pop("bytes"))
            self.other_rates[node] = {str(k): int(v) for k, v in data.items()}

    def rate(self, field: str) -> int:
        """Calls (casts) admitted in the last second over the cluster (others as published)."""
        return self._rates().get(field, 0) + sum(r.get(field, 0) for r in self.other_rates.values())

    async def _publish_loop(self) -> None:
        key = f"bytes.{self.tenant}.{self.node_id}"
        ttl = timedelta(seconds=max(3.0, PUBLISH_INTERVAL * 5))
        published: dict[str, int] = {}
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), PUBLISH_INTERVAL)
            self._dirty.clear()
            record = {"bytes": self.total, **self._rates()}
            if not any(record.values()) and not any(published.values()):
                published = record
                continue  # nothing held or served here: no key to keep alive
            try:
                await self.kv.put(key, orjson.dumps(record), ttl=ttl)
                published = record
            except ClusterError as exc:
                log.debug("state bytes of %s not published: %s", self.tenant, exc)

    def check(self, key: str, size: int) -> None:
        """Refuse (``QuotaExceededError``) a commit of ``size`` bytes for agent ``key`` that
        would take the tenant over ``max_state_bytes``."""
        limit = self._limit()
        if limit is None:
            return
        growth = size - self.sizes.get(key, 0)
        if growth <= 0:
            return  # a commit that does not grow the state is always allowed
        used = self.used
        if used + growth > limit:
            err = QuotaExceededError(
                "max_state_bytes",
                used=used,
                limit=limit,
                tenant=self.tenant,
                details={"agent_id": key, "commit_bytes": size},
            )
            if self.on_refused is not None:
                self.on_refused(err, key)
            raise err

    def written(self, key: str, size: int) -> None:
        """Note that agent ``key``'s committed state is now ``size`` bytes."""
        self.total += size - self.sizes.get(key, 0)
        self.sizes[key] = size
        self._dirty.set()

    def released(self, key: str) -> None:
        """Forget agent ``key`` (stopped here, moved away or deleted)."""
        size = self.sizes.pop(key, None)
        if size is not None:
            self.total -= size
            self._dirty.set()


class TokenWindows:
    """A ``jido.ai.TokenBudget`` holding one tenant to ``max_llm_tokens_per_minute``.

    ``limit()`` gives the quota now (``None``: no limit, nothing is reserved). Registered on the
    node's ``services`` (see the module docs).
    """

    def __init__(self, kv: KV, tenant: str, limit: Callable[[], int | None]) -> None:
        self.kv = kv
        self.tenant = tenant
        self._limit = limit
        self.on_refused: Callable[[QuotaExceededError, str], None] | None = None
        self.last: tuple[int, int] = (0, 0)
        """(minute, tokens used and reserved) as last written by this node."""

    @property
    def spent(self) -> int:
        """Tokens used and reserved this minute, as last seen by this node (no read)."""
        minute, spent = self.last
        return spent if minute == int(time.time() // 60) else 0

    def _key(self, window: int) -> str:
        return f"tokens.{self.tenant}.{window}"

    async def used(self) -> int:
        """Tokens used and reserved in the current minute."""
        entry = await self.kv.get(self._key(int(time.time() // 60)))
        return _spent(orjson.loads(entry.value)) if entry is not None and entry.value else 0

    async def reserve(self, agent_id: str, tokens: int) -> Any:
        """Reserve ``tokens`` in this minute's window, or raise :class:`QuotaExceededError`."""
        limit = self._limit()
        if limit is None:
            return None
        window = int(time.time() // 60)
        rid = secrets.token_hex(6)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            spent = _spent(current)
            if spent + tokens > limit:
                raise QuotaExceededError(
                    "max_llm_tokens_per_minute",
                    used=spent,
                    limit=limit,
                    tenant=self.tenant,
                    details={"agent_id": agent_id, "requested": tokens},
                    retryable=True,
                )
            res = dict(current.get("res", {}))
            res[rid] = tokens
            return {"used": int(current.get("used", 0)), "res": res}

        try:
            new = await _cas(self.kv, self._key(window), change, ttl=_TOKEN_WINDOW_TTL)
        except QuotaExceededError as err:
            if self.on_refused is not None:
                self.on_refused(err, agent_id)
            raise
        if new is not None:
            self.last = (window, _spent(new))
        return (window, rid)

    async def reconcile(self, reservation: Any, used: int) -> None:
        """Replace the reservation with the ``used`` tokens (in the window it was made in)."""
        if reservation is None:
            return
        window, rid = reservation

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            res = dict(current.get("res", {}))
            if res.pop(rid, None) is None:
                return None  # the window expired (or was settled): nothing to do
            return {"used": int(current.get("used", 0)) + used, "res": res}

        try:
            new = await _cas(self.kv, self._key(window), change, ttl=_TOKEN_WINDOW_TTL)
        except ClusterError as exc:
            # The reservation stays counted at its estimate until the window ends.
            log.warning("token reservation of %s not reconciled: %s", self.tenant, exc)
            return
        if new is not None:
            self.last = (window, _spent(new))


class ChainedBudget:
    """Several ``jido.ai.TokenBudget`` objects as one: a call reserves in each, in order (a
    refusal settles what the earlier ones reserved with 0), and reconciles each."""

    def __init__(self, budgets: list[Any]) -> None:
        self.budgets = budgets

    async def reserve(self, agent_id: str, tokens: int) -> Any:
        """Reserve ``tokens`` in every budget; raise the first refusal."""
        held: list[tuple[Any, Any]] = []
        try:
            for budget in self.budgets:
                held.append((budget, await budget.reserve(agent_id, tokens)))
        except BaseException:
            for budget, reservation in held:
                await budget.reconcile(reservation, 0)
            raise
        return held

    async def reconcile(self, reservation: Any, used: int) -> None:
        """Settle every reservation with ``used``."""
        for budget, held in reservation:
            await budget.reconcile(held, used)


def _spent(current: dict[str, Any]) -> int:
    return int(current.get("used", 0)) + sum(int(v) for v in current.get("res", {}).values())
