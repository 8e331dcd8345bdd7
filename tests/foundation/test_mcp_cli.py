"""``foundation mcp``: the cluster's agents' routes as MCP tools, to the official MCP client."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from foundation import Node
from foundation.testing import NatsServer
from tests.foundation.apps import AGENTS, ClusteredCounter

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.foundation.apps:AGENTS"


def _env() -> dict[str, str]:
    path = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
    )
    return {**os.environ, "PYTHONPATH": path}


def _json(result: Any) -> Any:
    return orjson.loads(result.content[0].text)


async def test_mcp_over_streamable_http_calls_agents_wherever_they_run(
    nats_server: NatsServer,
) -> None:
    async with Node(nats=nats_server.url, name="host", agents=AGENTS) as node:
        await node.spawn(ClusteredCounter, id="c1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "foundation.cli.main", "mcp", "--nats", nats_server.url,
            "--app", APP, "--http",
            stdout=asyncio.subprocess.PIPE, env=_env(), cwd=ROOT,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line.startswith("mcp http://"), line
            async with Client(line.split()[1]) as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                assert {"c1__counter_add", "c1__counter_echo"} <= set(tools)
                assert "n" in tools["c1__counter_add"].input_schema["properties"]
                out = await client.call_tool("c1__counter_add", {"n": 4})
                assert not out.is_error and _json(out)["count"] == 4
                bad = await client.call_tool("nobody__counter_add", {"n": 1})
                assert bad.is_error and _json(bad)["error"]["type"] == "validation_error"
            assert (await node.ref("c1").state()).count == 4
        finally:
            proc.terminate()
            await proc.wait()


async def test_mcp_over_stdio(nats_server: NatsServer) -> None:
    async with Node(nats=nats_server.url, name="host", agents=AGENTS) as node:
        await node.spawn(ClusteredCounter, id="c2")
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "foundation.cli.main", "mcp", "--nats", nats_server.url, "--app", APP,
                  "--agent", "c2"],
            env=_env(),
            cwd=str(ROOT),
        )  # fmt: skip
        async with Client(params) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            assert names and all(n.startswith("c2__") for n in names)
            out = await client.call_tool("c2__counter_add", {"n": 2})
            assert _json(out)["count"] == 2
        assert (await node.ref("c2").state()).count == 2


async def test_mcp_over_http_with_a_token_refuses_requests_without_it(
    nats_server: NatsServer,
) -> None:
    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    token = "t0k3n-" + os.urandom(8).hex()
    async with Node(nats=nats_server.url, name="host", agents=AGENTS) as node:
        await node.spawn(ClusteredCounter, id="c3")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "foundation.cli.main", "mcp", "--nats", nats_server.url,
            "--app", APP, "--http", "--token-env", "MCP_TEST_TOKEN",
            stdout=asyncio.subprocess.PIPE, env={**_env(), "MCP_TEST_TOKEN": token}, cwd=ROOT,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line.startswith("mcp http://") and token not in line, line
            url = line.split()[1]
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            async with httpx.AsyncClient() as http:
                for headers in ({}, {"Authorization": "Bearer wrong"}):
                    refused = await http.post(url, json=body, headers=headers)
                    assert refused.status_code == 401
                    assert "Bearer" in refused.json()["error"]
            authed = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
            async with authed, Client(streamable_http_client(url, http_client=authed)) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert "c3__counter_add" in names
                out = await client.call_tool("c3__counter_add", {"n": 3})
                assert _json(out)["count"] == 3
        finally:
            proc.terminate()
            await proc.wait()
        assert (await node.ref("c3").state()).count == 3


def test_mcp_token_env_must_be_set() -> None:
    import subprocess

    env = {k: v for k, v in _env().items() if k != "MCP_UNSET_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "foundation.cli.main", "mcp", "--nats", "nats://127.0.0.1:1",
         "--app", APP, "--http", "--token-env", "MCP_UNSET_TOKEN"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "MCP_UNSET_TOKEN" in done.stderr and "not set" in done.stderr
