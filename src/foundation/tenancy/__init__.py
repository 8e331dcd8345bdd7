"""Tenancy: per-tenant quotas enforced cluster-wide.

- :class:`Quota` (what a tenant may use) and :class:`QuotaStore` (quotas kept in KV and
  watched by every node);
- :class:`TenantQuotas`: one node's checks (agents at spawn and activation, state bytes at
  commit, calls and casts per second at the endpoint, LLM tokens per minute around model calls);
- :class:`RateLimiter` / :class:`TokenBucket` (per-node shares of a rate) and the usage keys
  (:class:`AgentAdmissions`, :class:`StateBytes`, :class:`TokenWindows`).

See ``docs/tenancy.md``.
"""

from foundation.tenancy.limiter import BURST_SECONDS, RateLimiter, TokenBucket
from foundation.tenancy.quota import QUOTA_FIELDS, Quota, QuotaStore, describe, quota_key
from foundation.tenancy.report import quota_usage
from foundation.tenancy.quotas import QUOTAS, QuotaAdmin, QuotaCollector, TenantQuotas
from foundation.tenancy.usage import (
    ADMISSION_WINDOW,
    PUBLISH_INTERVAL,
    AgentAdmissions,
    StateBytes,
    TokenWindows,
)

__all__ = [
    "ADMISSION_WINDOW",
    "BURST_SECONDS",
    "PUBLISH_INTERVAL",
    "QUOTAS",
    "QUOTA_FIELDS",
    "AgentAdmissions",
    "Quota",
    "QuotaAdmin",
    "QuotaCollector",
    "QuotaStore",
    "RateLimiter",
    "StateBytes",
    "TenantQuotas",
    "TokenBucket",
    "TokenWindows",
    "describe",
    "quota_key",
    "quota_usage",
]
