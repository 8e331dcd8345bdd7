"""Prometheus text exposition of a cluster's status, as served on the dashboard's ``/metrics``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

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


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Metrics:
    """Builds the exposition text: one HELP and TYPE line per family, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[str, Mapping[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            label_text = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
            braces = f"{{{label_text}}}" if label_text else ""
            self.lines.append(f"{name}{suffix}{braces} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def exposition(status: Mapping[str, Any], event_counts: Mapping[tuple[str, str], int]) -> str:
    """The Prometheus text for a dashboard ``status`` and its event counts by (kind, type)."""
    m = _Metrics()
    nodes: list[dict[str, Any]] = list(status.get("nodes", []))
    agents = status.get("agents", {})
    m.family("foundation_nodes", "gauge", "Live nodes in the membership.", [("", {}, len(nodes))])
    m.family(
        "foundation_node_info",
        "gauge",
        "One sample per live node (value 1) with its host, status and version.",
        [
            (
                "",
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
    m.family(
        "foundation_node_up",
        "gauge",
        "1 if the node answered its statistics request at the last refresh, else 0.",
        [("", {"node": n["id"]}, 1 if n["responsive"] else 0) for n in nodes],
    )
    m.family(
        "foundation_agents",
        "gauge",
        "Agents in the registry.",
        [("", {}, int(agents.get("total", 0)))],
    )
    m.family(
        "foundation_agents_critical",
        "gauge",
        "Critical agents in the registry.",
        [("", {}, int(agents.get("critical", 0)))],
    )
    m.family(
        "foundation_node_agents",
        "gauge",
        "Agents the registry assigns to the node.",
        [("", {"node": n["id"]}, n["agents"]) for n in nodes],
    )
    m.family(
        "foundation_orphan_agents",
        "gauge",
        "Agents owned by a node that is not a live member (awaiting failover).",
        [("", {}, int(agents.get("orphaned", 0)))],
    )
    m.family(
        "foundation_node_running_agents",
        "gauge",
        "Agents running on the node now (from its statistics).",
        [("", {"node": n["id"]}, int(n["stats"]["agents"])) for n in nodes if n["stats"]],
    )
    for key, help_text in COUNTERS:
        m.family(
            f"foundation_node_{key}_total",
            "counter",
            help_text,
            [("", {"node": n["id"]}, int(n["stats"].get(key, 0))) for n in nodes if n["stats"]],
        )
    m.family(
        "foundation_node_fenced",
        "gauge",
        "1 while the node is fenced (lost its lease), else 0.",
        [
            ("", {"node": n["id"]}, 1 if n["stats"].get("fenced") else 0)
            for n in nodes
            if n["stats"]
        ],
    )
    m.family(
        "foundation_node_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        [
            ("", {"node": n["id"]}, float(n["stats"].get("uptime", 0.0)))
            for n in nodes
            if n["stats"]
        ],
    )
    m.family(
        "foundation_node_signals_per_second",
        "gauge",
        "Calls and casts per second that reached the node over NATS (last refresh interval).",
        [
            ("", {"node": n["id"]}, n["signals_per_s"])
            for n in nodes
            if n["signals_per_s"] is not None
        ],
    )
    m.family(
        "foundation_node_ping_seconds",
        "gauge",
        "Round trip of the last statistics request to the node.",
        [("", {"node": n["id"]}, n["ping_ms"] / 1000) for n in nodes if n["ping_ms"] is not None],
    )
    totals = status.get("totals", {})
    m.family(
        "foundation_signals_per_second",
        "gauge",
        "Calls and casts per second across the live nodes (last refresh interval).",
        [("", {}, float(totals.get("signals_per_s", 0.0)))],
    )
    leader = status.get("leader")
    m.family(
        "foundation_leader",
        "gauge",
        "1 for the node holding the cluster leader lease (label term).",
        [("", {"node": leader["node"], "term": str(leader["term"])}, 1)] if leader else [],
    )
    latency = status.get("latency", {})
    quantile_samples: list[tuple[str, Mapping[str, str], float]] = []
    for q in QUANTILES:
        value = latency.get(f"p{round(q * 100)}")
        quantile_samples.append(("", {"quantile": str(q)}, math.nan if value is None else value))
    quantile_samples.append(("_sum", {}, float(latency.get("sum", 0.0))))
    quantile_samples.append(("_count", {}, int(latency.get("count", 0))))
    m.family(
        "foundation_call_latency_seconds",
        "summary",
        "Latency of the calls observed by this process (quantiles over a sliding window).",
        quantile_samples,
    )
    m.family(
        "foundation_call_errors_total",
        "counter",
        "Calls observed by this process that failed, by error type.",
        [("", {"type": k}, v) for k, v in sorted(status.get("errors", {}).items())],
    )
    m.family(
        "foundation_events_total",
        "counter",
        "Membership, registry and leader events seen by this dashboard since it started.",
        [
            ("", {"source": source, "kind": kind}, count)
            for (source, kind), count in sorted(event_counts.items())
        ],
    )
    m.family(
        "foundation_membership_version",
        "gauge",
        "Version of this node's membership snapshot.",
        [("", {}, int(status.get("membership_version", 0)))],
    )
    m.family(
        "foundation_registry_version",
        "gauge",
        "Version (highest revision applied) of this node's registry cache.",
        [("", {}, int(status.get("registry_version", 0)))],
    )
    m.family(
        "foundation_healthy",
        "gauge",
        "1 when every node answers, no agent is orphaned and this node holds its lease.",
        [("", {}, 1 if status.get("healthy") else 0)],
    )
    return m.text()


__all__ = ["COUNTERS", "QUANTILES", "exposition"]
