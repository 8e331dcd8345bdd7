"""``TenantQuotas``: one node's enforcement of its tenant's :class:`~foundation.Quota`.

A :class:`foundation.Node` holds one (``node.quotas``); it starts with the node's transport and
puts each check where the use happens, through small hooks of the lower layers:

* ``max_agents`` — :meth:`TenantQuotas.admitting` around a spawn's claim, and the host's
  ``admit`` hook before a virtual activation's claim (:class:`~foundation.tenancy.usage.
  AgentAdmissions`);
* ``max_state_bytes`` — the state store's ``size_gate`` before every checkpoint write
  (:class:`~foundation.tenancy.usage.StateBytes`): a refused commit is rolled back, the agent
  keeps its previous state and the caller gets the error;
* ``max_calls_per_second`` / ``max_casts_per_second`` — the agent ops' ``admit`` hook, where a
  call or cast reaches the agent (:class:`~foundation.tenancy.limiter.RateLimiter`); a refused
  call answers the error, a refused cast is dropped (casts have no reply) and counted. The
  sender checks first (the locator's ``admit_send`` hook): one node alone never sends more than
  the whole limit plus the owners' bursts, so a flood is refused where it starts, without
  costing the network or the owner anything (:meth:`TenantQuotas.admit_send`);
* ``max_llm_tokens_per_minute`` — a ``jido.ai.TokenBudget`` on ``node.services``
  (:class:`~foundation.tenancy.usage.TokenWindows`).

Every refusal is a :class:`~foundation.QuotaExceededError` and an audit record
(``quota.exceeded``, with the error's details); the refusals of the rate quotas are written once
per second per quota, with their ``count``, so a flood cannot flood the trail. With no quota set
each check is one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from foundation import _metrics
from foundation._errors import QuotaExceededError
from foundation.tenancy.limiter import BURST_SECONDS, RateLimiter, TokenBucket
from foundation.tenancy.quota import QUOTA_FIELDS, Quota, QuotaStore
from foundation.tenancy.usage import AgentAdmissions, ChainedBudget, StateBytes, TokenWindows

log = logging.getLogger("foundation.tenancy")

__all__ = ["QuotaAdmin", "QuotaCollector", "TenantQuotas"]

_RATE_QUOTAS = {"call": "max_calls_per_second", "cast": "max_casts_per_second"}
_AUDIT_EVENT = "quota.exceeded"
_OWNERS_EVERY = 0.5  # seconds between two counts of the nodes sharing the rate quotas


class TenantQuotas:
    """The quota checks of one node (see the module docs)."""

    def __init__(self, tenant: str, node_id: str) -> None:
        self.tenant = tenant
        self.node_id = node_id
        self.store: QuotaStore | None = None
        self.admissions: AgentAdmissions | None = None
        self.state_bytes: StateBytes | None = None
        self.tokens: TokenWindows | None = None
        self.limiter: RateLimiter | None = None
        self.refused: dict[str, int] = dict.fromkeys(QUOTA_FIELDS, 0)
        """Refusals by this node since it started, by quota."""
        self._node: Any = None
        self._quota: Quota | None = None
        self._pending_audit: dict[str, list[Any]] = {}
        self._rate: dict[str, list[int]] = {}  # quota -> [second, admitted in it, last full]
        self._flush_task: asyncio.Task[None] | None = None
        self._owners: tuple[float, int] = (-1.0, 1)  # (when counted, nodes sharing the rates)
        self._budget: Any = None
        self._send: dict[
            str, tuple[float, TokenBucket]
        ] = {}  # what this node put among its services' token budgets

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, node: Any) -> None:
        """Open the quota bucket and install the checks on ``node`` (a :class:`foundation.Node`
        past its runtime stage)."""
        self._node = node
        store = self.store = QuotaStore(node.nc, replicas=node._kv["state"].replicas)
        await store.start()
        self._quota = store.get(self.tenant)
        store.add_listener(self._on_quota)
        store.add_change_listener(self._on_change)
        kv = store.kv
        tenant = self.tenant
        registry = node.registry
        self.admissions = AgentAdmissions(
            kv,
            tenant,
            lambda: {r.agent_id: r.revision for r in registry.records(tenant=tenant)},
            lambda: int(registry.synced_revision),
        )
        self.state_bytes = StateBytes(
            kv, tenant, node.id, lambda: self._limit("max_state_bytes"), self._rates
        )
        self.state_bytes.on_refused = self._refused
        await self.state_bytes.start()
        node.state_store.size_gate = self.state_bytes
        self.tokens = TokenWindows(kv, tenant, lambda: self._limit("max_llm_tokens_per_minute"))
        self.tokens.on_refused = self._refused
        self._install_budget(node.services)
        self.limiter = RateLimiter(self._live_nodes)
        node.host.admit = self.admit_agent
        if node.agent_ops is not None:
            node.agent_ops.admit = self.admit_delivery
        node.locator.admit_send = self.admit_send
        self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())
        QUOTAS.add(self)

    def _install_budget(self, services: Any) -> None:
        """Put the token windows first among the node's token budgets (``jido.ai`` consults
        the first): a budget registered before them is kept, chained after them."""
        from jido.ai import TokenBudget

        others = services.all(TokenBudget)
        for other in others:
            services.remove(TokenBudget, other)
        assert self.tokens is not None
        self._budget = ChainedBudget([self.tokens, *others]) if others else self.tokens
        services.add(TokenBudget, self._budget)
        for other in others:
            services.add(TokenBudget, other)

    async def stop(self) -> None:
        """Write the pending audit records and stop watching."""
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
            self._flush_task = None
        self.flush_audit()
        if self._budget is not None:
            from jido.ai import TokenBudget

            self._node.services.remove(TokenBudget, self._budget)
            self._budget = None
        if self.state_bytes is not None:
            await self.state_bytes.stop()
        if self.store is not None:
            await self.store.stop()

    def _on_quota(self, tenant: str, quota: Quota | None) -> None:
        if tenant == self.tenant:
            self._quota = quota

    def _on_change(self, tenant: str, quota: Quota | None, revision: int) -> None:
        # Whoever wrote it (a node's set_quota, `foundation quota set`): every node of the
        # tenant sees the change and records it under one message id, which JetStream stores
        # once. Only node and admin credentials may write quotas (the server checks).
        if tenant != self.tenant or self._node is None:
            return
        self._node.security.record(
            "quota.set",
            principal="node-or-admin",
            subject=tenant,
            details={
                "quota": quota.limits() if quota is not None else None,
                "revision": revision,
            },
            msg_id=f"quota.set.{tenant}.{revision}",
        )

    def _limit(self, field: str) -> int | None:
        quota = self._quota
        value = getattr(quota, field) if quota is not None else None
        return int(value) if value is not None else None

    def _live_nodes(self) -> int:
        """Live nodes running at least one of the tenant's agents (counted twice a second)."""
        now = time.monotonic()
        if now - self._owners[0] < _OWNERS_EVERY:
            return self._owners[1]
        node = self._node
        owners = {r.node for r in node.registry.records(tenant=self.tenant)}
        count = sum(1 for owner in owners if owner == node.id or node.membership.is_live(owner))
        self._owners = (now, max(1, count))
        return self._owners[1]

    # -- quotas --------------------------------------------------------------------------------

    def quota(self, tenant: str | None = None) -> Quota | None:
        """``tenant``'s quota (this node's tenant by default), from the watched copy."""
        assert self.store is not None, "the node has not started"
        return self.store.get(tenant or self.tenant)

    async def set_quota(self, tenant: str, quota: Quota | None) -> None:
        """Set (``None``: remove) ``tenant``'s quota for the whole cluster, audited."""
        assert self.store is not None, "the node has not started"
        await self.store.set(tenant, quota)  # audited by the watch (see _on_change)

    # -- checks --------------------------------------------------------------------------------

    async def admit_agent(self, agent_id: str) -> None:
        """Admit a new agent of the tenant against ``max_agents`` or raise."""
        limit = self._limit("max_agents")
        if limit is None or self.admissions is None:
            return
        try:
            await self.admissions.admit(agent_id, limit)
        except QuotaExceededError as err:
            self._refused(err, agent_id)
            raise

    @contextlib.asynccontextmanager
    async def admitting(self, agent_id: str) -> AsyncIterator[None]:
        """Admit ``agent_id`` (see :meth:`admit_agent`) for the block, which claims it; the
        admission is withdrawn when the block fails."""
        await self.admit_agent(agent_id)
        try:
            yield
        except BaseException:
            if self._limit("max_agents") is not None and self.admissions is not None:
                await self.admissions.withdraw(agent_id)
            raise

    def admit_delivery(self, kind: str) -> None:
        """Admit one ``"call"`` or ``"cast"`` against its rate quota or raise."""
        quota = self._quota
        if quota is None:
            return
        field = _RATE_QUOTAS[kind]
        limit = getattr(quota, field)
        if limit is None:
            return
        assert self.limiter is not None
        now = time.monotonic()
        if self.limiter.admit(field, limit, now=now):
            self._count_admitted(field, int(now))
            return
        details = {"node": self.node_id, "node_share": self.limiter.share(limit), "at": "owner"}
        self._refuse_rate(field, limit, details)

    def admit_send(self, kind: str) -> None:
        """Refuse, before it is sent, a ``"call"`` or ``"cast"`` that the owners could not
        admit anyway: this node alone sending more than the tenant's whole limit (its bucket
        holds the owners' bursts together: a tenth of a second of the limit plus one call per
        owner)."""
        quota = self._quota
        if quota is None:
            return
        field = _RATE_QUOTAS[kind]
        limit = getattr(quota, field)
        if limit is None:
            return
        held = self._send.get(field)
        if held is None or held[0] != limit:
            held = (limit, TokenBucket(limit, limit * BURST_SECONDS + self._live_nodes()))
            self._send[field] = held
        if held[1].take():
            return
        self._refuse_rate(field, limit, {"node": self.node_id, "at": "sender"})

    def _refuse_rate(self, field: str, limit: float, details: dict[str, Any]) -> None:
        err = QuotaExceededError(
            field,
            used=self.rate(field),
            limit=limit,
            tenant=self.tenant,
            details=details,
            retryable=True,
        )
        self.refused[field] += 1
        pending = self._pending_audit.get(field)
        if pending is None:
            self._pending_audit[field] = [err, 1]
        else:
            pending[1] += 1
        raise err

    def _count_admitted(self, field: str, second: int) -> None:
        slot = self._rate.get(field)
        if slot is None:
            self._rate[field] = [second, 1, 0]
        elif slot[0] == second:
            slot[1] += 1
        else:
            slot[2] = slot[1] if slot[0] == second - 1 else 0
            slot[0], slot[1] = second, 1

    def _rates(self) -> dict[str, int]:
        return {f: n for f in _RATE_QUOTAS.values() if (n := self.rate(f))}

    def rate(self, field: str) -> int:
        """Calls (or casts) admitted by this node in the last full second."""
        slot = self._rate.get(field)
        if slot is None:
            return 0
        second = int(time.monotonic())
        if slot[0] == second:
            return slot[2]
        return slot[1] if slot[0] == second - 1 else 0

    # -- refusals ------------------------------------------------------------------------------

    def _refused(self, err: QuotaExceededError, subject: str) -> None:
        self.refused[err.quota] = self.refused.get(err.quota, 0) + 1
        self._record(_AUDIT_EVENT, subject=subject, details=err.details)

    def _record(self, event: str, *, subject: str, details: Any) -> None:
        node = self._node
        if node is not None:
            node.security.record(event, subject=subject, details=details)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.flush_audit()

    def flush_audit(self) -> None:
        """Queue the audit records of the rate refusals counted since the last flush (done each
        second by a background task)."""
        pending, self._pending_audit = self._pending_audit, {}
        for err, count in pending.values():
            self._record(_AUDIT_EVENT, subject=self.tenant, details={**err.details, "count": count})

    # -- usage ---------------------------------------------------------------------------------

    def usage(self) -> dict[str, dict[str, Any]]:
        """Use against each quota of the tenant: ``{field: {"limit", "used", "refused"}}``.

        ``used`` is cluster-wide, as this node knows it: agents from its registry cache, state
        bytes and the last second's calls and casts as the nodes publish them (each second),
        tokens as this node last wrote the minute's window. ``refused`` counts this node's.
        """
        quota = self._quota
        node, sb = self._node, self.state_bytes
        calls, casts = _RATE_QUOTAS["call"], _RATE_QUOTAS["cast"]
        used: dict[str, float] = {
            "max_agents": len(node.registry.records(tenant=self.tenant)) if node else 0,
            "max_state_bytes": sb.used if sb else 0,
            calls: sb.rate(calls) if sb else 0,
            casts: sb.rate(casts) if sb else 0,
            "max_llm_tokens_per_minute": self.tokens.spent if self.tokens else 0,
        }
        return {
            f: {
                "limit": getattr(quota, f) if quota is not None else None,
                "used": used[f],
                "refused": self.refused.get(f, 0),
            }
            for f in QUOTA_FIELDS
        }

    def report(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{tenant: usage()}`` for this node's tenant when it has a quota (else ``{}``)."""
        return {self.tenant: self.usage()} if self._quota is not None else {}


class QuotaAdmin:
    """The quota methods of a :class:`foundation.Node` (its ``quotas`` does the work)."""

    quotas: TenantQuotas

    async def set_quota(self, tenant: str, quota: Quota | None) -> None:
        """Set (``None``: remove) ``tenant``'s :class:`~foundation.Quota`, enforced by every
        node from now on (kept in KV, watched by each node); audited as ``quota.set``."""
        await self.quotas.set_quota(tenant, quota)

    def quota(self, tenant: str | None = None) -> Quota | None:
        """``tenant``'s quota (this node's tenant by default); ``None``: no quota."""
        return self.quotas.quota(tenant)


class QuotaCollector:
    """Scrape-time gauges ``foundation_quota_limit{tenant,quota}`` and
    ``foundation_quota_used{tenant,quota}`` of the tenants of this process's nodes (one sample
    per tenant and set quota, from the first running node of that tenant)."""

    def __init__(self) -> None:
        self._quotas: weakref.WeakSet[TenantQuotas] = weakref.WeakSet()

    def add(self, quotas: TenantQuotas) -> None:
        """Collect ``quotas`` from now on (until it stops)."""
        self._quotas.add(quotas)

    def collect(self) -> Iterator[Metric]:
        """The two gauge families."""
        limit = GaugeMetricFamily(
            "foundation_quota_limit",
            "A tenant's quota (set ones only).",
            labels=["tenant", "quota"],
        )
        used = GaugeMetricFamily(
            "foundation_quota_used",
            "A tenant's use against its quota (rate quotas: the last second, cluster-wide).",
            labels=["tenant", "quota"],
        )
        seen: set[str] = set()
        for q in sorted(self._quotas, key=lambda q: q.node_id):
            if q._flush_task is None or q.tenant in seen:
                continue
            seen.add(q.tenant)
            for field, row in q.usage().items():
                if row["limit"] is None:
                    continue
                limit.add_metric([q.tenant, field], float(row["limit"]))
                used.add_metric([q.tenant, field], float(row["used"]))
        yield limit
        yield used


QUOTAS = QuotaCollector()
"""The quota collector of this process (registered in ``foundation._metrics.REGISTRY``)."""
_metrics.REGISTRY.register(QUOTAS)
