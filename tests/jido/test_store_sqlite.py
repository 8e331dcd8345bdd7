"""SQLiteStore specifics: durability, WAL, files shared between stores, threads, failures."""

from __future__ import annotations

import asyncio
import gc
import signal
import sqlite3
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from jido import (
    Checkpoint,
    CorruptCheckpointError,
    FencedError,
    SQLiteStore,
    StoreError,
    ValidationError,
)


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jido-sqlite-store-")]


def _cp(seq: int, *, epoch: int = 0) -> Checkpoint:
    return Checkpoint({"seq": seq}, "t", seq, epoch=epoch)


async def test_file_is_in_wal_mode_with_one_row_per_key(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with SQLiteStore(path) as store:
        await store.save("a", Checkpoint({"x": 1}, "bank.Account", 3, epoch=2))
        await store.save("a", Checkpoint({"x": 2}, "bank.Account", 4, epoch=2))
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            rows = conn.execute("SELECT key, epoch, seq, agent_type FROM checkpoints").fetchall()
        finally:
            conn.close()
        assert rows == [("a", 2, 4, "bank.Account")]


async def test_completed_saves_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from jido import Checkpoint, SQLiteStore

        async def main() -> None:
            store = SQLiteStore(sys.argv[1])
            for i in range(50):
                await store.save(f"agent-{i}", Checkpoint({"i": i}, "t", i))
            print("saved", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no close(), no clean exit

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(path), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert out.strip() == b"saved"
    assert proc.returncode == -signal.SIGKILL
    async with SQLiteStore(path) as store:
        assert len(await store.keys("agent-")) == 50
        for i in range(50):
            got = await store.load(f"agent-{i}")
            assert got is not None and got.state == {"i": i}


async def test_two_stores_on_one_file_share_data_and_fencing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteStore(path) as old_owner, SQLiteStore(path) as new_owner:
        await old_owner.save("agent", _cp(1, epoch=1))
        await new_owner.save("agent", _cp(2, epoch=2))
        with pytest.raises(FencedError) as info:
            await old_owner.save("agent", _cp(3, epoch=1))
        assert info.value.details["stored_epoch"] == 2
        got = await old_owner.load("agent")
        assert got is not None and (got.seq, got.epoch) == (2, 2)


async def test_tables_in_one_file_are_separate(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with SQLiteStore(path, table="a") as a, SQLiteStore(path, table="b") as b:
        await a.save("k", _cp(1))
        assert await b.load("k") is None
        assert await a.keys() == ["k"]
        assert await b.keys() == []


async def test_existing_table_with_other_columns_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, body TEXT)")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="table=") as info:
        await store.open()
    assert info.value.retryable is False
    assert info.value.details["columns"] == ["id", "body"]
    assert _store_threads() == []


async def test_unopenable_path_is_a_store_error_and_leaves_no_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(StoreError, match="failed to open"):
        await store.open()
    with pytest.raises(StoreError, match="failed to open") as info:
        await store.load("k")  # the next call tries again and reports the same way
    assert info.value.retryable is False
    (tmp_path / "missing-dir").mkdir()
    assert await store.load("k") is None  # and once the cause is fixed, it works
    await store.save("k", _cp(1))
    await store.close()
    assert _store_threads() == []


async def test_lazy_open_failure_is_retried_on_the_next_call(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "later" / "x.db")
    with pytest.raises(StoreError, match="failed to open"):
        await store.save("k", _cp(1))
    (tmp_path / "later").mkdir()
    await store.save("k", _cp(2))
    got = await store.load("k")
    assert got is not None and got.seq == 2
    await store.close()
    assert _store_threads() == []


async def test_lock_held_elsewhere_gives_a_retryable_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SQLiteStore(path, busy_timeout=0.05) as store:
        await store.save("k", _cp(1))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock
            with pytest.raises(StoreError) as info:
                await store.save("k", _cp(2))
            assert info.value.retryable is True
            assert info.value.details["path"] == str(path)
            got = await store.load("k")  # readers are not blocked in WAL mode
            assert got is not None and got.seq == 1
            other.execute("ROLLBACK")
        finally:
            other.close()
        await store.save("k", _cp(3))
        got = await store.load("k")
        assert got is not None and got.seq == 3


async def test_close_finishes_pending_writes_and_stops_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    await store.open()
    assert len(_store_threads()) == 1
    saves = [store.save(f"k{i}", _cp(i)) for i in range(100)]
    await asyncio.gather(*saves, store.close())
    assert _store_threads() == []
    async with SQLiteStore(path) as again:
        assert len(await again.keys()) == 100


async def test_first_call_opens_lazily(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "lazy.db")
    assert _store_threads() == []
    await store.save("k", _cp(1))
    assert len(_store_threads()) == 1
    await store.close()
    assert _store_threads() == []


async def test_cancelled_save_does_not_break_the_store(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "x.db") as store:
        task = asyncio.create_task(store.save("k", _cp(1)))
        await asyncio.sleep(0)  # let it enqueue its write
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.save("k", _cp(2))
        got = await store.load("k")
        assert got is not None and got.seq == 2


async def test_in_memory_database_and_full_sync(tmp_path: Path) -> None:
    async with SQLiteStore(":memory:") as mem:
        await mem.save("k", _cp(1))
        assert await mem.keys() == ["k"]
    async with SQLiteStore(tmp_path / "full.db", synchronous="FULL") as full:
        await full.save("k", _cp(1))
        got = await full.load("k")
        assert got is not None and got.seq == 1


async def test_corrupt_row_written_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    async with SQLiteStore(path) as store:
        await store.save("k", _cp(1))
        conn = sqlite3.connect(path)
        conn.execute("UPDATE checkpoints SET data = X'00' WHERE key = 'k'")
        conn.commit()
        conn.close()
        with pytest.raises(CorruptCheckpointError, match="'k'"):
            await store.load("k")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"table": "bad name"}, "table"),
        ({"table": "1x"}, "table"),
        ({"synchronous": "OFF"}, "synchronous"),
        ({"max_batch": 0}, "max_batch"),
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        SQLiteStore(tmp_path / "x.db", **kwargs)  # type: ignore[arg-type]


async def test_a_store_dropped_without_close_lets_its_thread_exit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "dropped.db")
    await store.save("k", _cp(1))
    (thread,) = _store_threads()
    del store
    gc.collect()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    async with SQLiteStore(tmp_path / "dropped.db") as again:
        got = await again.load("k")
        assert got is not None and got.seq == 1


async def test_load_after_a_cancelled_save_still_sees_that_save(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "ryw.db") as store:
        await store.save("k", _cp(1))
        assert await store.load("k") is not None  # served by the caller-side reader
        task = asyncio.create_task(store.save("k", _cp(2)))
        await asyncio.sleep(0)  # one loop step: the write is handed to the store thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        got = await store.load("k")  # ordered after the in-flight write, never before it
        assert got is not None and got.seq == 2


async def test_loads_see_writes_of_another_process_store(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    async with SQLiteStore(path) as reader_side, SQLiteStore(path) as writer_side:
        assert await reader_side.load("k") is None
        for seq in range(1, 4):
            await writer_side.save("k", _cp(seq))
            got = await reader_side.load("k")
            assert got is not None and got.seq == seq
        await writer_side.delete("k")
        assert await reader_side.load("k") is None
