"""The registry's incremental indexes (per-node group counts, owners) match a full scan."""

from __future__ import annotations

from foundation.registry.registry import ClusterRegistry
from foundation.testing import NatsServer
from tests.foundation.conftest import Connect


def _scanned(reg: ClusterRegistry, group: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in reg.records():
        if rec.type == group or rec.metadata.get("group") == group:
            out[rec.node] = out.get(rec.node, 0) + 1
    return out


async def test_group_counts_and_owners_follow_claims_moves_and_removes(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    writer = ClusterRegistry(await nats_connect(nats_server))
    watcher = ClusterRegistry(await nats_connect(nats_server))
    await writer.start()
    await watcher.start()
    try:
        for i in range(6):
            await writer.claim(f"s{i}", node=f"n{i % 3}", type="Session")
        await writer.claim("o1", node="n1", type="Order", metadata={"group": "Session"})
        await writer.claim("o2", node="n2", type="Order")
        moved = await writer.lookup("s0", consistent=True)
        assert moved is not None
        await writer.move("s0", to="n2", expected=moved)
        gone = await writer.lookup("s4", consistent=True)
        assert gone is not None
        await writer.remove("s4", expected=gone)
        await watcher.wait_version(writer.version)
        for reg in (writer, watcher):
            for group in ("Session", "Order", "none"):
                assert reg.group_counts(group) == _scanned(reg, group)
            assert reg.owners() == ["n0", "n1", "n2"]
        assert writer.group_counts("Session") == {"n0": 1, "n1": 2, "n2": 3}
        assert writer.group_counts("Order") == {"n1": 1, "n2": 1}
    finally:
        await writer.stop()
        await watcher.stop()
