"""The audit trail: an append-only, hash-chained JetStream stream with signed checkpoints.

Every record is canonical JSON (sorted keys, no spaces, ASCII) with ``seq`` (its position
in the chain, from 1), ``time``, ``tenant``, ``principal``, ``event``, ``subject``,
``details``, the writing ``node`` and ``prev``: the SHA-256 of the previous record's bytes
(64 zeros for the first). The stream denies deleting and purging messages, and is
replicated (R3 on a 3-server cluster).

**Batches.** One stream message holds one record or several consecutive ones, one per line
(:func:`records_of`): a node's writer puts what it recorded within a short interval into one
message, so a busy node pays one JetStream publish per batch instead of one per record. The
chain runs through the lines; a batch is stored whole or not at all.

**Several writers, one chain.** A writer appends with ``Nats-Expected-Last-Sequence`` set
to the stream sequence of the message that holds the record its first ``prev`` hashes:
JetStream stores the message only if nothing was appended in between, so records from
different nodes can never fork the chain. A writer that loses (wrong last sequence) reads
the new head and tries again.

**Checkpoints.** Every ``checkpoint_every`` records (at the end of the batch that reaches
the count, and on :meth:`AuditLog.checkpoint`) the writer appends an ``audit.checkpoint``
record whose details carry the writing node's public key and its ed25519 signature of
``(seq, prev)``: rewriting the chain before it needs that node's key. :func:`verify_records`
reports a modified, removed, reordered or inserted record, a bad signature, and a key not in
``trusted_keys``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from foundation._errors import AuditError, ClusterError
from foundation._wire import CAS_ERROR_CODES, DEFAULT_TENANT
from foundation.security._keys import KeyPair, verify
from foundation.security._roles import AUDIT_STREAM, AUDIT_SUBJECT_PREFIX, Principal

#: ``prev`` of the first record.
GENESIS: Final = "0" * 64
#: Event name of a signed checkpoint.
CHECKPOINT_EVENT: Final = "audit.checkpoint"
_HDR_EXPECTED_LAST_SEQ: Final = "Nats-Expected-Last-Sequence"
_HDR_MSG_ID: Final = "Nats-Msg-Id"
_VERSION: Final = 1
#: Most bytes one stream message of records holds (well under NATS's default 1 MB payload).
MAX_BATCH_BYTES: Final = 256 * 1024


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record is stored and hashed as (sorted keys, compact, ASCII)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_hash(data: bytes) -> str:
    """SHA-256 (hex) of a record's bytes: the next record's ``prev``."""
    return hashlib.sha256(data).hexdigest()


def records_of(data: bytes) -> list[bytes]:
    """The records one stored message holds, in chain order (one per line)."""
    return [line for line in data.split(b"\n") if line.strip()]


def _body(
    event: str,
    tenant: str,
    principal: Principal | str | None,
    subject: str,
    details: Mapping[str, Any] | None,
    time: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": event,
        "tenant": tenant,
        "principal": str(principal) if principal is not None else None,
        "subject": subject,
        "details": dict(details or {}),
    }
    if time is not None:
        body["time"] = time
    return body


def iso_time(t: float | None = None) -> str:
    """``t`` (seconds since the epoch; default: now) as a record's ISO 8601 UTC ``time``."""
    when = dt.datetime.now(dt.UTC) if t is None else dt.datetime.fromtimestamp(t, dt.UTC)
    return when.isoformat(timespec="microseconds")


def _checkpoint_message(seq: int, prev: str) -> bytes:
    return f"foundation-audit-checkpoint:{seq}:{prev}".encode()


@dataclass(frozen=True)
class AuditRecord:
    """One stored record: its fields, its bytes' hash and its position in the chain."""

    seq: int
    """Position in the chain (the record's ``seq`` field)."""
    hash: str
    """SHA-256 of the stored bytes."""
    fields: dict[str, Any]
    """The record as written."""


@dataclass(frozen=True)
class _Head:
    """Where a writer appends next: the last message's stream sequence, the last record's
    position in the chain and its hash."""

    stream_seq: int
    seq: int
    hash: str


@dataclass
class VerifyResult:
    """What :func:`verify_records` found."""

    records: int = 0
    """Records read."""
    checkpoints: int = 0
    """Valid signed checkpoints among them."""
    head_seq: int = 0
    """Sequence of the last record."""
    head_hash: str = GENESIS
    """Hash of the last record."""
    last_checkpoint_seq: int = 0
    """Sequence of the last valid checkpoint (records after it are not yet signed)."""
    problems: list[str] = field(default_factory=list)
    """Every inconsistency, first one first; empty for an intact trail."""

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "problems": self.problems,
        }


def verify_records(
    records: Iterable[bytes | str | Mapping[str, Any]],
    *,
    trusted_keys: Sequence[str] | None = None,
    start_prev: str = GENESIS,
    start_seq: int = 1,
    max_problems: int = 20,
) -> VerifyResult:
    """Check a trail (stored bytes, export lines or parsed records), in order.

    Each record must carry the next ``seq`` and the hash of the one before it as ``prev``;
    each checkpoint's signature must verify with its key (one of ``trusted_keys`` when
    given). Records are re-encoded canonically, so an export's lines verify like the stream.
    """
    result = VerifyResult()
    prev, expected_seq = start_prev, start_seq
    for item in records:
        if isinstance(item, Mapping):
            rec: Any = dict(item)
        else:
            try:
                rec = json.loads(item)
            except ValueError:
                result.problems.append(f"record #{result.records + 1} is not JSON")
                result.records += 1
                continue
        if not isinstance(rec, dict):
            result.problems.append(f"record #{result.records + 1} is not an object")
            result.records += 1
            continue
        data = canonical(rec)
        seq = rec.get("seq")
        if seq != expected_seq:
            result.problems.append(
                f"record seq {seq} where {expected_seq} was expected (removed, reordered or "
                "inserted record)"
            )
        if rec.get("prev") != prev:
            result.problems.append(
                f"record seq {seq}: prev does not match the hash of the record before it "
                "(modified, removed, reordered or inserted record)"
            )
        if rec.get("event") == CHECKPOINT_EVENT:
            details = rec.get("details") or {}
            key, sig = str(details.get("key", "")), str(details.get("sig", ""))
            try:
                raw_sig = base64.b64decode(sig, validate=True)
            except ValueError:
                raw_sig = b""
            if not verify(key, _checkpoint_message(int(seq or 0), str(rec.get("prev"))), raw_sig):
                result.problems.append(f"checkpoint seq {seq}: the signature does not verify")
            elif trusted_keys is not None and key not in trusted_keys:
                result.problems.append(f"checkpoint seq {seq}: signed by untrusted key {key}")
            else:
                result.checkpoints += 1
                result.last_checkpoint_seq = int(seq or 0)
        prev = record_hash(data)
        expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        result.records += 1
        result.head_seq = int(seq) if isinstance(seq, int) else result.head_seq
        result.head_hash = prev
        if len(result.problems) >= max_problems:
            result.problems.append("too many problems; stopped")
            break
    return result


def verify_file(
    path: str | os.PathLike[str], *, trusted_keys: Sequence[str] | None = None
) -> VerifyResult:
    """Verify an export (JSON lines, as written by :meth:`AuditLog.export`)."""
    with open(path, encoding="utf-8") as fh:
        return verify_records((ln for ln in fh if ln.strip()), trusted_keys=trusted_keys)


class AuditLog:
    """Writer and reader of the audit stream, over one JetStream context.

    ``node`` names the writer in each record; ``key`` (an nkey pair, e.g. the node's) signs
    checkpoints every ``checkpoint_every`` records, at the end of the batch that reaches the
    count (0: only on :meth:`checkpoint`).
    ``replicas`` is the stream's replication (3 on a 3-server cluster).
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        node: str = "",
        key: KeyPair | None = None,
        replicas: int = 1,
        checkpoint_every: int = 1000,
        stream: str = AUDIT_STREAM,
        max_attempts: int = 100,
    ) -> None:
        self.js = js
        self.node = node
        self.key = key
        self.replicas = replicas
        self.checkpoint_every = checkpoint_every
        self.stream = stream
        self.max_attempts = max_attempts
        self._head: _Head | None = None
        self._lock = asyncio.Lock()
        self._since_checkpoint = 0

    def config(self) -> StreamConfig:
        """The stream's configuration: append-only, replicated, on disk."""
        return StreamConfig(
            name=self.stream,
            subjects=[f"{AUDIT_SUBJECT_PREFIX}.>"],
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
        )

    async def ensure(self) -> None:
        """Create the stream if it does not exist (an existing one is left as it is)."""
        try:
            await self.js.stream_info(self.stream)
            return
        except NotFoundError:
            pass
        try:
            await self.js.add_stream(self.config())
        except APIError as exc:
            raise AuditError(
                f"could not create the audit stream {self.stream}: {exc}; check JetStream and "
                "the credentials' permissions (node role)",
                details={"stream": self.stream},
                cause=exc,
            ) from exc

    async def head(self) -> tuple[int, str]:
        """The last record's position in the chain and its hash, read from the stream."""
        head = await self._read_head()
        return head.seq, head.hash

    async def _read_head(self) -> _Head:
        info = await self.js.stream_info(self.stream)
        last = int(info.state.last_seq)
        if last == 0:
            return _Head(0, 0, GENESIS)
        msg = await self.js.get_msg(self.stream, last)
        lines = records_of(msg.data or b"")
        try:
            seq = json.loads(lines[-1])["seq"] if lines else None
        except (ValueError, KeyError, TypeError):
            seq = None
        if not isinstance(seq, int):
            raise AuditError(
                f"the last message of {self.stream} (sequence {last}) holds no record with an "
                "integer seq; run `foundation audit verify`",
                details={"stream": self.stream, "stream_seq": last},
            )
        return _Head(last, seq, record_hash(lines[-1]))

    async def append(
        self,
        event: str,
        *,
        tenant: str = DEFAULT_TENANT,
        principal: Principal | str | None = None,
        subject: str = "",
        details: Mapping[str, Any] | None = None,
        msg_id: str | None = None,
        time: str | None = None,
    ) -> AuditRecord | None:
        """Append one record to the chain (compare-and-set on the last sequence); ``time``
        (ISO 8601) is when the fact happened (default: now).

        ``msg_id`` names the fact the record is about, for facts several nodes see and record
        (a quota change watched by every node): JetStream stores the first append with that
        id within the stream's duplicate window and acknowledges the others as duplicates,
        for which this returns ``None``.
        """
        body = _body(event, tenant, principal, subject, details, time)
        async with self._lock:
            recs = await self._append([body], msg_id=msg_id)
            if not recs:
                return None
            await self._count(1)
            return recs[0]

    async def append_many(self, bodies: Sequence[Mapping[str, Any]]) -> list[AuditRecord]:
        """Append several records in order, as few stream messages as fit (a batch).

        Each body has ``event`` and optionally ``tenant``, ``principal``, ``subject``,
        ``details`` and ``time`` (ISO 8601; default: now); the stream subject is the first
        body's tenant's. Returns the records as stored.
        """
        todo = [
            _body(
                str(b["event"]),
                str(b.get("tenant", DEFAULT_TENANT)),
                b.get("principal"),
                str(b.get("subject", "")),
                b.get("details"),
                b.get("time"),
            )
            for b in bodies
        ]
        out: list[AuditRecord] = []
        async with self._lock:
            while todo:
                recs = await self._append(todo)
                out += recs
                todo = todo[len(recs) :]
                await self._count(len(recs))
        return out

    async def _count(self, n: int) -> None:
        self._since_checkpoint += n
        if (
            self.key is not None
            and self.checkpoint_every > 0
            and self._since_checkpoint >= self.checkpoint_every
        ):
            await self._checkpoint()

    async def checkpoint(self) -> AuditRecord:
        """Append a checkpoint signed with ``key`` over the current head."""
        async with self._lock:
            return await self._checkpoint()

    async def _checkpoint(self) -> AuditRecord:
        if self.key is None:
            raise AuditError("checkpoints need a signing key: pass key= to AuditLog")
        key = self.key

        def sign(seq: int, prev: str) -> dict[str, Any]:
            sig = base64.b64encode(key.sign(_checkpoint_message(seq, prev))).decode()
            return {"key": key.public_key, "sig": sig}

        recs = await self._append(
            [{"event": CHECKPOINT_EVENT, "tenant": "", "principal": None, "subject": ""}],
            sign=sign,
        )
        self._since_checkpoint = 0
        return recs[0]  # only an append with a msg_id can be a duplicate

    async def _append(
        self,
        bodies: Sequence[dict[str, Any]],
        *,
        sign: Any = None,
        msg_id: str | None = None,
    ) -> list[AuditRecord]:
        """Store the longest prefix of ``bodies`` that fits one message (at least one
        record); ``[]`` when JetStream acknowledged ``msg_id`` as a duplicate."""
        subject = f"{AUDIT_SUBJECT_PREFIX}.{bodies[0].get('tenant') or 'cluster'}"
        for _ in range(self.max_attempts):
            if self._head is None:
                self._head = await self._read_head()
            head = self._head
            seq, prev = head.seq, head.hash
            now = iso_time()
            recs: list[AuditRecord] = []
            lines: list[bytes] = []
            size = 0
            for body in bodies:
                rec = dict(body)
                rec.update(
                    {
                        "v": _VERSION,
                        "seq": seq + 1,
                        "prev": prev,
                        "node": self.node,
                        "time": body.get("time") or now,
                    }
                )
                if sign is not None:
                    rec["details"] = sign(seq + 1, prev)
                data = canonical(rec)
                if lines and size + len(data) + 1 > MAX_BATCH_BYTES:
                    break
                seq, prev = seq + 1, record_hash(data)
                recs.append(AuditRecord(seq, prev, rec))
                lines.append(data)
                size += len(data) + 1
            headers = {_HDR_EXPECTED_LAST_SEQ: str(head.stream_seq)}
            if msg_id is not None:
                headers[_HDR_MSG_ID] = msg_id
            try:
                ack = await self.js.publish(
                    subject, b"\n".join(lines), stream=self.stream, headers=headers
                )
            except APIError as exc:
                if exc.err_code in CAS_ERROR_CODES:
                    self._head = None  # another writer appended: read the new head, retry
                    continue
                raise AuditError(
                    f"could not append to the audit stream: {exc}",
                    details={"stream": self.stream},
                    cause=exc,
                ) from exc
            if ack.duplicate:
                self._head = None  # another node recorded this fact; the head is its record
                return []
            self._head = _Head(int(ack.seq), seq, prev)
            return recs
        raise AuditError(
            f"the audit append lost {self.max_attempts} compare-and-set rounds in a row; the "
            "trail is very busy: retry",
            details={"stream": self.stream},
            retryable=True,
        )

    async def raw(self, start_seq: int = 1) -> AsyncIterator[bytes]:
        """The stored bytes of every record, in chain order, from the message at stream
        sequence ``start_seq`` to the current head."""
        info = await self.js.stream_info(self.stream)
        last = int(info.state.last_seq)
        if last < start_seq:
            return
        sub = await self.js.subscribe(
            f"{AUDIT_SUBJECT_PREFIX}.>",
            stream=self.stream,
            ordered_consumer=True,
            pending_msgs_limit=-1,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
            ),
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=30)
                for line in records_of(msg.data):
                    yield line
                if msg.metadata.sequence.stream >= last:
                    return
        finally:
            await sub.unsubscribe()

    async def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""
        info = await self.js.stream_info(self.stream)
        last = int(info.state.last_seq)
        out = []
        # every message holds at least one record: the last n messages hold the last n
        async for data in self.raw(max(1, last - n + 1)):
            out.append(json.loads(data))
        return out[-n:] if n > 0 else []

    async def export(self, out: TextIO) -> int:
        """Write every record as one JSON line to ``out``; return how many."""
        count = 0
        async for data in self.raw():
            out.write(data.decode() + "\n")
            count += 1
        return count

    async def verify(self, *, trusted_keys: Sequence[str] | None = None) -> VerifyResult:
        """Verify the whole stream (see :func:`verify_records`)."""
        datas = [d async for d in self.raw()]
        return verify_records(datas, trusted_keys=trusted_keys)


# --- the `foundation audit` command ---------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="foundation audit", description="The audit trail.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, text in (
        ("tail", "print the last records"),
        ("verify", "check the hash chain and signed checkpoints (exit 1 if broken)"),
        ("export", "write every record as JSON lines"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--nats", default=os.environ.get("FOUNDATION_NATS_URL"))
        sp.add_argument("--creds", default=None, help="creds file (admin role)")
        sp.add_argument("--tls-ca", default=None, help="CA of the cluster")
        if name == "tail":
            sp.add_argument("-n", type=int, default=20)
        if name == "verify":
            sp.add_argument("--file", default=None, help="verify an export instead")
            sp.add_argument("--trusted-key", action="append", default=None)
        if name == "export":
            sp.add_argument("--out", default="-")
    return p


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    from foundation.security._auth import NatsAuth, secure_connect

    if args.cmd == "verify" and args.file:
        result = await asyncio.to_thread(verify_file, args.file, trusted_keys=args.trusted_key)
        out.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return 0 if result.ok else 1
    if not args.nats:
        out.write("error: give --nats URL (or set FOUNDATION_NATS_URL)\n")
        return 2
    auth = NatsAuth.of(NatsAuth.from_env(), creds=args.creds, tls_ca=args.tls_ca)
    nc = await secure_connect(args.nats, auth, name="foundation-audit")
    try:
        log = AuditLog(nc.jetstream())
        if args.cmd == "tail":
            for rec in await log.tail(args.n):
                out.write(json.dumps(rec, sort_keys=True) + "\n")
            return 0
        if args.cmd == "export":
            if args.out == "-":
                await log.export(out)
            else:
                fh = await asyncio.to_thread(open, args.out, "w", encoding="utf-8")
                try:
                    await log.export(fh)
                finally:
                    fh.close()
            return 0
        result = await log.verify(trusted_keys=args.trusted_key)
        out.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return 0 if result.ok else 1
    finally:
        await nc.close()


async def run_audit_async(argv: Sequence[str], *, out: TextIO | None = None) -> int:
    """:func:`run_audit` inside a running event loop."""
    stream = out or sys.stdout
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return await _run(args, stream)
    except (ClusterError, OSError) as exc:
        stream.write(f"error: {exc}\n")
        return 2


def run_audit(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """``foundation audit tail|verify|export``: 0 on success (an intact trail), 1 when
    ``verify`` finds a problem, 2 on a usage or connection error."""
    return asyncio.run(run_audit_async(sys.argv[1:] if argv is None else argv, out=out))


__all__ = [
    "CHECKPOINT_EVENT",
    "GENESIS",
    "AuditLog",
    "AuditRecord",
    "VerifyResult",
    "canonical",
    "record_hash",
    "records_of",
    "run_audit",
    "run_audit_async",
    "verify_file",
    "verify_records",
]
