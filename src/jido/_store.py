"""State stores: where agents' checkpoints live.

A :class:`StateStore` maps a key (usually the agent id) to the latest :class:`Checkpoint` of
that agent. The runtime saves a checkpoint after a command (or every N commands, or on stop)
and loads it when the agent starts again. Two backends ship with ``jido``:

* :class:`MemoryStore` — a dict in the process (tests, ephemeral agents);
* :class:`SQLiteStore` — one SQLite file in WAL mode, written from a dedicated thread with
  group commit, so the event loop never blocks on disk.

The cluster layer adds a store on a replicated key-value bucket behind the same interface.

Fencing: every checkpoint carries an ``epoch`` (the owner's generation). A store refuses a
``save`` whose epoch is lower than the epoch already stored for that key and raises
:class:`~jido.FencedError`: a newer owner has taken the agent over, and the writer must stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import sqlite3
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from enum import Enum
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgspec
from pydantic import BaseModel

from jido._errors import FencedError, JidoError, StoreError, ValidationError

__all__ = [
    "Checkpoint",
    "CorruptCheckpointError",
    "MemoryStore",
    "SQLiteStore",
    "StateStore",
]


class CorruptCheckpointError(StoreError):
    """A stored checkpoint cannot be decoded.

    ``details['key']`` names the key and ``details['reason']`` says what is wrong. Retrying
    does not help: delete the key (``await store.delete(key)``) or restore it from a backup.
    """

    type = "corrupt_checkpoint"
    default_retryable = False


class Checkpoint(msgspec.Struct, omit_defaults=True):
    """A snapshot of one agent, as saved in a :class:`StateStore`.

    Fields:

    * ``state`` — the agent's state as a plain dict (``state_model.model_dump()``); it is
      validated against the state model again when restored.
    * ``agent_type`` — the agent's type name, so a restore can check it has the right class.
    * ``seq`` — the number of commands applied so far (monotonic per agent).
    * ``meta`` — free-form metadata committed in the same write as the state (the cluster layer
      keeps the position of the last applied stream message here).
    * ``epoch`` — the owner's generation, used for fencing: a store refuses to overwrite a
      checkpoint with one of a lower epoch (see :class:`StateStore`). ``0`` when unused.
    * ``saved_at`` — wall-clock time (seconds since the Unix epoch) the checkpoint was taken.
    * ``timers`` — the agent's pending schedules, committed with the state that made them
      (see ``jido._timers``): ``{key: {"signal": ..., "due": ..., "cron": ...}}``.
    * ``sensors`` — the agent's durable sensors, committed with the command that started them
      (see ``jido._sensors_durable``): ``{key: {"class": "module:qualname", "id": ...,
      "source": ..., "config": {...}, "to_bus": bool}}``. Empty (and not encoded) when none,
      so checkpoints written before the field existed decode unchanged.

    Values inside ``state`` and ``meta`` must be plain data: ``dict``, ``list``, ``tuple``,
    ``str``, ``int`` (64-bit), ``float``, ``bool``, ``None``, ``bytes``, ``datetime``/``date``/
    ``time``, ``UUID``, ``Decimal``, enums, sets and pydantic models (stored as their JSON dump).
    Encoding uses msgpack (``to_bytes`` / ``from_bytes``): ``bytes`` and timezone-aware
    datetimes come back as such (in UTC); tuples and sets come back as lists and the other
    types as strings, which the state model turns back into the right type on restore.
    """

    state: dict[str, Any]
    agent_type: str
    seq: int = 0
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    epoch: int = 0
    saved_at: float = msgspec.field(default_factory=time.time)
    timers: dict[str, Any] = msgspec.field(default_factory=dict)
    sensors: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Encode to the compact binary form stored by the backends.

        Raises :class:`~jido.StoreError` (not retryable) if a value is not plain data.
        """
        try:
            return _encode(self)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise StoreError(
                f"checkpoint of agent type {self.agent_type!r} cannot be encoded: {exc}. "
                "Keep agent state to plain data (dicts, lists, str, numbers, bool, None, bytes, "
                "datetimes, UUIDs, enums, pydantic models).",
                details={"agent_type": self.agent_type, "reason": str(exc)},
                retryable=False,
                cause=exc,
            ) from exc

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, key: str = "") -> Checkpoint:
        """Decode bytes produced by :meth:`to_bytes`.

        Raises :class:`CorruptCheckpointError` (naming ``key``) if the bytes are not a checkpoint.
        """
        try:
            return _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
            raise CorruptCheckpointError(
                f"stored checkpoint for key {key!r} is unreadable ({exc}). Delete it with "
                "`await store.delete(key)` or restore it from a backup.",
                details={"key": key, "reason": str(exc), "size": len(data)},
                cause=exc,
            ) from exc


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Enum):  # pragma: no cover - msgspec encodes enums natively
        return obj.value
    raise TypeError(f"unsupported type {type(obj).__qualname__}")


_encode: Final[Callable[[Any], bytes]] = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode
_decoder: Final = msgspec.msgpack.Decoder(Checkpoint)


def _check_key(key: object) -> str:
    if type(key) is not str or not key:
        raise ValidationError(
            f"a state store key must be a non-empty string, got {key!r}",
            details={"key": repr(key)},
        )
    return key


def _check_checkpoint(checkpoint: object) -> Checkpoint:
    if not isinstance(checkpoint, Checkpoint):
        raise ValidationError(
            f"save() takes a jido.Checkpoint, got {type(checkpoint).__qualname__}",
            details={"got": type(checkpoint).__qualname__},
        )
    return checkpoint


def _fenced(key: str, epoch: int, stored_epoch: int) -> FencedError:
    return FencedError(
        f"checkpoint for key {key!r} refused: its epoch {epoch} is older than the stored "
        f"epoch {stored_epoch}. Another owner has taken this agent over; stop this copy.",
        details={"key": key, "epoch": epoch, "stored_epoch": stored_epoch},
    )


def _no_journal(store: StateStore) -> StoreError:
    return StoreError(
        f"{type(store).__name__} keeps no journals; use a MemoryStore or a SQLiteStore",
        retryable=False,
    )


def _check_entries(entries: object) -> list[bytes]:
    if isinstance(entries, bytes | str) or not isinstance(entries, Sequence):
        raise ValidationError("append() takes a sequence of bytes entries")
    out = [bytes(e) for e in entries if isinstance(e, bytes | bytearray | memoryview)]
    if len(out) != len(entries):
        raise ValidationError("every journal entry must be bytes")
    return out


def _closed(store: StateStore) -> StoreError:
    return StoreError(
        f"{type(store).__name__} is closed. Call `await store.open()` again or use "
        "`async with store:` around its use.",
        retryable=False,
    )


class StateStore(ABC):
    """Where agent checkpoints are kept: one latest :class:`Checkpoint` per key.

    Implement ``load``, ``save`` and ``delete``; override ``open`` / ``close`` when the store
    holds resources (they are idempotent no-ops here). A store is an async context manager:
    ``async with store: ...`` opens and closes it.

    Contract every backend keeps (checked by one shared test suite):

    * ``load`` of a missing key returns ``None``; a stored value that cannot be decoded raises
      :class:`CorruptCheckpointError` (never returns garbage, never silently drops it).
    * ``save`` replaces the key's checkpoint atomically; once it returns, a ``load`` (also from
      a new store on the same backing data) returns an equal checkpoint. Saves issued one after
      another from the same task are applied in that order.
    * **Fencing**: if the stored checkpoint has a higher ``epoch`` than the one being saved,
      ``save`` raises :class:`~jido.FencedError` and changes nothing. The check and the write
      are one atomic step. The runtime treats it as final: it rolls back the command, fails
      the caller with ``FencedError`` and stops the agent at once. ``delete`` is not fenced.
    * Errors are typed: :class:`~jido.StoreError` (``retryable`` when a retry may help),
      :class:`CorruptCheckpointError`, :class:`~jido.FencedError`,
      :class:`~jido.ValidationError` for a bad key or argument.
    """

    async def open(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Acquire resources (files, connections). Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release resources after finishing pending writes. Idempotent."""

    @abstractmethod
    async def load(self, key: str) -> Checkpoint | None:
        """Return the latest checkpoint saved under ``key``, or ``None`` if there is none."""

    @abstractmethod
    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` under ``key``, replacing the previous one.

        Raises :class:`~jido.FencedError` if the stored checkpoint has a higher epoch.
        """

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the checkpoint under ``key``; deleting a missing key is not an error."""

    # -- the journal: an append-only list of entries kept next to each key's checkpoint --------

    supports_journal: bool = False
    """True when the store keeps journals (:meth:`append` / :meth:`journal`)."""

    async def append(
        self,
        key: str,
        entries: Sequence[bytes],
        *,
        checkpoint: Checkpoint | None = None,
        epoch: int = 0,
    ) -> int:
        """Append ``entries`` to the journal of ``key``, with ``checkpoint`` in the same write.

        The entries and the checkpoint (when given) are committed together or not at all, so
        a writer that records a step in the journal and the state that step produced never
        leaves one without the other. The journal grows by exactly the given bytes: each entry
        is stored once. Fenced like :meth:`save` (with ``checkpoint.epoch``, or ``epoch`` when
        no checkpoint is given). Returns the journal's new length (number of entries).

        Stores without journals raise :class:`~jido.StoreError` (``supports_journal`` False).
        """
        raise _no_journal(self)

    async def journal(self, key: str, start: int = 0) -> list[bytes]:
        """The journal entries of ``key`` from position ``start`` on (empty when none)."""
        raise _no_journal(self)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class MemoryStore(StateStore):
    """A :class:`StateStore` in process memory, for tests and agents that need no durability.

    Checkpoints are kept encoded, so a loaded checkpoint never shares objects with the saved
    one (mutating either is safe) and state that a durable store could not encode fails here
    too. Usable without ``open()``; after ``close()`` it refuses calls until opened again.
    ``close()`` keeps the data: reopening the same instance finds it again.
    """

    supports_journal = True

    def __init__(self) -> None:
        self._data: dict[str, tuple[int, bytes]] = {}
        self._journals: dict[str, list[bytes]] = {}
        self._closed = False

    async def open(self) -> None:
        """Make the store usable (again). Idempotent."""
        self._closed = False

    async def close(self) -> None:
        """Refuse further calls until ``open()``; the data is kept. Idempotent."""
        self._closed = True

    async def load(self, key: str) -> Checkpoint | None:
        """Return the latest checkpoint under ``key``, or ``None``."""
        if self._closed:
            raise _closed(self)
        entry = self._data.get(_check_key(key))
        if entry is None:
            return None
        return Checkpoint.from_bytes(entry[1], key=key)

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` under ``key``; raises ``FencedError`` on an older epoch."""
        if self._closed:
            raise _closed(self)
        _check_key(key)
        epoch = _check_checkpoint(checkpoint).epoch
        blob = checkpoint.to_bytes()
        current = self._data.get(key)
        if current is not None and current[0] > epoch:
            raise _fenced(key, epoch, current[0])
        self._data[key] = (epoch, blob)

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if missing)."""
        if self._closed:
            raise _closed(self)
        self._data.pop(_check_key(key), None)
        self._journals.pop(key, None)

    async def append(
        self,
        key: str,
        entries: Sequence[bytes],
        *,
        checkpoint: Checkpoint | None = None,
        epoch: int = 0,
    ) -> int:
        """Append ``entries`` (and save ``checkpoint``) in one step; returns the new length."""
        if self._closed:
            raise _closed(self)
        _check_key(key)
        items = _check_entries(entries)
        blob = None
        if checkpoint is not None:
            epoch = _check_checkpoint(checkpoint).epoch
            blob = checkpoint.to_bytes()
        current = self._data.get(key)
        if current is not None and current[0] > epoch:
            raise _fenced(key, epoch, current[0])
        if blob is not None:
            self._data[key] = (epoch, blob)
        journal = self._journals.setdefault(key, [])
        journal.extend(items)
        return len(journal)

    async def journal(self, key: str, start: int = 0) -> list[bytes]:
        """The journal entries of ``key`` from ``start`` on."""
        if self._closed:
            raise _closed(self)
        return list(self._journals.get(_check_key(key), ())[max(start, 0) :])

    async def keys(self, prefix: str = "") -> list[str]:
        """Return the stored keys starting with ``prefix``, sorted."""
        if self._closed:
            raise _closed(self)
        return sorted(k for k in self._data if k.startswith(prefix))

    def __len__(self) -> int:
        return len(self._data)


# ---------------------------------------------------------------------------------------------
# SQLite

_TABLE_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_COLUMNS: Final = ("key", "epoch", "seq", "agent_type", "data")

_OP_SAVE: Final = 0
_OP_DELETE: Final = 1
_OP_LOAD: Final = 2
_OP_KEYS: Final = 3
_OP_PING: Final = 4
_OP_CLOSE: Final = 5
_OP_APPEND: Final = 6
_OP_JOURNAL: Final = 7
_WRITES: Final = frozenset({_OP_SAVE, _OP_DELETE, _OP_APPEND})

_Landed = Callable[[], None] | None
"""Called on the event loop once a write has been applied or refused (even if its caller left)."""
_Job = tuple[int, str, Any, asyncio.Future[Any] | None, _Landed]
_Result = tuple[asyncio.Future[Any], BaseException | None, Any, _Landed]


def _resolve(results: list[_Result]) -> None:
    for fut, exc, value, landed in results:
        if landed is not None:
            landed()
        if fut.done():  # the caller gave up (cancelled); the work itself was still done
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


def _deliver(results: list[_Result]) -> None:
    """Hand results to the event loops that wait for them (one wake-up per loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
    for item in results:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, items)


def _sql_error(action: str, path: str, exc: BaseException) -> StoreError:
    return StoreError(
        f"SQLite store at {path!r} failed to {action}: {exc}. Check the file, free disk space "
        "and permissions; the operation was not applied.",
        details={"path": path, "action": action, "reason": str(exc)},
        cause=exc,
    )


class _SQLiteWorker(threading.Thread):
    """The one thread that owns the SQLite connection.

    It takes jobs from a queue, groups consecutive writes into one transaction (group commit)
    and hands results back to the waiting event loop in one wake-up per batch.
    """

    def __init__(self, store: SQLiteStore, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._path = store.path
        self._table = store.table
        self._synchronous = store.synchronous
        self._busy_timeout = store.busy_timeout
        self._max_batch = store.max_batch
        self._conn: sqlite3.Connection | None = None
        self._open_error: BaseException | None = None
        t = self._table
        self._sql_save = (
            f"INSERT INTO {t} (key, epoch, seq, agent_type, data) VALUES (?, ?, ?, ?, ?) "
            f"ON CONFLICT(key) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq, "
            f"agent_type = excluded.agent_type, data = excluded.data "
            f"WHERE excluded.epoch >= {t}.epoch"
        )
        self._sql_epoch = f"SELECT epoch FROM {t} WHERE key = ?"
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"
        self._sql_load = f"SELECT data FROM {t} WHERE key = ?"
        self._sql_keys = f"SELECT key FROM {t} WHERE substr(key, 1, ?) = ? ORDER BY key"
        j = f"{t}_journal"
        self._journal_table = j
        self._sql_jlen = f"SELECT COALESCE(MAX(pos) + 1, 0) FROM {j} WHERE key = ?"
        self._sql_jadd = f"INSERT INTO {j} (key, pos, data) VALUES (?, ?, ?)"
        self._sql_jread = f"SELECT data FROM {j} WHERE key = ? AND pos >= ? ORDER BY pos"
        self._sql_jdelete = f"DELETE FROM {j} WHERE key = ?"

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, timeout=self._busy_timeout, check_same_thread=True
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} ("
                "key TEXT PRIMARY KEY NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, "
                "agent_type TEXT NOT NULL, data BLOB NOT NULL) WITHOUT ROWID"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._journal_table} ("
                "key TEXT NOT NULL, pos INTEGER NOT NULL, data BLOB NOT NULL, "
                "PRIMARY KEY (key, pos)) WITHOUT ROWID"
            )
            cols = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({self._table})"))
            if cols != _COLUMNS:
                raise StoreError(
                    f"table {self._table!r} in {self._path!r} exists with columns {cols}, not "
                    f"{_COLUMNS}. Use another table name (SQLiteStore(path, table=...)) or "
                    "another file.",
                    details={"path": self._path, "table": self._table, "columns": list(cols)},
                    retryable=False,
                )
        except BaseException:
            conn.close()
            raise
        return conn

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> None:
        get, get_nowait, empty = self.jobs.get, self.jobs.get_nowait, queue.Empty
        running = True
        while running:
            batch = [get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(get_nowait())
                except empty:
                    break
            results: list[_Result] = []
            try:
                running = self._process(batch, results)
            except Exception as exc:  # pragma: no cover - a bug here must not strand callers
                answered = {id(r[0]) for r in results}
                err = StoreError(f"internal error in the SQLite store thread: {exc!r}", cause=exc)
                results.extend(
                    (f, err, None, landed)
                    for *_, f, landed in batch
                    if f is not None and id(f) not in answered
                )
            finally:
                if results:
                    _deliver(results)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _open(self) -> sqlite3.Connection | None:
        """Open the connection if it is not open yet; a failure is kept for the batch."""
        if self._conn is None:
            try:
                self._conn = self._connect()
            except StoreError as exc:
                self._open_error = exc
            except (sqlite3.Error, OSError) as exc:
                self._open_error = _sql_error("open", self._path, exc)
                self._open_error.retryable = False
        return self._conn

    def _process(self, batch: list[_Job], results: list[_Result]) -> bool:
        # open now (or again after a failure: each batch retries), unless only closing
        closing_unopened = batch[0][0] == _OP_CLOSE and self._conn is None
        conn = None if closing_unopened else self._open()
        if conn is None:
            err = self._open_error
            for op, _key, _arg, fut, landed in batch:
                if fut is not None:
                    results.append((fut, None if op == _OP_CLOSE else err, None, landed))
                if op == _OP_CLOSE:
                    return False
            return True
        pending: list[_Result] = []  # writes in the open transaction, resolved at commit
        for op, key, arg, fut, landed in batch:
            if op in _WRITES:
                assert fut is not None
                if not pending:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    except sqlite3.Error as exc:
                        err = _sql_error("begin a write", self._path, exc)
                        results.append((fut, err, None, landed))
                        continue
                out = self._write(conn, op, key, arg)
                if isinstance(out, JidoError):
                    pending.append((fut, out, None, landed))
                else:
                    pending.append((fut, None, out, landed))
                continue
            if pending:
                self._commit(conn, pending, results)
                pending = []
            if op == _OP_CLOSE:
                if fut is not None:
                    results.append((fut, None, None, None))
                return False
            assert fut is not None
            results.append(self._read(conn, op, key, arg, fut))
        if pending:
            self._commit(conn, pending, results)
        return True

    def _write(self, conn: sqlite3.Connection, op: int, key: str, arg: Any) -> Any:
        """Apply one write inside the open transaction; returns its error or its value.

        A write that fails is undone alone (a savepoint), so the others of its commit group
        stand.
        """
        if op != _OP_APPEND:
            try:
                return self._apply(conn, op, key, arg)
            except sqlite3.Error as exc:
                action = "save" if op == _OP_SAVE else "delete"
                return _sql_error(f"{action} key {key!r}", self._path, exc)
        try:
            conn.execute("SAVEPOINT w")
            try:
                value = self._apply(conn, op, key, arg)
            except BaseException:
                conn.execute("ROLLBACK TO w")
                raise
            if isinstance(value, JidoError):
                conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
        except sqlite3.Error as exc:
            return _sql_error(f"append to the journal of key {key!r}", self._path, exc)
        return value

    def _apply(self, conn: sqlite3.Connection, op: int, key: str, arg: Any) -> Any:
        if op == _OP_SAVE:
            epoch, seq, agent_type, blob = arg
            cur = conn.execute(self._sql_save, (key, epoch, seq, agent_type, blob))
            if cur.rowcount == 0:
                row = conn.execute(self._sql_epoch, (key,)).fetchone()
                return _fenced(key, epoch, row[0] if row else -1)
            return None
        if op == _OP_DELETE:
            conn.execute(self._sql_delete, (key,))
            conn.execute(self._sql_jdelete, (key,))
            return None
        epoch, cp, entries = arg
        if cp is not None:
            fenced = self._apply(conn, _OP_SAVE, key, cp)
            if fenced is not None:
                return fenced
        else:
            row = conn.execute(self._sql_epoch, (key,)).fetchone()
            if row is not None and row[0] > epoch:
                return _fenced(key, epoch, row[0])
        start = conn.execute(self._sql_jlen, (key,)).fetchone()[0]
        conn.executemany(self._sql_jadd, [(key, start + i, e) for i, e in enumerate(entries)])
        return start + len(entries)

    def _commit(
        self, conn: sqlite3.Connection, pending: list[_Result], results: list[_Result]
    ) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            err = _sql_error("commit", self._path, exc)
            results.extend((fut, err, None, landed) for fut, _e, _v, landed in pending)
            return
        results.extend(pending)

    def _read(
        self, conn: sqlite3.Connection, op: int, key: str, arg: Any, fut: asyncio.Future[Any]
    ) -> _Result:
        try:
            if op == _OP_LOAD:
                row = conn.execute(self._sql_load, (key,)).fetchone()
                if row is None:
                    return (fut, None, None, None)
                return (fut, None, Checkpoint.from_bytes(row[0], key=key), None)
            if op == _OP_KEYS:
                rows = conn.execute(self._sql_keys, (len(key), key)).fetchall()
                return (fut, None, [r[0] for r in rows], None)
            if op == _OP_JOURNAL:
                rows = conn.execute(self._sql_jread, (key, arg)).fetchall()
                return (fut, None, [bytes(r[0]) for r in rows], None)
            return (fut, None, None, None)  # ping: the connection is open
        except CorruptCheckpointError as exc:
            return (fut, exc, None, None)
        except sqlite3.Error as exc:
            return (fut, _sql_error(f"read key {key!r}", self._path, exc), None, None)


class SQLiteStore(StateStore):
    """A durable :class:`StateStore` in one SQLite file (WAL mode), for one node.

    Writes (and listing keys) run on one dedicated thread, so the event loop never waits for
    a commit, an ``fsync`` or a lock held by another process. Writes that arrive together are
    committed in one transaction (group commit), which keeps many agents checkpointing at once
    cheap. ``load`` reads the row directly through a read-only connection (a WAL reader never
    waits for writers; a busy or failing read falls back to the thread), except while a write
    to that key is still in flight, when it queues behind that write: a load always sees the
    saves issued before it. Each checkpoint is one row
    ``(key, epoch, seq, agent_type, data)``; the epoch check for fencing runs inside the same
    ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement, so it is atomic, also against
    other processes using the same file.

    Durability: with ``synchronous="NORMAL"`` (the default) a completed ``save`` survives a
    crash of the process; after a power loss or OS crash the last few commits may be rolled
    back (the file stays consistent). ``synchronous="FULL"`` makes every commit survive power
    loss at the cost of an ``fsync`` per commit group.

    ``open()`` is optional (the first call opens the file); ``close()`` finishes pending
    writes, closes the file and stops the thread. Use one store from one event loop at a time.

    Args:
        path: the database file (created if missing). ``":memory:"`` gives a private,
            non-durable database.
        table: table name (letters, digits, ``_``); several stores can share a file.
        synchronous: SQLite ``synchronous`` level: ``"NORMAL"`` or ``"FULL"``.
        busy_timeout: seconds to wait for a lock held by another process before failing.
        max_batch: most jobs taken into one commit group.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "checkpoints",
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        max_batch: int = 256,
    ) -> None:
        if not _TABLE_RE.match(table):
            raise ValidationError(
                f"invalid table name {table!r}: use letters, digits and '_' (not first)",
                details={"table": table},
            )
        if synchronous not in ("NORMAL", "FULL"):
            raise ValidationError(
                f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}",
                details={"synchronous": synchronous},
            )
        if max_batch < 1:
            raise ValidationError("max_batch must be at least 1", details={"max_batch": max_batch})
        self.path: str = os.fspath(path)
        self.table: str = table
        self.synchronous: str = synchronous
        self.busy_timeout: float = float(busy_timeout)
        self.max_batch: int = max_batch
        self._worker: _SQLiteWorker | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False
        # loads by key run on the caller's thread through a read-only connection (WAL readers
        # never wait for writers) unless a write to that key is still in flight
        self._reader: sqlite3.Connection | None = None
        self._ready = False  # the store thread has opened the file and made the table
        self._in_flight: dict[str, int] = {}
        self._sql_load = f"SELECT data FROM {table} WHERE key = ?"
        self._lock = threading.Lock()

    def _jobs(self) -> queue.SimpleQueue[_Job]:
        worker = self._worker
        if worker is not None:
            return worker.jobs
        if self._closed:
            raise _closed(self)
        with self._lock:
            if self._worker is None:
                worker = _SQLiteWorker(self, name=f"jido-sqlite-store-{id(self):x}")
                worker.start()
                self._worker = worker
                # a store dropped without close() still lets its thread finish and exit
                self._finalizer = weakref.finalize(
                    self, worker.jobs.put, (_OP_CLOSE, "", None, None, None)
                )
            return self._worker.jobs

    def _submit(self, op: int, key: str, arg: Any, landed: _Landed = None) -> asyncio.Future[Any]:
        jobs = self._jobs()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        jobs.put((op, key, arg, fut, landed))
        return fut

    async def open(self) -> None:
        """Open the file (creating the table if needed) and start the thread. Idempotent.

        Raises :class:`~jido.StoreError` if the file cannot be opened.
        """
        self._closed = False
        try:
            await self._submit(_OP_PING, "", None)
        except StoreError:
            await self.close()
            self._closed = False
            raise
        self._ready = True

    async def close(self) -> None:
        """Finish pending writes, close the file and stop the thread. Idempotent."""
        self._closed = True
        with self._lock:
            worker, self._worker = self._worker, None
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.detach()
        reader, self._reader = self._reader, None
        self._ready = False
        if reader is not None:
            reader.close()
        if worker is None:
            return
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.jobs.put((_OP_CLOSE, "", None, fut, None))
        await fut
        worker.join()

    async def load(self, key: str) -> Checkpoint | None:
        """Return the latest checkpoint under ``key``, or ``None``.

        Raises :class:`CorruptCheckpointError` if the stored row cannot be decoded.
        """
        _check_key(key)
        if self._ready and key not in self._in_flight and not self._closed:
            reader = self._reader or self._open_reader()
            if reader is not None:
                try:
                    row = reader.execute(self._sql_load, (key,)).fetchone()
                except sqlite3.Error:
                    pass  # busy, or anything odd: the store thread answers (and reports) it
                else:
                    return None if row is None else Checkpoint.from_bytes(row[0], key=key)
        result: Checkpoint | None = await self._submit(_OP_LOAD, key, None)
        self._ready = True
        return result

    def _open_reader(self) -> sqlite3.Connection | None:
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None  # a private database: only the store thread's connection sees it
        try:
            reader = sqlite3.connect(
                self.path, isolation_level=None, timeout=0, check_same_thread=False
            )
            reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error:
            return None
        self._reader = reader
        return reader

    def _write(self, op: int, key: str, arg: Any) -> asyncio.Future[Any]:
        in_flight = self._in_flight

        def landed() -> None:  # runs on the loop when the store thread reports this write
            left = in_flight[key] - 1
            if left:
                in_flight[key] = left
            else:
                del in_flight[key]

        fut = self._submit(op, key, arg, landed)
        in_flight[key] = in_flight.get(key, 0) + 1
        return fut

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` under ``key``; returns once it is committed.

        Raises :class:`~jido.FencedError` if the stored checkpoint has a higher epoch. If the
        awaiting task is cancelled, the write may still be committed.
        """
        _check_key(key)
        cp = _check_checkpoint(checkpoint)
        blob = cp.to_bytes()  # encode here: the caller may mutate the state afterwards
        await self._write(_OP_SAVE, key, (cp.epoch, cp.seq, cp.agent_type, blob))

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if missing)."""
        await self._write(_OP_DELETE, _check_key(key), None)

    async def keys(self, prefix: str = "") -> list[str]:
        """Return the stored keys starting with ``prefix``, sorted."""
        result: list[str] = await self._submit(_OP_KEYS, prefix, None)
        return result

    supports_journal = True

    async def append(
        self,
        key: str,
        entries: Sequence[bytes],
        *,
        checkpoint: Checkpoint | None = None,
        epoch: int = 0,
    ) -> int:
        """Append ``entries`` (and save ``checkpoint``) in one transaction; the new length.

        The journal is a second table (``<table>_journal``), one row per entry; the epoch
        check for fencing runs in the same transaction as the rows.
        """
        _check_key(key)
        items = _check_entries(entries)
        cp = None
        if checkpoint is not None:
            c = _check_checkpoint(checkpoint)
            epoch = c.epoch
            cp = (c.epoch, c.seq, c.agent_type, c.to_bytes())
        length: int = await self._write(_OP_APPEND, key, (epoch, cp, items))
        return length

    async def journal(self, key: str, start: int = 0) -> list[bytes]:
        """The journal entries of ``key`` from ``start`` on (read on the store thread)."""
        result: list[bytes] = await self._submit(_OP_JOURNAL, _check_key(key), max(start, 0))
        return result

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, table={self.table!r})"
