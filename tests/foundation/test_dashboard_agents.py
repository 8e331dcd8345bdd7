"""The dashboard's per-agent detail (``/api/agents/<id>``, ``ClusterRef.info()``) and the
nodes' own events (fences, authorization denials), over real HTTP against real nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import nats
import orjson
import pytest

from foundation import Node
from foundation._wire import Subjects
from foundation.failover.rebalance import hand_over
from foundation.observability.dashboard import Dashboard
from foundation.security import RolePolicy
from foundation.testing import NatsServer
from jido import AgentInfo, Signal, ValidationError
from tests.foundation.apps import AGENTS, ClusteredCounter
from tests.foundation.conftest import eventually

pytestmark = pytest.mark.nats


def add(n: Any = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def detail(http: httpx.AsyncClient, dash: Dashboard, agent_id: str) -> dict[str, Any]:
    res = await http.get(dash.url + "api/agents/" + agent_id)
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


async def test_agent_detail_shows_owner_runtime_and_owner_history(
    nats_server: NatsServer, http: httpx.AsyncClient
) -> None:
    a = Node(nats=nats_server.url, name="det-a", agents=AGENTS)
    b = Node(nats=nats_server.url, name="det-b", agents=AGENTS)
    async with a, b:
        await a.membership.wait_members(["det-a", "det-b"])
        async with Dashboard(a, refresh=0.1) as dash:
            await a.spawn(ClusteredCounter, id="det-1", node="det-b")
            for _ in range(3):
                await a.ref("det-1").call(add())
            with pytest.raises(ValidationError):
                await a.ref("det-1").call(add("lots"))

            # the same detail through the ref, from the other node and on the owner itself
            info = await a.ref("det-1").info()
            on_owner = await b.ref("det-1").info()
            assert isinstance(info, AgentInfo)
            assert replace(info, idle_seconds=0) == replace(on_owner, idle_seconds=0)
            assert info.commands == 3 and info.status == "running" and info.mailbox == 0
            assert info.last_error is not None and info.last_error.type == "validation_error"
            assert info.state_bytes is not None and info.state_bytes > 0

            body = await detail(http, dash, "det-1")
            assert body["agent"] == "det-1" and body["runtime_error"] is None
            assert body["record"]["node"] == "det-b" and body["record"]["critical"] is True
            runtime = body["runtime"]
            assert runtime["node"] == "det-b" and runtime["commands"] == 3
            assert runtime["agent_class"].endswith(":ClusteredCounter")
            assert runtime["last_error"]["type"] == "validation_error"
            assert "count" not in orjson.dumps(runtime).decode()  # metadata, never the state
            assert [o["event"] for o in body["owners"]] == ["claimed"]

            # hand-over moves it: the history shows both owners, the detail follows
            await hand_over(b, "det-1", to="det-a")

            async def moved() -> bool:
                found = await detail(http, dash, "det-1")
                return bool(found["record"]["node"] == "det-a" and found["runtime"])

            await eventually(moved)
            body = await detail(http, dash, "det-1")
            assert [(o["event"], o["node"]) for o in body["owners"]] == [
                ("claimed", "det-b"),
                ("moved", "det-a"),
            ]
            assert body["runtime"]["node"] == "det-a"

            # bad and unknown ids: typed answers
            res = await http.get(dash.url + "api/agents/nobody")
            assert res.status_code == 404 and res.json()["error"] == "agent_not_found"
            res = await http.get(dash.url + "api/agents/bad%20id")
            assert res.status_code == 400 and res.json()["error"] == "invalid_agent_id"


async def test_denials_and_fences_of_every_node_reach_the_events(
    nats_server: NatsServer,
    tcp_proxy,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
) -> None:
    # nobody may send anything on the public agent subjects (whichever node takes the request)
    deny_all = RolePolicy({})
    watcher = Node(
        nats=nats_server.url, name="ev-watch", agents=AGENTS, failover=False, policy=deny_all
    )
    cut = Node(nats=tcp_proxy.url, name="ev-cut", agents=AGENTS, failover=False, policy=deny_all)
    async with watcher, cut, Dashboard(watcher, refresh=0.1) as dash:
        await watcher.membership.wait_members(["ev-cut"])
        await watcher.spawn(ClusteredCounter, id="ev-1", node="ev-cut")
        nc = await nats.connect(nats_server.url)
        try:
            reply = await nc.request(
                Subjects().agent("ev-1"), orjson.dumps(add().to_dict()), timeout=5
            )
            assert b"authentication_failed" in reply.data  # anonymous: refused before any action
        finally:
            await nc.close()

        async def listed(kind: str, node: str) -> bool:
            status = (await http.get(dash.url + "api/status")).json()
            return any(e["kind"] == kind and e["node"] == node for e in status["events"])

        async def denied() -> list[dict[str, Any]]:
            status = (await http.get(dash.url + "api/status")).json()
            return [e for e in status["events"] if e["kind"] == "denied"]

        await eventually(denied)
        # a few more refreshes: the event is merged once, however often the stats are read
        seen = (await http.get(dash.url + "api/status")).json()["collections"]
        await eventually(lambda: _collections_past(http, dash, seen + 3), timeout=10)
        events = await denied()
        assert len(events) == 1, events
        assert events[0]["source"] == "node" and events[0]["agent"] == "ev-1"
        assert "anonymous" in events[0]["detail"]

        tcp_proxy.pause()
        await cut.wait_fenced()
        tcp_proxy.resume()
        await eventually(lambda: listed("fence", "ev-cut"))
        metrics = (await http.get(dash.url + "metrics")).text
        assert 'source="node",kind="fence"' in metrics or 'kind="fence",source="node"' in metrics


async def _collections_past(http: httpx.AsyncClient, dash: Dashboard, count: int) -> bool:
    status = (await http.get(dash.url + "api/status")).json()
    return bool(status["collections"] >= count)
