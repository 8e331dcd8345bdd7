"""Agent state on a JetStream KV bucket, fenced by compare-and-set.

:class:`KVStateStore` is a ``jido.StateStore``: one key per agent holding the encoded
``jido.Checkpoint`` whose ``epoch`` is the owner's fencing token. The bucket key is
``<tenant>.<agent_id>`` (as in the registry), so tenants sharing one NATS never share state;
callers name agents by id alone.

* **Activation** — before a node runs an agent it calls :meth:`KVStateStore.activate` with the
  epoch the registry gave it. That reads the key and writes the same checkpoint back carrying the
  new epoch by CAS (``create`` if absent, ``update(last=rev)`` otherwise). If the stored epoch is
  already higher, or another writer wins the CAS, it raises ``jido.FencedError``: this node is not
  the owner and must not start the agent.
* **Every save** is ``update(last=rev)`` with the remembered revision and carries the epoch.
  A CAS failure means someone else wrote the key (a newer owner activated it): ``save`` raises
  ``jido.FencedError`` and the runtime stops the agent before it applies anything more.
* ``Checkpoint.meta`` (for example the stream sequence of the last applied signal) travels in the
  same write as the state, so both are committed together or not at all.
* **Size gate** — when :attr:`KVStateStore.size_gate` is set (a tenant's state-bytes quota),
  every checkpoint write is first offered to it (``check`` may refuse by raising, before
  anything is written), and the sizes written, activated and released are reported to it.
* **Journals** (``append`` / ``journal``): each append first writes its entries, as one batch, to
  a key of their own (``<tenant>.<agent_id>./j.<writer>.<position>``; no agent id holds a ``/``,
  so these never meet a state key), then commits them with one CAS-guarded write of the agent's
  key: the checkpoint (when given) and the journal's index (its segments: writer, first and end
  position) in ``meta``. Until that write lands the batch is unreachable, and a fenced append
  changes nothing. The writer token is unique per store instance and epoch, so a stale owner's
  batch can never overwrite a batch the new owner committed. Each entry is stored once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from foundation import _metrics, _tracing
from foundation import _wire as wire
from foundation._errors import CASConflictError, ClusterError, InvalidKeyError
from foundation._ids import check_key, check_token
from foundation.nats.kv import KV
from jido import FencedError, StoreError, ValidationError
from jido._store import Checkpoint, StateStore, _check_entries

ACTIVATION_MARK = "fdn.activated"
"""Meta key of a checkpoint written only to claim the key (no state saved yet)."""

JOURNAL_META = "fdn.journal"
"""Meta key of the stored checkpoint holding the journal's index (never returned by ``load``)."""

_JOURNAL_TOKEN = "/j"
_Index = list[list[Any]]


class SizeGate(Protocol):
    """Sees the committed size of each agent's state (see :attr:`KVStateStore.size_gate`)."""

    def check(self, key: str, size: int) -> None:
        """Raise (a ``jido.JidoError``) to refuse writing ``size`` bytes for agent ``key``."""
        ...

    def written(self, key: str, size: int) -> None:
        """Agent ``key``'s committed state is now ``size`` bytes."""
        ...

    def released(self, key: str) -> None:
        """Agent ``key`` is no longer held by this store."""
        ...


@dataclass(slots=True)
class _Held:
    epoch: int
    revision: int
    checkpoint: Checkpoint | None
    written: Checkpoint | None = None
    """The value last written to (or read from) the key, journal index included."""
    unsure: bool = False
    """The last write's outcome is unknown (NATS failed mid-request): read before the next."""


def _fenced(key: str, epoch: int, stored: int, why: str) -> FencedError:
    return FencedError(
        f"state of {key!r} is owned by epoch {stored}, this writer holds epoch {epoch} ({why}); "
        "another node has taken the agent over, stop this copy",
        details={"key": key, "epoch": epoch, "stored_epoch": stored},
    )


def _unavailable(key: str, action: str, exc: BaseException) -> StoreError:
    return StoreError(
        f"state bucket unreachable while trying to {action} {key!r}: {exc!r}. The write was not "
        "applied; retry when NATS is reachable.",
        details={"key": key, "action": action},
        retryable=True,
        cause=exc,
    )


def _too_large(key: str, size: int, limit: int) -> StoreError:
    return StoreError(
        f"state of {key!r} is {size} bytes encoded, over the limit of {limit} bytes (the NATS "
        "server's max_payload); the write was not applied. Keep large data out of the agent's "
        "state (e.g. in a JetStream object store, with its name in the state) or raise "
        "max_payload on the server",
        details={"key": key, "size": size, "limit": limit},
        retryable=False,
    )


class KVStateStore(StateStore):
    """A fenced ``jido.StateStore`` on one JetStream KV bucket (one key per agent).

    ``owner`` names the node using the store (for diagnostics); ``tenant`` is the tenant whose
    agents it stores (keys are ``<tenant>.<agent_id>`` in the bucket). Use :meth:`activate` before
    starting an agent with an epoch, :meth:`release` after stopping it without deleting its state.
    Keys never activated are saved with the plain epoch comparison of the ``StateStore`` contract.
    """

    def __init__(self, kv: KV, *, owner: str = "", tenant: str = wire.DEFAULT_TENANT) -> None:
        self._kv = kv
        self.owner = owner
        self.tenant = check_token("tenant", tenant, key=True)
        self._prefix = f"{self.tenant}."
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._nonce = secrets.token_hex(4)
        self._closed = False
        self._fenced = False
        self.lease_check: Callable[[], bool] | None = None
        """When set, consulted before every write: ``False`` (this node's lease is not certainly
        held, e.g. right after waking from a pause longer than the lease) refuses the write as
        fenced, before the membership timer has noticed."""
        self.size_gate: SizeGate | None = None
        """When set, asked before every checkpoint write and told every size written."""

    def _kv_key(self, key: str) -> str:
        """The bucket key of agent ``key``: ``<tenant>.<key>``."""
        if type(key) is not str or not key:
            raise ValidationError(
                f"a state store key must be a non-empty string, got {key!r}",
                details={"key": repr(key)},
            )
        try:
            kv_key = self._prefix + check_key(key)
            if _JOURNAL_TOKEN in key.split("."):
                raise InvalidKeyError(f"{_JOURNAL_TOKEN!r} is reserved for journals")
            return kv_key
        except InvalidKeyError as exc:
            raise ValidationError(
                f"state key {key!r} is not a valid KV key: use letters, digits and - _ / = with "
                "dots between tokens",
                details={"key": key},
                cause=exc,
            ) from exc

    def _lease_lost(self) -> bool:
        check = self.lease_check
        return check is not None and not check()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Make the store usable (again). Idempotent."""
        self._closed = False

    async def close(self) -> None:
        """Forget every held key and refuse further calls until ``open()``. Idempotent."""
        self._closed = True
        self._held.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("KVStateStore is closed; open it again", retryable=False)

    # -- fencing ---------------------------------------------------------------------------

    def epoch_of(self, key: str) -> int | None:
        """The epoch this store holds for ``key`` (``None`` when not activated here)."""
        held = self._held.get(key)
        return held.epoch if held is not None else None

    def holds(self, key: str) -> bool:
        """True when this store has activated ``key`` and not released it."""
        return key in self._held

    async def activate(
        self, key: str, epoch: int, *, agent_type: str = "", fresh: bool = False
    ) -> Checkpoint | None:
        """Take ownership of ``key`` at ``epoch`` by CAS; return its last committed checkpoint.

        Raises ``jido.FencedError`` if the key already carries a higher epoch or a concurrent
        writer wins the CAS with one; ``jido.StoreError`` (retryable) if NATS is unreachable.
        Activating again with the same epoch (a restart on the same node) is allowed.
        ``fresh=True`` (a just-claimed agent) tries a create first, saving a read.
        """
        self._check_open()
        if self._fenced or self._lease_lost():
            raise _fenced(key, epoch, -1, "this node is fenced")
        kv_key = self._kv_key(key)
        if fresh:
            # A just-claimed agent usually has no state yet: try the create alone (one round
            # trip); if a key exists (an earlier agent with this id), fall back to read + CAS.
            marker = Checkpoint(
                state={}, agent_type=agent_type, seq=0, meta={ACTIVATION_MARK: True}, epoch=epoch
            )
            data = marker.to_bytes()
            try:
                new_rev = await self._kv.create(kv_key, data)
            except CASConflictError:
                pass
            except ClusterError as exc:
                raise _unavailable(key, "activate", exc) from exc
            else:
                self._held[key] = _Held(epoch, new_rev, None, written=marker)
                self._written(key, len(data))
                return None
        for _ in range(8):
            current, revision = await self._read(kv_key)
            stored_epoch = current.epoch if current is not None else 0
            if stored_epoch > epoch:
                self._held.pop(key, None)
                raise _fenced(key, epoch, stored_epoch, "newer epoch stored")
            if current is None:
                marker = Checkpoint(
                    state={},
                    agent_type=agent_type,
                    seq=0,
                    meta={ACTIVATION_MARK: True},
                    epoch=epoch,
                )
            else:
                marker = msgspec.structs.replace(current, epoch=epoch)
            data = marker.to_bytes()
            try:
                if revision == 0:
                    new_rev = await self._kv.create(kv_key, data)
                else:
                    new_rev = await self._kv.update(kv_key, data, last=revision)
            except CASConflictError:
                continue  # someone wrote in between: read again and re-check the epoch
            except ClusterError as exc:
                raise _unavailable(key, "activate", exc) from exc
            restored = None if current is None or _is_marker(current) else _public(current)
            self._held[key] = _Held(epoch, new_rev, restored, written=marker)
            self._written(key, len(data))
            return restored
        raise _fenced(key, epoch, -1, "lost the activation race repeatedly")

    def fence(self) -> None:
        """Refuse every save with ``FencedError`` until :meth:`unfence` (the lease was lost)."""
        self._fenced = True

    def unfence(self) -> None:
        """Accept saves again (the node holds its lease again; held keys were released)."""
        self._fenced = False

    def release(self, key: str) -> None:
        """Forget ``key`` after its agent stopped here (the stored state is kept)."""
        self._held.pop(key, None)
        if self.size_gate is not None:
            self.size_gate.released(key)

    def _written(self, key: str, size: int) -> None:
        if self.size_gate is not None:
            self.size_gate.written(key, size)

    async def _read(self, kv_key: str) -> tuple[Checkpoint | None, int]:
        """The live checkpoint and its revision; ``(None, 0)`` when absent or deleted."""
        try:
            entry = await self._kv.get(kv_key)
        except ClusterError as exc:
            raise _unavailable(kv_key, "read", exc) from exc
        if entry is None:
            return None, 0
        key = kv_key.removeprefix(self._prefix)
        return Checkpoint.from_bytes(entry.value, key=key), entry.revision

    # -- StateStore ------------------------------------------------------------------------

    async def load(self, key: str) -> Checkpoint | None:
        """The last committed checkpoint of ``key`` (from the activation when held)."""
        self._check_open()
        held = self._held.get(key)
        if held is not None:
            return held.checkpoint
        kv_key = self._kv_key(key)
        async with self._lock(key):  # after the writes issued before it
            current, _ = await self._read(kv_key)
        if current is None or _is_marker(current):
            return None
        return _public(current)

    @_tracing.traced("kv commit", agent=lambda self, key, *_: key)
    @_metrics.timed(_metrics.KV_COMMIT_DURATION, lambda self: self.owner)
    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Commit ``checkpoint`` (state and meta together) by CAS; ``FencedError`` if stale."""
        self._check_open()
        if not isinstance(checkpoint, Checkpoint):
            raise ValidationError("save() takes a jido.Checkpoint")
        if self._fenced or self._lease_lost():
            held = self._held.pop(key, None)
            raise _fenced(key, held.epoch if held else checkpoint.epoch, -1, "this node is fenced")
        async with self._lock(key):
            held = self._held.get(key)
            if held is None:
                await self._save_unheld(key, checkpoint)
                return
            if checkpoint.epoch != held.epoch:
                checkpoint = msgspec.structs.replace(checkpoint, epoch=held.epoch)
            await self._commit_held(key, held, checkpoint, None, "save")

    def _lock(self, key: str) -> asyncio.Lock:
        # Writes of one key from this store go one at a time: a journal batch is placed at the
        # position the previous commit left.
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _commit_held(
        self, key: str, held: _Held, checkpoint: Checkpoint | None, index: _Index | None, op: str
    ) -> None:
        """One CAS write of ``key``: ``checkpoint`` (or the value there) with ``index``."""
        kv_key = self._kv_key(key)
        if held.unsure:
            current, revision = await self._read(kv_key)
            if current is None or current.epoch != held.epoch:
                self._held.pop(key, None)
                now = current.epoch if current is not None else 0
                raise _fenced(key, held.epoch, now, "state key was written by another owner")
            held.revision, held.written, held.unsure = revision, current, False
        base = checkpoint if checkpoint is not None else held.written
        assert base is not None
        stored = _with_index(base, _index_of(held.written) if index is None else index)
        data = self._sized(key, stored.to_bytes())
        if self.size_gate is not None:
            self.size_gate.check(key, len(data))
        try:
            held.revision = await self._kv.update(kv_key, data, last=held.revision)
        except CASConflictError as exc:
            self._held.pop(key, None)
            epoch = await self._stored_epoch(kv_key)
            why = "state key was written by another owner"
            raise _fenced(key, held.epoch, epoch, why) from exc
        except ClusterError as exc:
            held.unsure = True
            raise _unavailable(key, op, exc) from exc
        held.written = stored
        self._written(key, len(data))
        if checkpoint is not None:
            held.checkpoint = checkpoint

    async def _stored_epoch(self, kv_key: str) -> int:
        try:
            current, _ = await self._read(kv_key)
        except StoreError:
            return -1
        return current.epoch if current is not None else 0

    def _sized(self, key: str, data: bytes) -> bytes:
        limit = self._kv.nc.max_payload
        # The KV write adds its headers (CAS revision, TTL) to the message: keep room for them.
        if limit > 0 and len(data) > limit - 256:
            raise _too_large(key, len(data), limit - 256)
        return data

    async def _save_unheld(self, key: str, checkpoint: Checkpoint) -> None:
        kv_key = self._kv_key(key)
        for _ in range(8):
            current, revision = await self._read(kv_key)
            if current is not None and current.epoch > checkpoint.epoch:
                raise _fenced(key, checkpoint.epoch, current.epoch, "newer epoch stored")
            stored = _with_index(checkpoint, _index_of(current))
            data = self._sized(key, stored.to_bytes())
            if self.size_gate is not None:
                self.size_gate.check(key, len(data))
            try:
                if revision == 0:
                    await self._kv.create(kv_key, data)
                else:
                    await self._kv.update(kv_key, data, last=revision)
                return
            except CASConflictError:
                continue
            except ClusterError as exc:
                raise _unavailable(key, "save", exc) from exc
        raise StoreError(f"could not save {key!r}: the key kept changing", retryable=True)

    async def delete(self, key: str) -> None:
        """Remove the state and the journal of ``key`` (not fenced); a missing key is fine."""
        self._check_open()
        self.release(key)
        kv_key = self._kv_key(key)
        async with self._lock(key):
            try:
                await self._kv.purge(kv_key)
                # The index went with the state key, so what is left is unreachable: drop it.
                for batch in await self._kv.keys(f"{kv_key}.{_JOURNAL_TOKEN}.>"):
                    await self._kv.purge(batch)
            except ClusterError as exc:
                raise _unavailable(key, "delete", exc) from exc

    async def keys(self, prefix: str = "") -> list[str]:
        """The stored keys of this tenant starting with ``prefix``, sorted (journals aside)."""
        self._check_open()
        try:
            found = await self._kv.keys(f"{self.tenant}.>")
        except ClusterError as exc:
            raise _unavailable(prefix, "list keys under", exc) from exc
        n = len(self._prefix)
        return sorted(
            k[n:] for k in found if k[n:].startswith(prefix) and _JOURNAL_TOKEN not in k.split(".")
        )

    # -- the journal -----------------------------------------------------------------------

    supports_journal = True

    async def append(
        self,
        key: str,
        entries: Sequence[bytes],
        *,
        checkpoint: Checkpoint | None = None,
        epoch: int = 0,
    ) -> int:
        """Append ``entries`` (and commit ``checkpoint``) by one CAS write; the new length.

        The entries go first to a batch key nobody reads until the CAS write of the agent's
        key records them in its index; fenced like :meth:`save`.
        """
        self._check_open()
        items = _check_entries(entries)
        if checkpoint is not None:
            if not isinstance(checkpoint, Checkpoint):
                raise ValidationError("append() takes a jido.Checkpoint or None")
            epoch = checkpoint.epoch
        kv_key = self._kv_key(key)
        async with self._lock(key):
            if self._fenced or self._lease_lost():
                held = self._held.pop(key, None)
                raise _fenced(key, held.epoch if held else epoch, -1, "this node is fenced")
            held = self._held.get(key)
            if held is None:
                return await self._append_unheld(key, kv_key, items, checkpoint, epoch)
            if held.unsure:
                await self._commit_held(key, held, None, None, "append")  # settle it first
            if checkpoint is not None and checkpoint.epoch != held.epoch:
                checkpoint = msgspec.structs.replace(checkpoint, epoch=held.epoch)
            index = _index_of(held.written)
            index = await self._put_batch(key, kv_key, index, items, held.epoch)
            await self._commit_held(key, held, checkpoint, index, "append")
            return _length(index)

    async def _put_batch(
        self, key: str, kv_key: str, index: _Index, items: list[bytes], epoch: int
    ) -> _Index:
        if not items:
            return index
        writer, start = f"{self._nonce}-{epoch}", _length(index)
        data = self._sized(key, msgspec.msgpack.encode(items))
        try:
            await self._kv.put(f"{kv_key}.{_JOURNAL_TOKEN}.{writer}.{start}", data)
        except ClusterError as exc:
            raise _unavailable(key, "append", exc) from exc
        out = [list(seg) for seg in index]
        if out and out[-1][0] == writer and out[-1][2] == start:
            out[-1][2] = start + len(items)
        else:
            out.append([writer, start, start + len(items)])
        return out

    async def _append_unheld(
        self,
        key: str,
        kv_key: str,
        items: list[bytes],
        checkpoint: Checkpoint | None,
        epoch: int,
    ) -> int:
        for _ in range(8):
            current, revision = await self._read(kv_key)
            if current is not None and current.epoch > epoch:
                raise _fenced(key, epoch, current.epoch, "newer epoch stored")
            index = await self._put_batch(key, kv_key, _index_of(current), items, epoch)
            base = checkpoint or current or Checkpoint({}, "", meta={ACTIVATION_MARK: True})
            data = self._sized(key, _with_index(base, index).to_bytes())
            try:
                if revision == 0:
                    await self._kv.create(kv_key, data)
                else:
                    await self._kv.update(kv_key, data, last=revision)
                return _length(index)
            except CASConflictError:
                continue
            except ClusterError as exc:
                raise _unavailable(key, "append", exc) from exc
        raise StoreError(f"could not append to {key!r}: the key kept changing", retryable=True)

    async def journal(self, key: str, start: int = 0) -> list[bytes]:
        """The committed journal entries of ``key`` from position ``start`` on."""
        self._check_open()
        kv_key = self._kv_key(key)
        held = self._held.get(key)
        if held is not None and not held.unsure:
            index = _index_of(held.written)
        else:
            current, _ = await self._read(kv_key)
            index = _index_of(current)
        start = max(start, 0)
        if start >= _length(index):
            return []
        try:
            batches = await self._kv.items(f"{kv_key}.{_JOURNAL_TOKEN}.>")
        except ClusterError as exc:
            raise _unavailable(key, "read the journal of", exc) from exc
        out: list[bytes] = []
        for writer, first, end in index:
            pos = first
            while pos < end:
                entry = batches.get(f"{kv_key}.{_JOURNAL_TOKEN}.{writer}.{pos}")
                if entry is None:
                    raise StoreError(
                        f"journal of {key!r} misses its batch at position {pos}",
                        details={"key": key, "position": pos},
                        retryable=False,
                    )
                batch = msgspec.msgpack.decode(entry.value, type=list[bytes])
                out.extend(batch)
                pos += len(batch)
        return out[start:]

    def statistics(self) -> dict[str, Any]:
        """Snapshot: number of keys held (activated) by this store."""
        return {"held": len(self._held), "owner": self.owner}


def _is_marker(checkpoint: Checkpoint) -> bool:
    return checkpoint.seq == 0 and bool(checkpoint.meta.get(ACTIVATION_MARK))


def _index_of(checkpoint: Checkpoint | None) -> _Index:
    if checkpoint is None:
        return []
    index: _Index = checkpoint.meta.get(JOURNAL_META) or []
    return index


def _length(index: _Index) -> int:
    return int(index[-1][2]) if index else 0


def _with_index(checkpoint: Checkpoint, index: _Index) -> Checkpoint:
    meta = {k: v for k, v in checkpoint.meta.items() if k != JOURNAL_META}
    if index:
        meta[JOURNAL_META] = index
    return msgspec.structs.replace(checkpoint, meta=meta)


def _public(checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` as callers see it: without the journal's index."""
    if JOURNAL_META not in checkpoint.meta:
        return checkpoint
    meta = {k: v for k, v in checkpoint.meta.items() if k != JOURNAL_META}
    return msgspec.structs.replace(checkpoint, meta=meta)


__all__ = ["ACTIVATION_MARK", "JOURNAL_META", "KVStateStore"]
