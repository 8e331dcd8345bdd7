"""State stores: checkpoint cost per command, against raw SQLite and a plain dict in the same run.

Figures:

* ``SQLiteStore.save`` p50 (one agent checkpointing after each command, a ~120-byte state);
  baseline: a raw ``sqlite3`` ``INSERT OR REPLACE`` + commit of the same bytes into a WAL file
  with the same ``synchronous=NORMAL``, run directly on the event-loop thread (the floor: no
  thread hop, no encoding — but it blocks the loop for every write).
* ``SQLiteStore.save`` p50 against the obvious off-loop alternative: the same raw statement in
  ``asyncio.to_thread`` (the default executor).
* The same for a 16 KiB state.
* ``SQLiteStore.save`` throughput with 64 agents checkpointing at once (group commit);
  baseline: raw per-write commits on the loop thread.
* ``SQLiteStore.load`` p50; baseline: a raw ``SELECT`` plus decoding of the same row.
* ``MemoryStore.save`` p50; baseline: storing the checkpoint object in a dict inside a
  coroutine (no copy; ``MemoryStore`` keeps an encoded copy so loads never share objects).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from bench._harness import Row, Stats, sample_async_latency, throughput_rounds
from jido import Checkpoint, MemoryStore, SQLiteStore

GROUP = "state stores"
TARGET = "≤ 1 ms p50"


def _small_state(i: int = 0) -> dict[str, Any]:
    return {
        "balance": 12_345 + i,
        "owner": "acc-42",
        "history": [100, -20, 35, 7, -3, 250, 12, 9, -40, 1],
        "open": True,
        "limits": {"daily": 50_000, "single": 10_000},
    }


def _big_state() -> dict[str, Any]:
    return {"rows": [{"id": i, "name": f"item-{i:05d}", "qty": i % 7} for i in range(420)]}


def _raw_conn(path: Path, *, same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (key TEXT PRIMARY KEY, data BLOB) WITHOUT ROWID")
    return conn


def _raw_put(conn: sqlite3.Connection, key: str, blob: bytes) -> None:
    conn.execute("INSERT OR REPLACE INTO t (key, data) VALUES (?, ?)", (key, blob))


async def _save_latency(store: SQLiteStore, state: dict[str, Any], n: int) -> list[float]:
    seq = 0

    async def one() -> None:
        nonlocal seq
        seq += 1
        await store.save("agent-1", Checkpoint(state, "bench.Account", seq))

    return await sample_async_latency(one, n=n, warmup=min(n, 200))


async def _raw_latency(path: Path, blob: bytes, n: int) -> list[float]:
    conn = _raw_conn(path)
    try:

        async def one() -> None:
            _raw_put(conn, "agent-1", blob)

        return await sample_async_latency(one, n=n, warmup=min(n, 200))
    finally:
        conn.close()


async def _raw_thread_latency(path: Path, blob: bytes, n: int) -> list[float]:
    conn = _raw_conn(path, same_thread=False)
    try:

        async def one() -> None:
            await asyncio.to_thread(_raw_put, conn, "agent-1", blob)

        return await sample_async_latency(one, n=n, warmup=min(n, 200))
    finally:
        conn.close()


async def _save_rows(tmp: Path, n: int) -> list[Row]:
    rows: list[Row] = []
    for label, state in (("~120 B state", _small_state()), ("16 KiB state", _big_state())):
        blob = Checkpoint(state, "bench.Account", 1).to_bytes()
        async with SQLiteStore(tmp / f"ours-{len(blob)}.db") as store:
            ours = Stats.of(await _save_latency(store, state, n))
        raw = Stats.of(await _raw_latency(tmp / f"raw-{len(blob)}.db", blob, n))
        extra = {"bytes": len(blob)}
        rows.append(
            Row.from_stats(
                GROUP,
                f"SQLiteStore.save p50, {label}",
                "s",
                ours,
                "raw sqlite3 upsert+commit on the loop thread",
                raw,
                target=TARGET,
                note="baseline blocks the event loop and skips encoding",
                extra=extra,
            )
        )
        if label.startswith("~"):
            thread = Stats.of(await _raw_thread_latency(tmp / "raw-thread.db", blob, n))
            rows.append(
                Row.from_stats(
                    GROUP,
                    f"SQLiteStore.save p50, {label} (vs thread)",
                    "s",
                    ours,
                    "raw sqlite3 upsert+commit via asyncio.to_thread",
                    thread,
                    target=TARGET,
                    extra=extra,
                )
            )
    return rows


async def _throughput_row(tmp: Path, agents: int, rounds: int) -> Row:
    state = _small_state()
    blob = Checkpoint(state, "bench.Account", 1).to_bytes()
    keys = [f"agent-{i}" for i in range(agents)]
    async with SQLiteStore(tmp / "tput.db") as store:
        seq = 0

        async def ours_batch(k: int) -> None:
            nonlocal seq
            seq += 1
            await asyncio.gather(
                *(store.save(keys[i], Checkpoint(state, "bench.Account", seq)) for i in range(k))
            )

        ours = Stats.of(await throughput_rounds(ours_batch, ops=agents, rounds=rounds))
    conn = _raw_conn(tmp / "tput-raw.db")
    try:

        async def raw_batch(k: int) -> None:
            for i in range(k):
                _raw_put(conn, keys[i], blob)

        raw = Stats.of(await throughput_rounds(raw_batch, ops=agents, rounds=rounds))
    finally:
        conn.close()
    return Row.from_stats(
        GROUP,
        f"SQLiteStore.save throughput, {agents} agents at once",
        "checkpoints/s",
        ours,
        "raw sqlite3 upsert+commit per write on the loop thread",
        raw,
        better="higher",
        note="group commit: concurrent saves share one transaction",
    )


async def _load_row(tmp: Path, n: int) -> Row:
    state = _small_state()
    path = tmp / "load.db"
    async with SQLiteStore(path) as store:
        await store.save("agent-1", Checkpoint(state, "bench.Account", 1))

        async def ours_one() -> None:
            await store.load("agent-1")

        ours = Stats.of(await sample_async_latency(ours_one, n=n, warmup=min(n, 200)))
    conn = sqlite3.connect(path, isolation_level=None)
    try:

        async def raw_one() -> None:
            row = conn.execute("SELECT data FROM checkpoints WHERE key = ?", ("agent-1",))
            Checkpoint.from_bytes(row.fetchone()[0])

        raw = Stats.of(await sample_async_latency(raw_one, n=n, warmup=min(n, 200)))
    finally:
        conn.close()
    return Row.from_stats(
        GROUP,
        "SQLiteStore.load p50",
        "s",
        ours,
        "raw sqlite3 SELECT + decode on the loop thread",
        raw,
    )


async def _memory_row(n: int) -> Row:
    state = _small_state()
    store = MemoryStore()
    seq = 0

    async def ours_one() -> None:
        nonlocal seq
        seq += 1
        await store.save("agent-1", Checkpoint(state, "bench.Account", seq))

    ours = Stats.of(await sample_async_latency(ours_one, n=n, warmup=min(n, 200)))
    plain: dict[str, Checkpoint] = {}

    async def raw_one() -> None:
        nonlocal seq
        seq += 1
        plain["agent-1"] = Checkpoint(state, "bench.Account", seq)

    raw = Stats.of(await sample_async_latency(raw_one, n=n, warmup=min(n, 200)))
    return Row.from_stats(
        GROUP,
        "MemoryStore.save p50",
        "s",
        ours,
        "dict assignment of the checkpoint object in a coroutine",
        raw,
        note="ours keeps an encoded copy (isolation from later mutation)",
    )


async def run(quick: bool) -> list[Row]:
    """Measure checkpoint save/load costs; ``quick`` keeps it to a second or two."""
    n = 300 if quick else 5_000
    rounds = 5 if quick else 50
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp_name:
        tmp = Path(tmp_name)
        rows = await _save_rows(tmp, n)
        rows.append(await _throughput_row(tmp, agents=64, rounds=rounds))
        rows.append(await _load_row(tmp, n))
        rows.append(await _memory_row(n * 4))
    return rows
