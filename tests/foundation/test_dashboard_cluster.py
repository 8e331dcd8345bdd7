"""The dashboard's cluster-wide command view, fed by the nodes' own histograms."""

from __future__ import annotations

import asyncio
import math

import pytest

from foundation._node import Node
from foundation.observability.cluster_view import ClusterCommands, quantile
from foundation.observability.dashboard import Dashboard
from foundation.testing import NatsServer
from jido import Signal
from tests.foundation.apps import AGENTS, ClusteredCounter


def test_quantile_reads_summed_buckets() -> None:
    buckets = [(0.001, 0.0), (0.01, 50.0), (0.1, 100.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.25, buckets) == pytest.approx(0.001 + 0.009 * 0.5)
    assert quantile(0.99, buckets) == pytest.approx(0.01 + 0.09 * 0.98)
    assert quantile(0.5, []) is None
    assert quantile(0.5, [(0.1, 0.0), (math.inf, 4.0)]) == 0.1


def test_cluster_view_adds_nodes_up_and_rates_by_growth() -> None:
    view = ClusterCommands()
    one = {
        "count": 10,
        "sum": 0.1,
        "errors": 1,
        "buckets": [[0.01, 10], ["+Inf", 10]],
        "by_type": {"m:A": {"count": 10, "sum": 0.1, "errors": 1}},
    }
    first = view.update([one, one, None], 100.0)
    assert first["nodes"] == 2 and first["count"] == 20 and first["errors"] == 2
    assert first["by_type"] == [{"type": "m:A", "count": 20, "errors": 2, "mean": 0.01}]
    more = {**one, "count": 30, "buckets": [[0.01, 30], ["+Inf", 30]]}
    second = view.update([more, one], 102.0)
    assert second["commands_per_s"] == pytest.approx(10.0)


@pytest.mark.nats
async def test_dashboard_sees_commands_of_every_node(nats_server: NatsServer) -> None:
    a = Node(nats=nats_server.url, name="cv-a", agents=AGENTS, failover=False)
    b = Node(nats=nats_server.url, name="cv-b", agents=AGENTS, failover=False)
    await asyncio.gather(a.start(), b.start())
    try:
        await a.membership.wait_members(["cv-a", "cv-b"])
        await b.spawn(ClusteredCounter, id="cv-1", node="cv-b")
        async with Dashboard(a, refresh=3600) as dash:
            before = (await dash.collect())["cluster"]["count"]
            # calls local to b: they never cross NATS, yet the view counts them
            for _ in range(5):
                await b.ref("cv-1").call(Signal(type="counter.add", source="/t", data={"n": 1}))
            cluster = (await dash.collect())["cluster"]
        assert cluster["count"] - before == 5
        assert cluster["p50"] is not None and cluster["p50"] > 0
        kinds = {t["type"] for t in cluster["by_type"]}
        assert "tests.foundation.apps:ClusteredCounter" in kinds
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)
