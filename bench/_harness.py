"""Small benchmark harness: timing helpers, result rows, reporting and JSON results.

Every figure is reported with the baseline measured in the same run and the ratio
ours / baseline (lower is better for latencies, higher for throughputs: ``better``
says which). Absolute numbers are context; ratios are the figures that count.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Stats:
    """Summary of repeated samples (seconds per operation, or any unit)."""

    median: float
    p99: float
    mean: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        """Summarise ``samples`` (must be non-empty)."""
        ordered = sorted(samples)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return cls(statistics.median(ordered), p99, statistics.fmean(ordered), len(ordered))


@dataclass
class Row:
    """One benchmark figure with its same-run baseline."""

    group: str
    name: str
    unit: str
    ours: float
    baseline_name: str
    baseline: float
    better: Literal["lower", "higher"] = "lower"
    p99: float | None = None
    baseline_p99: float | None = None
    target: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """ours / baseline."""
        return self.ours / self.baseline if self.baseline else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form including the ratio."""
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def sample_async_latency(
    fn: Callable[[], Awaitable[Any]], *, n: int, warmup: int = 100
) -> Awaitable[list[float]]:
    """Time ``n`` sequential awaits of ``fn()`` (after ``warmup``); returns seconds per call."""

    async def _go() -> list[float]:
        for _ in range(warmup):
            await fn()
        out: list[float] = []
        perf = time.perf_counter
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(n):
                t0 = perf()
                await fn()
                out.append(perf() - t0)
        finally:
            if gc_was:
                gc.enable()
        return out

    return _go()


def sample_sync_latency(fn: Callable[[], Any], *, n: int, warmup: int = 100) -> list[float]:
    """Time ``n`` calls of a synchronous ``fn()``; returns seconds per call."""
    for _ in range(warmup):
        fn()
    perf = time.perf_counter
    out: list[float] = []
    for _ in range(n):
        t0 = perf()
        fn()
        out.append(perf() - t0)
    return out


def fmt(value: float, unit: str) -> str:
    """Format a figure for display in its unit."""
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.1f} µs"
        if value < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"
