"""The compare-and-set KV layer against a real nats-server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from foundation._errors import (
    CASConflictError,
    InvalidKeyError,
    KeyExistsError,
    NatsUnavailableError,
)
from foundation.nats.kv import KV, BucketSpec, KVEntry, Op, ttl_header
from foundation.testing import NatsServer
from tests.foundation.conftest import Connect

SPEC = BucketSpec("t_kv", marker_ttl=timedelta(seconds=5))


async def _kv(server: NatsServer, connect: Connect) -> KV:
    return await KV.open(await connect(server), SPEC)


async def test_create_update_delete_are_compare_and_set(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    kv = await _kv(nats_server, nats_connect)
    r1 = await kv.create("a.b", b"1")
    with pytest.raises(KeyExistsError) as info:
        await kv.create("a.b", b"other")
    assert info.value.details["actual"] == r1
    r2 = await kv.update("a.b", b"2", last=r1)
    assert r2 > r1
    with pytest.raises(CASConflictError) as stale:
        await kv.update("a.b", b"stale", last=r1)
    assert stale.value.key == "a.b"
    assert stale.value.retryable
    with pytest.raises(CASConflictError):
        await kv.delete("a.b", last=r1)
    await kv.delete("a.b", last=r2)
    assert await kv.get("a.b") is None
    # A deleted key can be created again (the tombstone counts as absent).
    r3 = await kv.create("a.b", b"3")
    got = await kv.get("a.b")
    assert got is not None and got.value == b"3" and got.revision == r3


async def test_purge_then_create(nats_server: NatsServer, nats_connect: Connect) -> None:
    kv = await _kv(nats_server, nats_connect)
    await kv.put("p", b"x")
    await kv.purge("p")
    assert await kv.get("p") is None
    assert await kv.revision("p") > 0
    await kv.create("p", b"y")


async def test_concurrent_creates_have_exactly_one_winner(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    kvs = [await _kv(nats_server, nats_connect) for _ in range(4)]
    for trial in range(20):
        key = f"race.k{trial}"
        results = await asyncio.gather(
            *(kv.create(key, str(i).encode()) for i, kv in enumerate(kvs * 2)),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, int)]
        losses = [r for r in results if isinstance(r, KeyExistsError)]
        assert len(wins) == 1, results
        assert len(losses) == len(results) - 1
        assert all(e.details["actual"] == wins[0] for e in losses)


async def test_ttl_expiry_is_seen_by_watchers_and_frees_the_key(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    kv = await _kv(nats_server, nats_connect)
    async with kv.watch("lease.>") as watch:
        assert [e async for e in watch.initial()] == []
        rev = await kv.create("lease.x", b"holder", ttl=timedelta(seconds=1))
        seen: list[KVEntry] = []
        async for entry in watch:
            seen.append(entry)
            if entry.deleted:
                break
    assert [e.op for e in seen] == [Op.PUT, Op.EXPIRE]
    assert seen[0].revision == rev and seen[1].revision > rev
    assert await kv.get("lease.x") is None
    # The expired key can be claimed again even though the server's marker is still there.
    await kv.create("lease.x", b"next")
    # A renewal of an expired lease loses its CAS.
    with pytest.raises(CASConflictError):
        await kv.update("lease.x", b"holder", last=rev, ttl=timedelta(seconds=1))


async def test_update_renews_the_ttl(nats_server: NatsServer, nats_connect: Connect) -> None:
    kv = await _kv(nats_server, nats_connect)
    rev = await kv.create("renew", b"0", ttl=timedelta(seconds=1))
    async with kv.watch("renew") as watch:
        first = await anext(watch)
        assert first.revision == rev
        # Renew twice, each before the previous write can expire; the watch sees the values.
        rev = await kv.update("renew", b"1", last=rev, ttl=timedelta(seconds=2))
        assert (await anext(watch)).value == b"1"
        rev = await kv.update("renew", b"2", last=rev, ttl=timedelta(seconds=1))
        assert (await anext(watch)).value == b"2"
        expired = await anext(watch)
        assert expired.op is Op.EXPIRE


async def test_watch_delivers_initial_entries_then_changes(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    kv = await _kv(nats_server, nats_connect)
    await kv.put("w.a", b"1")
    await kv.put("w.b", b"2")
    await kv.put("other", b"x")
    async with kv.watch("w.*") as watch:
        initial = [e.key async for e in watch.initial()]
        assert sorted(initial) == ["w.a", "w.b"]
        assert watch.caught_up
        await kv.delete("w.a")
        await kv.put("w.c", b"3")
        changes = [await anext(watch), await anext(watch)]
    assert [(e.key, e.op) for e in changes] == [("w.a", Op.DELETE), ("w.c", Op.PUT)]
    assert watch.last_revision == changes[-1].revision
    assert await kv.keys("w.*") == ["w.b", "w.c"]
    items = await kv.items()
    assert set(items) == {"w.b", "w.c", "other"}


async def test_watch_on_empty_bucket_is_caught_up(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    kv = await _kv(nats_server, nats_connect)
    async with kv.watch() as watch:
        assert [e async for e in watch.initial()] == []
        assert watch.caught_up
    assert await kv.keys() == []


async def test_open_is_idempotent_and_race_safe(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    ncs = [await nats_connect(nats_server) for _ in range(3)]
    kvs = await asyncio.gather(*(KV.open(nc, BucketSpec("t_open")) for nc in ncs))
    assert {kv.stream for kv in kvs} == {"KV_t_open"}
    await kvs[0].put("k", b"v")
    got = await kvs[2].get("k")
    assert got is not None and got.value == b"v"


async def test_bad_keys_and_ttls_are_typed_errors(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    kv = await _kv(nats_server, nats_connect)
    for bad in ["", "a b", ".a", "a.", "a..b", "a*", "a>"]:
        with pytest.raises(InvalidKeyError):
            await kv.put(bad, b"x")
    with pytest.raises(InvalidKeyError, match="whole number of seconds"):
        ttl_header(timedelta(milliseconds=1500))
    with pytest.raises(InvalidKeyError):
        ttl_header(timedelta(milliseconds=500))
    assert ttl_header(timedelta(seconds=2)) == "2s"
    with pytest.raises(InvalidKeyError, match="create"):
        await kv.update("k", b"x", last=0)


async def test_server_down_is_nats_unavailable(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    nc = await nats_connect(nats_server)
    kv = await KV.open(nc, SPEC, timeout=0.5)
    await kv.put("k", b"v")
    await nats_server.astop()
    with pytest.raises(NatsUnavailableError) as info:
        await kv.put("k", b"w")
    assert info.value.retryable
    with pytest.raises(NatsUnavailableError):
        await kv.get("k")
