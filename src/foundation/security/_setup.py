"""One directory with everything a secure cluster needs: PKI, operator, accounts, creds.

:func:`write_secure_setup` writes

- ``ca.pem``, ``server-cert.pem``, ``server-key.pem`` (TLS for loopback; see :mod:`._pki`),
- ``server.conf``: the include for ``nats-server`` (operator JWT, system account, the
  ``MEMORY`` resolver with every account JWT preloaded, TLS),
- ``{admin,node,client,observer}.creds``: one user per role in the ``APP`` account,
- ``<tenant>/{node,client,admin}.creds`` for each tenant, one NATS account per tenant with
  JetStream limits (:class:`TenantLimits`) and read-only exports to ``APP`` (see
  :mod:`._tenants`),
- ``keys/``: the operator's and accounts' seeds (``0600``), so more users can be issued with
  :meth:`SecureSetup.issue_user` (keep this folder off the nodes).

:meth:`SecureSetup.load` reads such a directory back.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from foundation.security._jwt import account_jwt, creds_text, operator_jwt, user_jwt
from foundation.security._keys import KeyPair
from foundation.security._logins import refused_logins_export, refused_logins_import
from foundation.security._pki import LOOPBACK_NAMES, write_pki, write_secret
from foundation.security._roles import (
    ROLES,
    TENANT_ROLES,
    Principal,
    Role,
    check_token,
    role_permissions,
)
from foundation.security._tenants import TenantLimits, app_imports, tenant_exports

#: Name of the account that holds the main (non-tenant) cluster.
APP_ACCOUNT = "APP"
#: Name of the NATS system account.
SYS_ACCOUNT = "SYS"
#: The manifest file of a setup directory.
MANIFEST = "setup.json"


@dataclass(frozen=True)
class SecureSetup:
    """The files of a secure setup directory (see :func:`write_secure_setup`)."""

    dir: Path
    """The directory everything was written to."""
    ca: Path
    """CA certificate clients trust (``tls_ca``)."""
    server_cert: Path
    """Server TLS certificate."""
    server_key: Path
    """Server TLS private key."""
    server_config: Path
    """``nats-server`` config include: operator, resolver, TLS."""
    operator: str
    """The operator's public key."""
    accounts: dict[str, str]
    """Account name (``SYS``, ``APP``, each tenant) to public key."""
    tenants: tuple[str, ...] = ()
    """Tenants with an account of their own."""
    creds: dict[str, Path] = field(default_factory=dict)
    """``"<role>"`` or ``"<tenant>/<role>"`` to its creds file."""
    limits: dict[str, TenantLimits] = field(default_factory=dict)
    """Each tenant's JetStream limits (in its account JWT)."""

    def jetstream_reserved(self) -> tuple[int, int] | None:
        """``(memory, file)`` bytes one server's JetStream must offer for every tenant to start.

        A lone server reserves each tenant account's limits when it enables the account's
        JetStream, and refuses an account whose limits no longer fit ("insufficient storage
        resources available"): without room for all of them, the tenants that log in last
        get no JetStream at all. This is the sum of the tenants' limits, plus one default
        tenant's worth for the ``APP`` account; ``None`` without tenants (the server's
        defaults then do).
        """
        if not self.limits:
            return None
        spare = TenantLimits()
        memory = spare.mem_storage + sum(max(lim.mem_storage, 0) for lim in self.limits.values())
        disk = spare.disk_storage + sum(max(lim.disk_storage, 0) for lim in self.limits.values())
        return memory, disk

    def creds_for(self, role: Role, tenant: str | None = None) -> Path:
        """The creds file of ``role`` (in ``tenant``'s account when given)."""
        key = f"{tenant}/{role}" if tenant else role
        try:
            return self.creds[key]
        except KeyError:
            raise KeyError(
                f"no creds for {key!r}; written: {', '.join(sorted(self.creds))}"
            ) from None

    def account_of(self, tenant: str | None) -> str:
        """Public key of the main account (``None``) or of ``tenant``'s account."""
        return self.accounts[tenant or APP_ACCOUNT]

    def issue_user(
        self, role: Role, name: str, *, tenant: str | None = None, path: Path | None = None
    ) -> Path:
        """Write creds for a new principal ``role/name`` (signed by the account's key)."""
        account = account_key(self.dir, tenant or APP_ACCOUNT)
        target = path or (self.dir / (tenant or "") / f"{name}.{role}.creds")
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_user(target, account, Principal(role, name, tenant))
        return target


def account_key(root: Path, account: str) -> KeyPair:
    """The key pair of ``account`` (or ``"operator"``) from ``root/keys``."""
    path = root / "keys" / f"{account}.nk"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: issue users where the setup was written")
    return KeyPair.from_seed(path.read_bytes())


def _write_user(path: Path, account: KeyPair, principal: Principal) -> None:
    user = KeyPair.create("user")
    perms = role_permissions(principal)
    token = user_jwt(
        account,
        user.public_key,
        principal.name,
        pub_allow=perms.pub_allow,
        pub_deny=perms.pub_deny,
        sub_allow=perms.sub_allow,
        sub_deny=perms.sub_deny,
        tags=[f"role:{principal.role}", f"principal:{principal.name}"]
        + ([f"tenant:{principal.tenant}"] if principal.tenant else []),
    )
    write_secret(path, creds_text(token, user).encode())


def _preload_entry(account: str, jwt: str) -> str:
    return f'  {account}: "{jwt}"'


def with_account_jwt(conf: str, account: str, jwt: str) -> str:
    """``conf`` (a ``server.conf`` this module wrote) with ``account``'s preloaded JWT replaced;
    ``ValueError`` unless it holds exactly one entry for that account."""
    entry = re.compile(rf'^  {re.escape(account)}: "[^"]*"$', re.MULTILINE)
    new, n = entry.subn(lambda _m: _preload_entry(account, jwt), conf)
    if n != 1:
        raise ValueError(f"{n} preloaded entries for account {account}, not one")
    return new


def _server_config(
    setup_dir: Path, operator: Path, sys_account: str, preload: dict[str, str]
) -> str:
    entries = "\n".join(_preload_entry(key, jwt) for key, jwt in preload.items())
    return (
        f'operator: "{operator}"\n'
        f'system_account: "{sys_account}"\n'
        "resolver: MEMORY\n"
        # a node's user JWT lists its JetStream permissions per stream: longer than the
        # default 4 KiB CONNECT line
        "max_control_line: 32KB\n"
        f"resolver_preload: {{\n{entries}\n}}\n"
        "tls {\n"
        f'  cert_file: "{setup_dir / "server-cert.pem"}"\n'
        f'  key_file: "{setup_dir / "server-key.pem"}"\n'
        "  timeout: 5\n"
        "}\n"
    )


def _limits_of(
    tenants: tuple[str, ...], given: TenantLimits | Mapping[str, TenantLimits] | None
) -> dict[str, TenantLimits]:
    if given is None or isinstance(given, TenantLimits):
        return {t: given or TenantLimits() for t in tenants}
    unknown = set(given) - set(tenants)
    if unknown:
        raise ValueError(f"tenant_limits names tenants not written: {sorted(unknown)}")
    return {t: given.get(t, TenantLimits()) for t in tenants}


def write_secure_setup(
    dir: str | os.PathLike[str],
    tenants: Iterable[str] = (),
    *,
    names: Sequence[str] = LOOPBACK_NAMES,
    operator_name: str = "foundation",
    tenant_limits: TenantLimits | Mapping[str, TenantLimits] | None = None,
) -> SecureSetup:
    """Write a complete secure setup to ``dir`` (created if missing) and describe it.

    ``tenant_limits`` are the tenants' JetStream limits: one :class:`TenantLimits` for all, or
    one per tenant name (the others get the defaults).
    """
    root = Path(dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tenant_list = tuple(check_token("tenant", t) for t in tenants)
    if len(set(tenant_list)) != len(tenant_list):
        raise ValueError(f"tenants must be distinct: {tenant_list}")
    for reserved in (APP_ACCOUNT, SYS_ACCOUNT, "keys"):
        if reserved in tenant_list:
            raise ValueError(f"{reserved!r} is reserved and cannot name a tenant")
    limits = _limits_of(tenant_list, tenant_limits)
    pki = write_pki(root, names=names)
    keys_dir = root / "keys"
    keys_dir.mkdir(mode=0o700, exist_ok=True)

    op = KeyPair.create("operator")
    write_secret(keys_dir / "operator.nk", op.seed)
    account_keys: dict[str, KeyPair] = {}
    for acc in (SYS_ACCOUNT, APP_ACCOUNT, *tenant_list):
        account_keys[acc] = KeyPair.create("account")
        write_secret(keys_dir / f"{acc}.nk", account_keys[acc].seed)

    sys_pub = account_keys[SYS_ACCOUNT].public_key
    op_path = root / "operator.jwt"
    op_path.write_text(operator_jwt(op, operator_name, system_account=sys_pub))
    app_pub = account_keys[APP_ACCOUNT].public_key
    preload = {
        sys_pub: account_jwt(
            op, sys_pub, SYS_ACCOUNT, jetstream=False, exports=[refused_logins_export()]
        ),
        app_pub: account_jwt(
            op,
            app_pub,
            APP_ACCOUNT,
            imports=[
                refused_logins_import(account_keys[SYS_ACCOUNT], app_pub),
                *(imp for t in tenant_list for imp in app_imports(t, account_keys[t], app_pub)),
            ],
        ),
    }
    for tenant in tenant_list:
        pub = account_keys[tenant].public_key
        preload[pub] = account_jwt(
            op, pub, tenant, js_limits=limits[tenant].claims(), exports=tenant_exports()
        )
    conf = root / "server.conf"
    conf.write_text(_server_config(root, op_path, sys_pub, preload))

    creds: dict[str, Path] = {}
    for role in ROLES:
        creds[role] = root / f"{role}.creds"
        _write_user(creds[role], account_keys[APP_ACCOUNT], Principal(role, role))
    for tenant in tenant_list:
        (root / tenant).mkdir(exist_ok=True)
        for role in TENANT_ROLES:
            key = f"{tenant}/{role}"
            creds[key] = root / tenant / f"{role}.creds"
            _write_user(creds[key], account_keys[tenant], Principal(role, role, tenant))

    setup = SecureSetup(
        dir=root,
        ca=pki.ca,
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        server_config=conf,
        operator=op.public_key,
        accounts={acc: kp.public_key for acc, kp in account_keys.items()},
        tenants=tenant_list,
        creds=creds,
        limits=limits,
    )
    manifest = {
        "operator": setup.operator,
        "accounts": setup.accounts,
        "tenants": list(tenant_list),
        "creds": {k: str(v.relative_to(root)) for k, v in creds.items()},
        "limits": {t: asdict(lim) for t, lim in limits.items()},
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return setup


def load_secure_setup(dir: str | os.PathLike[str]) -> SecureSetup:
    """Read back a directory written by :func:`write_secure_setup`."""
    root = Path(dir).resolve()
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{root} holds no secure setup ({MANIFEST} missing); write one with "
            "write_secure_setup() or `foundation up --secure --dir DIR`"
        ) from None
    return SecureSetup(
        dir=root,
        ca=root / "ca.pem",
        server_cert=root / "server-cert.pem",
        server_key=root / "server-key.pem",
        server_config=root / "server.conf",
        operator=str(manifest["operator"]),
        accounts={str(k): str(v) for k, v in manifest["accounts"].items()},
        tenants=tuple(manifest.get("tenants", ())),
        creds={str(k): root / str(v) for k, v in manifest["creds"].items()},
        limits={
            str(t): TenantLimits.from_dict(lim) for t, lim in manifest.get("limits", {}).items()
        },
    )


__all__ = [
    "APP_ACCOUNT",
    "SYS_ACCOUNT",
    "SecureSetup",
    "load_secure_setup",
    "with_account_jwt",
    "write_secure_setup",
]
