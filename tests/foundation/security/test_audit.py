"""The audit trail: append-only stream, hash chain, concurrent writers, signed checkpoints,
tamper detection on an export, and the ``foundation audit`` command."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from foundation._errors import PermissionDeniedError
from foundation.security import (
    AuditLog,
    KeyPair,
    Principal,
    SecureNatsServer,
    SecureSetup,
    checked_publish,
    checked_request,
    records_of,
    run_audit_async,
    verify_records,
)
from foundation.security._audit import MAX_BATCH_BYTES, canonical, record_hash
from foundation.security._guard import AuditWriter
from tests.foundation.security.conftest import ConnectAs

pytestmark = pytest.mark.nats


async def _filled(connect_as: ConnectAs, key: KeyPair, n: int = 12) -> AuditLog:
    node = await connect_as("node")
    log = AuditLog(node.jetstream(), node="n1", key=key, checkpoint_every=5)
    await log.ensure()
    for i in range(n):
        await log.append(
            "agent.spawn",
            tenant="default",
            principal=Principal("client", "alice"),
            subject=f"acc-{i}",
            details={"type": "Account"},
        )
    await log.checkpoint()
    return log


async def test_records_chain_and_checkpoints_verify(connect_as: ConnectAs) -> None:
    key = KeyPair.create("server")
    log = await _filled(connect_as, key)
    result = await log.verify(trusted_keys=[key.public_key])
    assert result.ok, result.problems
    # 12 records, a checkpoint after every 5, and the final one
    assert result.records == 15 and result.checkpoints == 3
    assert result.last_checkpoint_seq == result.head_seq == 15
    info = await log.js.stream_info(log.stream)
    assert info.config.deny_delete and info.config.deny_purge
    tail = await log.tail(3)
    assert [r["seq"] for r in tail] == [13, 14, 15]
    assert tail[0]["principal"] == "client/alice" and tail[-1]["event"] == "audit.checkpoint"
    other = KeyPair.create("server")
    assert not (await log.verify(trusted_keys=[other.public_key])).ok


async def test_concurrent_writers_keep_one_chain(connect_as: ConnectAs) -> None:
    writers = await _writers(connect_as)

    async def write(log: AuditLog) -> None:
        for j in range(20):
            await log.append("agent.call", subject=f"{log.node}-{j}")

    await asyncio.gather(*(write(w) for w in writers))
    result = await writers[0].verify()
    assert result.ok, result.problems
    assert result.records == 60
    nodes = {r["node"] for r in await writers[1].tail(60)}
    assert nodes == {"n0", "n1", "n2"}


async def test_the_trail_is_append_only_for_every_role(connect_as: ConnectAs) -> None:
    log = await _filled(connect_as, KeyPair.create("server"), n=2)
    node = await connect_as("node")
    for subject in (
        "$JS.API.STREAM.PURGE.FOUNDATION_AUDIT",
        "$JS.API.STREAM.MSG.DELETE.FOUNDATION_AUDIT",
        "$JS.API.STREAM.DELETE.FOUNDATION_AUDIT",
        "$JS.API.STREAM.UPDATE.FOUNDATION_AUDIT",
    ):
        with pytest.raises(PermissionDeniedError):
            await checked_request(node, subject, b"{}")
    admin = await connect_as("admin")
    with pytest.raises(PermissionDeniedError):
        await checked_publish(admin, "foundation.audit.default", b"{}")
    reader = AuditLog(admin.jetstream())
    assert (await reader.verify()).ok
    assert (await log.verify()).records == 3


async def _writers(connect_as: ConnectAs, n: int = 3) -> list[AuditLog]:
    """``n`` writers (nodes ``n0``…), each on a connection of its own, on one stream."""
    writers = []
    for i in range(n):
        nc = await connect_as("node")
        writers.append(AuditLog(nc.jetstream(), node=f"n{i}", checkpoint_every=0))
    await writers[0].ensure()
    return writers


def _lines(records: list[dict[str, object]]) -> list[str]:
    return [canonical(r).decode() for r in records]


async def test_verify_detects_each_kind_of_tampering_on_an_export(
    connect_as: ConnectAs, tmp_path: Path
) -> None:
    key = KeyPair.create("server")
    log = await _filled(connect_as, key)
    buf = io.StringIO()
    assert await log.export(buf) == 15
    lines = buf.getvalue().splitlines()
    records = [json.loads(ln) for ln in lines]
    assert verify_records(lines, trusted_keys=[key.public_key]).ok

    modified = [dict(r) for r in records]
    modified[3] = {**modified[3], "subject": "acc-999"}
    removed = records[:3] + records[4:]
    reordered = [*records[:3], records[4], records[3], *records[5:]]
    inserted = [*records[:3], {**records[3], "event": "agent.stop"}, *records[3:]]
    for name, bad in (
        ("modified", modified),
        ("removed", removed),
        ("reordered", reordered),
        ("inserted", inserted),
    ):
        result = verify_records(_lines(bad))
        assert not result.ok, name
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(_lines(bad)) + "\n")
        assert await run_audit_async(["verify", "--file", str(path)], out=io.StringIO()) == 1

    # rewriting a record and recomputing every later hash still breaks the signed checkpoint
    rewritten = [dict(r) for r in records]
    rewritten[1]["subject"] = "acc-999"
    prev = record_hash(canonical(rewritten[1]))
    for rec in rewritten[2:]:
        rec["prev"] = prev
        prev = record_hash(canonical(rec))
    result = verify_records(_lines(rewritten))
    assert not result.ok
    assert any("signature" in p for p in result.problems)

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    assert await run_audit_async(["verify", "--file", str(good)], out=out) == 0
    assert json.loads(out.getvalue())["records"] == 15


async def test_the_audit_command_against_the_cluster(
    connect_as: ConnectAs, secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    await _filled(connect_as, KeyPair.create("server"), n=3)
    common = [
        "--nats",
        secure_server.url,
        "--creds",
        str(secure_setup.creds_for("admin")),
        "--tls-ca",
        str(secure_setup.ca),
    ]
    out = io.StringIO()
    assert await run_audit_async(["verify", *common], out=out) == 0
    assert json.loads(out.getvalue())["ok"] is True
    out = io.StringIO()
    assert await run_audit_async(["tail", "-n", "2", *common], out=out) == 0
    assert len(out.getvalue().splitlines()) == 2
    out = io.StringIO()
    assert await run_audit_async(["export", *common], out=out) == 0
    assert len(out.getvalue().splitlines()) == 4
    # no credentials: a refused login is a usage/connection error (2), never a crash
    out = io.StringIO()
    code = await run_audit_async(
        ["verify", "--nats", secure_server.url, "--tls-ca", str(secure_setup.ca)], out=out
    )
    assert code == 2 and "refused the login" in out.getvalue()


async def test_a_fact_recorded_by_several_writers_is_stored_once(connect_as: ConnectAs) -> None:
    writers = await _writers(connect_as)
    await writers[0].append("agent.spawn", subject="a-1")
    results = await asyncio.gather(
        *(w.append("quota.set", subject="acme", msg_id="quota.set.acme.42") for w in writers)
    )
    assert sum(r is not None for r in results) == 1
    await writers[1].append("agent.stop", subject="a-1")  # a writer that lost keeps appending
    result = await writers[2].verify()
    assert result.ok, result.problems
    assert [r["event"] for r in await writers[0].tail(10)] == [
        "agent.spawn",
        "quota.set",
        "agent.stop",
    ]


async def test_batches_share_one_chain_with_single_records_and_other_writers(
    connect_as: ConnectAs,
) -> None:
    writers = await _writers(connect_as)

    async def write(log: AuditLog) -> None:
        for j in range(5):
            batch = [{"event": "agent.call", "subject": f"{log.node}-{j}-{k}"} for k in range(8)]
            stored = await log.append_many(batch)
            assert [r.fields["subject"] for r in stored] == [b["subject"] for b in batch]
            await log.append("agent.stop", subject=f"{log.node}-{j}")

    await asyncio.gather(*(write(w) for w in writers))
    result = await writers[0].verify()
    assert result.ok, result.problems
    assert result.records == 3 * 5 * 9 == result.head_seq
    info = await writers[0].js.stream_info(writers[0].stream)
    assert info.state.messages == 3 * 5 * 2  # a batch is one message
    # each writer's records stay in its own order, whatever the interleaving
    records = await writers[1].tail(135)
    assert [r["seq"] for r in records] == list(range(1, 136))
    for w in writers:
        mine = [r["subject"] for r in records if r["node"] == w.node]
        assert mine == [
            s for j in range(5) for s in (*(f"{w.node}-{j}-{k}" for k in range(8)), f"{w.node}-{j}")
        ]
    # a tail shorter than a batch is cut from inside it
    assert [r["seq"] for r in await writers[2].tail(3)] == [133, 134, 135]


async def test_a_batch_over_the_message_limit_is_split(connect_as: ConnectAs) -> None:
    nc = await connect_as("node")
    log = AuditLog(nc.jetstream(), node="n1", checkpoint_every=0)
    await log.ensure()
    big = "x" * (MAX_BATCH_BYTES // 3)
    stored = await log.append_many(
        [{"event": "config.set", "subject": f"s{i}", "details": {"blob": big}} for i in range(5)]
    )
    assert [r.seq for r in stored] == [1, 2, 3, 4, 5]
    info = await log.js.stream_info(log.stream)
    assert 1 < info.state.messages < 5
    for seq in range(1, info.state.messages + 1):
        msg = await log.js.get_msg(log.stream, seq)
        assert len(msg.data or b"") <= MAX_BATCH_BYTES
    assert (await log.verify()).ok


async def test_the_node_writer_batches_keeps_record_times_and_flushes(
    connect_as: ConnectAs,
) -> None:
    nc = await connect_as("node")
    # a linger far longer than any test: only flush() can write these records
    writer = AuditWriter(AuditLog(nc.jetstream(), node="n1"), tenant="default", linger=3600)
    await writer.start()
    try:
        for i in range(50):
            writer.record("agent.spawn", principal="node/n1", subject=f"a{i}")
        writer.record("quota.set", subject="acme", msg_id="quota.set.acme.7")
        writer.record("agent.stop", principal="node/n1", subject="a0")
        await writer.flush()
        assert writer.written == 52 and writer.dropped == 0
        log = writer.log
        info = await log.js.stream_info(log.stream)
        # the 50 spawns in one message, the fact with an id alone, the stop in a third
        assert info.state.messages == 3
        msg = await log.js.get_msg(log.stream, 1)
        assert len(records_of(msg.data or b"")) == 50
        records = await log.tail(52)
        assert [r["subject"] for r in records] == [*(f"a{i}" for i in range(50)), "acme", "a0"]
        times = [r["time"] for r in records]
        assert times == sorted(times) and len(set(times[:50])) > 1  # when recorded, not written
        assert (await log.verify()).ok
        writer.record("agent.spawn", principal="node/n1", subject="late")
    finally:
        await writer.close()  # writes what is queued without waiting out the linger
    assert writer.written == 53
