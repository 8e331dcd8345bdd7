"""Unit tests of the benchmark harness, the results comparison and the report block."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from bench import compare as cmp
from bench._harness import (
    Row,
    Stats,
    fmt,
    fmt_ratio,
    nats_server,
    sample_async_latency,
    sample_sync_latency,
    throughput_rounds,
)
from bench._report import BEGIN, END, behind, group_table, render, replace_block
from rich.console import Console


def _row(name: str, ours: float, base: float, better: str = "lower", **kw: Any) -> Row:
    return Row("g", name, "s", ours, "base", base, better=better, **kw)  # type: ignore[arg-type]


def _payload(rows: list[Row]) -> dict[str, Any]:
    return {"date": "x", "rows": [r.to_dict() for r in rows]}


# --------------------------------------------------------------------------- harness


def test_stats_median_tails_and_count() -> None:
    samples = [float(i) for i in range(1, 101)]
    s = Stats.of(samples)
    assert s.median == 50.5
    assert s.p99 == 100.0
    assert s.p01 == 2.0
    assert s.n == 100
    assert s.mean == pytest.approx(50.5)


def test_stats_of_empty_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        Stats.of([])


def test_row_ratio_and_ahead_follow_direction() -> None:
    fast = _row("lat", 1.0, 2.0)
    assert fast.ratio == 0.5 and fast.ahead is True
    slow_tp = _row("tp", 50.0, 100.0, better="higher")
    assert slow_tp.ratio == 0.5 and slow_tp.ahead is False
    assert _row("zero", 1.0, 0.0).ratio == math.inf


def test_unavailable_row_is_honest_and_json_safe() -> None:
    row = Row.unavailable("seed table", "startup", "s", "foundation.Node not built yet")
    assert row.status == "unavailable" and not row.ok and row.ahead is None
    data = row.to_dict()
    assert data["ours"] is None and data["ratio"] is None
    assert data["note"] == "foundation.Node not built yet"
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN/Infinity tokens
    back = Row.from_dict(data)
    assert math.isnan(back.ours) and back.status == "unavailable"
    assert fmt_ratio(back) == "—"


def test_row_from_stats_uses_low_tail_for_throughput() -> None:
    ours = Stats.of([10.0, 20.0, 30.0])
    base = Stats.of([40.0, 50.0, 60.0])
    tp = Row.from_stats("g", "tp", "msg/s", ours, "b", base, better="higher")
    assert (tp.ours, tp.p99, tp.baseline, tp.baseline_p99) == (20.0, 10.0, 50.0, 40.0)
    lat = Row.from_stats("g", "lat", "s", ours, "b", base)
    assert (lat.p99, lat.baseline_p99) == (30.0, 60.0)
    assert tp.extra["n"] == 3


def test_row_round_trips_through_dict() -> None:
    row = _row("lat", 1e-5, 2e-5, p99=3e-5, target="< 1 ms", extra={"k": 1}, bench="bench_x")
    assert Row.from_dict(row.to_dict()) == row


def test_fmt_units() -> None:
    assert fmt(12e-6, "s") == "12.0 µs"
    assert fmt(0.05, "s") == "50.00 ms"
    assert fmt(2.5, "s") == "2.50 s"
    assert fmt(12345.6, "msg/s") == "12,346 msg/s"
    assert fmt(3 * 1024 * 1024, "B") == "3.00 MiB"
    assert fmt(math.nan, "s") == "—"


async def test_samplers_count_and_measure() -> None:
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1

    out = await sample_async_latency(op, n=50, warmup=5)
    assert len(out) == 50 and calls == 55 and all(x >= 0 for x in out)
    assert len(sample_sync_latency(lambda: None, n=20, warmup=2)) == 20
    done: list[int] = []

    async def batch(k: int) -> None:
        done.append(k)

    rates = await throughput_rounds(batch, ops=10, rounds=3, warmup=1)
    assert len(rates) == 3 and done == [10, 10, 10, 10] and all(r > 0 for r in rates)


@pytest.mark.nats
async def test_nats_server_helper_serves_and_stops() -> None:
    import nats

    async with nats_server() as url:
        nc = await nats.connect(url)
        sub = await nc.subscribe("t.x")
        await nc.publish("t.x", b"hi")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"hi"
        await nc.drain()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError):  # the server is gone: nothing listens on its port any more
        await asyncio.open_connection("127.0.0.1", port)


# --------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("old", "new", "better", "verdict"),
    [
        (1.0, 1.2, "lower", "regressed"),
        (1.0, 1.1, "lower", "same"),
        (1.0, 0.8, "lower", "improved"),
        (100.0, 80.0, "higher", "regressed"),
        (100.0, 90.0, "higher", "same"),
        (100.0, 120.0, "higher", "improved"),
    ],
)
def test_classify(old: float, new: float, better: str, verdict: str) -> None:
    assert cmp.classify(old, new, better, 0.15) == verdict


def test_compare_flags_only_real_regressions() -> None:
    old = _payload(
        [
            _row("lat", 2.0, 1.0),
            _row("tp", 100.0, 100.0, better="higher"),
            _row("gone", 1.0, 1.0),
            _row("was-unmeasured", math.nan, 1.0, status="unavailable"),
        ]
    )
    new = _payload(
        [
            _row("lat", 3.0, 1.0),  # ratio 2 → 3: +50 %, regressed
            _row("tp", 101.0, 100.0, better="higher"),  # within threshold
            _row("new-row", 1.0, 1.0),
            _row("was-unmeasured", 1.0, 1.0),
        ]
    )
    changes = {c.key[2]: c for c in cmp.compare(old, new, threshold=0.15)}
    assert changes["lat"].verdict == "regressed"
    assert changes["lat"].change == pytest.approx(0.5)
    assert changes["tp"].verdict == "same"
    assert changes["new-row"].verdict == "added"
    assert changes["gone"].verdict == "removed"
    assert changes["was-unmeasured"].verdict == "unmeasured"


def test_compare_ratio_cancels_machine_speed_but_absolute_does_not() -> None:
    old = _payload([_row("lat", 2.0, 1.0)])
    new = _payload([_row("lat", 4.0, 2.0)])  # whole machine 2× slower, same ratio
    assert cmp.compare(old, new)[0].verdict == "same"
    assert cmp.compare(old, new, metric="absolute")[0].verdict == "regressed"


def test_compare_rejects_negative_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        cmp.compare(_payload([]), _payload([]), threshold=-0.1)


def _write(tmp_path: Path, name: str, payload: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def test_compare_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import main

    old = _write(tmp_path, "old.json", _payload([_row("lat", 1.0, 1.0)]))
    same = _write(tmp_path, "same.json", _payload([_row("lat", 1.05, 1.0)]))
    worse = _write(tmp_path, "worse.json", _payload([_row("lat", 1.5, 1.0)]))
    assert main(["compare", str(old), str(same), "--threshold", "0.15"]) == 0
    assert main(["compare", str(old), str(worse), "--threshold", "0.15"]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert main(["compare", str(old), str(worse), "--threshold", "0.6"]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["compare", str(old), str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["compare", str(old), str(tmp_path / "absent.json")]) == 2
    wrong = _write(tmp_path, "wrong.json", {"figures": []})
    assert main(["compare", str(old), str(wrong)]) == 2


# --------------------------------------------------------------------------- runner


async def test_runner_turns_a_failing_benchmark_into_an_error_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.__main__ import _run_module

    failing = types.ModuleType("bench.bench_failing_for_test")

    async def run(quick: bool) -> list[Row]:
        raise RuntimeError("boom")

    failing.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.bench_failing_for_test", failing)
    rows = await _run_module("bench_failing_for_test", True, Console(quiet=True), 5.0)
    assert len(rows) == 1
    assert rows[0].status == "error" and "boom" in rows[0].note
    assert rows[0].bench == "bench_failing_for_test"


async def test_runner_tags_rows_with_their_module(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.__main__ import _run_module

    good = types.ModuleType("bench.bench_good_for_test")

    async def run(quick: bool) -> list[Row]:
        return [_row("lat", 1.0, 2.0)]

    good.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.bench_good_for_test", good)
    rows = await _run_module("bench_good_for_test", True, Console(quiet=True), 5.0)
    assert [r.bench for r in rows] == ["bench_good_for_test"]


# --------------------------------------------------------------------------- report


def test_replace_block_keeps_everything_outside_it() -> None:
    text = f"# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Router\n\nmine\n"
    out = replace_block(text, f"{BEGIN}\nnew\n{END}")
    assert out == f"# B\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n## Router\n\nmine\n"
    fresh = replace_block(
        "# B\n\n<!-- sections are added per capability below -->\n## X\n", f"{BEGIN}\nn\n{END}"
    )
    assert fresh.index(BEGIN) < fresh.index("## X")


def test_render_seed_table_and_behind_list(tmp_path: Path) -> None:
    seed = {"metric": "agent startup", "seed_single": 0.05, "seed_clustered": 0.075}
    rows = [
        Row(
            "seed table",
            "agent startup · single",
            "s",
            0.001,
            "raw",
            0.0005,
            extra={**seed, "mode": "single", "target_met": True},
        ),
        Row.unavailable(
            "seed table",
            "agent startup · clustered",
            "s",
            "foundation.Node not built yet",
            extra={**seed, "mode": "clustered"},
        ),
        Row("peers: ray", "call latency", "s", 2e-4, "ray", 1e-4),
    ]
    text = render(_payload(rows), tmp_path, tmp_path)
    assert text.startswith(BEGIN) and text.endswith(END)
    assert "| agent startup | 1.00 ms" in text
    assert "not yet available (foundation.Node not built yet)" in text
    assert "50.00 ms" in text and "+50.0%" in text
    assert [r.name for r in behind(rows)] == ["call latency"]
    assert "peers: ray / call latency" in text


def test_behind_lists_missed_targets_but_not_the_floor_itself() -> None:
    missed = Row("vs floor", "cross-node call", "s", 2e-4, "raw", 1e-4, extra={"target_met": False})
    floor = Row("baselines", "queue", "s", 2e-6, "tick", 1e-6)
    kept = Row("seed table", "routing", "s", 1e-5, "raw", 1e-5, extra={"target_met": True})
    assert behind([missed, floor, kept]) == [missed]
    table = "\n".join(group_table([missed], verdict=False))
    assert table.splitlines()[-1].count("**no**") == 1  # the "met" column says it was missed


def test_partial_run_merges_into_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.__main__ as runner

    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    old_rows = [_row("a", 1.0, 1.0, bench="bench_a"), _row("b", 1.0, 1.0, bench="bench_b")]
    (tmp_path / "latest.json").write_text(json.dumps({**_payload(old_rows), "command": "full"}))
    new = {**_payload([_row("b", 2.0, 1.0, bench="bench_b")]), "command": "only b"}
    new["date"] = "later"
    merged = runner._merge_latest(new, ["bench_b"])
    assert [(r["name"], r["ours"]) for r in merged["rows"]] == [("a", 1.0), ("b", 2.0)]
    assert merged["command"] == "full"  # still the full run's payload
    assert merged["partial_runs"] == [
        {"date": "later", "command": "only b", "modules": ["bench_b"]}
    ]
    text = render(merged, tmp_path, tmp_path)
    assert "Re-run since then (their rows replace the full run's): `only b` at later" in text


# --------------------------------------------------------------------------- suite modules


def test_smoke_never_installs_a_missing_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.peers import _env

    monkeypatch.setattr(_env, "VENV", tmp_path / "no-venv")

    def forbidden(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("a smoke run must not install anything")

    monkeypatch.setattr(_env, "install", forbidden)
    reason = _env.ensure(_env.PEERS["ray"], allow_install=False)
    assert reason is not None and "never download" in reason
    assert not (tmp_path / "no-venv").exists()


def test_peer_rows_are_unavailable_with_the_reason() -> None:
    from bench.bench_peers import AUTOGEN_ROWS, _rows

    ours: dict[str, Any] = {
        "peer": "ours",
        "version": "jido",
        "figures": {
            "call_latency": {"unit": "s", "samples": [1e-5, 2e-5]},
            "call_throughput": {"unit": "calls/s", "samples": [9e4]},
            "publish_latency": {"unit": "s", "samples": [1e-5]},
            "publish_throughput": {"unit": "msg/s", "samples": [2e5]},
        },
    }
    rows = _rows("peers: autogen", AUTOGEN_ROWS, ours, "", None, "pip install failed (offline)")
    assert len(rows) == len(AUTOGEN_ROWS)
    assert all(r.status == "unavailable" for r in rows)
    assert all("pip install failed (offline)" in r.note for r in rows)
    f = ours["figures"]
    peer = {
        "peer": "autogen-core",
        "version": "0",
        "figures": {
            "send_latency": f["call_latency"],
            "send_throughput": {**f["call_throughput"], "unit": "msg/s"},
            "publish_latency": f["publish_latency"],
            "publish_throughput": f["publish_throughput"],
        },
    }
    measured = _rows("peers: autogen", AUTOGEN_ROWS, ours, "", peer, "")
    assert [r.ratio for r in measured] == [1.0, 1.0, 1.0, 1.0]
    assert measured[1].unit == "calls/s" and measured[1].note == "ours in calls/s, peer in msg/s"


def test_seed_table_clustered_rows_carry_the_seed_and_the_reason() -> None:
    from bench.bench_seed_table import SEED, _unavailable

    rows = _unavailable("not yet available: foundation.Node not built yet")
    assert [r.extra["metric"] for r in rows] == list(SEED)
    assert all(r.status == "unavailable" and r.extra["mode"] == "clustered" for r in rows)
    assert rows[0].extra["seed_single"] == 0.050 and rows[0].extra["seed_clustered"] == 0.075


@pytest.mark.nats
async def test_baselines_run_gives_measured_rows() -> None:
    from bench import bench_baselines

    rows = await bench_baselines.run(quick=True)
    assert [r.name for r in rows] == [
        "asyncio.Queue call round trip",
        "future ping-pong round trip",
        "asyncio.Queue throughput",
        "nats-py request/reply round trip",
        "nats-py publish throughput",
    ]
    assert all(r.ok and r.baseline > 0 and r.p99 is not None for r in rows)
