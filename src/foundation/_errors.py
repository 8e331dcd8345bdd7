"""Typed errors of the cluster layer.

Every error subclasses :class:`jido.JidoError`, so it carries a stable ``type``, a
``message`` that says what to do, JSON-safe ``details`` and a ``retryable`` flag, and
crosses the network typed (``JidoError.from_dict`` rebuilds the subclass by ``type``).
Attributes such as :attr:`AlreadyRegisteredError.owner` read from ``details`` so they
survive that round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jido import JidoError, SignalError, ValidationError


class ClusterError(JidoError):
    """Base class of every error raised by the cluster layer."""

    type = "cluster_error"


class NatsUnavailableError(ClusterError):
    """NATS or JetStream could not serve a request (down, unreachable, no quorum, timed out).

    Retry later; check the server is running and reachable, and, on a cluster, that a
    majority of the JetStream servers is up.
    """

    type = "nats_unavailable"
    default_retryable = True


class NatsServerError(ClusterError):
    """The embedded ``nats-server`` could not be found, started or stopped.

    ``details`` holds the binary path, the ports and the tail of the server log.
    """

    type = "nats_server_error"


class InvalidKeyError(ValidationError):
    """A key, node id, agent id, tenant or name is not valid on the wire.

    Use only letters, digits and ``-/_=``, with ``.`` between tokens where allowed.
    """

    type = "invalid_key"


class CASConflictError(ClusterError):
    """A compare-and-set write lost: the key's revision was not the expected one.

    Re-read the key and decide again; ``details`` holds ``key``, ``expected`` and, when
    known, ``actual`` revisions.
    """

    type = "cas_conflict"
    default_retryable = True

    @property
    def key(self) -> str:
        """The key whose write lost."""
        return str(self.details.get("key", ""))


class KeyExistsError(CASConflictError):
    """``create`` found the key already present (``details['actual']`` is its revision)."""

    type = "key_exists"


class RecordNotFoundError(ClusterError):
    """No record exists under that key (not registered, or removed). Check the id."""

    type = "record_not_found"


class AlreadyRegisteredError(ClusterError):
    """An agent id is already registered; ``owner`` names the node that holds it.

    Use the existing agent (``node.ref(id)``), choose another id, or stop the existing one
    first.
    """

    type = "already_registered"

    def __init__(
        self,
        agent_id: str,
        owner: str,
        *,
        epoch: int | None = None,
        tenant: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        merged = {"agent_id": agent_id, "owner": owner, "epoch": epoch, "tenant": tenant}
        merged.update(details or {})
        super().__init__(
            f"agent {agent_id!r} is already registered on node {owner!r}; use the existing "
            "agent, choose another id, or stop it first",
            details=merged,
        )

    @property
    def owner(self) -> str:
        """Id of the node that owns the agent."""
        return str(self.details.get("owner", ""))

    @property
    def agent_id(self) -> str:
        """The agent id that was already taken."""
        return str(self.details.get("agent_id", ""))


class NotOwnerError(ClusterError):
    """This node does not (or no longer) own the agent. Look the owner up again and retry."""

    type = "not_owner"
    default_retryable = True


class WrongTenantError(ClusterError):
    """The agent or node belongs to another tenant than the one this node serves.

    A node serves only its own tenant (its placement, registry cache, refs and failover): reach
    another tenant's agents through a node or client of that tenant. ``details``: ``tenant``
    (the one asked for), ``serves`` (this node's) and the ``node`` or ``agent_id`` concerned.
    """

    type = "wrong_tenant"


class ClusterBusError(ClusterError):
    """The cluster bus could not publish, subscribe or manage dead letters; see ``details``."""

    type = "cluster_bus_error"


class NodeDrainingError(ClusterError):
    """The node is draining (or stopped) and accepts no new agents. Spawn on another node."""

    type = "node_draining"
    default_retryable = True


class NodeUnavailableError(ClusterError):
    """The target node is not a live member of the cluster (left, expired or unreachable).

    Wait for failover to re-place its agents, or choose another node.
    """

    type = "node_unavailable"
    default_retryable = True


class LeaseLostError(ClusterError):
    """A lease (node membership, leadership, lock) was lost or could not be renewed in time.

    Whatever the lease protected must stop at once; acquire it again to continue.
    """

    type = "lease_lost"


class PlacementError(ClusterError):
    """No placement could be made (unknown strategy, invalid request, no live node)."""

    type = "placement_error"


class NoCapacityError(PlacementError):
    """No live node satisfies the placement's capabilities and resource request.

    Add nodes (or capacity), lower the agent's resource request, or relax its constraints;
    ``details`` lists what was asked and why each node was rejected.
    """

    type = "no_capacity"
    default_retryable = True


class BarrierError(ClusterError):
    """A barrier was misused (e.g. more arrivals than its size)."""

    type = "barrier_error"


class InvalidRequestError(SignalError):
    """A request from another process is malformed or sets a field only nodes may set.

    Fix the sender: ``details`` names the field and what was wrong with it. Nothing was
    applied. (A ``jido.SignalError``: the message, not the agent, is at fault.)
    """

    type = "invalid_request"


class CorruptRecordError(ClusterError):
    """A stored record (registry, node, lease) is not valid: it was not written by a node.

    ``details`` names the bucket and key. Remove the key (or re-spawn the agent) to repair
    it; nodes ignore the record in the meantime.
    """

    type = "corrupt_record"


__all__ = [
    "AlreadyRegisteredError",
    "BarrierError",
    "CASConflictError",
    "ClusterBusError",
    "ClusterError",
    "CorruptRecordError",
    "InvalidKeyError",
    "InvalidRequestError",
    "KeyExistsError",
    "LeaseLostError",
    "NatsServerError",
    "NatsUnavailableError",
    "NoCapacityError",
    "NodeDrainingError",
    "NodeUnavailableError",
    "NotOwnerError",
    "PlacementError",
    "RecordNotFoundError",
    "WrongTenantError",
]


class AuthenticationError(ClusterError):
    """The server refused who we are: no, wrong, expired or untrusted credentials.

    ``details['reason']`` says why when it is known. Pass the right credentials (``creds=``
    a ``.creds`` file of this cluster's operator, or an NKey seed, token or user/password)
    and ``tls_ca=`` the CA that signed the server's certificate.
    """

    type = "authentication_failed"


class PermissionDeniedError(ClusterError):
    """The principal is not allowed to do this (by the server's permissions or a policy).

    ``details`` names the principal, the subject or action and the rule that refused it.
    Use credentials of a role that may do it, or ask an admin to change the policy.
    """

    type = "permission_denied"


class AuditError(ClusterError):
    """The audit trail could not be written or read, or does not verify.

    ``details`` holds the stream and, for a broken chain, the first bad record's sequence
    and what is wrong with it. A verification failure is evidence: export the trail and
    keep it before changing anything.
    """

    type = "audit_error"


__all__ += ["AuditError", "AuthenticationError", "PermissionDeniedError"]


class QuotaExceededError(ClusterError):
    """A tenant's quota refused this: too many agents, too much state, too many calls or casts
    per second, or too many LLM tokens this minute.

    ``details``: ``quota`` (the :class:`~foundation.Quota` field, e.g. ``"max_agents"``),
    ``used`` (the use counted when the request came), ``limit`` and ``tenant``. Nothing was
    applied. Wait and retry (the rate quotas refill each second or minute), free what the
    tenant holds (stop agents, shrink state), or ask an admin to raise the quota
    (``foundation quota set TENANT ...``).
    """

    type = "quota_exceeded"

    def __init__(
        self,
        quota: str,
        *,
        used: float,
        limit: float,
        tenant: str,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        merged: dict[str, Any] = {"quota": quota, "used": used, "limit": limit, "tenant": tenant}
        merged.update(details or {})
        super().__init__(
            f"tenant {tenant!r} is over its quota {quota} (used {used:g} of {limit:g}); retry "
            f"later, free what the tenant holds, or raise it with `foundation quota set "
            f"{tenant} ...`",
            details=merged,
            retryable=retryable,
        )

    @property
    def quota(self) -> str:
        """The quota that refused (a :class:`~foundation.Quota` field name)."""
        return str(self.details.get("quota", ""))

    @property
    def used(self) -> float:
        """The use counted against the quota when the request came."""
        return float(self.details.get("used", 0))

    @property
    def limit(self) -> float:
        """The quota's limit."""
        return float(self.details.get("limit", 0))

    @property
    def tenant(self) -> str:
        """The tenant whose quota refused."""
        return str(self.details.get("tenant", ""))


__all__ += ["QuotaExceededError"]


class LimitsNotAppliedError(ClusterError):
    """The servers did not take a tenant account's new JetStream limits; nothing changed.

    The message says why (no server answered, a server refused the account JWT, or a lone
    server has no room for the new storage limits). The old limits stay in force, on the
    servers and in the setup directory.
    """

    type = "limits_not_applied"


__all__ += ["LimitsNotAppliedError"]
