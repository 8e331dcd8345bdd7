"""Change a tenant account's JetStream limits on running servers, without a restart.

A tenant's JetStream limits (storage, streams, consumers) are claims of its account JWT
(:mod:`._tenants`), enforced by ``nats-server``. :func:`change_tenant_limits`:

1. re-signs the tenant's account JWT with the new :class:`TenantLimits` (the operator's seed is
   in ``DIR/keys``, so this runs where the setup was written);
2. sends it to the running servers on ``$SYS.ACCOUNT.<account>.CLAIMS.UPDATE`` as a user of the
   system account (issued once into ``DIR/keys/SYS.creds``, ``0600``): the ``MEMORY`` resolver
   takes such an update and applies it at once. A server applies it only to an account it has
   loaded (one the tenant has logged in to); so a login of the tenant's admin comes first, and
   a server of a cluster that still had not loaded it ("jwt update skipped", logged) keeps the
   JWT of its config until it is restarted from the rewritten directory;
3. reads the account's limits back through the tenant's own admin creds (``$JS.API.INFO``)
   and only then rewrites the account's entry in ``server.conf`` and the manifest, so a server
   started later from the directory has the same limits.

A server that has no room for the new limits (a lone server reserves each account's storage
limits out of its ``max_file_store``/``max_memory_store``) answers "jwt updated" yet keeps the
old JetStream limits: the read-back catches that, the old JWT is sent again and
:class:`LimitsNotAppliedError` says what to do. Lowering a limit below what the tenant uses
removes nothing: the server refuses new streams, consumers or writes beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict, replace
from typing import Any

import orjson

from foundation._errors import ClusterError, LimitsNotAppliedError
from foundation.security._auth import NatsAuth, secure_connect
from foundation.security._jwt import account_jwt, creds_text, user_jwt
from foundation.security._keys import KeyPair
from foundation.security._pki import write_secret
from foundation.security._setup import (
    MANIFEST,
    SYS_ACCOUNT,
    SecureSetup,
    account_key,
    with_account_jwt,
)
from foundation.security._tenants import TenantLimits, tenant_exports

__all__ = ["change_tenant_limits", "tenant_jetstream"]

log = logging.getLogger("foundation.security.limits")

_SETTLE = 0.25
"""Seconds to wait for the other servers' answers after the first one."""


def _account_jwt(setup: SecureSetup, tenant: str, limits: TenantLimits) -> str:
    operator = account_key(setup.dir, "operator")
    return account_jwt(
        operator,
        setup.accounts[tenant],
        tenant,
        js_limits=limits.claims(),
        exports=tenant_exports(),
    )


def _system_creds(setup: SecureSetup) -> NatsAuth:
    """Creds of a system-account user (written once; kept with the other secrets)."""
    path = setup.dir / "keys" / f"{SYS_ACCOUNT}.creds"
    if not path.exists():
        account = account_key(setup.dir, SYS_ACCOUNT)
        user = KeyPair.create("user")
        token = user_jwt(account, user.public_key, "foundation-limits")
        write_secret(path, creds_text(token, user).encode())
    return NatsAuth.of(creds=path, tls_ca=setup.ca)


async def _push(nc: Any, account: str, jwt: str, wait: float) -> list[dict[str, Any]]:
    """Send ``jwt`` to every server; the answers that came (at least one)."""
    answers: list[dict[str, Any]] = []
    first = asyncio.Event()

    async def on_answer(msg: Any) -> None:
        with contextlib.suppress(ValueError, TypeError):
            data = orjson.loads(msg.data).get("data")
            if isinstance(data, dict):
                answers.append(data)
                first.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_answer)
    try:
        await nc.publish(f"$SYS.ACCOUNT.{account}.CLAIMS.UPDATE", jwt.encode(), reply=inbox)
        try:
            await asyncio.wait_for(first.wait(), wait)
        except TimeoutError:
            raise LimitsNotAppliedError(
                "no server answered the account update: is the server one started from this "
                "setup directory (operator JWT, MEMORY resolver)?",
                details={"account": account},
            ) from None
        await asyncio.sleep(_SETTLE)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return answers


async def tenant_jetstream(
    url: str, setup: SecureSetup, tenant: str, *, wait: float = 5.0
) -> dict[str, Any]:
    """The tenant account's JetStream limits and use as its servers report them.

    ``{"limits": {...}, "used": {"memory", "storage", "streams", "consumers"}}`` read with
    the tenant's admin creds (``$JS.API.INFO``) within ``wait`` seconds.
    """
    auth = NatsAuth.of(creds=setup.creds_for("admin", tenant), tls_ca=setup.ca)
    nc = await secure_connect(url, auth, name="foundation-limits-check")
    try:
        msg = await nc.request("$JS.API.INFO", b"", timeout=wait)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    info = orjson.loads(msg.data)
    if "error" in info:
        raise ClusterError(f"JetStream of tenant {tenant!r} answered: {info['error']}")
    limits = info.get("limits", {})
    return {
        "limits": {
            "disk_storage": limits.get("max_storage"),
            "mem_storage": limits.get("max_memory"),
            "streams": limits.get("max_streams"),
            "consumers": limits.get("max_consumers"),
        },
        "used": {
            "storage": info.get("storage"),
            "memory": info.get("memory"),
            "streams": info.get("streams"),
            "consumers": info.get("consumers"),
        },
    }


def _applied(report: dict[str, Any], limits: TenantLimits) -> bool:
    return bool(report["limits"] == asdict(limits))


async def _read_back(
    url: str, setup: SecureSetup, tenant: str, limits: TenantLimits, wait: float
) -> dict[str, Any]:
    """The account's limits once they are ``limits``, or as they are after ``wait`` seconds
    (a server applies an account update after it answers)."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        report = await tenant_jetstream(url, setup, tenant, wait=wait)
        if _applied(report, limits) or asyncio.get_running_loop().time() >= deadline:
            return report
        await asyncio.sleep(0.1)


def _rewrite_files(setup: SecureSetup, tenant: str, jwt: str, limits: TenantLimits) -> None:
    account = setup.accounts[tenant]
    try:
        new_conf = with_account_jwt(setup.server_config.read_text(), account, jwt)
    except ValueError as exc:
        raise ClusterError(
            f"{setup.server_config} has no single entry for account {account} of tenant "
            f"{tenant!r} ({exc}): was it written by write_secure_setup?"
        ) from exc
    setup.server_config.write_text(new_conf)
    manifest_path = setup.dir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest.setdefault("limits", {})[tenant] = asdict(limits)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


async def change_tenant_limits(
    url: str,
    setup: SecureSetup,
    tenant: str,
    limits: TenantLimits,
    *,
    wait: float = 5.0,
) -> SecureSetup:
    """Give ``tenant``'s account ``limits`` on the running servers at ``url`` and in ``setup``.

    Returns the setup with the new limits. Raises :class:`LimitsNotAppliedError` (the old
    limits stay, on the servers and in the files) when no server answers, a server refuses the
    JWT, or the servers keep their old limits (no room for the new ones). ``wait``: seconds
    to wait for the servers' answers and for the new limits to show.
    """
    if tenant not in setup.tenants:
        raise KeyError(f"no tenant {tenant!r} in {setup.dir}; tenants: {list(setup.tenants)}")
    account = setup.accounts[tenant]
    old = setup.limits.get(tenant, TenantLimits())
    jwt = _account_jwt(setup, tenant, limits)
    # a server applies an update only to an account it has loaded (else: "jwt update
    # skipped", and it would load the old JWT of its config later): a login of the tenant
    # loads it
    await tenant_jetstream(url, setup, tenant, wait=wait)
    nc = await secure_connect(url, _system_creds(setup), name="foundation-limits")
    try:
        answers = await _push(nc, account, jwt, wait)
        refused = [a for a in answers if a.get("code") != 200]
        skipped = [a for a in answers if "skipped" in str(a.get("message", ""))]
        if skipped:
            log.warning(
                "%d server(s) had not loaded tenant %r's account and keep the JWT of their "
                "config until restarted from %s",
                len(skipped),
                tenant,
                setup.dir,
            )
        report = None if refused else await _read_back(url, setup, tenant, limits, wait)
        if refused or report is None or not _applied(report, limits):
            with contextlib.suppress(ClusterError):
                await _push(nc, account, _account_jwt(setup, tenant, old), wait)
            if refused:
                why = "; ".join(str(a.get("message") or a.get("code")) for a in refused)
                raise LimitsNotAppliedError(
                    f"a server refused the new account JWT of tenant {tenant!r}: {why}",
                    details={"tenant": tenant},
                )
            raise LimitsNotAppliedError(
                f"the servers kept the old JetStream limits of tenant {tenant!r} "
                f"({report['limits'] if report else 'unknown'}): a lone server must have room "
                "for every account's storage limits; start it with larger max_file_store / "
                "max_memory_store (see docs/tenancy.md) or ask for less",
                details={"tenant": tenant, "asked": asdict(limits)},
            )
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    _rewrite_files(setup, tenant, jwt, limits)
    return replace(setup, limits={**setup.limits, tenant: limits})
