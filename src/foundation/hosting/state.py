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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from foundation import _metrics, _tracing
from foundation import _wire as wire
from foundation._errors import CASConflictError, ClusterError, InvalidKeyError
from foundation._ids import check_key, check_token
from foundation.nats.kv import KV
from jido import FencedError, StoreError, ValidationError
from jido._store import Checkpoint, StateStore

ACTIVATION_MARK = "fdn.activated"
"""Meta key of a checkpoint written only to claim the key (no state saved yet)."""


@dataclass(slots=True)
class _Held:
    epoch: int
    revision: int
    checkpoint: Checkpoint | None


def _fenced(key: str, epoch: int, stored: int, why: str) -> FencedError:
    return FencedError(
        f"state of {key!r} is owned by epoch {stored}, this writer holds epoch {epoch} ({why}); "
        "another node has taken the agent over, stop this copy",
        details={"key": key, "epoch": epoch, "stored_epoch": stored, "reason": why},
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
        self._closed = False
        self._fenced = False
        self.lease_check: Callable[[], bool] | None = None
        """When set, consulted before every write: ``False`` (this node's lease is not certainly
        held, e.g. right after waking from a pause longer than the lease) refuses the write as
        fenced, before the membership timer has noticed."""

    def _kv_key(self, key: str) -> str:
        """The bucket key of agent ``key``: ``<tenant>.<key>``."""
        try:
            return self._prefix + check_key(key)
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
            try:
                new_rev = await self._kv.create(kv_key, marker.to_bytes())
            except CASConflictError:
                pass
            except ClusterError as exc:
                raise _unavailable(key, "activate", exc) from exc
            else:
                self._held[key] = _Held(epoch=epoch, revision=new_rev, checkpoint=None)
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
            try:
                if revision == 0:
                    new_rev = await self._kv.create(kv_key, marker.to_bytes())
                else:
                    new_rev = await self._kv.update(kv_key, marker.to_bytes(), last=revision)
            except CASConflictError:
                continue  # someone wrote in between: read again and re-check the epoch
            except ClusterError as exc:
                raise _unavailable(key, "activate", exc) from exc
            restored = None if current is None or _is_marker(current) else current
            self._held[key] = _Held(epoch=epoch, revision=new_rev, checkpoint=restored)
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

    async def _read(self, kv_key: str) -> tuple[Checkpoint | None, int]:
        """The live checkpoint and its revision; ``(None, 0)`` when absent or deleted."""
        try:
            entry = await self._kv.get(kv_key)
        except ClusterError as exc:
            raise _unavailable(kv_key, "read", exc) from exc
        if entry is None:
            return None, 0
        return Checkpoint.from_bytes(entry.value, key=kv_key), entry.revision

    # -- StateStore ------------------------------------------------------------------------

    async def load(self, key: str) -> Checkpoint | None:
        """The last committed checkpoint of ``key`` (from the activation when held)."""
        self._check_open()
        held = self._held.get(key)
        if held is not None:
            return held.checkpoint
        current, _ = await self._read(self._kv_key(key))
        if current is None or _is_marker(current):
            return None
        return current

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
        held = self._held.get(key)
        if held is None:
            await self._save_unheld(key, checkpoint)
            return
        if checkpoint.epoch != held.epoch:
            checkpoint = msgspec.structs.replace(checkpoint, epoch=held.epoch)
        data = self._sized(key, checkpoint.to_bytes())
        kv_key = self._kv_key(key)
        try:
            held.revision = await self._kv.update(kv_key, data, last=held.revision)
        except CASConflictError as exc:
            self._held.pop(key, None)
            stored = await self._stored_epoch(kv_key)
            why = "state key was written by another owner"
            raise _fenced(key, held.epoch, stored, why) from exc
        except ClusterError as exc:
            raise _unavailable(key, "save", exc) from exc
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
        data = self._sized(key, checkpoint.to_bytes())
        for _ in range(8):
            current, revision = await self._read(kv_key)
            if current is not None and current.epoch > checkpoint.epoch:
                raise _fenced(key, checkpoint.epoch, current.epoch, "newer epoch stored")
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
        """Remove the state of ``key`` (not fenced); a missing key is not an error."""
        self._check_open()
        self._held.pop(key, None)
        try:
            await self._kv.purge(self._kv_key(key))
        except ClusterError as exc:
            raise _unavailable(key, "delete", exc) from exc

    def statistics(self) -> dict[str, Any]:
        """Snapshot: number of keys held (activated) by this store."""
        return {"held": len(self._held), "owner": self.owner}


def _is_marker(checkpoint: Checkpoint) -> bool:
    return checkpoint.seq == 0 and bool(checkpoint.meta.get(ACTIVATION_MARK))


__all__ = ["ACTIVATION_MARK", "KVStateStore"]
