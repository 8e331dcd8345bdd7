"""A thin compare-and-set layer over JetStream KV.

:class:`KV` wraps one bucket:

- ``create(key, value)`` writes only if the key is absent ("expect revision 0"); a key whose
  last message is a tombstone (delete, purge, or a server-written expiry marker) counts as
  absent;
- ``update(key, value, last=rev)`` writes only if the key's revision is still ``rev``;
- ``delete(key, last=rev)`` / ``purge`` write a tombstone (optionally CAS-guarded);
- ``get``, ``keys``, ``items`` read; ``watch`` is an async iterator of typed
  :class:`KVEntry` (puts, deletes, purges and TTL expiries);
- TTLs are ``timedelta`` values sent as a per-message TTL (``Nats-TTL``, whole seconds, at
  least one second: that is the server's granularity).

Every NATS error is translated here, where it enters our code, into the errors of
:mod:`foundation._errors`: a lost CAS is :class:`CASConflictError` (or
:class:`KeyExistsError` for ``create``), an unreachable server or a missing quorum is
:class:`NatsUnavailableError`.

Buckets are created idempotently by :meth:`KV.open` from a :class:`BucketSpec`, with the
replication factor chosen from the cluster size (:func:`foundation._wire.replicas_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from foundation import _wire as wire
from foundation._errors import (
    CASConflictError,
    ClusterError,
    InvalidKeyError,
    KeyExistsError,
    NatsUnavailableError,
)
from foundation._ids import check_key, check_token
from foundation.nats.connect import (
    PLACEMENT_WAIT,
    cluster_size,
    connect,
    when_jetstream_ready,
    while_placing,
)

log = logging.getLogger("foundation.kv")

#: Timeout of one JetStream request (publish, get) made by this layer.
DEFAULT_REQUEST_TIMEOUT = 2.0


class Op(enum.StrEnum):
    """What a KV entry records."""

    PUT = "put"
    """A value was written."""
    DELETE = "delete"
    """The key was deleted (tombstone)."""
    PURGE = "purge"
    """The key was purged (tombstone, history removed)."""
    EXPIRE = "expire"
    """The key's per-message TTL (or the bucket's max age) ran out; written by the server."""


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One revision of one key: a value or a tombstone."""

    bucket: str
    """Bucket name."""
    key: str
    """Key within the bucket."""
    value: bytes
    """Stored bytes (empty for tombstones)."""
    revision: int
    """Stream sequence of this revision: strictly increasing per bucket; the CAS token."""
    op: Op = Op.PUT
    """What this entry records."""
    timestamp_ns: int = 0
    """Server timestamp in Unix nanoseconds (known for watched entries, else 0)."""
    delta: int = 0
    """Entries still pending behind this one when it was delivered (watch only)."""

    @property
    def created(self) -> datetime | None:
        """Server timestamp as an aware datetime (None when unknown)."""
        if not self.timestamp_ns:
            return None
        return datetime.fromtimestamp(self.timestamp_ns / 1e9, UTC)

    @property
    def deleted(self) -> bool:
        """True for a tombstone (delete, purge or expiry)."""
        return self.op is not Op.PUT


def ttl_header(ttl: timedelta) -> str:
    """Render ``ttl`` as a ``Nats-TTL`` value; it must be a whole number of seconds >= 1."""
    total = ttl.total_seconds()
    if total < 1 or total != int(total):
        raise InvalidKeyError(
            f"a KV TTL must be a whole number of seconds, at least 1 (got {total}s); the "
            "server stores per-message TTLs in whole seconds",
            details={"ttl": total},
        )
    return f"{int(total)}s"


def _op_of(headers: dict[str, str] | None) -> Op:
    if not headers:
        return Op.PUT
    kv_op = headers.get(wire.HDR_KV_OPERATION)
    if kv_op == wire.KV_OP_DEL:
        return Op.DELETE
    if kv_op == wire.KV_OP_PURGE:
        return Op.PURGE
    reason = headers.get(wire.HDR_MARKER_REASON)
    if reason == wire.MARKER_MAX_AGE:
        return Op.EXPIRE
    if reason == wire.MARKER_PURGE:
        return Op.PURGE
    if reason == wire.MARKER_REMOVE:
        return Op.DELETE
    return Op.PUT


def translate(exc: BaseException, *, op: str, bucket: str, key: str | None = None) -> Exception:
    """Translate a NATS exception into a :mod:`foundation._errors` error (returned, not raised)."""
    details: dict[str, Any] = {"op": op, "bucket": bucket}
    if key is not None:
        details["key"] = key
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
        return CASConflictError(
            f"{op} of {key!r} in {bucket!r} lost a compare-and-set; re-read and retry",
            details=details,
            cause=exc,
        )
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return ClusterError(
            f"JetStream does not answer {op} on {bucket!r} for this account (no responders): "
            "JetStream is off for it. A server enables an account's JetStream only when its "
            "limits fit what the server has left; its log then says 'insufficient storage "
            "resources available'. Give the server a larger max_file_store/max_memory_store "
            "or the account smaller JetStream limits",
            details=details,
            cause=exc,
        )
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.err_code
        details["err_code"] = code
        details["description"] = exc.description
        if code in wire.CAS_ERROR_CODES:
            return CASConflictError(
                f"{op} of {key!r} in {bucket!r} lost a compare-and-set; re-read and retry",
                details=details,
                cause=exc,
            )
        if code in wire.UNAVAILABLE_ERROR_CODES or (exc.code or 0) == 503:
            return NatsUnavailableError(
                f"JetStream could not serve {op} on {bucket!r} ({exc.description}); "
                "retry, and check that a majority of the JetStream servers is up",
                details=details,
                cause=exc,
            )
        if code == wire.ERR_CLUSTER_NO_PEERS:
            return ClusterError(
                f"JetStream refused {op} on {bucket!r}: {exc.description} (code {code}); "
                "start the missing JetStream servers, or lower the replication factor",
                details=details,
                cause=exc,
            )
        return ClusterError(
            f"JetStream refused {op} on {bucket!r}: {exc.description} (code {code})",
            details=details,
            cause=exc,
        )
    if isinstance(
        exc,
        nats.errors.TimeoutError
        | asyncio.TimeoutError
        | nats.errors.NoRespondersError
        | nats.js.errors.NoStreamResponseError
        | nats.errors.ConnectionClosedError
        | nats.errors.ConnectionDrainingError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.StaleConnectionError
        | nats.errors.UnexpectedEOF
        | ConnectionError,
    ):
        return NatsUnavailableError(
            f"NATS did not answer {op} on {bucket!r} ({type(exc).__name__}); retry, and "
            "check the server is running and reachable",
            details=details,
            cause=exc,
        )
    if isinstance(exc, nats.errors.Error):
        return ClusterError(
            f"NATS error during {op} on {bucket!r}: {exc}", details=details, cause=exc
        )
    return exc if isinstance(exc, Exception) else ClusterError(str(exc), details=details)


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """How a bucket is configured when :meth:`KV.open` creates it."""

    name: str
    """Bucket name (see :mod:`foundation._wire`)."""
    history: int = 1
    """Revisions kept per key."""
    marker_ttl: timedelta | None = None
    """How long the server keeps the delete marker it writes when a TTL expires (None: no
    markers, so watchers would not see expiries)."""
    max_age: timedelta | None = None
    """Bucket-wide maximum age of every value."""
    memory: bool = False
    """Memory storage instead of file storage."""
    description: str = ""
    """Human description stored with the stream."""


class KV:
    """Compare-and-set operations on one JetStream KV bucket.

    Obtain one with ``await KV.open(nc, BucketSpec(...))``. All methods raise the typed
    errors of :mod:`foundation._errors` only.
    """

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        bucket: str,
        *,
        replicas: int,
        direct: bool,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.nc = nc
        self.js = js
        self.bucket = bucket
        self.stream = wire.kv_stream(bucket)
        self.replicas = replicas
        self.timeout = timeout
        # Direct gets may be answered by any replica, so on a replicated bucket a follower
        # could return a slightly stale value; reads then go through the stream leader.
        self._direct = direct and replicas == 1
        self._pre = wire.kv_subject(bucket, "")

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        spec: BucketSpec,
        *,
        replicas: int | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,  # noqa: ASYNC109 - per request, not overall
        placement_wait: float = PLACEMENT_WAIT,
    ) -> KV:
        """Open bucket ``spec.name``, creating it first if needed (idempotent, race-safe).

        ``replicas`` defaults to :func:`foundation._wire.replicas_for` of the cluster size. An
        existing bucket is used as it is (its replication factor is kept). While a cluster is
        still forming JetStream may refuse to place a replicated bucket ("no suitable peers");
        creation is retried for up to ``placement_wait`` seconds before that error is raised.
        """
        js = nc.jetstream(timeout=timeout)
        stream = wire.kv_stream(spec.name)
        if replicas is None:
            replicas = wire.replicas_for(await cluster_size(nc))
        try:
            info = await when_jetstream_ready(lambda: js.stream_info(stream), wait=placement_wait)
        except nats.js.errors.NotFoundError:
            info = None
        except Exception as exc:
            raise translate(exc, op="open", bucket=spec.name) from exc
        if info is None:
            config = api.StreamConfig(
                name=stream,
                description=spec.description or None,
                subjects=[f"{wire.KV_SUBJECT_PREFIX}{spec.name}.>"],
                allow_direct=True,
                allow_rollup_hdrs=True,
                allow_msg_ttl=True,
                deny_delete=True,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=120.0,
                max_age=spec.max_age.total_seconds() if spec.max_age else None,
                max_consumers=-1,
                max_msgs=-1,
                max_msgs_per_subject=spec.history,
                num_replicas=replicas,
                storage=api.StorageType.MEMORY if spec.memory else api.StorageType.FILE,
                subject_delete_marker_ttl=(
                    spec.marker_ttl.total_seconds() if spec.marker_ttl else None
                ),
            )
            try:
                info = await while_placing(lambda: js.add_stream(config), wait=placement_wait)
            except nats.js.errors.APIError as exc:
                if exc.err_code != wire.ERR_STREAM_NAME_IN_USE:
                    raise translate(exc, op="create bucket", bucket=spec.name) from exc
                info = await js.stream_info(stream)  # created concurrently: use it
            except Exception as exc:
                raise translate(exc, op="create bucket", bucket=spec.name) from exc
        cfg = info.config
        if not cfg.allow_msg_ttl:
            raise ClusterError(
                f"bucket {spec.name!r} exists without per-message TTLs; delete it (or let "
                "foundation create it) so leases can expire",
                details={"bucket": spec.name},
            )
        return cls(
            nc,
            js,
            spec.name,
            replicas=int(cfg.num_replicas or 1),
            direct=bool(cfg.allow_direct),
            timeout=timeout,
        )

    # -- reads -----------------------------------------------------------------------------

    async def _last(self, key: str) -> KVEntry | None:
        """Last message of ``key`` (tombstones included) or None when the subject is empty."""
        try:
            msg = await self.js.get_msg(self.stream, subject=self._pre + key, direct=self._direct)
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:
            raise translate(exc, op="get", bucket=self.bucket, key=key) from exc
        headers = msg.headers or None
        return KVEntry(
            bucket=self.bucket,
            key=key,
            value=msg.data or b"",
            revision=int(msg.seq or 0),
            op=_op_of(headers),
        )

    async def get(self, key: str) -> KVEntry | None:
        """Current value of ``key``, or None if absent, deleted or expired.

        Read from the stream leader on replicated buckets (direct get, served by any replica,
        only on R1), so a read after an acknowledged write sees that write.
        """
        entry = await self._last(check_key(key))
        if entry is None or entry.deleted:
            return None
        return entry

    async def revision(self, key: str) -> int:
        """Revision of the key's last message (0 if none); a tombstone's revision counts."""
        entry = await self._last(check_key(key))
        return 0 if entry is None else entry.revision

    # -- writes ----------------------------------------------------------------------------

    async def _publish(
        self,
        key: str,
        value: bytes,
        *,
        op: str,
        last: int | None,
        ttl: timedelta | None = None,
        extra: dict[str, str] | None = None,
    ) -> int:
        headers: dict[str, str] = dict(extra or {})
        if last is not None:
            headers[wire.HDR_EXPECTED_LAST_SUBJECT_SEQ] = str(last)
        if ttl is not None:
            headers[wire.HDR_TTL] = ttl_header(ttl)
        try:
            ack = await self.js.publish(
                self._pre + key, value, timeout=self.timeout, headers=headers or None
            )
        except Exception as exc:
            err = translate(exc, op=op, bucket=self.bucket, key=key)
            if isinstance(err, CASConflictError):
                err.details["expected"] = last
            raise err from exc
        return int(ack.seq)

    async def put(self, key: str, value: bytes, *, ttl: timedelta | None = None) -> int:
        """Write unconditionally; returns the new revision. Not for ownership decisions."""
        return await self._publish(check_key(key), value, op="put", last=None, ttl=ttl)

    async def create(self, key: str, value: bytes, *, ttl: timedelta | None = None) -> int:
        """Write only if ``key`` is absent (or a tombstone); returns the new revision.

        Raises :class:`KeyExistsError` (``details['actual']`` = current revision) if the key
        holds a value. Of several concurrent creates of one key, exactly one succeeds.
        """
        check_key(key)
        last = 0
        for attempt in range(5):
            try:
                return await self._publish(key, value, op="create", last=last, ttl=ttl)
            except CASConflictError as exc:
                current = await self._last(key)
                if current is not None and not current.deleted:
                    raise KeyExistsError(
                        f"key {key!r} already exists in {self.bucket!r} "
                        f"(revision {current.revision})",
                        details={
                            "key": key,
                            "bucket": self.bucket,
                            "expected": 0,
                            "actual": current.revision,
                        },
                        cause=exc,
                    ) from exc
                # Absent, or the last message is a tombstone: create on top of it.
                new_last = 0 if current is None else current.revision
                if new_last == last:
                    # The write lost yet the read shows nothing newer: right after a stream
                    # leader change the read can lag the write that beat us (possibly our
                    # own, whose acknowledgement was lost). Look again shortly.
                    await asyncio.sleep(0.05 * (attempt + 1))
                last = new_last
        raise CASConflictError(
            f"create of {key!r} in {self.bucket!r} kept losing to concurrent writers; retry",
            details={"key": key, "bucket": self.bucket},
        )

    async def update(
        self, key: str, value: bytes, *, last: int, ttl: timedelta | None = None
    ) -> int:
        """Write only if the key's revision is still ``last``; returns the new revision.

        Raises :class:`CASConflictError` otherwise (including when the key has expired or been
        deleted since ``last`` was read).
        """
        if last <= 0:
            raise InvalidKeyError(
                "update needs the revision you read (last > 0); use create() for a new key",
                details={"key": key, "last": last},
            )
        return await self._publish(check_key(key), value, op="update", last=last, ttl=ttl)

    async def delete(self, key: str, *, last: int | None = None) -> int:
        """Write a delete tombstone (CAS-guarded when ``last`` is given); returns its revision."""
        return await self._publish(
            check_key(key),
            b"",
            op="delete",
            last=last,
            extra={wire.HDR_KV_OPERATION: wire.KV_OP_DEL},
        )

    async def purge(
        self, key: str, *, last: int | None = None, ttl: timedelta | None = None
    ) -> int:
        """Write a purge tombstone (drops the key's history); ``ttl`` expires the tombstone."""
        return await self._publish(
            check_key(key),
            b"",
            op="purge",
            last=last,
            ttl=ttl,
            extra={wire.HDR_KV_OPERATION: wire.KV_OP_PURGE, wire.HDR_ROLLUP: wire.ROLLUP_SUBJECT},
        )

    # -- scans -----------------------------------------------------------------------------

    async def items(self, pattern: str = ">") -> dict[str, KVEntry]:
        """Current live entries whose key matches ``pattern`` (read from the server now)."""
        out: dict[str, KVEntry] = {}
        async with self.watch(pattern) as watch:
            async for entry in watch.initial():
                if entry.deleted:
                    out.pop(entry.key, None)
                else:
                    out[entry.key] = entry
        return out

    async def keys(self, pattern: str = ">") -> list[str]:
        """Sorted live keys matching ``pattern``."""
        return sorted(await self.items(pattern))

    # -- watch -----------------------------------------------------------------------------

    def watch(
        self,
        pattern: str = ">",
        *,
        include_history: bool = False,
        idle_heartbeat: float = 1.0,
    ) -> Watch:
        """Watch keys matching ``pattern``: first the current entries, then every change.

        Use as ``async with kv.watch("a.>") as w: async for entry in w: ...``. The watch
        survives reconnects (an ordered consumer recreated from the last seen revision).
        """
        return Watch(self, pattern, include_history=include_history, idle_heartbeat=idle_heartbeat)


def _ack_fields(reply: str) -> tuple[int, int, int]:
    """Stream sequence, timestamp (ns) and pending count from a JetStream ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (9 tokens) or the
    v2 form with domain and account hash in front (and a random token at the end). Cheaper
    than ``Msg.metadata``, which also builds a datetime per message.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]), int(tokens[8])
    return int(tokens[7]), int(tokens[9]), int(tokens[10])


class _CaughtUp:
    """Queue marker: every entry that existed when the watch started has been delivered."""


class _Stop:
    """Queue marker: the watch was stopped."""


_CAUGHT_UP = _CaughtUp()
_STOP = _Stop()


class Watch:
    """An async iterator of :class:`KVEntry` for the keys matching a pattern.

    The initial entries (current values, or the full history with ``include_history``) come
    first; :meth:`wait_caught_up` returns once the consumer of the iterator has taken the last
    of them. Tombstones are delivered too (``entry.deleted``), including server-written
    expiry markers (``Op.EXPIRE``) when the bucket has ``marker_ttl`` set.
    """

    def __init__(
        self, kv: KV, pattern: str, *, include_history: bool, idle_heartbeat: float
    ) -> None:
        if pattern != ">" and not pattern.endswith(".>"):
            for token in pattern.split("."):
                if token not in {"*", ">"}:
                    check_token("key token", token, key=True)
        self._kv = kv
        self._pattern = pattern
        self._include_history = include_history
        self._idle_heartbeat = idle_heartbeat
        self._queue: asyncio.Queue[KVEntry | _CaughtUp | _Stop] = asyncio.Queue()
        self._sub: JetStreamContext.PushSubscription | None = None
        self._init_done = False
        self._caught_up = asyncio.Event()
        self._stopped = False
        self.last_revision = 0
        """Highest revision delivered so far."""

    async def start(self) -> Self:
        """Create the server-side consumer; entries start arriving."""
        kv = self._kv
        init_setup: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def on_msg(msg: Msg) -> None:
            if not init_setup.done():
                await init_setup
            seq, ts, pending = _ack_fields(msg.reply)
            entry = KVEntry(
                bucket=kv.bucket,
                key=msg.subject[len(kv._pre) :],
                value=msg.data or b"",
                revision=seq,
                op=_op_of(msg.headers or None),
                timestamp_ns=ts,
                delta=pending,
            )
            self._queue.put_nowait(entry)
            if entry.delta == 0 and not self._init_done:
                self._init_done = True
                self._queue.put_nowait(_CAUGHT_UP)

        deliver = None if self._include_history else api.DeliverPolicy.LAST_PER_SUBJECT
        try:
            self._sub = await kv.js.subscribe(
                kv._pre + self._pattern,
                stream=kv.stream,
                cb=on_msg,
                ordered_consumer=True,
                idle_heartbeat=self._idle_heartbeat,
                deliver_policy=deliver,
                inactive_threshold=300.0,
            )
            info = await self._sub.consumer_info()
        except Exception as exc:
            init_setup.cancel()
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
            raise translate(exc, op="watch", bucket=kv.bucket, key=self._pattern) from exc
        # Nothing to deliver only if the server has sent nothing either: its deliveries and
        # this info reply reach us in either order, so an empty `pending` alone is not enough.
        sent = int(info.delivered.consumer_seq or 0) if info.delivered is not None else 0
        if (
            int(info.num_pending or 0) == 0
            and sent == 0
            and self._sub.delivered == 0
            and not self._init_done
        ):
            self._init_done = True
            self._queue.put_nowait(_CAUGHT_UP)
        init_setup.set_result(True)
        return self

    async def stop(self) -> None:
        """Stop watching; the iterator ends."""
        if self._stopped:
            return
        self._stopped = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._queue.put_nowait(_STOP)

    @property
    def caught_up(self) -> bool:
        """True once the initial entries have all been taken from the iterator."""
        return self._caught_up.is_set()

    async def wait_caught_up(self) -> None:
        """Wait until the iterator's consumer has taken every initial entry."""
        await self._caught_up.wait()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> KVEntry:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Stop):
                self._queue.put_nowait(item)  # keep ending for later calls
                raise StopAsyncIteration
            if isinstance(item, _CaughtUp):
                self._caught_up.set()
                continue
            self.last_revision = max(self.last_revision, item.revision)
            return item

    async def initial(self) -> AsyncIterator[KVEntry]:
        """Yield only the entries that existed when the watch started, then end."""
        while True:
            if self._caught_up.is_set() and self._queue.empty():
                return
            item = await self._queue.get()
            if isinstance(item, _Stop):
                self._queue.put_nowait(item)
                return
            if isinstance(item, _CaughtUp):
                self._caught_up.set()
                return
            self.last_revision = max(self.last_revision, item.revision)
            yield item

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


__all__ = [
    "KV",
    "BucketSpec",
    "KVEntry",
    "Op",
    "Watch",
    "check_key",
    "check_token",
    "cluster_size",
    "connect",
    "translate",
    "ttl_header",
    "while_placing",
]
