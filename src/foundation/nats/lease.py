"""``KVLease``: one JetStream KV key held as a lease, the primitive under node membership,
leader election and locks.

The lease is taken by creating the key with a per-message TTL (of any number of contenders
exactly one create succeeds), kept by renewing it with a compare-and-set update on the revision
of the holder's last write (which also restarts the TTL), and given up by a compare-and-set
delete; when the holder stops renewing, the server expires the key and others can create it.

Validity: the holder counts the lease as held until ``valid_until`` = (send time of its last
acknowledged write) + ``ttl`` - ``margin``. The send time is no later than the server's write,
so ``valid_until`` falls ``margin`` seconds before the server can expire the key, provided both
clocks advance at the same rate (no synchronisation needed). :meth:`KVLease.arm_expiry` calls
back once that moment passes with no renewal acknowledged meanwhile.

What is written, how often, from which loop and what losing the lease means stay with the
user: ``membership`` renews its node record from a thread and fences the node;
``coordination`` renews election and lock keys in a task and reports the loss.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

from foundation._errors import CASConflictError
from foundation.nats.kv import KV

__all__ = ["KVLease"]


class KVLease:
    """Key ``key`` of ``kv`` held as a lease of ``ttl`` whole seconds, counted valid until
    ``margin`` seconds before the server could expire it.

    Every write may go ``via`` another handle on the same bucket (one opened on another
    connection, e.g. on a renewal thread). Errors are those of :class:`~foundation.nats.kv.KV`:
    :class:`~foundation._errors.KeyExistsError` when another holder has the key,
    :class:`~foundation._errors.CASConflictError` when it expired or was taken meanwhile.
    """

    def __init__(self, kv: KV, key: str, ttl: float, margin: float) -> None:
        self.kv = kv
        self.key = key
        self.ttl = ttl
        self.margin = margin
        self.token = 0
        """Revision of the create that won the current tenure (a fencing token)."""
        self.revision = 0
        """Revision of this holder's last acknowledged write (0: none to renew or release)."""
        self.valid_until = 0.0
        """Monotonic time until which the lease is certainly held (if not lost meanwhile)."""
        self._timer: asyncio.TimerHandle | None = None

    def _ttl(self) -> timedelta:
        return timedelta(seconds=int(self.ttl))

    def _granted(self, sent: float, rev: int) -> None:
        self.revision = rev
        self.valid_until = sent + self.ttl - self.margin

    @property
    def unexpired(self) -> bool:
        """Whether ``valid_until`` is still ahead (says nothing of a loss seen meanwhile)."""
        return time.monotonic() < self.valid_until

    async def create(self, value: bytes, *, via: KV | None = None) -> int:
        """Take the lease: create the key holding ``value`` with the TTL; returns the revision
        (also the new :attr:`token`). Raises ``KeyExistsError`` while another holder has it."""
        sent = time.monotonic()
        rev = await (via or self.kv).create(self.key, value, ttl=self._ttl())
        self.token = rev
        self._granted(sent, rev)
        return rev

    async def renew(self, value: bytes, *, via: KV | None = None) -> int:
        """Renew: write ``value`` if the key is still at :attr:`revision` (restarting the TTL);
        returns the new revision. Raises ``CASConflictError`` when the lease is gone."""
        sent = time.monotonic()
        rev = await (via or self.kv).update(self.key, value, last=self.revision, ttl=self._ttl())
        self._granted(sent, rev)
        return rev

    def forget(self) -> None:
        """Drop the revision of a lease known to be gone (nothing left to renew or release)."""
        self.revision = 0

    async def release(self, *, via: KV | None = None) -> bool:
        """Give the lease up: delete the key if it is still at :attr:`revision` (forgotten
        first). False when it had moved on (expired, taken, or nothing held)."""
        rev, self.revision = self.revision, 0
        if not rev:
            return False
        try:
            await (via or self.kv).delete(self.key, last=rev)
        except CASConflictError:
            return False
        return True

    def arm_expiry(self, on_expired: Callable[[], None]) -> None:
        """Call ``on_expired`` on the running loop once ``valid_until`` has passed (replacing
        an armed call); a renewal acknowledged before then moves the moment on when re-armed."""
        self.disarm_expiry()
        delay = max(0.0, self.valid_until - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expiry_due, on_expired)

    def disarm_expiry(self) -> None:
        """Cancel the call armed by :meth:`arm_expiry`, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expiry_due(self, on_expired: Callable[[], None]) -> None:
        self._timer = None
        if time.monotonic() >= self.valid_until:
            on_expired()
