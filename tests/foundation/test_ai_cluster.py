"""LLM agents on a cluster: node services, the cluster tool catalog, a clustered LLMAgent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from foundation import Node
from foundation.hosting.clustered import Clustered
from foundation.messaging.tools import ClusterToolCatalog
from foundation.testing import NatsServer
from jido import Services, Signal
from jido.ai import LLMAgent, OpenAIModel, ToolSource
from jido.ai.testing import OpenAITestServer, call, text_reply, tool_reply
from tests.foundation.apps import ClusteredCounter

pytestmark = pytest.mark.nats


class Notes(BaseModel):
    """The assistant keeps no state of its own."""


def assistant(server: OpenAITestServer) -> type[LLMAgent]:
    ns: dict[str, Any] = {
        "state_model": Notes,
        "model": OpenAIModel(base_url=server.url, model="m", api_key="k", backoff_base=0.001),
        "instructions": "You keep counters.",
    }
    return type("ClusterAssistant", (Clustered, LLMAgent), ns, critical=True)


async def test_a_clustered_llm_agent_uses_agents_on_other_nodes_as_tools(
    nats_server: NatsServer,
) -> None:
    async with OpenAITestServer() as server:
        server.script(
            tool_reply(call("c1__counter_add", {"n": 3}, id="t1")),
            text_reply("Counter c1 is at 3."),
        )
        bot = assistant(server)
        services = Services()
        n1 = Node(nats=nats_server.url, name="n1", agents=[ClusteredCounter], failover=False)
        n2 = Node(
            nats=nats_server.url,
            name="n2",
            agents=[ClusteredCounter, bot],
            failover=False,
            services=services,
        )
        async with n1, n2:
            assert n2.services is services and n2.runtime.services is services
            catalog = ClusterToolCatalog.for_node(n2)
            services.add(ToolSource, catalog)
            await n1.spawn(ClusteredCounter, id="c1", node="n1")
            ref = await n2.spawn(bot, id="bot", node="n2")
            await n2.registry.wait_version(n1.registry.version)
            names = {t.spec.name for t in await catalog.list_tools("bot")}
            assert {"c1__counter_add", "c1__counter_echo"} <= names
            assert not any(n.startswith("bot__") for n in names)  # never its own routes
            out = await ref.call(
                Signal(type="ai.prompt", source="/u", data={"text": "add 3 to c1"}), timeout=30
            )
            assert out["text"] == "Counter c1 is at 3." and out["tool_calls"] == 1
            assert (await n1.ref("c1").state()).count == 3
        first, second = (r.body for r in server.requests)
        offered = {t["function"]["name"] for t in first["tools"]}
        assert "c1__counter_add" in offered
        result = second["messages"][-1]
        assert result["role"] == "tool" and result["tool_call_id"] == "t1"
        assert orjson.loads(result["content"])["count"] == 3


async def test_catalog_filters_and_reports_unknown_tools(nats_server: NatsServer) -> None:
    async with Node(nats=nats_server.url, name="solo", agents=[ClusteredCounter]) as node:
        await node.spawn(ClusteredCounter, id="a1")
        await node.spawn(ClusteredCounter, id="a2")
        only = ClusterToolCatalog.for_node(node, agents=["a2"])
        assert {t.spec.name.split("__")[0] for t in await only.list_tools("x")} == {"a2"}
        none = ClusterToolCatalog.for_node(node, types=[])
        assert await none.list_tools("x") == []
        missing = await only.call_tool(
            "a1__counter_add", {"n": 1}, idempotency_key="k", agent_id="x"
        )
        assert orjson.loads(missing)["error"]["type"] == "validation_error"
        ok = await only.call_tool("a2__counter_add", {"n": 2}, idempotency_key="k", agent_id="x")
        assert orjson.loads(ok)["count"] == 2
