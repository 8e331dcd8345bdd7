"""``foundation up --secure --dir DIR``, ``status`` and ``audit`` with credentials, end to end."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from foundation import AuthenticationError, Client, Node
from jido import Signal
from tests.foundation.apps import AGENTS, ClusteredCounter
from tests.foundation.conftest import REPO_ROOT, eventually, repo_env
from tests.foundation.test_dashboard import catches

pytestmark = pytest.mark.nats


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "foundation.cli.main", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=repo_env(COLUMNS="200"),
        cwd=str(REPO_ROOT),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_up_secure_runs_an_authenticated_cluster(tmp_path: Path) -> None:
    d = tmp_path / "sec"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "foundation.cli.main", "up", "--secure", "--dir", str(d), "--nodes", "1"),
        *("--app", "tests.foundation.apps:AGENTS"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        env=repo_env(COLUMNS="200", PYTHONUNBUFFERED="1"),
        cwd=str(REPO_ROOT),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:

        async def nats_url() -> str:
            assert proc.stdout is not None
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "foundation up exited:\n" + "".join(lines)
                lines.append(line)
                found = re.search(r"cluster up: NATS at (tls://\S+)", line)
                if found:
                    return found.group(1)

        url = await asyncio.wait_for(nats_url(), 60)
        for name in ("ca.pem", "admin.creds", "node.creds", "client.creds"):
            assert (d / name).is_file(), name
        ca = str(d / "ca.pem")
        with pytest.raises(AuthenticationError):  # no credentials, no cluster
            await Node(nats=url, tls_ca=ca, failover=False).start()
        async with Node(
            nats=url, creds=d / "node.creds", tls_ca=ca, agents=AGENTS, failover=False
        ) as node:
            await node.spawn(ClusteredCounter, id="cli-1", node="node-1")
        async with Client(nats=url, creds=d / "client.creds", tls_ca=ca) as c:
            out = await c.ref("cli-1").call(Signal(type="counter.add", source="/t", data={"n": 2}))
            assert out["count"] == 2
        admin = ["--nats", url, "--creds", str(d / "admin.creds"), "--tls-ca", ca]
        code, text = await _cli("status", *admin)
        assert code == 0, text
        code, text = await _cli("audit", "verify", *admin)
        assert code == 0, text
        code, text = await _cli("audit", "tail", *admin)
        assert code == 0 and '"agent.spawn"' in text, text
        seed = next(ln for ln in (d / "node.creds").read_text().splitlines() if ln[:2] == "SU")
        assert seed not in "".join(lines) + text

        async def handles_sigterm() -> bool:
            return catches(proc.pid, signal.SIGTERM)

        await eventually(handles_sigterm, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_up_secure_tenants_runs_each_tenant_in_its_own_account(tmp_path: Path) -> None:
    d = tmp_path / "sec"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "foundation.cli.main", "up", "--secure", "--dir", str(d), "--nodes", "1"),
        *("--tenants", "acme,globex", "--app", "tests.foundation.apps:AGENTS"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        env=repo_env(COLUMNS="200", PYTHONUNBUFFERED="1"),
        cwd=str(REPO_ROOT),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:

        async def until_status_shown() -> str:
            assert proc.stdout is not None
            url = ""
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "foundation up exited:\n" + "".join(lines)
                lines.append(line)
                found = re.search(r"cluster up: NATS at (tls://\S+)", line)
                url = found.group(1) if found else url
                if line.startswith("tenant globex at"):  # the status shown after start
                    return url

        url = await asyncio.wait_for(until_status_shown(), 60)
        out = "".join(lines)
        for tenant in ("acme", "globex"):
            for role in ("admin", "node", "client"):
                assert (d / tenant / f"{role}.creds").is_file()
                assert str(d / tenant / f"{role}.creds") in out
        ca = str(d / "ca.pem")
        # the operator sees each tenant's nodes through the exports; a tenant only its own
        operator = ["--nats", url, "--creds", str(d / "admin.creds"), "--tls-ca", ca]
        globex = ["--nats", url, "--creds", str(d / "globex" / "admin.creds"), "--tls-ca", ca]

        async def nodes_of(tenant: str, creds: list[str]) -> list[str]:
            code, text = await _cli("status", "--tenant", tenant, "--json", *creds)
            assert code in (0, 1), text  # 1: degraded, e.g. a window without a heartbeat
            return [n["id"] for n in json.loads(text[text.index("{") :])["nodes"]]

        async def shown(tenant: str, creds: list[str], names: list[str]) -> bool:
            return await nodes_of(tenant, creds) == names

        # each tenant has its nodes and its dashboard's observer node, nothing of the other
        await eventually(
            lambda: shown("acme", operator, ["acme-dashboard", "acme-node-1"]), timeout=30
        )
        await eventually(
            lambda: shown("globex", globex, ["globex-dashboard", "globex-node-1"]), timeout=30
        )
        # a dashboard per tenant, each showing that tenant only
        dashboards = dict(
            re.findall(r"tenant (\w+) \(1 node\(s\)\):.*?live dashboard: (\S+)", out, re.S)
        )
        assert set(dashboards) == {"acme", "globex"}, out
        async with httpx.AsyncClient(timeout=10) as http:
            for tenant, page in dashboards.items():

                async def lists_its_nodes(tenant: str = tenant, page: str = page) -> bool:
                    status = (await http.get(page + "api/status")).json()
                    ids = sorted(n["id"] for n in status["nodes"])
                    return ids == [f"{tenant}-dashboard", f"{tenant}-node-1"]

                await eventually(lists_its_nodes, timeout=30)
                assert (await http.get(page)).status_code == 200
        # acme's client reaches the agent acme's node runs
        async with Node(
            nats=url,
            tenant="acme",
            creds=d / "acme" / "node.creds",
            tls_ca=ca,
            agents=AGENTS,
            failover=False,
        ) as node:
            await node.spawn(ClusteredCounter, id="t-1", node="acme-node-1")
        async with Client(
            nats=url, tenant="acme", creds=d / "acme" / "client.creds", tls_ca=ca
        ) as c:
            out_ = await c.ref("t-1").call(Signal(type="counter.add", source="/t", data={"n": 3}))
            assert out_["count"] == 3
        for tenant in ("acme", "globex"):
            text = (d / tenant / "node.creds").read_text()
            seed = next(ln for ln in text.splitlines() if ln[:2] == "SU")
            assert seed not in "".join(lines)

        async def handles_sigterm() -> bool:
            return catches(proc.pid, signal.SIGTERM)

        await eventually(handles_sigterm, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_up_tenants_needs_secure() -> None:
    code, text = await _cli("up", "--tenants", "acme")
    assert code == 2 and "--secure" in text


async def test_up_tenants_refuses_a_setup_written_for_other_tenants(tmp_path: Path) -> None:
    from foundation.security import write_secure_setup

    d = write_secure_setup(tmp_path / "sec", ["acme"]).dir
    code, text = await _cli("up", "--secure", "--dir", str(d), "--tenants", "acme,globex")
    assert code == 1 and "another --dir" in text, text
