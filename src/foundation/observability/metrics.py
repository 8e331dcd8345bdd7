"""Prometheus text exposition of a cluster's status, as served on the dashboard's ``/metrics``."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from foundation._metrics import LATENCY_BUCKETS

_INFO_LABELS = (("node", "id"), ("host", "host"), ("status", "status"), ("version", "version"))

#: Observations kept for the page's latency quantiles (a sliding window).
LATENCY_WINDOW = 10_000

#: Quantiles reported for call latency.
QUANTILES = (0.5, 0.9, 0.99)

#: Node counters exported as ``foundation_node_<name>_total``, with their help text.
COUNTERS = (
    ("calls_in", "Calls that reached the node over NATS."),
    ("casts_in", "Casts that reached the node over NATS."),
    ("forwarded", "Calls received on public agent subjects and forwarded."),
    ("calls_out", "Remote calls and casts sent by the node."),
    ("spawns", "Agents spawned from the node."),
    ("starts", "Agents started on the node."),
    ("stops", "Agents stopped on the node."),
    ("fenced_stops", "Agents stopped because the node was fenced or a newer owner exists."),
)


class Latency:
    """Call latencies observed by a dashboard's process: a histogram (cumulative buckets, sum
    and count, aggregatable across processes) plus a sliding window for the page's quantiles.
    """

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self.window: deque[float] = deque(maxlen=window)
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        """Record one call of ``seconds`` (a negative or non-finite value is ignored)."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        self.window.append(seconds)
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def quantiles(self) -> dict[float, float | None]:
        """p50/p90/p99 of the window (``None`` before any call)."""
        ordered = sorted(self.window)
        if not ordered:
            return dict.fromkeys(QUANTILES)
        last = len(ordered) - 1
        return {q: ordered[min(last, int(q * len(ordered)))] for q in QUANTILES}

    def buckets(self) -> list[list[Any]]:
        """``[[le, cumulative count], ...]`` with the last bound as ``"+Inf"`` (JSON-safe)."""
        out: list[list[Any]] = []
        acc = 0
        for le, n in zip([*LATENCY_BUCKETS, "+Inf"], self.counts, strict=True):
            acc += n
            out.append([le, acc])
        return out


class _Families:
    """The families of one exposition, built with prometheus-client's metric families."""

    def __init__(self) -> None:
        self.out: list[Metric] = []

    def gauge(
        self, name: str, doc: str, samples: Iterable[tuple[Mapping[str, str], float]]
    ) -> None:
        self._add(GaugeMetricFamily, name, doc, samples)

    def counter(
        self, name: str, doc: str, samples: Iterable[tuple[Mapping[str, str], float]]
    ) -> None:
        self._add(CounterMetricFamily, name, doc, samples)

    def _add(
        self,
        kind: Callable[..., Metric],
        name: str,
        doc: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        rows = list(samples)
        labels = list(rows[0][0]) if rows else []
        family = kind(name, doc, labels=labels)
        for values, value in rows:
            family.add_metric([str(values[k]) for k in labels], value)  # type: ignore[attr-defined]
        self.out.append(family)


class _Snapshot:
    """A registry's collector over one set of families (``generate_latest`` reads it)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def exposition(status: Mapping[str, Any], event_counts: Mapping[tuple[str, str], int]) -> str:
    """The Prometheus text for a dashboard ``status`` and its event counts by (kind, type).

    Written by prometheus-client (``generate_latest``). No label carries a value that changes
    over time (the leader's term is a gauge's value, not a label), no family is a precomputed
    rate (rates come from the ``*_total`` counters), and call latency is a histogram.
    """
    f = _Families()
    nodes: list[dict[str, Any]] = list(status.get("nodes", []))
    agents = status.get("agents", {})
    stats = [n for n in nodes if n["stats"]]
    f.gauge("foundation_nodes", "Live nodes in the membership.", [({}, len(nodes))])
    f.gauge(
        "foundation_node_info",
        "One sample per live node (value 1) with its host, status and version.",
        [
            (
                {
                    "node": n["id"],
                    "host": n["host"],
                    "status": n["status"],
                    "version": n["version"],
                },
                1,
            )
            for n in nodes
        ],
    )
    f.gauge(
        "foundation_node_up",
        "1 if the node answered its statistics request at the last refresh, else 0.",
        [({"node": n["id"]}, 1 if n["responsive"] else 0) for n in nodes],
    )
    f.gauge("foundation_agents", "Agents in the registry.", [({}, int(agents.get("total", 0)))])
    f.gauge(
        "foundation_agents_critical",
        "Critical agents in the registry.",
        [({}, int(agents.get("critical", 0)))],
    )
    f.gauge(
        "foundation_node_agents",
        "Agents the registry assigns to the node.",
        [({"node": n["id"]}, n["agents"]) for n in nodes],
    )
    f.gauge(
        "foundation_orphan_agents",
        "Agents owned by a node that is not a live member (awaiting failover).",
        [({}, int(agents.get("orphaned", 0)))],
    )
    f.gauge(
        "foundation_node_running_agents",
        "Agents running on the node now (from its statistics).",
        [({"node": n["id"]}, int(n["stats"]["agents"])) for n in stats],
    )
    for key, help_text in COUNTERS:
        f.counter(
            f"foundation_node_{key}",
            help_text,
            [({"node": n["id"]}, int(n["stats"].get(key, 0))) for n in stats],
        )
    f.gauge(
        "foundation_node_fenced",
        "1 while the node is fenced (lost its lease), else 0.",
        [({"node": n["id"]}, 1 if n["stats"].get("fenced") else 0) for n in stats],
    )
    f.gauge(
        "foundation_node_uptime_seconds",
        "Seconds since the node started.",
        [({"node": n["id"]}, float(n["stats"].get("uptime", 0.0))) for n in stats],
    )
    f.gauge(
        "foundation_node_ping_seconds",
        "Round trip of the last statistics request to the node.",
        [({"node": n["id"]}, n["ping_ms"] / 1000) for n in nodes if n["ping_ms"] is not None],
    )
    leader = status.get("leader")
    f.gauge(
        "foundation_leader",
        "1 for the node holding the cluster leader lease.",
        [({"node": leader["node"]}, 1)] if leader else [],
    )
    f.gauge(
        "foundation_leader_term",
        "Term of the current leader lease (it grows by one at each change of leader).",
        [({}, int(leader["term"]))] if leader else [],
    )
    latency = status.get("latency", {})
    calls = HistogramMetricFamily(
        "foundation_call_latency_seconds",
        "Latency of the calls observed by this process.",
        labels=[],
    )
    calls.add_metric(
        [],
        [(floatToGoString(float(le)), float(n)) for le, n in latency.get("buckets", [])]  # type: ignore[no-untyped-call]
        or [("+Inf", 0.0)],
        float(latency.get("sum", 0.0)),
    )
    f.out.append(calls)
    f.counter(
        "foundation_call_errors",
        "Calls observed by this process that failed, by error type.",
        [({"type": k}, v) for k, v in sorted(status.get("errors", {}).items())],
    )
    f.counter(
        "foundation_events",
        "Membership, registry and leader events seen by this dashboard since it started.",
        [
            ({"source": source, "kind": kind}, count)
            for (source, kind), count in sorted(event_counts.items())
        ],
    )
    f.gauge(
        "foundation_membership_version",
        "Version of this node's membership snapshot.",
        [({}, int(status.get("membership_version", 0)))],
    )
    f.gauge(
        "foundation_registry_version",
        "Version (highest revision applied) of this node's registry cache.",
        [({}, int(status.get("registry_version", 0)))],
    )
    f.gauge(
        "foundation_healthy",
        "1 when every node answers, no agent is orphaned and this node holds its lease.",
        [({}, 1 if status.get("healthy") else 0)],
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(f.out))
    return generate_latest(registry).decode()


__all__ = ["COUNTERS", "LATENCY_WINDOW", "QUANTILES", "Latency", "exposition"]
