"""KVStateStore against a real nats-server: CAS fencing on activation and on every save."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from foundation._errors import InvalidKeyError
from foundation._wire import STATE_BUCKET
from foundation.hosting.state import KVStateStore
from foundation.nats.kv import KV, BucketSpec, connect
from foundation.testing import NatsServer
from jido import Checkpoint, FencedError, ValidationError
from tests.jido.test_store import Backend, StoreContract

pytestmark = pytest.mark.nats


async def _store(url: str, owner: str) -> tuple[KVStateStore, NatsClient]:
    nc = await connect(url)
    kv = await KV.open(nc, BucketSpec(STATE_BUCKET))
    return KVStateStore(kv, owner=owner), nc


async def test_activate_fresh_key_loads_nothing_then_saves(nats_server: NatsServer) -> None:
    store, nc = await _store(nats_server.url, "n1")
    try:
        assert await store.activate("acc-1", 1, agent_type="A") is None
        assert await store.load("acc-1") is None
        await store.save("acc-1", Checkpoint(state={"n": 1}, agent_type="A", seq=1))
        await store.save("acc-1", Checkpoint(state={"n": 2}, agent_type="A", seq=2, meta={"s": 9}))
        got = await store.load("acc-1")
        assert got is not None and got.state == {"n": 2} and got.meta == {"s": 9}
        assert got.epoch == 1  # the epoch is stamped by the store
        store.release("acc-1")
        again = await store.load("acc-1")
        assert again is not None and again.state == {"n": 2} and again.seq == 2
    finally:
        await nc.close()


async def test_new_owner_fences_old_owner(nats_server: NatsServer) -> None:
    old, nc1 = await _store(nats_server.url, "old")
    new, nc2 = await _store(nats_server.url, "new")
    try:
        await old.activate("acc-2", 3)
        await old.save("acc-2", Checkpoint(state={"n": 1}, agent_type="A", seq=1))
        restored = await new.activate("acc-2", 4)
        assert restored is not None and restored.state == {"n": 1}
        with pytest.raises(FencedError) as info:
            await old.save("acc-2", Checkpoint(state={"n": 99}, agent_type="A", seq=2))
        assert info.value.details["stored_epoch"] == 4
        assert not old.holds("acc-2")
        # the stale write changed nothing
        got = await new.load("acc-2")
        assert got is not None and got.state == {"n": 1}
        await new.save("acc-2", Checkpoint(state={"n": 2}, agent_type="A", seq=2))
        # an older epoch cannot activate any more
        with pytest.raises(FencedError):
            await old.activate("acc-2", 3)
    finally:
        await nc1.close()
        await nc2.close()


async def test_concurrent_activation_same_epoch_range_one_highest_wins(
    nats_server: NatsServer,
) -> None:
    stores = [await _store(nats_server.url, f"n{i}") for i in range(3)]
    try:
        results = await asyncio.gather(
            *(s.activate("acc-3", 10 + i) for i, (s, _) in enumerate(stores)),
            return_exceptions=True,
        )
        # Whatever the interleaving, after all activations only the highest epoch can save.
        for i, (s, _) in enumerate(stores):
            cp = Checkpoint(state={"by": i}, agent_type="A", seq=1)
            if i == 2:
                assert not isinstance(results[i], BaseException)
                await s.save("acc-3", cp)
            else:
                with pytest.raises(FencedError):
                    if isinstance(results[i], BaseException):
                        raise results[i]
                    await s.save("acc-3", cp)
    finally:
        for _, nc in stores:
            await nc.close()


async def test_bad_key_and_delete(nats_server: NatsServer) -> None:
    store, nc = await _store(nats_server.url, "n1")
    try:
        with pytest.raises(ValidationError):
            await store.activate("bad key!", 1)
        await store.activate("acc-4", 1)
        await store.save("acc-4", Checkpoint(state={"n": 1}, agent_type="A", seq=1))
        await store.delete("acc-4")
        assert await store.load("acc-4") is None
        await store.delete("acc-4")  # deleting again is fine
        # unheld saves still respect epochs
        await store.save("acc-5", Checkpoint(state={}, agent_type="A", seq=1, epoch=5))
        with pytest.raises(FencedError):
            await store.save("acc-5", Checkpoint(state={}, agent_type="A", seq=2, epoch=4))
    finally:
        await nc.close()


async def test_runtime_agent_is_stopped_when_fenced(nats_server: NatsServer) -> None:
    from jido import Runtime, Signal
    from tests.foundation.apps import Counter

    old, nc1 = await _store(nats_server.url, "old")
    new, nc2 = await _store(nats_server.url, "new")
    try:
        async with Runtime(store=old) as rt_old, Runtime(store=new) as rt_new:
            await old.activate("ctr", 1)
            ref_old = await rt_old.start(Counter, id="ctr")
            sig = Signal(type="counter.add", source="/t", data={"n": 2})
            assert (await ref_old.call(sig))["count"] == 2
            # a new owner takes over with a higher epoch and the committed state
            await new.activate("ctr", 2)
            ref_new = await rt_new.start(Counter, id="ctr")
            assert (await ref_new.state()).count == 2
            # the stale owner's next command is refused and the agent stops at once
            with pytest.raises(FencedError):
                await ref_old.call(sig)
            assert "ctr" not in rt_old.ids()
            assert (await ref_new.call(sig))["count"] == 4
            got = await new.load("ctr")
            assert got is not None and got.state["count"] == 4 and got.epoch == 2
    finally:
        await nc1.close()
        await nc2.close()


async def test_meta_committed_with_state(nats_server: NatsServer) -> None:
    from jido import Runtime, Signal
    from tests.foundation.apps import Counter

    store, nc = await _store(nats_server.url, "n1")
    try:
        async with Runtime(store=store) as rt:
            await store.activate("m1", 1)
            ref = await rt.start(Counter, id="m1")
            sig = Signal(type="counter.add", source="/t", data={"n": 1})
            await ref.call(sig, meta={"stream_seq": 41})
            await ref.call(sig, meta={"stream_seq": 42})
        store.release("m1")
        got = await store.load("m1")
        assert got is not None and got.state["count"] == 2 and got.meta["stream_seq"] == 42
    finally:
        await nc.close()


async def test_tenants_sharing_one_bucket_never_share_an_agents_state(
    nats_server: NatsServer,
) -> None:
    nc = await connect(nats_server.url)
    try:
        kv = await KV.open(nc, BucketSpec(STATE_BUCKET))
        acme = KVStateStore(kv, owner="n1", tenant="acme")
        globex = KVStateStore(kv, owner="n2", tenant="globex")
        await acme.activate("acc-9", 5)
        await acme.save("acc-9", Checkpoint(state={"owner": "acme"}, agent_type="A", seq=1))
        # The same id in another tenant is another key: it starts empty, at a lower epoch,
        # and claiming it fences nothing of the first tenant.
        assert await globex.activate("acc-9", 1) is None
        await globex.save("acc-9", Checkpoint(state={"owner": "globex"}, agent_type="A", seq=1))
        await acme.save("acc-9", Checkpoint(state={"owner": "acme", "n": 2}, agent_type="A", seq=2))
        got_acme, got_globex = await acme.load("acc-9"), await globex.load("acc-9")
        assert got_acme is not None and got_acme.state == {"owner": "acme", "n": 2}
        assert got_globex is not None and got_globex.state == {"owner": "globex"}
        assert sorted(await kv.keys()) == ["acme.acc-9", "globex.acc-9"]
        with pytest.raises(InvalidKeyError):
            KVStateStore(kv, tenant="not.one.token")
    finally:
        await nc.close()


# --- the shared StateStore contract ------------------------------------------------------------


@pytest.fixture
async def backend(nats_server: NatsServer) -> AsyncIterator[Backend]:
    """The KV store as a contract backend (a fresh tenant per test on one bucket)."""
    nc = await connect(nats_server.url)
    kv = await KV.open(nc, BucketSpec(STATE_BUCKET))
    store = KVStateStore(kv, owner="n1", tenant="contract")

    async def corrupt(key: str, blob: bytes) -> None:
        await kv.put(f"contract.{key}", blob)

    be = Backend("kv", store, lambda: KVStateStore(kv, owner="n2", tenant="contract"), corrupt)
    await store.open()
    try:
        yield be
    finally:
        await store.close()
        await nc.close()


class TestKVStoreContract(StoreContract):
    """Runs the shared contract against KVStateStore."""

    async def test_unusual_keys(self, backend: Backend) -> None:
        pytest.skip("KV keys are dotted tokens of letters, digits and -/_= (agent ids fit)")

    async def test_large_state(self, backend: Backend) -> None:
        pytest.skip("one value is bounded by the server's max_payload (checked by its own test)")


async def test_journal_survives_failover_and_a_stale_owner_cannot_append(
    nats_server: NatsServer,
) -> None:
    old, nc1 = await _store(nats_server.url, "old")
    new, nc2 = await _store(nats_server.url, "new")
    try:
        await old.activate("llm-1", 1)
        assert await old.append("llm-1", [b"user"], checkpoint=Checkpoint({"n": 1}, "A", 1)) == 1
        assert await old.append("llm-1", [b"model", b"start"]) == 3
        restored = await new.activate("llm-1", 2)
        assert restored is not None and restored.state == {"n": 1} and restored.meta == {}
        assert await new.journal("llm-1") == [b"user", b"model", b"start"]
        with pytest.raises(FencedError):
            await old.append("llm-1", [b"stale"])
        with pytest.raises(FencedError):
            await old.activate("llm-1", 1)
        assert await new.append("llm-1", [b"result"], checkpoint=Checkpoint({"n": 2}, "A", 2)) == 4
        # a plain save keeps the journal's index; a reader that holds nothing sees it all
        await new.save("llm-1", Checkpoint({"n": 3}, "A", 3))
        reader, nc3 = await _store(nats_server.url, "reader")
        try:
            assert await reader.journal("llm-1", 1) == [b"model", b"start", b"result"]
            loaded = await reader.load("llm-1")
            assert loaded is not None and loaded.state == {"n": 3} and loaded.epoch == 2
            assert await reader.keys() == ["llm-1"]
        finally:
            await nc3.close()
    finally:
        await nc1.close()
        await nc2.close()
