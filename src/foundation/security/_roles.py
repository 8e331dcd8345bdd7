"""Roles, principals and the subject permissions the NATS server enforces for each role.

Four roles (least privilege, enforced by the server through the user JWT):

- ``node``: what hosting agents needs: the cluster's subjects, its KV buckets and streams
  (JetStream API per stream, never deleting a stream), replies to any requester.
- ``client``: calls and casts agents (``foundation.agent.>``; the serving node authorizes
  and puts casts to at-least-once agents in their inbox) and the cluster bus
  (``foundation.signal.>``, ``foundation.durable.>``); no node ops, no KV or stream API, no
  state bucket.
- ``admin``: node ops for drain, stop and status, read-only KV (not the state bucket) and
  the audit stream (read).
- ``observer``: ``ping`` and ``stats`` of nodes and reading the membership and registry.

Identity the server attests: a principal ``<role>/<name>`` may publish requests only under
``foundation.from.<role>.<name>.…`` (:func:`principal_subject`) and receives replies only on
``_INBOX.<role>.<name>.…`` (:func:`inbox_prefix`), so a responder that reads the principal
from the subject (:func:`parse_principal_subject`) knows it was not forged, and nobody else
reads the replies. ``docs/security.md`` gives the argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from foundation._wire import (
    CONFIG_BUCKET,
    COORD_BUCKET,
    DEAD_LETTER_STREAM,
    KV_STREAM_PREFIX,
    KV_SUBJECT_PREFIX,
    NODES_BUCKET,
    QUOTA_BUCKET,
    REGISTRY_BUCKET,
    RESERVATIONS_BUCKET,
    SIGNALS_STREAM,
    STATE_BUCKET,
    SUBJECT_ROOT,
    WAKEUPS_BUCKET,
)
from foundation.security._tenants import view_permissions

Role = Literal["admin", "node", "client", "observer"]
#: Every role, in the order their creds files are written.
ROLES: Final[tuple[Role, ...]] = get_args(Role)
#: Roles a tenant account gets users for.
TENANT_ROLES: Final[tuple[Role, ...]] = ("node", "client", "admin")

#: Stream of the audit trail (append-only).
AUDIT_STREAM: Final = "FOUNDATION_AUDIT"
#: Subjects of the audit trail: ``foundation.audit.<tenant>``.
AUDIT_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.audit"
#: Stream of at-least-once agent inboxes.
INBOX_STREAM: Final = "FOUNDATION_INBOX"
#: Root of attested request subjects: ``foundation.from.<role>.<name>.<subject>``.
FROM_PREFIX: Final = f"{SUBJECT_ROOT}.from"
#: Root of reply inboxes; a principal's own is ``_INBOX.<role>.<name>``.
INBOX_ROOT: Final = "_INBOX"

#: KV buckets nodes use.
NODE_BUCKETS: Final = (
    NODES_BUCKET,
    REGISTRY_BUCKET,
    COORD_BUCKET,
    CONFIG_BUCKET,
    STATE_BUCKET,
    RESERVATIONS_BUCKET,
    QUOTA_BUCKET,
    WAKEUPS_BUCKET,
)
#: KV buckets an admin may read (all but agent state).
ADMIN_BUCKETS: Final = (
    NODES_BUCKET,
    REGISTRY_BUCKET,
    COORD_BUCKET,
    CONFIG_BUCKET,
    RESERVATIONS_BUCKET,
    QUOTA_BUCKET,
)
#: Keys an admin may write: the tenants' quotas (``foundation quota set``).
ADMIN_KV_WRITES: Final = (f"{KV_SUBJECT_PREFIX}{QUOTA_BUCKET}.quota.>",)
#: KV buckets an observer may read.
OBSERVER_BUCKETS: Final = (NODES_BUCKET, REGISTRY_BUCKET, QUOTA_BUCKET)
#: Plain streams nodes use (besides the buckets' ``KV_`` streams).
NODE_STREAMS: Final = (SIGNALS_STREAM, DEAD_LETTER_STREAM, INBOX_STREAM)
#: Subject families under ``foundation.`` that nodes publish and subscribe on.
NODE_SUBJECT_FAMILIES: Final = (
    "agent",
    "node",
    "signal",
    "durable",
    "inbox",
    "dead",
    "redrive",
    "audit",
)
#: Node ops an admin may send (status, drain and stop).
ADMIN_NODE_OPS: Final = ("ping", "stats", "info", "drain", "stop")
#: Node ops an observer may send (status and metrics).
OBSERVER_NODE_OPS: Final = ("ping", "stats", "info")

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """Who acts: a role and a name (one subject token each), optionally in a tenant."""

    role: Role
    """The role the server grants the principal's credentials."""
    name: str
    """The principal's name (a creds file's user, e.g. ``alice``; the role by default)."""
    tenant: str | None = None
    """The tenant (NATS account) the principal belongs to; ``None`` for the main account."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; roles are {', '.join(ROLES)}")
        check_token("principal name", self.name)
        if self.tenant is not None:
            check_token("tenant", self.tenant)

    def __str__(self) -> str:
        base = f"{self.role}/{self.name}"
        return f"{self.tenant}:{base}" if self.tenant else base


def check_token(kind: str, value: str) -> str:
    """``value`` when it is one subject token (letters, digits, ``_``, ``-``); else ValueError."""
    if not _TOKEN.match(value):
        raise ValueError(
            f"{kind} {value!r} must be 1-64 letters, digits, '_' or '-' (one subject token)"
        )
    return value


def principal_subject(principal: Principal, subject: str) -> str:
    """The attested form of ``subject``: ``foundation.from.<role>.<name>.<subject>``."""
    return f"{FROM_PREFIX}.{principal.role}.{principal.name}.{subject}"


def parse_principal_subject(subject: str, *, tenant: str | None = None) -> tuple[Principal, str]:
    """The principal a server-attested subject names, and the subject it wraps.

    Raises ``ValueError`` for a subject not under ``foundation.from.<role>.<name>.``.
    ``tenant`` is the account the message arrived in (the responder knows it).
    """
    prefix = f"{FROM_PREFIX}."
    if not subject.startswith(prefix):
        raise ValueError(f"{subject!r} is not an attested subject (under {FROM_PREFIX}.)")
    parts = subject[len(prefix) :].split(".", 2)
    if len(parts) != 3 or not parts[2]:
        raise ValueError(f"{subject!r} lacks <role>.<name>.<subject> after {FROM_PREFIX}.")
    role, name, inner = parts
    if role not in ROLES:
        raise ValueError(f"{subject!r} names unknown role {role!r}")
    return Principal(role, name, tenant), inner


def inbox_prefix(principal: Principal) -> str:
    """The reply-inbox prefix only ``principal`` may subscribe under."""
    return f"{INBOX_ROOT}.{principal.role}.{principal.name}"


@dataclass(frozen=True)
class Permissions:
    """Publish and subscribe allow/deny lists of one user JWT."""

    pub_allow: tuple[str, ...]
    pub_deny: tuple[str, ...]
    sub_allow: tuple[str, ...]
    sub_deny: tuple[str, ...]


def _js_stream_full(stream: str) -> list[str]:
    # Every JetStream API subject that names the stream: as the 4th token
    # (STREAM.CREATE/UPDATE/INFO/PURGE, DIRECT.GET, CONSUMER.CREATE/INFO/DELETE/NAMES/LIST)
    # or the 5th (STREAM.MSG.GET/DELETE, CONSUMER.MSG.NEXT, CONSUMER.DURABLE.CREATE);
    # what a stream must not suffer is denied apart (deny wins over allow).
    return [
        f"$JS.API.*.*.{stream}",
        f"$JS.API.*.*.{stream}.>",
        f"$JS.API.*.*.*.{stream}",
        f"$JS.API.*.*.*.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _js_stream_read(stream: str) -> list[str]:
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


#: JetStream API calls no role may make: deleting or restoring streams, moving their leaders
#: or peers, and account-wide purges.
_JS_DENY_ALL = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.>",
    "$JS.API.STREAM.LEADER.>",
    "$JS.API.ACCOUNT.>",
    "$JS.API.META.>",
    "$JS.API.SERVER.>",
)
#: What even a node may not do to the audit stream.
_JS_DENY_AUDIT = (
    f"$JS.API.STREAM.UPDATE.{AUDIT_STREAM}",
    f"$JS.API.STREAM.PURGE.{AUDIT_STREAM}",
    f"$JS.API.STREAM.MSG.DELETE.{AUDIT_STREAM}",
)


_JS_ACCOUNT = ("$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST")


def role_permissions(principal: Principal) -> Permissions:
    """The server-enforced permissions of ``principal`` (by its role)."""
    own_from = f"{FROM_PREFIX}.{principal.role}.{principal.name}.>"
    own_inbox = f"{inbox_prefix(principal)}.>"
    root = SUBJECT_ROOT
    pub: list[str] = [own_from]
    pub_deny: list[str] = list(_JS_DENY_ALL)
    sub: list[str] = [own_inbox]
    sub_deny: list[str] = []
    if principal.role == "node":
        pub += [f"{root}.{fam}.>" for fam in NODE_SUBJECT_FAMILIES]
        pub += [f"{KV_SUBJECT_PREFIX}{b}.>" for b in NODE_BUCKETS]
        pub += list(_JS_ACCOUNT)
        for bucket in NODE_BUCKETS:
            pub += _js_stream_full(f"{KV_STREAM_PREFIX}{bucket}")
        for stream in (*NODE_STREAMS, AUDIT_STREAM):
            pub += _js_stream_full(stream)
        pub_deny += _JS_DENY_AUDIT
        # replies to any requester (clients, admins, other nodes; APP's admin through a
        # tenant's exports: the server names those replies ``_R_.…``)
        pub += [f"{INBOX_ROOT}.>", "_R_.>"]
        sub += [f"{root}.>"]
    elif principal.role == "client":
        # no inbox: a cast to an at-least-once agent goes through a node, which authorizes it
        pub += [f"{root}.{fam}.>" for fam in ("agent", "signal", "durable")]
        sub += [f"{root}.signal.>"]
        pub_deny += ["$JS.API.>", f"{KV_SUBJECT_PREFIX}>"]
    elif principal.role == "admin":
        pub += [f"{root}.node.*.{op}" for op in ADMIN_NODE_OPS]
        pub += list(_JS_ACCOUNT)
        for bucket in ADMIN_BUCKETS:
            pub += _js_stream_read(f"{KV_STREAM_PREFIX}{bucket}")
        pub += _js_stream_read(AUDIT_STREAM)
        pub += list(ADMIN_KV_WRITES)
    else:  # observer
        pub += [f"{root}.node.*.{op}" for op in OBSERVER_NODE_OPS]
        pub += list(_JS_ACCOUNT)
        for bucket in OBSERVER_BUCKETS:
            pub += _js_stream_read(f"{KV_STREAM_PREFIX}{bucket}")
    if principal.tenant is None:
        view_pub, view_sub = view_permissions(principal.role)
        pub += view_pub
        sub += view_sub
    return Permissions(tuple(pub), tuple(pub_deny), tuple(sub), tuple(sub_deny))


__all__ = [
    "ADMIN_BUCKETS",
    "AUDIT_STREAM",
    "AUDIT_SUBJECT_PREFIX",
    "FROM_PREFIX",
    "INBOX_ROOT",
    "NODE_BUCKETS",
    "OBSERVER_BUCKETS",
    "ROLES",
    "TENANT_ROLES",
    "Permissions",
    "Principal",
    "Role",
    "check_token",
    "inbox_prefix",
    "parse_principal_subject",
    "principal_subject",
    "role_permissions",
]
