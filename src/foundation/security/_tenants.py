"""Tenant accounts: their JetStream limits and what they export read-only to the ``APP`` account.

A tenant is a NATS account (:func:`~foundation.security._setup.write_secure_setup` writes one
per tenant): its nodes and clients log in with its creds, its KV buckets and streams live in
its own JetStream, and the server keeps every subject of one account out of the others. What
spans tenants is exported from each tenant account to ``APP`` (the operator's account), only
to it (``token_req``, with an activation token the tenant's key signs for ``APP``), and only
for reading:

======================================  ==========================================  =========
in the tenant account                   in ``APP`` (:func:`tenant_view`)            kind
======================================  ==========================================  =========
``foundation.node.*.ping``              ``foundation.tenant.<t>.node.*.ping``       service
``foundation.node.*.stats``             ``foundation.tenant.<t>.node.*.stats``      service
``$KV.foundation_nodes.>``              ``foundation.tenant.<t>.nodes.>``           stream
``foundation.audit.>``                  ``foundation.tenant.<t>.audit.>``           stream
======================================  ==========================================  =========

The node records (renewed every heartbeat) tell which nodes a tenant runs, ``stats`` their
agents and counters (what metrics and the dashboard show), the audit subjects the tenant's
trail as it is written. Nothing else crosses: no agent subject, no node op but ``ping`` and
``stats``, no KV bucket or stream API, so ``APP``'s admin reads every tenant's status but calls
none of its agents, and one tenant sees nothing of another.

:class:`TenantLimits` are the account's JetStream limits (storage, streams, consumers), written
into its account JWT: the server refuses a stream or consumer beyond them, and a write beyond the
storage (``resource limits exceeded for account``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from foundation._wire import NODES_BUCKET, SUBJECT_ROOT
from foundation.security._jwt import NO_LIMIT, activation_jwt
from foundation.security._keys import KeyPair

#: Root of what ``APP`` imports from tenants: ``foundation.tenant.<tenant>.…``.
TENANT_VIEW_ROOT: Final = f"{SUBJECT_ROOT}.tenant"
#: Node ops a tenant exports (read-only status and metrics).
EXPORTED_NODE_OPS: Final = ("ping", "stats")

_GIB: Final = 2**30


@dataclass(frozen=True)
class TenantLimits:
    """JetStream limits of one tenant account (``-1``: no limit).

    The defaults leave a cluster's own streams and buckets (about ten streams, a few consumers
    per node and agent inbox) ample room while keeping one tenant from filling the servers.
    """

    disk_storage: int = 10 * _GIB
    """Bytes of file storage, all streams together."""
    mem_storage: int = 1 * _GIB
    """Bytes of memory storage, all streams together."""
    streams: int = 100
    """Streams (KV buckets included)."""
    consumers: int = 10_000
    """Consumers, all streams together."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < NO_LIMIT or value == 0:
                raise ValueError(f"{name} must be positive or -1 (no limit), not {value}")

    def claims(self) -> dict[str, int]:
        """The JetStream keys of an account JWT's ``nats.limits``."""
        return {
            "disk_storage": self.disk_storage,
            "mem_storage": self.mem_storage,
            "streams": self.streams,
            "consumer": self.consumers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantLimits:
        """The limits ``asdict`` wrote (unknown keys are an error)."""
        return cls(**{k: int(v) for k, v in data.items()})


@dataclass(frozen=True)
class TenantView:
    """The subjects under which ``APP`` reads one tenant (see the module docs)."""

    tenant: str

    @property
    def root(self) -> str:
        """``foundation.tenant.<tenant>``."""
        return f"{TENANT_VIEW_ROOT}.{self.tenant}"

    def node_op(self, node_id: str, op: str) -> str:
        """Where ``APP`` sends ``ping`` or ``stats`` to one of the tenant's nodes."""
        return f"{self.root}.node.{node_id}.{op}"

    @property
    def nodes(self) -> str:
        """The tenant's node records as they are renewed (``<root>.nodes.<node_id>``)."""
        return f"{self.root}.nodes.>"

    @property
    def audit(self) -> str:
        """The tenant's audit records as they are written."""
        return f"{self.root}.audit.>"


def tenant_view(tenant: str) -> TenantView:
    """The subjects under which ``APP`` reads ``tenant``."""
    return TenantView(tenant)


def _exported() -> list[tuple[str, str, str]]:
    """``(kind, subject in the tenant, subject in APP with {t} for the tenant)``."""
    node = f"{SUBJECT_ROOT}.node.*"
    out = [
        ("service", f"{node}.{op}", f"{TENANT_VIEW_ROOT}.{{t}}.node.*.{op}")
        for op in EXPORTED_NODE_OPS
    ]
    out.append(("stream", f"$KV.{NODES_BUCKET}.>", f"{TENANT_VIEW_ROOT}.{{t}}.nodes.>"))
    out.append(("stream", f"{SUBJECT_ROOT}.audit.>", f"{TENANT_VIEW_ROOT}.{{t}}.audit.>"))
    return out


def tenant_exports() -> list[dict[str, Any]]:
    """The ``exports`` of a tenant account JWT (each needs an activation token)."""
    exports: list[dict[str, Any]] = []
    for kind, subject, _ in _exported():
        export: dict[str, Any] = {
            "name": subject,
            "subject": subject,
            "type": kind,
            "token_req": True,
        }
        if kind == "service":
            export["response_type"] = "Singleton"
        exports.append(export)
    return exports


def app_imports(tenant: str, tenant_key: KeyPair, app_account: str) -> list[dict[str, Any]]:
    """The ``imports`` ``APP``'s account JWT holds for ``tenant`` (activations signed here)."""
    imports: list[dict[str, Any]] = []
    for kind, subject, local in _exported():
        imports.append(
            {
                "name": f"{tenant} {subject}",
                "subject": subject,
                "account": tenant_key.public_key,
                "local_subject": local.format(t=tenant),
                "type": kind,
                "token": activation_jwt(tenant_key, app_account, subject, kind),
            }
        )
    return imports


def view_permissions(role: str) -> tuple[list[str], list[str]]:
    """What an ``APP`` principal of ``role`` may publish and subscribe of the tenants' views."""
    if role not in ("admin", "observer"):
        return [], []
    root = TENANT_VIEW_ROOT
    pub = [f"{root}.*.node.*.{op}" for op in EXPORTED_NODE_OPS]
    sub = [f"{root}.*.nodes.>"]
    if role == "admin":
        sub.append(f"{root}.*.audit.>")
    return pub, sub


__all__ = [
    "EXPORTED_NODE_OPS",
    "TENANT_VIEW_ROOT",
    "TenantLimits",
    "TenantView",
    "app_imports",
    "tenant_exports",
    "tenant_view",
    "view_permissions",
]
