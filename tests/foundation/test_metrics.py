"""Node metrics through prometheus-client: histograms that aggregate, counters, no churning
labels, process metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from foundation._metrics import REGISTRY
from foundation._node import Node
from foundation.testing import NatsServer
from jido import Signal, ValidationError
from tests.foundation.apps import AGENTS, ClusteredCounter

pytestmark = pytest.mark.nats


def _families() -> dict[str, object]:
    text = generate_latest(REGISTRY).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, object], name: str, suffix: str = "", **labels: str) -> float:
    fam = fams[name]
    total = 0.0
    for sample in fam.samples:  # type: ignore[attr-defined]
        if sample.name == name + suffix and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            total += sample.value
    return total


async def test_node_metrics(nats_server: NatsServer) -> None:
    a = Node(nats=nats_server.url, name="ma", agents=AGENTS)
    b = Node(nats=nats_server.url, name="mb", agents=AGENTS)
    await asyncio.gather(a.start(), b.start())
    try:
        await a.membership.wait_members(["ma", "mb"])
        await a.spawn(ClusteredCounter, id="metered", node="mb")
        for _ in range(3):
            await a.ref("metered").call(Signal(type="counter.add", source="/t", data={"n": 1}))
        with pytest.raises(ValidationError):
            await a.ref("metered").call(Signal(type="counter.fail", source="/t"))
        with pytest.raises(Exception):  # noqa: B017 - an unrouted signal, any typed error
            await a.ref("metered").call(Signal(type="counter.nothing", source="/t"))
        fams = _families()
        cmd = fams["foundation_command_duration_seconds"]
        assert cmd.type == "histogram"  # type: ignore[attr-defined]
        kind = "tests.foundation.apps:ClusteredCounter"
        ok = _value(fams, cmd.name, "_count", node="mb", agent_type=kind, action="add")  # type: ignore[attr-defined]
        assert ok == 3
        err = _value(
            fams, "foundation_command_duration_seconds", "_count", node="mb", outcome="error"
        )
        assert err >= 1
        assert _value(fams, "foundation_node_calls_in", "_total", node="mb") >= 5
        assert _value(fams, "foundation_node_calls_out", "_total", node="ma") >= 5
        assert _value(fams, "foundation_node_up", node="ma", tenant="default") == 1
        assert _value(fams, "foundation_kv_commit_duration_seconds", "_count", node="mb") >= 3
        assert _value(fams, "foundation_node_agents", node="mb") == 1
        assert "foundation_mailbox_depth" in fams and "foundation_dead_letters" in fams
        assert "foundation_inbox_lag" in fams
        assert "foundation_fences" in fams and "foundation_failovers" in fams
        assert "process_cpu_seconds" in fams or "python_info" in fams
        # no label that churns, no precomputed rate
        for fam in fams.values():
            assert not fam.name.endswith("per_second")  # type: ignore[attr-defined]
            for sample in fam.samples:  # type: ignore[attr-defined]
                assert "term" not in sample.labels and "epoch" not in sample.labels
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)
    fams = _families()
    # a stopped node's samples are gone
    assert "foundation_node_up" not in fams or not _value(fams, "foundation_node_up", node="ma")
