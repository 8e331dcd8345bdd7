"""The ``foundation`` command: app loading, argument errors, ``status`` against a real NATS."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from foundation.cli.main import load_app, main
from foundation.demo_app import AGENTS
from foundation.testing import NatsServer
from jido import DefinitionError


def test_load_app_forms() -> None:
    assert load_app("foundation.demo_app:AGENTS") == AGENTS
    assert load_app("foundation.demo_app:ClusteredInventory") == [AGENTS[1]]
    assert load_app("tests.foundation.apps:AGENTS")[0].__name__ == "ClusteredCounter"


@pytest.mark.parametrize(
    "spec",
    ["foundation.demo_app", "no_such_module_xyz:AGENTS", "foundation.demo_app:NOPE", ":x"],
)
def test_load_app_errors_are_clear(spec: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_app(spec)
    assert spec in info.value.message


def test_load_app_rejects_non_classes() -> None:
    with pytest.raises(DefinitionError):
        load_app("foundation.demo_app:__all__")


def test_node_without_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOUNDATION_NATS_URL", raising=False)
    assert main(["node", "--app", "foundation.demo_app:AGENTS"]) == 2


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "foundation.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("demo", "up", "node", "status"):
        assert command in out


@pytest.mark.nats
def test_status_of_empty_cluster(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--nats", nats_server.url, "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["nodes"] == [] and report["healthy"] is True


@pytest.mark.nats
def test_status_unreachable_nats_fails_cleanly() -> None:
    from foundation.testing import free_port

    code = main(["status", "--nats", f"nats://127.0.0.1:{free_port()}"])
    assert code == 1


@pytest.mark.nats
async def test_status_shows_nodes_agents_and_leader(nats_server: NatsServer) -> None:
    from foundation._node import Node
    from foundation.observability.status import collect_status
    from tests.foundation.apps import AGENTS, ClusteredCounter

    async with Node(nats=nats_server.url, name="s1", agents=AGENTS) as node:
        await node.spawn(ClusteredCounter, id="st-1", node="s1")
        await node.failover.wait_leader()  # type: ignore[union-attr]
        report = await collect_status(nats_server.url)
    assert [n.id for n in report.nodes] == ["s1"]
    assert report.nodes[0].responsive and report.nodes[0].agents == 1
    assert report.agents == {"s1": ["st-1"]}
    assert report.leader == "s1"
    assert report.healthy
