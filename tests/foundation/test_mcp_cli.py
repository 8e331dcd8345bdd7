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
