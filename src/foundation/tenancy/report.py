"""Quota use per tenant read straight from KV, for reports made without a node
(``foundation status``, ``foundation quota show``).

Agents are counted from the registry bucket (``<tenant>.<agent_id>`` keys), state bytes and the
last second's calls and casts summed from the nodes' ``bytes.<tenant>.<node>`` records, tokens
from the current minute's ``tokens.<tenant>.<minute>`` window (used and reserved).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson

from foundation._errors import CorruptRecordError
from foundation.nats.kv import KV
from foundation.tenancy.quota import QUOTA_FIELDS, Quota, decode_quota

__all__ = ["quota_usage"]


async def quota_usage(
    quota_kv: KV, registry_kv: KV | None = None, *, tenants: list[str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{tenant: {field: {"limit", "used"}}}`` for every tenant with a quota (or ``tenants``)."""
    quotas: dict[str, Quota | None] = {}
    used: dict[str, dict[str, float]] = {}
    minute = int(time.time() // 60)
    for key, entry in (await quota_kv.items()).items():
        kind, _, rest = key.partition(".")
        if kind == "quota":
            with contextlib.suppress(CorruptRecordError):
                quotas[rest] = decode_quota(entry.value, key)
            continue
        try:
            data = orjson.loads(entry.value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        tenant, _, tail = rest.partition(".")
        row = used.setdefault(tenant, {})
        if kind == "bytes":
            for field, value in data.items():
                name = "max_state_bytes" if field == "bytes" else str(field)
                row[name] = row.get(name, 0) + float(value)
        elif kind == "tokens" and tail == str(minute):
            spent = int(data.get("used", 0)) + sum(int(v) for v in data.get("res", {}).values())
            row["max_llm_tokens_per_minute"] = spent
    if registry_kv is not None:
        for key in await registry_kv.keys():
            tenant = key.partition(".")[0]
            row = used.setdefault(tenant, {})
            row["max_agents"] = row.get("max_agents", 0) + 1
    names = sorted(quotas) if tenants is None else tenants
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for tenant in names:
        quota = quotas.get(tenant)
        row = used.get(tenant, {})
        out[tenant] = {
            f: {"limit": getattr(quota, f) if quota is not None else None, "used": row.get(f, 0)}
            for f in QUOTA_FIELDS
        }
    return out
