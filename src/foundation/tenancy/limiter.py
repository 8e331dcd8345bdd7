"""Calls and casts per second: a token bucket per quota on every node, each node its share.

A tenant's ``max_calls_per_second`` (and ``max_casts_per_second``) is enforced where a call or
cast is delivered to the agent, at the endpoint of the node that runs it. No request crosses the
network to decide: each node refills a token bucket at ``limit / n`` tokens per second, ``n``
being the live nodes that run at least one of the tenant's agents (the nodes its calls can
reach; from the registry cache, looked at twice a second), and holds at most
:data:`BURST_SECONDS` of its share (at least one call). So the limit is a sum of **per-node
shares**, not an exact global count:

* over any interval of ``T`` seconds the cluster admits at most ``limit * (T + 0.1) + n``
  (each bucket's rate for ``T`` seconds, plus its full bucket at the start): the worst-case
  overshoot is a tenth of a second's worth of the limit (one call per node for tiny shares),
  reached only by a burst that finds every bucket full; a sustained flood is held to
  ``limit``;
* while a node takes its first agent of the tenant and the others have not noticed yet (half a
  second at most), its share comes on top: at most ``limit / n`` more per second; a change of
  shares never refills a bucket (it keeps its tokens, capped at the new size);
* traffic that is not spread over the nodes gets less than the limit (a node sees only its own
  share): the limit is an upper bound, never a promise.

Calls between agents of one node do not cross the endpoint and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BURST_SECONDS", "RateLimiter", "TokenBucket"]

BURST_SECONDS = 0.1
"""A node's bucket holds this many seconds of its share (at least one call): the burst a quiet
tenant may send at once, and the most a rate quota can be passed by."""


class TokenBucket:
    """Tokens refilled at ``rate`` per second up to ``capacity``; starts full."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, *, now: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic() if now is None else now

    def take(self, n: float = 1.0, *, now: float | None = None) -> bool:
        """Take ``n`` tokens if there are that many now; ``False`` (nothing taken) if not."""
        t = time.monotonic() if now is None else now
        tokens = min(self.capacity, self.tokens + (t - self.stamp) * self.rate)
        self.stamp = t
        if tokens >= n:
            self.tokens = tokens - n
            return True
        self.tokens = tokens
        return False


class RateLimiter:
    """The token buckets of one node, one per rate quota, sized to this node's share.

    ``nodes()`` gives the live nodes sharing the tenant's limit now (at least 1). A bucket is
    resized when the limit or the node count changes, keeping its tokens (capped at the new
    size): a change of shares admits no burst of its own.
    """

    def __init__(self, nodes: Callable[[], int]) -> None:
        self._nodes = nodes
        self._buckets: dict[str, tuple[float, int, TokenBucket]] = {}

    def share(self, limit: float) -> float:
        """This node's share of ``limit`` per second."""
        return limit / max(1, self._nodes())

    def admit(self, quota: str, limit: float, n: float = 1.0, *, now: float | None = None) -> bool:
        """Take ``n`` from ``quota``'s bucket (limit ``limit`` per second, cluster-wide) at
        monotonic time ``now`` (default: now)."""
        nodes = max(1, self._nodes())
        held = self._buckets.get(quota)
        if held is None or held[0] != limit or held[1] != nodes:
            share = limit / nodes
            bucket = TokenBucket(share, max(share * BURST_SECONDS, 1.0))
            if held is not None:
                old = held[2]
                old.take(0.0)  # refill up to now
                bucket.tokens = min(old.tokens, bucket.capacity)
            self._buckets[quota] = (limit, nodes, bucket)
        else:
            bucket = held[2]
        return bucket.take(n, now=now)

    def forget(self, quota: str) -> None:
        """Drop ``quota``'s bucket (its limit was removed)."""
        self._buckets.pop(quota, None)
