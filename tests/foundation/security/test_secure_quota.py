"""Quotas on a secure cluster: an admin sets them with ``foundation quota set`` (its creds may
write quotas and nothing else of the bucket), a client may not; the nodes enforce them."""

from __future__ import annotations

import asyncio
import sys

import pytest

from foundation import Node, Quota, QuotaExceededError
from foundation.security import SecureNatsServer, SecureSetup
from tests.foundation.apps import ClusteredCounter
from tests.foundation.conftest import REPO_ROOT, repo_env

pytestmark = pytest.mark.nats


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "foundation",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPO_ROOT,
        env=repo_env(),
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


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
