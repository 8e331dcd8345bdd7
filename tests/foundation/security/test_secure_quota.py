"""Quotas on a secure cluster: an admin sets them with ``foundation quota set`` (its creds may
write quotas and nothing else of the bucket), a client may not; the nodes enforce them."""

from __future__ import annotations

from typing import Any

import pytest

from foundation import Node, Quota, QuotaExceededError
from foundation.security import AuditLog, NatsAuth, SecureNatsServer, SecureSetup, secure_connect
from tests.foundation.apps import ClusteredCounter
from tests.foundation.conftest import eventually, run_cli

pytestmark = pytest.mark.nats


async def _cli(*args: str) -> tuple[int, str]:
    code, out, _ = await run_cli(*args)
    return code, out


async def test_an_admin_sets_a_quota_the_nodes_enforce(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    def auth(role: str) -> list[str]:
        creds = str(secure_setup.creds_for(role))  # type: ignore[arg-type]
        return ["--nats", secure_server.url, "--creds", creds, "--tls-ca", str(secure_setup.ca)]

    async with Node(
        nats=secure_server.url,
        name="n1",
        creds=secure_setup.creds_for("node"),
        tls_ca=secure_setup.ca,
        agents=[ClusteredCounter],
        failover=False,
    ) as node:
        code, out = await _cli("quota", "set", "default", "--max-agents", "1", *auth("admin"))
        assert code == 0, out
        assert node.quotas.store is not None
        await node.quotas.store.wait("default", Quota(max_agents=1))
        await node.spawn(ClusteredCounter, id="q1")
        with pytest.raises(QuotaExceededError):
            await node.spawn(ClusteredCounter, id="q2")
        code, out = await _cli("quota", "show", "default", "--json", *auth("admin"))
        assert code == 0 and '"used": 1' in out, out
        code, out = await _cli("quota", "set", "default", "--max-agents", "9", *auth("client"))
        assert code == 1 and "PermissionDeniedError" in out and "Traceback" not in out, out
        assert node.quota() == Quota(max_agents=1)


async def test_every_quota_change_is_audited_once_whoever_made_it(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    """A quota set by the CLI (an admin writing the bucket) and one set by a node are each one
    ``quota.set`` record, though both nodes see each change and record it."""
    common = {
        "nats": secure_server.url,
        "creds": secure_setup.creds_for("node"),
        "tls_ca": secure_setup.ca,
        "agents": [ClusteredCounter],
        "failover": False,
    }
    async with Node(name="n1", **common) as n1, Node(name="n2", **common) as n2:  # type: ignore[arg-type]
        creds = str(secure_setup.creds_for("admin"))
        auth = ["--nats", secure_server.url, "--creds", creds, "--tls-ca", str(secure_setup.ca)]
        code, out = await _cli("quota", "set", "default", "--max-agents", "5", *auth)
        assert code == 0, out
        for node in (n1, n2):
            assert node.quotas.store is not None
            await node.quotas.store.wait("default", Quota(max_agents=5))
        await n2.set_quota("default", Quota(max_agents=7))
        await n1.quotas.store.wait("default", Quota(max_agents=7))  # type: ignore[union-attr]

        admin = await secure_connect(
            secure_server.url,
            NatsAuth.of(creds=secure_setup.creds_for("admin"), tls_ca=secure_setup.ca),
        )
        try:

            async def changes() -> list[dict[str, Any]]:
                for node in (n1, n2):
                    assert node.security.audit is not None
                    await node.security.audit.flush()
                records = await AuditLog(admin.jetstream()).tail(200)
                return [r for r in records if r["event"] == "quota.set"]

            async def both() -> bool:
                return len(await changes()) >= 2

            await eventually(both)
            found = await changes()
            result = await AuditLog(admin.jetstream()).verify()
        finally:
            await admin.close()
    assert [r["details"]["quota"] for r in found] == [{"max_agents": 5.0}, {"max_agents": 7.0}]
    assert {r["principal"] for r in found} == {"node-or-admin"}
    assert found[0]["details"]["revision"] < found[1]["details"]["revision"]
    assert result.ok, result.problems
