"""Membership: join/leave/expire events, snapshots, self-fencing and rejoin (real NATS)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from types import MappingProxyType

import pytest

from foundation._errors import ClusterError, LeaseLostError
from foundation.membership.membership import (
    Membership,
    MembershipEvent,
    MembershipSnapshot,
    NodeRecord,
)
from foundation.nats.kv import KV, BucketSpec, connect
from foundation.testing import NatsCluster, NatsServer
from tests.foundation.conftest import Connect, TcpProxy, eventually


async def test_join_update_leave_and_expire_events(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    observer = Membership(await nats_connect(nats_server), None)
    await observer.start()
    events: list[MembershipEvent] = []
    observer.add_listener(events.append)
    a = Membership(
        await nats_connect(nats_server),
        "a",
        capabilities=["gpu"],
        resources={"cpu": 4},
        load=lambda: {"agents": 2},
        version="1.2.3",
    )
    b = Membership(await nats_connect(nats_server), "b")
    try:
        await a.start()
        await b.start()
        snap = await observer.wait_members(["a", "b"], timeout=5)
        rec = snap.get("a")
        assert rec is not None
        assert rec.capabilities == ("gpu",) and rec.resources == {"cpu": 4}
        assert rec.load == {"agents": 2} and rec.version == "1.2.3" and rec.pid > 0
        assert a.holds_lease and not a.fenced
        await a.set_status("draining")
        await observer._wait(lambda s: s.members["a"].status == "draining", 5)
        await a.stop()  # graceful
        await observer.wait_gone("a", timeout=5)
        await b.stop(leave=False)  # like a crash: stops renewing, the lease runs out
        await observer.wait_gone("b", timeout=5)
    finally:
        await a.stop()
        await b.stop()
        await observer.stop()
    kinds = [(e.kind, e.node_id) for e in events]
    assert kinds == [
        ("join", "a"),
        ("join", "b"),
        ("update", "a"),
        ("leave", "a"),
        ("expire", "b"),
    ] or kinds == [("join", "b"), ("join", "a"), ("update", "a"), ("leave", "a"), ("expire", "b")]
    versions = [e.version for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


async def test_event_stream_and_snapshot_diff(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    observer = Membership(await nats_connect(nats_server), None)
    await observer.start()
    before = observer.snapshot
    stream = observer.events()
    n = Membership(await nats_connect(nats_server), "n1")
    try:
        await n.start()
        first = await anext(stream)
        assert (first.kind, first.node_id) == ("join", "n1")
        after = observer.snapshot
        assert after.version > before.version
        diff = after.diff(before)
        assert diff.joined == ("n1",) and not diff.left and diff
        assert before.diff(after).left == ("n1",)
        assert not after.diff(after)
        assert "n1" in after and len(after) == 1 and after.ids() == ["n1"]
    finally:
        await stream.aclose()
        await n.stop()
        await observer.stop()


def test_snapshot_diff_reports_updates() -> None:
    old = MembershipSnapshot(1, 1, MappingProxyType({"x": NodeRecord(id="x")}))
    new = MembershipSnapshot(
        2, 5, MappingProxyType({"x": NodeRecord(id="x", status="draining", load={"a": 1})})
    )
    assert new.diff(old).updated == ("x",)
    load_only = MembershipSnapshot(3, 6, MappingProxyType({"x": NodeRecord(id="x", load={"a": 2})}))
    assert not load_only.diff(old)


def test_node_record_round_trip() -> None:
    rec = NodeRecord(id="n", capabilities=("a",), resources={"cpu": 2.0}, revision=7)
    back = NodeRecord.decode(rec.encode(), 7)
    assert back == rec
    assert b"revision" not in rec.encode()


async def test_bad_settings_are_rejected(nats_server: NatsServer, nats_connect: Connect) -> None:
    nc = await nats_connect(nats_server)
    with pytest.raises(ClusterError, match="whole number"):
        Membership(nc, "x", lease_ttl=1.5)
    with pytest.raises(ClusterError, match="heartbeat_interval"):
        Membership(nc, "x", heartbeat_interval=0.5)
    with pytest.raises(ClusterError, match="fence_margin"):
        Membership(nc, "x", fence_margin=1.0)


async def test_duplicate_node_id_waits_then_fails(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    a = Membership(await nats_connect(nats_server), "dup")
    await a.start()
    b = Membership(await nats_connect(nats_server), "dup")
    try:
        with pytest.raises(ClusterError, match="held by a live node"):
            await b.start()
    finally:
        await b.stop()
        await a.stop()


@pytest.mark.parametrize("threaded", [False, True], ids=["loop", "thread"])
async def test_partitioned_node_fences_before_its_lease_expires_then_rejoins(
    nats_server: NatsServer, nats_connect: Connect, tcp_proxy: TcpProxy, threaded: bool
) -> None:
    observer = Membership(await nats_connect(nats_server), None)
    await observer.start()
    fenced_at: list[float] = []
    fence_errors: list[LeaseLostError] = []
    rejoined = asyncio.Event()
    expired_at: list[float] = []

    def on_fenced(err: LeaseLostError) -> None:
        fenced_at.append(time.monotonic())
        fence_errors.append(err)

    def on_event(ev: MembershipEvent) -> None:
        if ev.kind == "expire" and ev.node_id == "cut":
            expired_at.append(time.monotonic())

    observer.add_listener(on_event)
    node = Membership(
        await nats_connect(tcp_proxy.url),
        "cut",
        on_fenced=on_fenced,
        on_rejoined=lambda rec: rejoined.set(),
        # renewals from a thread go through the same cut link
        renew_connect=(lambda: connect(tcp_proxy.url)) if threaded else None,
    )
    try:
        await node.start()
        await observer.wait_members(["cut"], timeout=5)
        tcp_proxy.pause()  # cut this node off NATS; the observer still sees the server
        await observer.wait_gone("cut", timeout=10)
        assert fenced_at, "the node did not fence itself before its lease expired"
        assert expired_at and fenced_at[0] < expired_at[0]
        assert node.fenced and not node.holds_lease
        assert fence_errors[0].details["node"] == "cut"
        tcp_proxy.resume()
        await asyncio.wait_for(rejoined.wait(), 10)
        await observer.wait_members(["cut"], timeout=10)
        assert node.holds_lease and not node.fenced
        assert node.fence_count == 1 and node.rejoin_count == 1
    finally:
        tcp_proxy.resume()
        await node.stop()
        await observer.stop()


@pytest.mark.parametrize("threaded", [False, True], ids=["loop", "thread"])
async def test_whenever_others_see_a_rejoining_node_it_is_rejoining_or_holds_its_lease(
    nats_server: NatsServer, nats_connect: Connect, tcp_proxy: TcpProxy, threaded: bool
) -> None:
    """Other nodes route to a node as soon as its new record lands, which can be before the
    node has read the reply: from then on ``rejoining`` or ``holds_lease`` must be true, so
    that the node can make such requests wait for ``on_rejoined`` instead of refusing them."""
    observer = Membership(await nats_connect(nats_server), None)
    await observer.start()
    rejoined = asyncio.Event()
    at_join: list[tuple[bool, bool]] = []
    node = Membership(
        await nats_connect(tcp_proxy.url),
        "cut",
        on_rejoined=lambda rec: rejoined.set(),
        renew_connect=(lambda: connect(tcp_proxy.url)) if threaded else None,
    )

    def on_event(ev: MembershipEvent) -> None:
        if ev.kind == "join" and ev.node_id == "cut" and node.fence_count:
            at_join.append((node.rejoining, node.holds_lease))

    observer.add_listener(on_event)
    try:
        await node.start()
        await observer.wait_members(["cut"], timeout=5)
        tcp_proxy.pause()
        await observer.wait_gone("cut", timeout=10)
        assert node.fenced and not node.holds_lease
        tcp_proxy.resume()
        await asyncio.wait_for(rejoined.wait(), 10)
        await observer.wait_members(["cut"], timeout=10)
        assert at_join and all(rejoining or held for rejoining, held in at_join), at_join
        assert node.holds_lease and not node.rejoining and not node.fenced
    finally:
        tcp_proxy.resume()
        await node.stop()
        await observer.stop()


async def test_stopped_server_fences_the_node_and_it_rejoins(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    fenced = asyncio.Event()
    rejoined = asyncio.Event()
    node = Membership(
        await nats_connect(nats_server),
        "paused",
        on_fenced=lambda err: fenced.set(),
        on_rejoined=lambda rec: rejoined.set(),
    )
    await node.start()
    try:
        nats_server.pause()  # SIGSTOP the server: no renewal can be acknowledged
        await asyncio.wait_for(fenced.wait(), 10)
        assert not node.holds_lease
        nats_server.resume()
        await asyncio.wait_for(rejoined.wait(), 15)
        assert node.holds_lease
    finally:
        nats_server.resume()
        await node.stop()


@pytest.mark.nats
async def test_members_recover_after_the_nodes_stream_leader_dies(
    nats_cluster: NatsCluster, nats_connect: Connect
) -> None:
    urls = nats_cluster.urls
    nodes = [Membership(await nats_connect(urls[i]), f"m{i}") for i in range(3)]
    for n in nodes:
        await n.start()
    try:
        assert nodes[0].kv is not None and nodes[0].kv.replicas == 3
        await nodes[0].wait_members(["m0", "m1", "m2"], timeout=10)
        leader = nats_cluster.stream_leader("KV_foundation_nodes")
        nats_cluster.kill_server(leader)
        # While the stream elects a new leader no lease can be renewed: nodes may fence. Once
        # it has one they hold their leases again (the node whose server died reconnects to
        # another server it learned from the cluster) and everyone sees every member.
        await eventually(lambda: _all_hold(nodes), timeout=30)
        for n in nodes:
            await n.wait_members(["m0", "m1", "m2"], timeout=30)
    finally:
        for n in nodes:
            await n.stop(leave=False)


async def _all_hold(nodes: list[Membership]) -> bool:
    return all(n.holds_lease for n in nodes)


async def test_sweeper_expires_a_member_whose_marker_was_never_seen(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    observer = Membership(await nats_connect(nats_server), None)
    await observer.start()
    events: list[MembershipEvent] = []
    observer.add_listener(events.append)
    ghost = Membership(await nats_connect(nats_server), "ghost")
    await ghost.start()
    try:
        await observer.wait_members(["ghost"], timeout=5)
        await ghost.stop(leave=False)
        # Remove the record behind the watchers' backs (no tombstone, no TTL marker), as if
        # the marker had been missed during a long disconnection.
        admin = await nats_connect(nats_server)
        await admin.jetstream().purge_stream(
            "KV_foundation_nodes", subject="$KV.foundation_nodes.ghost"
        )
        await observer.wait_gone("ghost", timeout=10)
    finally:
        await ghost.stop()
        await observer.stop()
    assert [(e.kind, e.node_id) for e in events][-1] == ("expire", "ghost")


async def test_leave_racing_a_renewal_is_still_a_leave(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    observer = Membership(await nats_connect(nats_server), None)
    await observer.start()
    events: list[MembershipEvent] = []
    observer.add_listener(events.append)
    try:
        for i in range(5):
            node = Membership(await nats_connect(nats_server), f"racer{i}")
            await node.start()
            await observer.wait_members([f"racer{i}"], timeout=5)
            await node.set_status("draining")
            for _ in range(i + 2):
                await asyncio.sleep(0)  # let the renewal get on the wire...
            await node.stop()  # ...and the leave must not lose its CAS to it
            await observer.wait_gone(f"racer{i}", timeout=5)
    finally:
        await observer.stop()
    gone = [(e.kind, e.node_id) for e in events if e.kind in {"leave", "expire"}]
    assert gone == [("leave", f"racer{i}") for i in range(5)]


def _lease_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("foundation-lease-")]


async def test_a_busy_event_loop_keeps_its_lease_when_renewing_from_a_thread(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    observer = Membership(await nats_connect(nats_server), None)
    await observer.start()
    events: list[MembershipEvent] = []
    observer.add_listener(events.append)
    node = Membership(
        await nats_connect(nats_server),
        "busy",
        renew_connect=lambda: connect(nats_server.url),
    )
    try:
        await node.start()
        await observer.wait_members(["busy"], timeout=5)
        assert _lease_threads() == ["foundation-lease-busy"]
        # Hold this event loop for 1.5 s: longer than the lease (1 s), shorter than the stall
        # limit (2 s). The renewal thread keeps the lease meanwhile.
        time.sleep(1.5)  # noqa: ASYNC251 - blocking the loop is the point of this test
        assert node.holds_lease
        rev = node._node_lease().revision

        async def renewed_since() -> bool:
            return node._node_lease().revision > rev

        await eventually(renewed_since)
        assert not node.fenced and node.fence_count == 0
        assert observer.is_live("busy")
        assert not [e for e in events if e.node_id == "busy" and e.kind in ("expire", "leave")]
    finally:
        await node.stop()
        await observer.stop()
    assert _lease_threads() == []


def _wait_record_gone(url: str, node_id: str, within: float) -> bool:
    """From a thread of its own: wait until ``node_id``'s record is gone from the bucket."""

    async def check() -> bool:
        nc = await connect(url)
        try:
            kv = await KV.open(nc, BucketSpec("foundation_nodes"))
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                if await kv.get(node_id) is None:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            await nc.close()

    return asyncio.run(check())


async def test_a_stuck_event_loop_loses_its_lease_even_when_renewing_from_a_thread(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    rejoined = asyncio.Event()
    node = Membership(
        await nats_connect(nats_server),
        "stuck",
        renew_connect=lambda: connect(nats_server.url),
        loop_stall_limit=0.5,
        on_rejoined=lambda rec: rejoined.set(),
    )
    try:
        await node.start()
        # Block this loop past the stall limit, until a reader in another thread sees the
        # record expire: the renewal thread must have stopped renewing for a stuck loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            gone = pool.submit(_wait_record_gone, nats_server.url, "stuck", 10.0).result()
        assert gone, "the record of a stuck node did not expire"
        assert not node.holds_lease
        # Once the loop runs again the node fences, then rejoins with a fresh record.
        await asyncio.wait_for(rejoined.wait(), 10)
        assert node.fence_count == 1 and node.holds_lease
    finally:
        await node.stop()
