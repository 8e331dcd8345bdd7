"""Prometheus metrics of the nodes of this process (``prometheus-client``).

One registry, :data:`REGISTRY`, holds every family; a node adds its samples at scrape time
through a collector (``foundation.observability.node_metrics``) and observes three histograms
on its hot paths:

* ``foundation_command_duration_seconds{node,tenant,agent_type,action,outcome}`` — one
  command of an agent (the action's run and its checkpoint commit), observed by the runtime's
  command hook;
* ``foundation_kv_commit_duration_seconds{node}`` — one checkpoint write (CAS on the state key);
* ``foundation_lease_renewal_duration_seconds{node}`` — one membership lease renewal;
* ``foundation_gc_pause_seconds{generation}`` — one garbage collection of the process (see
  ``foundation.membership.pauses``).

Histograms aggregate across nodes (``sum by (le) (rate(..._bucket[5m]))``); no label carries
a term, an epoch or an id that changes, and no family is a precomputed rate. Process and
Python runtime families (``process_*``, ``python_*``) are in the registry too.
"""

from __future__ import annotations

import bisect
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from foundation import _tracing
from jido import JidoError, Signal

REGISTRY = CollectorRegistry(auto_describe=True)
"""Every foundation family of this process (served by ``foundation node --metrics-port``)."""

ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram bounds (seconds) of every latency family (commands, commits, leases, calls)."""


class _Series:
    """One label set of a :class:`CommandHistogram`: per-bucket counts (last: above every
    bound) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.sum = 0.0


class CommandHistogram:
    """A histogram observed on every command of every agent, exposed in Prometheus form.

    prometheus-client's ``Histogram`` takes a lock for each of its two updates and runs a
    few checks per observation; at a hundred thousand commands a second that was a visible
    share of a command's cost. Observations come from the event loop's thread only, so here
    one is a ``bisect`` and two additions; scrapes read a copy through prometheus-client's
    ``HistogramMetricFamily`` (same families, names and labels as its ``Histogram``).
    """

    def __init__(
        self, name: str, doc: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = labelnames
        self.bounds = buckets
        self._series: dict[tuple[str, ...], _Series] = {}

    def series(self, *labels: str) -> _Series:
        """The series of ``labels`` (created on first use)."""
        found = self._series.get(labels)
        if found is None:
            found = self._series[labels] = _Series(len(self.bounds) + 1)
        return found

    def observe(self, series: _Series, value: float) -> None:
        """Count ``value`` (seconds) in ``series``."""
        series.counts[bisect.bisect_left(self.bounds, value)] += 1
        series.sum += value

    def describe(self) -> Iterator[Metric]:
        """The family without samples (the registry checks names with it)."""
        yield HistogramMetricFamily(self.name, self.doc, labels=list(self.labelnames))

    def collect(self) -> Iterator[Metric]:
        """The family with every series: cumulative buckets, count and sum."""
        family = HistogramMetricFamily(self.name, self.doc, labels=list(self.labelnames))
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for labels, series in list(self._series.items()):
            counts, total = list(series.counts), series.sum
            cumulative, acc = [], 0
            for le, n in zip(les, counts, strict=True):
                acc += n
                cumulative.append((le, float(acc)))
            family.add_metric(list(labels), cumulative, total)
        yield family


COMMAND_DURATION = CommandHistogram(
    "foundation_command_duration_seconds",
    "Time an agent took for one command (action run and checkpoint commit).",
    ("node", "tenant", "agent_type", "action", "outcome"),
    LATENCY_BUCKETS,
)
REGISTRY.register(COMMAND_DURATION)
KV_COMMIT_DURATION = Histogram(
    "foundation_kv_commit_duration_seconds",
    "Time of one checkpoint commit (compare-and-set on the agent's state key).",
    ("node",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
LEASE_RENEWAL_DURATION = Histogram(
    "foundation_lease_renewal_duration_seconds",
    "Time of one membership lease renewal (sent to acknowledged).",
    ("node",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)

GC_PAUSE_DURATION = Histogram(
    "foundation_gc_pause_seconds",
    "Time the process stood still in one garbage collection (every thread waits).",
    ("generation",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)


def _action_of(cls: type, signal: Signal) -> str:
    route = getattr(cls, "_route", None)
    if route is None:
        return "unknown"
    try:
        action = route(signal)
    except JidoError:
        return "unrouted"
    return str(getattr(action, "name", "unknown"))


class _Command:
    """The context entered around one mailbox item: its span (when tracing) and its time."""

    __slots__ = ("_agent", "_hook", "_item", "_span", "_start", "_type")

    def __init__(self, hook: CommandObserver, agent_id: str, cls: type, item: Any) -> None:
        self._hook = hook
        self._agent = agent_id
        self._type = cls
        self._item = item
        self._span: Any = None
        self._start = 0.0

    def __enter__(self) -> None:
        if _tracing.active is not None:
            self._span = self._hook.trace(self._agent, self._item)
            self._span.__enter__()
        self._start = time.perf_counter()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        elapsed = time.perf_counter() - self._start
        item = self._item
        outcome = "ok"
        if exc_type is not None:
            outcome = "crash"
        else:
            fut = item[1]
            if fut is not None and fut.done() and not fut.cancelled() and fut.exception():
                outcome = "error"
        first = item[0] if isinstance(item[0], Signal) else item[0].signals[0]
        self._hook.observe(self._type, first, outcome, elapsed)
        if self._span is not None:
            self._span.__exit__(exc_type, exc, tb)


class CommandObserver:
    """A node's ``Runtime.command_hook``: command latency histogram and command span."""

    def __init__(self, node_id: str, tenant: str) -> None:
        self.node_id = node_id
        self.tenant = tenant
        self.trace = _tracing.command_hook(node_id)
        self._children: dict[tuple[type, str, str], _Series] = {}

    def __call__(self, agent_id: str, cls: type, item: Any) -> _Command:
        """The context for one mailbox item of agent ``agent_id`` (class ``cls``)."""
        return _Command(self, agent_id, cls, item)

    def observe(self, cls: type, signal: Signal, outcome: str, elapsed: float) -> None:
        """Add one command's time to the histogram (label children cached per type/action)."""
        key = (cls, signal.type, outcome)
        series = self._children.get(key)
        if series is None:
            agent_type = f"{cls.__module__}:{cls.__qualname__}"
            series = COMMAND_DURATION.series(
                self.node_id, self.tenant, agent_type, _action_of(cls, signal), outcome
            )
            if len(self._children) < 10_000:  # unknown signal types must not grow this map
                self._children[key] = series
        COMMAND_DURATION.observe(series, elapsed)


_NODE_COUNTERS = (
    ("calls_in", "Calls that reached the node over NATS."),
    ("casts_in", "Casts that reached the node over NATS."),
    ("forwarded", "Calls received on public agent subjects and forwarded."),
    ("calls_out", "Remote calls and casts sent by the node."),
    ("spawns", "Agents spawned from the node."),
    ("starts", "Agents started on the node."),
    ("stops", "Agents stopped on the node."),
    ("fenced_stops", "Agents stopped because the node was fenced or a newer owner exists."),
)


class NodeCollector:
    """The scrape-time samples of the nodes of this process (one sample per node in each
    family), read from counters the nodes keep anyway: nothing is added to hot paths.

    Nodes are held weakly; a stopped node's samples are gone at the next scrape.
    """

    def __init__(self) -> None:
        self._nodes: weakref.WeakSet[Any] = weakref.WeakSet()
        self._fences: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()

    def add(self, node: Any) -> None:
        """Collect ``node`` from now on (and count its fences)."""
        count = [0]

        def fenced() -> None:
            count[0] += 1

        node.host.fence_listeners.append(fenced)
        self._fences[node] = count
        self._nodes.add(node)

    def collect(self) -> Iterator[Metric]:
        """Every family, with one sample per running node."""
        names = ["node", "tenant"]
        fams: dict[str, Metric] = {}

        def add(
            kind: Callable[..., Metric], name: str, doc: str, labels: list[str], value: float
        ) -> None:
            metric = fams.get(name)
            if metric is None:
                metric = fams[name] = kind(name, doc, labels=names)
            metric.add_metric(labels, value)  # type: ignore[attr-defined]

        for node in list(self._nodes):
            if node.runtime is None or node.stage.name in ("STOPPED", "CREATED"):
                continue
            self._collect(node, add)
        yield from fams.values()

    def _collect(self, node: Any, add: Callable[..., None]) -> None:
        labels = [node.id, node.tenant]
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        add(gauge, "foundation_node_up", "1 while the node runs.", labels, 1)
        counters = node._counters
        for key, doc in _NODE_COUNTERS:
            add(counter, f"foundation_node_{key}", doc, labels, counters.get(key, 0))
        rt = node.runtime
        stats = rt.statistics()
        add(
            gauge,
            "foundation_node_agents",
            "Agents running on the node.",
            labels,
            len(node.host.local),
        )
        add(
            gauge,
            "foundation_mailbox_depth",
            "Signals waiting in the mailboxes of the node's agents.",
            labels,
            stats["queued"],
        )
        inboxes = node.host._inboxes.values()
        add(
            gauge,
            "foundation_inbox_lag",
            "Messages waiting in the inboxes of the node's at-least-once agents.",
            labels,
            sum(getattr(i, "lag", 0) for i in inboxes),
        )
        ops = node.agent_ops
        add(
            gauge,
            "foundation_casts_backlogged",
            "Casts waiting for a busy or starting agent.",
            labels,
            len(ops.backlog) if ops is not None else 0,
        )
        add(
            counter,
            "foundation_dead_letters",
            "Signals the node's agents could not handle (routing errors, failed casts).",
            labels,
            rt.dead_letters_total,
        )
        add(
            gauge,
            "foundation_node_fenced",
            "1 while the node has fenced itself (its lease lapsed).",
            labels,
            1 if node.host.fenced else 0,
        )
        add(
            counter,
            "foundation_fences",
            "Times the node fenced itself.",
            labels,
            self._fences.get(node, [0])[0],
        )
        failover = node.failover
        if failover is not None:
            fs = failover.statistics()
            add(
                gauge,
                "foundation_leader",
                "1 while the node holds the cluster leader lease.",
                labels,
                1 if fs.leader else 0,
            )
            add(
                counter,
                "foundation_failovers",
                "Agents this node re-placed as leader after their node died.",
                labels,
                fs.moved,
            )
            add(
                gauge,
                "foundation_last_failover_seconds",
                "Duration of the last failover this node led (0: none yet).",
                labels,
                fs.last_failover_seconds or 0.0,
            )


NODES = NodeCollector()
"""The collector of this process's nodes (registered in :data:`REGISTRY`)."""
REGISTRY.register(NODES)


def install(node: Any, endpoint: Any) -> None:
    """Observe a node: its command hook (histogram; span when tracing), the tracing step, and
    its scrape-time collector in :data:`REGISTRY`."""
    node.runtime.command_hook = CommandObserver(node.id, node.tenant)
    _tracing.install(endpoint, node.id, node.tenant)
    NODES.add(node)


_INF = float("inf")


def command_summary(node_id: str) -> dict[str, Any]:
    """This process's command histogram for node ``node_id``, summed over its labels.

    ``{"count", "sum", "errors", "buckets": [[le, cumulative count], ...], "by_type":
    {agent_type: {"count", "sum", "errors"}}}`` — what a dashboard adds up across nodes.
    """
    buckets: dict[float, float] = {}
    count = total = errors = 0.0
    by_type: dict[str, dict[str, float]] = {}
    for metric in COMMAND_DURATION.collect():
        for sample in metric.samples:
            labels = sample.labels
            if labels.get("node") != node_id:
                continue
            name = sample.name
            if name.endswith("_bucket"):
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
                continue
            kind = by_type.setdefault(labels["agent_type"], {"count": 0, "sum": 0, "errors": 0})
            if name.endswith("_count"):
                count += sample.value
                kind["count"] += sample.value
                if labels.get("outcome") != "ok":
                    errors += sample.value
                    kind["errors"] += sample.value
            elif name.endswith("_sum"):
                total += sample.value
                kind["sum"] += sample.value
    return {
        "count": count,
        "sum": total,
        "errors": errors,
        # JSON has no infinity: the last bound travels as "+Inf" (float() reads it back)
        "buckets": [["+Inf" if le == _INF else le, n] for le, n in sorted(buckets.items())],
        "by_type": by_type,
    }


def timed(histogram: Histogram, node: Callable[[Any], str]) -> Callable[[Any], Any]:
    """Decorate an async method: observe its duration in ``histogram`` labelled ``node(self)``."""
    import functools

    def decorate(fn: Any) -> Any:
        @functools.wraps(fn)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(self, *args, **kwargs)
            finally:
                histogram.labels(node(self)).observe(time.perf_counter() - start)

        return wrapper

    return decorate


__all__ = [
    "COMMAND_DURATION",
    "GC_PAUSE_DURATION",
    "KV_COMMIT_DURATION",
    "LEASE_RENEWAL_DURATION",
    "NODES",
    "REGISTRY",
    "CommandObserver",
    "NodeCollector",
    "command_summary",
    "install",
    "timed",
]
