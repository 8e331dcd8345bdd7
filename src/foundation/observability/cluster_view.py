"""Cluster-wide command latency and throughput from the nodes' own metrics.

Each node's ``stats`` reply carries its command histogram (``foundation._metrics.
command_summary``: cumulative buckets, count, sum, errors, per agent type). The dashboard adds
the nodes' buckets up — histograms aggregate, quantiles would not — and reads the quantiles
off the sum the way Prometheus' ``histogram_quantile`` does; throughput is the growth of the
summed count between two refreshes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(le, count)`` buckets (linear within a bucket)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return prev_le  # beyond the last finite bound: report that bound
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return prev_le


class ClusterCommands:
    """Adds the nodes' command histograms up and keeps the count seen at the last refresh."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None  # (monotonic time, summed count)
        self._rate = 0.0

    def update(self, summaries: Iterable[Mapping[str, Any] | None], mono: float) -> dict[str, Any]:
        """The cluster view for one refresh at monotonic time ``mono``."""
        buckets: dict[float, float] = {}
        count = total = errors = 0.0
        nodes = 0
        by_type: dict[str, dict[str, float]] = {}
        for summary in summaries:
            if not summary:
                continue
            nodes += 1
            count += float(summary.get("count", 0))
            total += float(summary.get("sum", 0))
            errors += float(summary.get("errors", 0))
            for le, n in summary.get("buckets", ()):
                buckets[float(le)] = buckets.get(float(le), 0.0) + float(n)
            for kind, v in (summary.get("by_type") or {}).items():
                into = by_type.setdefault(kind, {"count": 0.0, "sum": 0.0, "errors": 0.0})
                for key in into:
                    into[key] += float(v.get(key, 0))
        if self._last is not None and mono > self._last[0] and count >= self._last[1]:
            self._rate = (count - self._last[1]) / (mono - self._last[0])
        self._last = (mono, count)
        ordered = sorted(buckets.items())
        return {
            "nodes": nodes,
            "count": count,
            "errors": errors,
            "mean": total / count if count else None,
            "p50": quantile(0.5, ordered),
            "p99": quantile(0.99, ordered),
            "commands_per_s": self._rate,
            "by_type": [
                {
                    "type": kind,
                    "count": v["count"],
                    "errors": v["errors"],
                    "mean": v["sum"] / v["count"] if v["count"] else None,
                }
                for kind, v in sorted(by_type.items())
            ],
        }


__all__ = ["ClusterCommands", "quantile"]
