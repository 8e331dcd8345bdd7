"""Dashboard over real HTTP against real nodes on a real nats-server: ``/api/status``,
``/metrics`` (checked by a strict exposition-format parser and by ``prometheus_client``),
``/healthz``, the event stream, and the events of a failover."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from foundation._node import Node, Stage
from foundation.failover.failover import Failover
from foundation.observability.dashboard import Dashboard, DashboardError
from foundation.testing import NatsServer
from jido import Signal
from tests.foundation.apps import AGENTS, ClusteredCounter
from tests.foundation.conftest import REPO_ROOT, eventually, repo_env

pytestmark = pytest.mark.nats


def add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


# -- a strict parser of the Prometheus text exposition format (0.0.4) --------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)\}})? (\S+)$")
_LABEL_RE = re.compile(_LABEL)
_VALUE = re.compile(r"^(?:NaN|[+-]Inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$")
_TYPES = {"counter", "gauge", "summary", "histogram", "untyped"}


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, suffix: str = "", **labels: str) -> float:
        for name, have, value in self.samples:
            if name == self.name + suffix and have == labels:
                return value
        raise KeyError((self.name + suffix, labels))


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_exposition(text: str) -> dict[str, Family]:
    """Parse ``text`` strictly; any deviation from the format fails the test."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, Family] = {}
    current: Family | None = None
    pending_help: tuple[str, str] | None = None
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {lineno}: {line!r}"
        assert line and line == line.strip(), f"blank or padded {where}"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and help_text, where
            assert name not in families, f"family declared twice, {where}"
            pending_help = (name, help_text)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in _TYPES, where
            assert pending_help is not None and pending_help[0] == name, (
                f"TYPE without HELP {where}"
            )
            assert name not in families, f"family declared twice, {where}"
            current = families[name] = Family(name, kind, pending_help[1])
            pending_help = None
            continue
        assert not line.startswith("#"), f"unexpected comment {where}"
        match = _SAMPLE.match(line)
        assert match, f"malformed sample {where}"
        name, label_text, value_text = match.group(1), match.group(2), match.groups()[-1]
        assert _VALUE.match(value_text), f"bad value {where}"
        labels: dict[str, str] = {}
        for lm in _LABEL_RE.finditer(label_text or ""):
            assert lm.group(1) not in labels, f"duplicate label {where}"
            labels[lm.group(1)] = _unescape(lm.group(2))
        assert current is not None, f"sample before any TYPE {where}"
        allowed = {current.name}
        if current.type == "summary":
            allowed |= {current.name + "_sum", current.name + "_count"}
            if name == current.name:
                assert "quantile" in labels, f"summary sample without quantile {where}"
                assert 0 <= float(labels["quantile"]) <= 1, where
        if current.type == "histogram":
            allowed |= {current.name + "_bucket", current.name + "_sum", current.name + "_count"}
            allowed.discard(current.name)
            if name == current.name + "_bucket":
                assert "le" in labels, f"histogram bucket without le {where}"
                le = labels["le"]
                assert le == "+Inf" or float(le) >= 0, where
        if current.type == "counter":
            assert current.name.endswith("_total"), where
            assert value_text != "NaN" and float(value_text) >= 0, f"negative counter {where}"
        assert name in allowed, f"sample {name} outside its family {current.name} ({where})"
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"duplicate series {where}"
        seen.add(key)
        current.samples.append((name, labels, float(value_text)))
    assert pending_help is None, "HELP without TYPE at the end"
    return families


def test_parser_rejects_malformed_text() -> None:
    good = '# HELP x_total things\n# TYPE x_total counter\nx_total{a="1"} 3\n'
    assert parse_exposition(good)["x_total"].value(a="1") == 3
    for bad in (
        good.rstrip("\n"),
        good + 'x_total{a="1"} 4\n',  # duplicate series
        good + "y 1\n",  # outside its family
        "# TYPE x gauge\nx 1\n",  # no HELP
        '# HELP x h\n# TYPE x gauge\nx{a="1",a="2"} 1\n',
        "# HELP x h\n# TYPE x gauge\nx one\n",
        "# HELP x h\n# TYPE x gauge\nx{a=1} 1\n",
        "# HELP x_total h\n# TYPE x_total counter\nx_total -1\n",
    ):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def pair(nats_server: NatsServer) -> AsyncIterator[tuple[Node, Node]]:
    a = Node(nats=nats_server.url, name="dash-a", agents=AGENTS)
    b = Node(nats=nats_server.url, name="dash-b", agents=AGENTS)
    try:
        await asyncio.gather(a.start(), b.start())
        for n in (a, b):
            await n.membership.wait_members(["dash-a", "dash-b"])
        yield a, b
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def get_status(http: httpx.AsyncClient, dash: Dashboard) -> dict[str, Any]:
    res = await http.get(dash.url + "api/status")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    body: dict[str, Any] = res.json()
    return body


def node_of(status: dict[str, Any], node_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [n for n in status["nodes"] if n["id"] == node_id]
    assert len(found) == 1, f"{node_id} in {[n['id'] for n in status['nodes']]}"
    return found[0]


# -- tests -----------------------------------------------------------------------------------


async def test_status_shows_nodes_agents_and_statistics(
    pair: tuple[Node, Node], http: httpx.AsyncClient
) -> None:
    a, _ = pair
    async with Dashboard(a, refresh=0.05) as dash:
        assert dash.url.startswith("http://127.0.0.1:") and dash.port > 0
        for i in range(3):
            await a.spawn(ClusteredCounter, id=f"on-b-{i}", node="dash-b")
        await a.spawn(ClusteredCounter, id="on-a", node="dash-a")
        for _ in range(5):
            await a.ref("on-b-0").call(add())

        async def ready() -> dict[str, Any] | None:
            st = await get_status(http, dash)
            nb = node_of(st, "dash-b")
            done = st["agents"]["total"] == 4 and nb["stats"] and nb["stats"]["calls_in"] >= 5
            # the load is the one b published with its last heartbeat
            return st if done and nb["load"].get("agents") == 3 else None

        st = await eventually(ready)
        assert st["node"] == "dash-a" and st["url"] == dash.url
        assert [n["id"] for n in st["nodes"]] == ["dash-a", "dash-b"]
        na, nb = node_of(st, "dash-a"), node_of(st, "dash-b")
        assert na["self"] and not nb["self"]
        assert nb["agents"] == 3 and nb["agent_ids"] == ["on-b-0", "on-b-1", "on-b-2"]
        assert nb["critical"] == 3 and nb["types"] == {"ClusteredCounter": 3}
        assert na["agent_ids"] == ["on-a"] and na["ping_ms"] is None
        assert nb["responsive"] and nb["ping_ms"] is not None and nb["ping_ms"] > 0
        assert nb["status"] == "up" and nb["load"] == {"agents": 3.0}
        assert nb["stats"]["node_id"] == "dash-b" and nb["stats"]["agents"] == 3
        assert na["stats"]["calls_out"] >= 5 and na["stats"]["spawns"] == 4
        assert st["agents"]["by_node"] == {"dash-a": 1, "dash-b": 3}
        assert st["totals"]["calls_in"] >= 5
        assert st["healthy"] is True and st["orphans"] == []
        # the leader, when nodes run failover, is one of them and is marked on its row
        leader = st["leader"]["node"] if st["leader"] else None
        assert leader in (None, "dash-a", "dash-b")
        assert [n["id"] for n in st["nodes"] if n["leader"]] == ([leader] if leader else [])
        claimed = {e["agent"] for e in st["events"] if e["kind"] == "claimed"}
        assert claimed == {"on-a", "on-b-0", "on-b-1", "on-b-2"}
        # signals/s: b receives a steady stream of calls; some refresh sees a positive rate
        stop = asyncio.Event()

        async def drive() -> None:
            while not stop.is_set():
                await a.ref("on-b-1").call(add())

        driver = asyncio.create_task(drive())
        try:

            async def busy() -> bool:
                st = await get_status(http, dash)
                rate = node_of(st, "dash-b")["signals_per_s"]
                return bool(rate and rate > 0 and st["totals"]["signals_per_s"] >= rate)

            await eventually(busy)
        finally:
            stop.set()
            await driver


async def test_metrics_exposition_is_strict_and_counts(
    pair: tuple[Node, Node], http: httpx.AsyncClient
) -> None:
    a, _ = pair
    latencies: list[float] = [0.001, 0.002]
    errors = {"timeout": 2}
    async with Dashboard(a, refresh=0.05, latencies=latencies, errors=errors) as dash:
        await a.spawn(ClusteredCounter, id="m-1", node="dash-b")
        await a.spawn(ClusteredCounter, id="m-2", node="dash-b")
        for _ in range(3):
            await a.ref("m-1").call(add())
        dash.observe(0.004)
        dash.observe(0.0, error="node_unavailable")
        latencies.append(0.003)

        async def scrape() -> dict[str, Family] | None:
            res = await http.get(dash.url + "metrics")
            assert res.status_code == 200
            assert res.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            fams = parse_exposition(res.text)
            calls = fams["foundation_node_calls_in_total"]
            ready = (
                fams["foundation_agents"].value() == 2
                and calls.value(node="dash-b") >= 3
                and fams["foundation_call_latency_seconds"].value("_count") == 4
            )
            return fams if ready else None

        fams = await eventually(scrape)
        assert fams["foundation_nodes"].value() == 2
        assert fams["foundation_nodes"].type == "gauge"
        assert fams["foundation_node_agents"].value(node="dash-b") == 2
        assert fams["foundation_node_agents"].value(node="dash-a") == 0
        assert fams["foundation_node_running_agents"].value(node="dash-b") == 2
        assert fams["foundation_agents_critical"].value() == 2
        assert fams["foundation_node_up"].value(node="dash-b") == 1
        assert fams["foundation_node_calls_out_total"].value(node="dash-a") >= 3
        assert fams["foundation_node_spawns_total"].value(node="dash-a") == 2
        assert fams["foundation_node_ping_seconds"].value(node="dash-b") > 0
        info = fams["foundation_node_info"]
        assert {s[1]["node"] for s in info.samples} == {"dash-a", "dash-b"}
        assert all(s[1]["status"] == "up" and s[2] == 1 for s in info.samples)
        lat = fams["foundation_call_latency_seconds"]
        assert lat.type == "histogram"  # aggregatable across processes, unlike a summary
        assert lat.value("_sum") == pytest.approx(0.010)
        assert lat.value("_bucket", le="0.001") == 1  # 0.001
        assert lat.value("_bucket", le="0.0025") == 2  # + 0.002
        assert lat.value("_bucket", le="0.005") == 4  # + 0.003, 0.004
        assert lat.value("_bucket", le="+Inf") == 4
        # conventions: no precomputed rate, no label whose value changes over time
        assert not [n for n in fams if "per_second" in n]
        assert not [f.name for f in fams.values() for x in f.samples if "term" in x[1]]
        errs = fams["foundation_call_errors_total"]
        assert errs.value(type="timeout") == 2 and errs.value(type="node_unavailable") == 1
        events = fams["foundation_events_total"]
        assert events.value(source="registry", kind="claimed") == 2
        assert fams["foundation_healthy"].value() == 1
        for counter in (f for f in fams.values() if f.type == "counter"):
            assert counter.name.endswith("_total")

        # the reference parser reads the same families and values
        res = await http.get(dash.url + "metrics")
        reference = {f.name: f for f in text_string_to_metric_families(res.text)}
        assert reference["foundation_nodes"].samples[0].value == 2
        assert reference["foundation_node_calls_in"].type == "counter"
        histogram = reference["foundation_call_latency_seconds"]
        assert histogram.type == "histogram"
        assert {s.name for s in histogram.samples} == {
            "foundation_call_latency_seconds_bucket",
            "foundation_call_latency_seconds_sum",
            "foundation_call_latency_seconds_count",
        }


async def test_empty_latency_counts_zero_and_labels_are_escaped(
    pair: tuple[Node, Node], http: httpx.AsyncClient
) -> None:
    a, _ = pair
    async with Dashboard(a, refresh=60) as dash:
        dash.observe(0.0, error='odd "type"\\with\nnewline')
        await dash.collect()
        fams = parse_exposition((await http.get(dash.url + "metrics")).text)
        assert fams["foundation_call_latency_seconds"].value("_bucket", le="+Inf") == 0
        assert fams["foundation_call_latency_seconds"].value("_count") == 0
        assert fams["foundation_call_errors_total"].value(type='odd "type"\\with\nnewline') == 1


async def test_healthz_follows_the_node(nats_server: NatsServer, http: httpx.AsyncClient) -> None:
    node = Node(nats=nats_server.url, name="health", agents=AGENTS)
    await node.start()
    try:
        async with Dashboard(node, refresh=0.05) as dash:
            res = await http.get(dash.url + "healthz")
            assert res.status_code == 200
            assert res.json() == {
                "status": "ok",
                "node": "health",
                "stage": "running",
                "holds_lease": True,
            }
            await node.stop()
            res = await http.get(dash.url + "healthz")
            assert res.status_code == 503
            body = res.json()
            assert body["status"] == "unavailable" and body["stage"] == "stopped"

            async def degraded() -> bool:
                return (await get_status(http, dash))["healthy"] is False

            await eventually(degraded)
    finally:
        await node.stop()


def failover_of(node: Node) -> Failover | None:
    """The node's own failover component, when nodes run one."""
    existing = getattr(node, "failover", None)
    return existing if isinstance(existing, Failover) else None


async def test_leader_and_failover_events(nats_server: NatsServer, http: httpx.AsyncClient) -> None:
    nodes = [Node(nats=nats_server.url, name=f"fo-{i}", agents=AGENTS) for i in range(3)]
    started: list[Failover] = []
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        for n in nodes:
            await n.membership.wait_members([m.id for m in nodes])
        components: dict[str, Failover] = {}
        for n in nodes:
            fo = failover_of(n)
            if fo is None:
                fo = Failover(n)
                await fo.start()
                started.append(fo)
            components[n.id] = fo

        async def find_leader() -> tuple[str, int] | None:
            leading = [(i, fo.term) for i, fo in components.items() if fo.is_leader]
            return leading[0] if len(leading) == 1 else None

        leader, term = await eventually(find_leader)
        watcher = nodes[0]
        victim = next(n for n in nodes[1:] if n.id != leader)
        async with Dashboard(watcher, refresh=0.05) as dash:
            await watcher.spawn(ClusteredCounter, id="moving", node=victim.id)
            await watcher.ref("moving").call(add(7))

            async def leader_shown() -> dict[str, Any] | None:
                st = await get_status(http, dash)
                return st if st["leader"] == {"node": leader, "term": term} else None

            st = await eventually(leader_shown)
            assert [n["id"] for n in st["nodes"] if n["leader"]] == [leader]
            assert any(e["kind"] == "leader" and e["node"] == leader for e in st["events"])
            fams = parse_exposition((await http.get(dash.url + "metrics")).text)
            assert fams["foundation_leader"].value(node=leader) == 1
            assert len(fams["foundation_leader"].samples) == 1
            assert fams["foundation_leader_term"].value() == term  # a value, not a label

            await victim.stop()  # its critical agent stays assigned to it: failover moves it

            async def moved() -> dict[str, Any] | None:
                st = await get_status(http, dash)
                kinds = {(e["kind"], e["node"], e["agent"]) for e in st["events"]}
                ok = ("leave", victim.id, None) in kinds and any(
                    k == "moved" and agent == "moving" for k, _, agent in kinds
                )
                return st if ok and victim.id not in [n["id"] for n in st["nodes"]] else None

            st = await eventually(moved)
            move = next(e for e in st["events"] if e["kind"] == "moved")
            assert move["detail"].startswith(f"{victim.id} → ")
            assert move["node"] in {n.id for n in nodes} - {victim.id}
            assert st["agents"]["by_node"] == {move["node"]: 1} and st["orphans"] == []
            assert (await watcher.ref("moving").state()).count == 7  # type: ignore[attr-defined]
            fams = parse_exposition((await http.get(dash.url + "metrics")).text)
            assert fams["foundation_events_total"].value(source="membership", kind="leave") == 1
            assert fams["foundation_events_total"].value(source="registry", kind="moved") == 1
    finally:
        for f in started:
            await f.stop()
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def test_event_stream_pushes_each_refresh(
    pair: tuple[Node, Node], http: httpx.AsyncClient
) -> None:
    a, _ = pair
    async with Dashboard(a, refresh=0.05) as dash:
        seen: list[int] = []
        async with http.stream("GET", dash.url + "api/events") as res:
            assert res.status_code == 200
            assert res.headers["content-type"] == "text/event-stream"
            event = None
            async for line in res.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    assert event == "status"
                    seen.append(int(httpx.Response(200, content=line[6:]).json()["collections"]))
                    if len(seen) == 3:
                        break
        assert seen == sorted(seen) and len(set(seen)) == 3
    # stopping the dashboard ends open streams: a new one cannot connect any more
    with pytest.raises(httpx.ConnectError):
        await http.get(dash.url + "api/status")


async def test_http_errors_and_head(pair: tuple[Node, Node], http: httpx.AsyncClient) -> None:
    a, _ = pair
    async with Dashboard(a, refresh=60) as dash:
        page = await http.get(dash.url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<title>foundation" in page.text and "http://" not in page.text.split("<body>")[1]
        head = await http.head(dash.url + "metrics")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0
        assert (await http.get(dash.url + "nope")).status_code == 404
        post = await http.post(dash.url + "api/status", content=b"{}")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        reader, writer = await asyncio.open_connection("127.0.0.1", dash.port)
        writer.write(b"NONSENSE\r\n\r\n")
        await writer.drain()
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert reply.startswith(b"HTTP/1.1 400 ")


async def test_clear_errors(nats_server: NatsServer, pair: tuple[Node, Node]) -> None:
    with pytest.raises(DashboardError, match="not started"):
        await Dashboard(Node(nats=nats_server.url, name="idle")).start()
    with pytest.raises(DashboardError, match="refresh"):
        Dashboard(pair[0], refresh=0)
    async with Dashboard(pair[0]) as first:
        with pytest.raises(DashboardError, match="cannot listen") as info:
            await Dashboard(pair[1], port=first.port).start()
        assert info.value.details["port"] == first.port


async def test_for_cluster_runs_its_own_observer_node(
    pair: tuple[Node, Node], nats_server: NatsServer, http: httpx.AsyncClient
) -> None:
    a, _ = pair
    await a.spawn(ClusteredCounter, id="seen", node="dash-b")
    async with Dashboard.for_cluster(nats_server.url, name="observer", refresh=0.05) as dash:
        assert dash.node.id == "observer" and dash.node.stage == Stage.RUNNING

        async def all_seen() -> dict[str, Any] | None:
            st = await get_status(http, dash)
            ids = [n["id"] for n in st["nodes"]]
            return st if ids == ["dash-a", "dash-b", "observer"] else None

        st = await eventually(all_seen)
        assert node_of(st, "observer")["self"] and node_of(st, "observer")["agents"] == 0
        assert st["agents"]["by_node"] == {"dash-b": 1}
        assert node_of(st, "dash-b")["responsive"]
    assert dash.node.stage == Stage.STOPPED
    await a.membership.wait_gone("observer")


def catches(pid: int, sig: int) -> bool:
    """True once process ``pid`` has a handler for ``sig`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        caught = next(line for line in fh if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (sig - 1) & 1)


async def test_foundation_up_serves_the_dashboard(http: httpx.AsyncClient) -> None:
    env = repo_env(COLUMNS="200", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "foundation.cli.main",
        "up",
        "--nodes",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=str(REPO_ROOT),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:

        async def dashboard_url() -> str:
            assert proc.stdout is not None
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "foundation up exited:\n" + "".join(lines)
                lines.append(line)
                found = re.search(r"live dashboard: (http://127\.0\.0\.1:\d+/)", line)
                if found:
                    return found.group(1)

        url = await asyncio.wait_for(dashboard_url(), 60)

        async def node_seen() -> dict[str, Any] | None:
            st: dict[str, Any] = (await http.get(url + "api/status")).json()
            return st if "node-1" in [n["id"] for n in st["nodes"]] else None

        st = await eventually(node_seen, timeout=30)
        assert st["node"].startswith("dashboard-") and st["healthy"]
        assert (await http.get(url + "healthz")).status_code == 200

        async def handles_sigterm() -> bool:
            # `up` catches SIGTERM (like Ctrl-C) once it runs: read it from /proc, no guessing
            return catches(proc.pid, signal.SIGTERM)

        await eventually(handles_sigterm, timeout=30)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
        rest = (await proc.stdout.read()).decode()
        assert code == 0, "".join(lines) + rest
        assert "stopping the cluster" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_demo_serves_its_dashboard(http: httpx.AsyncClient) -> None:
    from rich.console import Console

    from foundation.cli.demo import DemoContext, DemoOptions, StartClusterAct, run_demo

    seen: dict[str, Any] = {}

    class Probe:
        name = "probe"
        title = "Probe the dashboard"

        async def run(self, ctx: DemoContext) -> None:
            async def all_nodes() -> dict[str, Any] | None:
                st: dict[str, Any] = (await http.get(ctx.dashboard.url + "api/status")).json()
                return st if len(st["nodes"]) == 3 else None

            seen.update(await eventually(all_nodes, timeout=30))
            seen["url"] = ctx.dashboard.url

    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    code = await run_demo(DemoOptions(nodes=2), console=console, acts=[StartClusterAct(), Probe()])
    assert code == 0
    assert f"live dashboard: {seen['url']}" in out.getvalue()
    assert [n["id"] for n in seen["nodes"]] == ["demo-driver", "node-1", "node-2"]
    assert seen["node"] == "demo-driver" and all(n["responsive"] for n in seen["nodes"])
    with pytest.raises(httpx.ConnectError):  # stopped with the demo
        await http.get(seen["url"] + "healthz")


async def test_orphans_of_a_gone_node_without_failover(
    nats_server: NatsServer, http: httpx.AsyncClient
) -> None:
    a = Node(nats=nats_server.url, name="keep", agents=AGENTS, failover=False)
    b = Node(nats=nats_server.url, name="gone", agents=AGENTS, failover=False)
    try:
        await asyncio.gather(a.start(), b.start())
        await a.membership.wait_members(["keep", "gone"])
        async with Dashboard(a, refresh=0.05) as dash:
            for i in range(3):
                await a.spawn(ClusteredCounter, id=f"orphan-{i}", node="gone")
            await b.stop()  # no failover: the records stay assigned to the gone node

            async def orphaned() -> dict[str, Any] | None:
                st = await get_status(http, dash)
                return st if st["agents"]["orphaned"] == 3 else None

            st = await eventually(orphaned)
            assert st["orphans"] == [{"agent": f"orphan-{i}", "node": "gone"} for i in range(3)]
            assert st["healthy"] is False and [n["id"] for n in st["nodes"]] == ["keep"]
            assert st["agents"]["by_node"] == {"gone": 3}
            fams = parse_exposition((await http.get(dash.url + "metrics")).text)
            assert fams["foundation_orphan_agents"].value() == 3
            assert fams["foundation_healthy"].value() == 0
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)
