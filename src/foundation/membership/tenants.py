"""Soft tenants: several tenants' nodes sharing one NATS account, each scoped to its tenant.

Every node record names its tenant (:attr:`~foundation.membership.view.NodeRecord.tenant`) and a
node's membership view holds only its own tenant's members, so placement, failover, rebalancing
and the dashboard never see another tenant's nodes. What a node is asked to do for another
tenant is refused with :class:`~foundation._errors.WrongTenantError`; these helpers say so, and
tell a node of another tenant apart from one that is simply not live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from foundation._errors import ClusterError, WrongTenantError
from foundation._wire import DEFAULT_TENANT, Subjects
from foundation.membership.view import NodeRecord


def check_tenant(serves: str, tenant: str | None, *, node: str, agent_id: str) -> None:
    """Raise :class:`WrongTenantError` when ``tenant`` (if given) is not ``serves``, the tenant
    of node ``node``, which was asked about agent ``agent_id``."""
    if tenant is not None and tenant != serves:
        raise WrongTenantError(
            f"node {node} serves tenant {serves!r}, not {tenant!r}: reach agent {agent_id!r} "
            f"through a node or client of tenant {tenant!r}",
            details={"agent_id": agent_id, "tenant": tenant, "serves": serves, "node": node},
        )


async def tenant_of(membership: Any, node_id: str) -> str | None:
    """The tenant of live node ``node_id`` as its record in the nodes bucket says (``None``
    when there is no record, or it cannot be read); ``membership`` holds the bucket (``kv``)."""
    kv = getattr(membership, "kv", None)
    if kv is None:
        return None
    try:
        entry = await kv.get(node_id)
        if entry is None or entry.deleted:
            return None
        return NodeRecord.decode(entry.value).tenant
    except (ClusterError, msgspec.DecodeError):
        return None


async def refuse_foreign_node(membership: Any, serves: str, node_id: str) -> None:
    """Raise :class:`WrongTenantError` when ``node_id`` is a node of another tenant than
    ``serves`` (a spawn forced onto it would run one tenant's agent on another's node)."""
    tenant = await tenant_of(membership, node_id)
    if tenant is not None and tenant != serves:
        raise WrongTenantError(
            f"node {node_id!r} serves tenant {tenant!r}, not {serves!r}: place the agent on a "
            f"node of tenant {serves!r}, or let placement choose",
            details={"node": node_id, "tenant": tenant, "serves": serves},
        )


def served_elsewhere(
    membership: Any, subjects: Subjects, serves: str
) -> Callable[[str], bool] | None:
    """For a node of the default tenant (which sees every public agent subject): a test true
    for a subject of another tenant whose nodes are live (they answer it; this node must not).
    ``None`` for another tenant's node (it subscribes to its own subjects only)."""
    if serves != DEFAULT_TENANT:
        return None

    def test(subject: str) -> bool:
        tenant = subjects.tenant_of_subject(subject)
        if tenant is None or tenant == serves:
            return False
        return tenant in getattr(membership, "foreign", {}).values()

    return test


__all__ = ["check_tenant", "refuse_foreign_node", "served_elsewhere", "tenant_of"]
