"""The shared contract every StateStore backend passes.

``StoreContract`` holds the tests; a backend joins by providing a ``backend`` fixture (a
:class:`Backend`). Here it runs for ``MemoryStore`` and ``SQLiteStore``; other backends (for
example a cluster key-value store) subclass ``StoreContract`` with their own fixture.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import itertools
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from jido import (
    Checkpoint,
    CorruptCheckpointError,
    FencedError,
    MemoryStore,
    SQLiteStore,
    StateStore,
    StoreError,
    ValidationError,
)

_ops = st.tuples(
    st.sampled_from(["save", "save", "load", "delete"]),
    st.sampled_from(["a", "b", "c"]),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=1, max_value=1000),
)
_examples = itertools.count()


@dataclass
class Backend:
    """How the contract drives one backend."""

    name: str
    store: StateStore
    reopen: Callable[[], StateStore]
    """A store over the same backing data (a new instance where the backend allows)."""
    corrupt: Callable[[str, bytes], Awaitable[None]]
    """Write raw bytes (not a valid checkpoint) under a key, bypassing the store."""


def _cp(seq: int = 1, *, epoch: int = 0, **state: Any) -> Checkpoint:
    return Checkpoint(state=state or {"n": seq}, agent_type="test.Agent", seq=seq, epoch=epoch)


async def _keys(store: StateStore, prefix: str = "") -> list[str]:
    keys: Callable[[str], Awaitable[list[str]]] = store.keys  # type: ignore[attr-defined]
    return await keys(prefix)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    label: str
    weight: float


class RichState(BaseModel):
    when: dt.datetime
    day: dt.date
    ident: uuid.UUID
    amount: Decimal
    color: Color
    tags: set[str]
    pair: tuple[int, str]
    raw: bytes
    inner: Inner
    by_id: dict[int, str]
    maybe: int | None = None


class StoreContract:
    """Tests every StateStore backend must pass. Needs a ``backend`` fixture."""

    async def test_missing_key_loads_none(self, backend: Backend) -> None:
        assert await backend.store.load("nobody") is None

    async def test_save_then_load_returns_an_equal_checkpoint(self, backend: Backend) -> None:
        cp = Checkpoint(
            state={"balance": 5, "items": ["a", "b"], "nested": {"x": [1, 2.5, None, True]}},
            agent_type="bank.Account",
            seq=7,
            meta={"stream_seq": 42, "node": "n1"},
            epoch=3,
        )
        await backend.store.save("acc-1", cp)
        got = await backend.store.load("acc-1")
        assert got == cp
        assert got is not cp

    async def test_save_replaces_the_previous_checkpoint(self, backend: Backend) -> None:
        for seq in range(1, 6):
            await backend.store.save("a", _cp(seq))
        got = await backend.store.load("a")
        assert got is not None
        assert got.seq == 5
        assert got.state == {"n": 5}

    async def test_keys_are_independent(self, backend: Backend) -> None:
        await backend.store.save("a", _cp(1))
        await backend.store.save("b", _cp(2))
        a, b = await backend.store.load("a"), await backend.store.load("b")
        assert a is not None and a.seq == 1
        assert b is not None and b.seq == 2

    async def test_loaded_and_saved_objects_share_nothing(self, backend: Backend) -> None:
        state: dict[str, Any] = {"items": [1, 2]}
        await backend.store.save("k", Checkpoint(state=state, agent_type="t", seq=1))
        state["items"].append(3)  # the caller keeps mutating its dict after save
        first = await backend.store.load("k")
        assert first is not None
        assert first.state == {"items": [1, 2]}
        first.state["items"].append(99)
        first.meta["x"] = 1
        second = await backend.store.load("k")
        assert second is not None
        assert second.state == {"items": [1, 2]}
        assert second.meta == {}

    async def test_delete_removes_and_missing_delete_is_fine(self, backend: Backend) -> None:
        await backend.store.save("k", _cp())
        await backend.store.delete("k")
        assert await backend.store.load("k") is None
        await backend.store.delete("k")
        await backend.store.delete("never-there")
        await backend.store.save("k", _cp(9))
        again = await backend.store.load("k")
        assert again is not None and again.seq == 9

    async def test_keys_lists_sorted_with_prefix(self, backend: Backend) -> None:
        for key in ["t1.b", "t1.a", "t2.a", "t1", "x"]:
            await backend.store.save(key, _cp())
        assert await _keys(backend.store) == ["t1", "t1.a", "t1.b", "t2.a", "x"]
        assert await _keys(backend.store, "t1.") == ["t1.a", "t1.b"]
        assert await _keys(backend.store, "zz") == []
        await backend.store.delete("t1.a")
        assert await _keys(backend.store, "t1") == ["t1", "t1.b"]

    async def test_unusual_keys(self, backend: Backend) -> None:
        keys = ["ünï.cødé/🙂", "with space", "a%b_c", "x" * 500, "'; DROP TABLE checkpoints;--"]
        for i, key in enumerate(keys):
            await backend.store.save(key, _cp(i))
        for i, key in enumerate(keys):
            got = await backend.store.load(key)
            assert got is not None and got.seq == i
        assert await _keys(backend.store, "a%") == ["a%b_c"]
        assert await _keys(backend.store, "a_") == []

    async def test_save_is_visible_through_a_reopened_store(self, backend: Backend) -> None:
        cp = _cp(3, epoch=2, balance=10)
        await backend.store.save("acc", cp)
        await backend.store.close()
        async with backend.reopen() as again:
            assert await again.load("acc") == cp

    async def test_pydantic_state_survives_the_round_trip(self, backend: Backend) -> None:
        original = RichState(
            when=dt.datetime(
                2025, 3, 4, 5, 6, 7, 891000, tzinfo=dt.timezone(dt.timedelta(hours=2))
            ),
            day=dt.date(2024, 2, 29),
            ident=uuid.uuid4(),
            amount=Decimal("12.345"),
            color=Color.BLUE,
            tags={"x", "y"},
            pair=(1, "one"),
            raw=b"\x00\xffbytes",
            inner=Inner(label="l", weight=0.5),
            by_id={1: "a", 2: "b"},
        )
        await backend.store.save("rich", Checkpoint(original.model_dump(), "t", 1))
        got = await backend.store.load("rich")
        assert got is not None
        assert RichState.model_validate(got.state) == original

    async def test_large_state(self, backend: Backend) -> None:
        state = {
            "blob": bytes(range(256)) * 8192,  # 2 MiB
            "rows": [{"i": i, "name": f"row-{i}", "v": i * 0.5} for i in range(50_000)],
        }
        await backend.store.save("big", Checkpoint(state, "t", 1))
        got = await backend.store.load("big")
        assert got is not None
        assert got.state == state

    # -- fencing --------------------------------------------------------------------------

    async def test_lower_epoch_is_fenced_and_changes_nothing(self, backend: Backend) -> None:
        await backend.store.save("agent", _cp(10, epoch=5))
        with pytest.raises(FencedError) as info:
            await backend.store.save("agent", _cp(11, epoch=4))
        assert info.value.details == {"key": "agent", "epoch": 4, "stored_epoch": 5}
        assert info.value.retryable is False
        assert "stop" in info.value.message
        got = await backend.store.load("agent")
        assert got is not None and (got.seq, got.epoch) == (10, 5)

    async def test_equal_and_higher_epochs_are_accepted(self, backend: Backend) -> None:
        await backend.store.save("agent", _cp(1, epoch=2))
        await backend.store.save("agent", _cp(2, epoch=2))
        await backend.store.save("agent", _cp(3, epoch=7))
        got = await backend.store.load("agent")
        assert got is not None and (got.seq, got.epoch) == (3, 7)
        with pytest.raises(FencedError):
            await backend.store.save("agent", _cp(4, epoch=2))

    async def test_fencing_is_per_key(self, backend: Backend) -> None:
        await backend.store.save("a", _cp(1, epoch=9))
        await backend.store.save("b", _cp(1, epoch=0))
        got = await backend.store.load("b")
        assert got is not None and got.epoch == 0

    async def test_interleaved_owners_stale_one_is_fenced(self, backend: Backend) -> None:
        """Old owner (epoch 1) and new owner (epoch 2) write concurrently, in a fixed order."""
        plan = [(1, i) for i in range(20)] + [(2, 100)] + [(1, 20 + i) for i in range(20)]
        plan += [(2, 101 + i) for i in range(5)]
        results = await asyncio.gather(
            *(backend.store.save("shared", _cp(seq, epoch=ep)) for ep, seq in plan),
            return_exceptions=True,
        )
        takeover = plan.index((2, 100))
        for i, ((epoch, _seq), res) in enumerate(zip(plan, results, strict=True)):
            if epoch == 1 and i > takeover:
                assert isinstance(res, FencedError), (i, res)
            else:
                assert res is None, (i, res)
        got = await backend.store.load("shared")
        assert got is not None and (got.epoch, got.seq) == (2, 105)

    # -- concurrency ----------------------------------------------------------------------

    async def test_concurrent_saves_to_many_keys(self, backend: Backend) -> None:
        n = 300
        await asyncio.gather(
            *(backend.store.save(f"agent-{i}", _cp(i, value=i * 2)) for i in range(n))
        )
        loaded = await asyncio.gather(*(backend.store.load(f"agent-{i}") for i in range(n)))
        for i, got in enumerate(loaded):
            assert got is not None and got.state == {"value": i * 2}
        assert len(await _keys(backend.store, "agent-")) == n

    async def test_queued_saves_apply_in_issue_order(self, backend: Backend) -> None:
        # many writes to one key queued at once: the last issued one wins
        await asyncio.gather(*(backend.store.save("k", _cp(seq)) for seq in range(200)))
        got = await backend.store.load("k")
        assert got is not None and got.seq == 199

    async def test_reads_see_earlier_writes_in_the_same_burst(self, backend: Backend) -> None:
        ops: list[Awaitable[Any]] = []
        for i in range(50):
            ops.append(backend.store.save("k", _cp(i)))
            ops.append(backend.store.load("k"))
        ops.append(backend.store.delete("k"))
        ops.append(backend.store.load("k"))
        results = await asyncio.gather(*ops)
        for i in range(50):
            loaded = results[2 * i + 1]
            assert loaded is not None and loaded.seq == i
        assert results[-1] is None

    # -- bad input and broken data --------------------------------------------------------

    async def test_corrupt_row_raises_typed_error(self, backend: Backend) -> None:
        await backend.store.save("good", _cp(1))
        await backend.corrupt("bad", b"\xc1 this is not msgpack")
        with pytest.raises(CorruptCheckpointError) as info:
            await backend.store.load("bad")
        err = info.value
        assert isinstance(err, StoreError)
        assert err.retryable is False
        assert err.details["key"] == "bad"
        assert "delete" in err.message
        assert err.to_dict()["type"] == "corrupt_checkpoint"
        # the rest of the store is unaffected, and the bad key can be repaired
        good = await backend.store.load("good")
        assert good is not None and good.seq == 1
        await backend.store.delete("bad")
        assert await backend.store.load("bad") is None

    async def test_wrong_shape_row_raises_typed_error(self, backend: Backend) -> None:
        # valid msgpack, but not a checkpoint (state is not a map)
        await backend.corrupt("shape", b"\x82\xa5state\x01\xaaagent_type\xa1t")
        with pytest.raises(CorruptCheckpointError) as info:
            await backend.store.load("shape")
        assert "state" in info.value.details["reason"]

    async def test_unencodable_state_is_refused_and_nothing_is_stored(
        self, backend: Backend
    ) -> None:
        await backend.store.save("k", _cp(1))
        for bad in ({"obj": object()}, {"huge": 2**80}):
            with pytest.raises(StoreError) as info:
                await backend.store.save("k", Checkpoint(bad, "t", 2))
            assert info.value.retryable is False
            assert "plain data" in info.value.message
        got = await backend.store.load("k")
        assert got is not None and got.seq == 1

    @pytest.mark.parametrize("key", ["", None, 5, b"k"])
    async def test_bad_keys_are_validation_errors(self, backend: Backend, key: Any) -> None:
        with pytest.raises(ValidationError):
            await backend.store.save(key, _cp())
        with pytest.raises(ValidationError):
            await backend.store.load(key)
        with pytest.raises(ValidationError):
            await backend.store.delete(key)

    async def test_save_requires_a_checkpoint(self, backend: Backend) -> None:
        bad: Any = {"state": {}, "agent_type": "t", "seq": 1, "meta": {}}
        with pytest.raises(ValidationError, match="Checkpoint"):
            await backend.store.save("k", bad)
        assert await backend.store.load("k") is None

    # -- model-based --------------------------------------------------------------------

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=st.lists(_ops, min_size=1, max_size=25))
    async def test_behaves_like_a_dict_with_epoch_fencing(
        self, backend: Backend, ops: list[tuple[str, str, int, int]]
    ) -> None:
        """Random saves, loads and deletes agree with a plain dict model of the contract."""
        prefix = f"m{next(_examples)}."  # examples share the store: keep their keys apart
        model: dict[str, tuple[int, int]] = {}  # key -> (epoch, seq)
        for op, name, epoch, seq in ops:
            key = prefix + name
            if op == "save":
                stored = model.get(key)
                if stored is not None and stored[0] > epoch:
                    with pytest.raises(FencedError):
                        await backend.store.save(key, _cp(seq, epoch=epoch))
                else:
                    await backend.store.save(key, _cp(seq, epoch=epoch))
                    model[key] = (epoch, seq)
            elif op == "delete":
                await backend.store.delete(key)
                model.pop(key, None)
            else:
                got = await backend.store.load(key)
                want = model.get(key)
                if want is None:
                    assert got is None
                else:
                    assert got is not None and (got.epoch, got.seq) == want
                    assert got.state == {"n": want[1]}
        assert await _keys(backend.store, prefix) == sorted(model)

    # -- lifecycle ------------------------------------------------------------------------

    # -- journals (backends with supports_journal) ---------------------------------------------

    async def test_journal_appends_in_order_and_reads_from_a_position(
        self, backend: Backend
    ) -> None:
        store = backend.store
        if not store.supports_journal:
            pytest.skip("this backend keeps no journals")
        assert await store.journal("j") == []
        assert await store.append("j", [b"a", b"b"]) == 2
        assert await store.append("j", [b"c"]) == 3
        assert await store.append("other", [b"x"]) == 1
        assert await store.journal("j") == [b"a", b"b", b"c"]
        assert await store.journal("j", 2) == [b"c"]
        assert await store.journal("j", 9) == []
        again = backend.reopen()
        await again.open()
        try:
            assert await again.journal("j") == [b"a", b"b", b"c"]
        finally:
            if again is not store:
                await again.close()

    async def test_journal_append_commits_its_checkpoint_in_the_same_write(
        self, backend: Backend
    ) -> None:
        store = backend.store
        if not store.supports_journal:
            pytest.skip("this backend keeps no journals")
        assert await store.append("k", [b"step"], checkpoint=_cp(4, n=4)) == 1
        loaded = await store.load("k")
        assert loaded is not None and loaded.seq == 4 and loaded.state == {"n": 4}
        assert await store.journal("k") == [b"step"]

    async def test_journal_append_is_fenced_and_changes_nothing(self, backend: Backend) -> None:
        store = backend.store
        if not store.supports_journal:
            pytest.skip("this backend keeps no journals")
        await store.save("f", _cp(1, epoch=3))
        await store.append("f", [b"ok"], epoch=3)
        with pytest.raises(FencedError):
            await store.append("f", [b"stale"], epoch=2)
        with pytest.raises(FencedError):
            await store.append("f", [b"stale"], checkpoint=_cp(9, epoch=1))
        assert await store.journal("f") == [b"ok"]
        loaded = await store.load("f")
        assert loaded is not None and loaded.seq == 1
        # a fenced append in the same burst as good writes leaves those writes standing
        results = await asyncio.gather(
            store.append("f", [b"late"], epoch=0),
            store.append("f", [b"good"], epoch=3),
            return_exceptions=True,
        )
        assert isinstance(results[0], FencedError) and results[1] == 2
        assert await store.journal("f") == [b"ok", b"good"]

    async def test_delete_removes_the_journal_too(self, backend: Backend) -> None:
        store = backend.store
        if not store.supports_journal:
            pytest.skip("this backend keeps no journals")
        await store.append("d", [b"1"], checkpoint=_cp(1))
        await store.delete("d")
        assert await store.load("d") is None
        assert await store.journal("d") == []

    async def test_journal_entries_must_be_bytes(self, backend: Backend) -> None:
        store = backend.store
        if not store.supports_journal:
            pytest.skip("this backend keeps no journals")
        with pytest.raises(ValidationError):
            await store.append("b", ["text"])  # type: ignore[list-item]
        with pytest.raises(ValidationError):
            await store.append("b", b"raw")
        assert await store.journal("b") == []

    async def test_closed_store_refuses_until_reopened(self, backend: Backend) -> None:
        store = backend.store
        await store.save("k", _cp(1))
        await store.close()
        await store.close()  # idempotent
        for call in (store.load("k"), store.save("k", _cp(2)), store.delete("k")):
            with pytest.raises(StoreError, match="closed"):
                await call
        await store.open()
        await store.open()  # idempotent
        got = await store.load("k")
        assert got is not None and got.seq == 1

    async def test_async_context_manager_opens_and_closes(self, backend: Backend) -> None:
        await backend.store.close()
        async with backend.reopen() as store:
            await store.save("ctx", _cp(4))
            got = await store.load("ctx")
            assert got is not None and got.seq == 4
        with pytest.raises(StoreError, match="closed"):
            await store.load("ctx")


# --- the backends in jido ----------------------------------------------------------------


def _memory_backend() -> Backend:
    store = MemoryStore()

    async def corrupt(key: str, blob: bytes) -> None:
        store._data[key] = (0, blob)

    return Backend("memory", store, lambda: store, corrupt)


def _sqlite_backend(path: Path) -> Backend:
    async def corrupt(key: str, blob: bytes) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (key, epoch, seq, agent_type, data) "
                "VALUES (?, 0, 0, 'x', ?)",
                (key, blob),
            )
        conn.close()

    return Backend("sqlite", SQLiteStore(path), lambda: SQLiteStore(path), corrupt)


@pytest.fixture(params=["memory", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    be = _memory_backend() if request.param == "memory" else _sqlite_backend(tmp_path / "s.db")
    await be.store.open()
    try:
        yield be
    finally:
        await be.store.close()


class TestStoreContract(StoreContract):
    """Runs the shared contract against MemoryStore and SQLiteStore."""
