"""Coordination primitives against a real nats-server: election, locks, barriers, config."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import jido
from foundation._errors import BarrierError, CASConflictError, KeyExistsError, LeaseLostError
from foundation.coordination.coordination import Coordination, Leadership
from foundation.testing import NatsServer
from tests.foundation.conftest import Connect, TcpProxy


async def _coords(server: NatsServer | str, connect: Connect, *holders: str) -> list[Coordination]:
    out = []
    for h in holders:
        c = Coordination(await connect(server), h)
        await c.start()
        out.append(c)
    return out


class UniquenessMonitor:
    """Samples every contender's ``is_leader`` and records any moment with two leaders."""

    def __init__(self, leads: list[Leadership]) -> None:
        self.leads = leads
        self.violations: list[list[str]] = []
        self.samples = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            holders = [lead._coord.holder for lead in self.leads if lead.is_leader]
            if len(holders) > 1:
                self.violations.append(holders)
            self.samples += 1
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


async def test_exactly_one_leader_and_resign_hands_over(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    coords = await _coords(nats_server, nats_connect, "a", "b", "c")
    leads = [await c.elect("leader") for c in coords]
    monitor = UniquenessMonitor(leads)
    try:
        done, _ = await asyncio.wait(
            [asyncio.create_task(lead.wait_elected()) for lead in leads],
            return_when=asyncio.FIRST_COMPLETED,
        )
        term = next(iter(done)).result()
        winners = [lead for lead in leads if lead.is_leader]
        assert len(winners) == 1
        first = winners[0]
        assert first.term == term
        assert await coords[0].leader("leader") == (first._coord.holder, term)
        await first.resign()
        assert not first.is_leader
        others = [lead for lead in leads if lead is not first]
        done, _ = await asyncio.wait(
            [asyncio.create_task(lead.wait_elected()) for lead in others],
            return_when=asyncio.FIRST_COMPLETED,
        )
        second_term = next(iter(done)).result()
        assert second_term > term  # terms (fencing tokens) grow
        assert sum(lead.is_leader for lead in leads) == 1
    finally:
        await monitor.stop()
        for c in coords:
            await c.stop()
    assert monitor.violations == [] and monitor.samples > 0


async def test_partitioned_leader_loses_before_takeover(
    nats_server: NatsServer, nats_connect: Connect, tcp_proxy: TcpProxy
) -> None:
    (cut,) = await _coords(tcp_proxy.url, nats_connect, "cut")
    (other,) = await _coords(nats_server, nats_connect, "other")
    timeline: list[tuple[str, str, int, float]] = []

    def record(who: str, what: str) -> Callable[[int], None]:
        return lambda term: timeline.append((who, what, term, time.monotonic()))

    lead_cut = await cut.elect(
        "svc", on_elected=record("cut", "elected"), on_lost=record("cut", "lost")
    )
    await lead_cut.wait_elected()
    lead_other = await other.elect(
        "svc", on_elected=record("other", "elected"), on_lost=record("other", "lost")
    )
    monitor = UniquenessMonitor([lead_cut, lead_other])
    try:
        assert lead_cut.is_leader and not lead_other.is_leader
        tcp_proxy.pause()  # the leader can no longer renew; its lease expires on the server
        new_term = await asyncio.wait_for(lead_other.wait_elected(), 10)
        assert not lead_cut.is_leader
        events = [(w, e) for w, e, _, _ in timeline]
        assert events.index(("cut", "lost")) < events.index(("other", "elected"))
        lost_at = next(t for w, e, _, t in timeline if (w, e) == ("cut", "lost"))
        elected_at = next(t for w, e, _, t in timeline if (w, e) == ("other", "elected"))
        assert lost_at < elected_at
        assert new_term > lead_cut.terms[0]
        tcp_proxy.resume()
        # The old leader keeps campaigning and does not take over from a live leader.
        assert lead_other.is_leader
    finally:
        tcp_proxy.resume()
        await monitor.stop()
        await cut.stop()
        await other.stop()
    assert monitor.violations == []


async def test_bad_election_ttl(nats_server: NatsServer, nats_connect: Connect) -> None:
    (c,) = await _coords(nats_server, nats_connect, "x")
    with pytest.raises(Exception, match="whole number"):
        await c.elect("e", ttl=0.5)
    with pytest.raises(Exception, match="whole number"):
        c.lock("l", ttl=1.5)


async def test_lock_is_exclusive_and_tokens_grow(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    coords = await _coords(nats_server, nats_connect, "p0", "p1", "p2", "p3")
    inside = 0
    overlaps = 0
    tokens: list[int] = []

    async def worker(c: Coordination) -> None:
        nonlocal inside, overlaps
        for _ in range(3):
            async with c.lock("counter", timeout=20) as token:
                inside += 1
                overlaps += inside > 1
                tokens.append(token)
                await asyncio.sleep(0)  # give the others a chance to (wrongly) enter
                inside -= 1

    await asyncio.gather(*(worker(c) for c in coords))
    assert overlaps == 0
    assert len(tokens) == 12
    assert tokens == sorted(tokens) and len(set(tokens)) == 12


async def test_lock_timeout_and_loss(
    nats_server: NatsServer, nats_connect: Connect, tcp_proxy: TcpProxy
) -> None:
    (holder,) = await _coords(tcp_proxy.url, nats_connect, "holder")
    (waiter,) = await _coords(nats_server, nats_connect, "waiter")
    lock = holder.lock("res", ttl=1)
    token = await lock.acquire()
    with pytest.raises(jido.TimeoutError, match="not acquired"):
        async with waiter.lock("res", ttl=1, timeout=0.2):
            pass
    tcp_proxy.pause()  # the holder cannot renew: the lock expires on the server
    async with waiter.lock("res", ttl=1, timeout=10) as token2:
        assert token2 > token
        assert lock.lost and not lock.held
    tcp_proxy.resume()
    with pytest.raises(LeaseLostError, match="lost while held"):
        await lock.release()


async def test_barrier(nats_server: NatsServer, nats_connect: Connect) -> None:
    coords = await _coords(nats_server, nats_connect, "b0", "b1", "b2")
    results = await asyncio.gather(
        *(c.barrier("start", 3, member=c.holder, timeout=10) for c in coords)
    )
    assert results == [["b0", "b1", "b2"]] * 3
    with pytest.raises(BarrierError, match="got 4 arrivals"):
        await coords[0].barrier("start", 3, member="late", timeout=5)
    with pytest.raises(jido.TimeoutError, match="1 of 2 arrived"):
        await coords[0].barrier("lonely", 2, timeout=0.3)
    with pytest.raises(BarrierError, match="already arrived"):
        await coords[0].barrier("start", 3, member="b0", timeout=1)


async def test_config_map_with_cas_and_watch(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    a, b = await _coords(nats_server, nats_connect, "a", "b")
    await a.config.put("limits", {"rps": 10})
    async with b.config.watch() as changes:
        first = await anext(changes)
        assert (first.key, first.value) == ("limits", {"rps": 10})
        entry = await a.config.get_entry("limits")
        assert entry is not None
        await a.config.update("limits", {"rps": 20}, last=entry.revision)
        with pytest.raises(CASConflictError):
            await a.config.update("limits", {"rps": 30}, last=entry.revision)
        nxt = await anext(changes)
        assert nxt.value == {"rps": 20} and nxt.revision > entry.revision
        await a.config.delete("limits")
        gone = await anext(changes)
        assert gone.deleted and gone.value is None
    await a.config.create("flag", True)
    with pytest.raises(KeyExistsError):
        await b.config.create("flag", False)
    assert await b.config.get("flag") is True
    assert await b.config.get("missing", 7) == 7
    assert await b.config.items() == {"flag": True}


async def test_takeover_when_the_leader_process_dies(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    dying_nc = await nats_connect(nats_server)
    dying = Coordination(dying_nc, "dying")
    await dying.start()
    (heir,) = await _coords(nats_server, nats_connect, "heir")
    lead = await dying.elect("job")
    first_term = await lead.wait_elected()
    successor = await heir.elect("job")
    assert not successor.is_leader
    try:
        await dying_nc.close()  # the process is gone: no resignation, no more renewals
        term = await asyncio.wait_for(successor.wait_elected(), 10)
        assert term > first_term
        assert not lead.is_leader
        assert await heir.leader("job") == ("heir", term)
    finally:
        await heir.stop()
        await dying.stop()  # ends the dead contender's background campaign task
