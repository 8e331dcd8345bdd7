"""Security building blocks of the cluster layer.

- PKI and decentralised NATS authentication: :func:`write_secure_setup` writes a CA, a
  loopback server certificate, an operator with ``SYS`` and ``APP`` accounts (and one per
  tenant, with JetStream limits, :class:`TenantLimits`, and read-only exports to ``APP``,
  :func:`tenant_view`) and one ``.creds`` file per role; :class:`SecureNatsServer` /
  :class:`SecureNatsCluster` run ``nats-server`` with TLS and that operator.
- Least privilege per role, enforced by the server (:func:`role_permissions`), and identity
  the server attests (:func:`principal_subject`, :func:`parse_principal_subject`).
- Connections: :class:`NatsAuth`, :func:`secure_connect` (typed refusals),
  :func:`redact_url`.
- Action authorization: :class:`Policy`, :class:`RolePolicy`, :func:`require`.
- The audit trail: :class:`AuditLog`, :func:`verify_records`, :func:`records_of` (the records
  of one stream message), :func:`run_audit`.
- Signed signals: :class:`SignalSigner`, :class:`SignalVerifier`.

See ``docs/security.md``.
"""

from foundation.security._audit import (
    AuditLog,
    AuditRecord,
    VerifyResult,
    run_audit,
    records_of,
    run_audit_async,
    verify_records,
)
from foundation.security._auth import (
    NatsAuth,
    PermissionMonitor,
    checked_publish,
    checked_request,
    checked_subscribe,
    permission_monitor,
    redact_text,
    redact_url,
    secure_connect,
)
from foundation.security._connect import is_secure, open_connection
from foundation.security._guard import (
    AuditWriter,
    NodeSecurity,
    action_of,
    auth_of,
    default_policy,
    op_allowed,
    params_digest,
)
from foundation.security._keys import KeyPair
from foundation.security._policy import ANY, AllowAll, Decision, Grants, Policy, RolePolicy, require
from foundation.security._pki import PkiFiles, write_pki
from foundation.security._roles import (
    AUDIT_STREAM,
    FROM_PREFIX,
    ROLES,
    Permissions,
    Principal,
    Role,
    inbox_prefix,
    parse_principal_subject,
    principal_subject,
    role_permissions,
)
from foundation.security._limits import change_tenant_limits, tenant_jetstream
from foundation.security._server import SecureNatsCluster, SecureNatsServer
from foundation.security._signing import SignalSigner, SignalVerifier
from foundation.security._setup import SecureSetup, load_secure_setup, write_secure_setup
from foundation.security._tenants import TenantLimits, TenantView, tenant_view

__all__ = [
    "change_tenant_limits",
    "tenant_jetstream",
    "FROM_PREFIX",
    "AuditWriter",
    "NodeSecurity",
    "action_of",
    "auth_of",
    "default_policy",
    "is_secure",
    "op_allowed",
    "open_connection",
    "params_digest",
    "SignalSigner",
    "SignalVerifier",
    "AuditLog",
    "AuditRecord",
    "VerifyResult",
    "run_audit",
    "run_audit_async",
    "records_of",
    "verify_records",
    "ANY",
    "AllowAll",
    "Decision",
    "Grants",
    "Policy",
    "RolePolicy",
    "require",
    "AUDIT_STREAM",
    "ROLES",
    "KeyPair",
    "NatsAuth",
    "PermissionMonitor",
    "Permissions",
    "PkiFiles",
    "Principal",
    "Role",
    "SecureNatsCluster",
    "SecureNatsServer",
    "SecureSetup",
    "TenantLimits",
    "TenantView",
    "tenant_view",
    "checked_publish",
    "checked_request",
    "checked_subscribe",
    "inbox_prefix",
    "load_secure_setup",
    "parse_principal_subject",
    "permission_monitor",
    "principal_subject",
    "redact_text",
    "redact_url",
    "role_permissions",
    "secure_connect",
    "write_pki",
    "write_secure_setup",
]
