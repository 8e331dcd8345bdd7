"""The membership view: node records, versioned snapshots, diffs and events.

:class:`NodeRecord` is what a node writes under its key of the nodes bucket; a
:class:`MembershipSnapshot` is the set of live records at one version; :class:`MembershipEvent`
(join, leave, expire, update) and :class:`EventStream` carry the changes to watchers. The lease
that keeps a node's record alive is :class:`~foundation.membership.membership.Membership`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from foundation._hooks import call_hook

log = logging.getLogger("foundation.membership")

EventKind = Literal["join", "leave", "expire", "update"]


class NodeRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a node publishes about itself (JSON in the nodes bucket)."""

    id: str
    """Node id (the key)."""
    host: str = ""
    """Host name."""
    pid: int = 0
    """Process id."""
    capabilities: tuple[str, ...] = ()
    """Capabilities offered for placement (e.g. ``"gpu"``, ``"type:Account"``)."""
    resources: dict[str, float] = msgspec.field(default_factory=dict)
    """Capacity offered (``{"cpu": 4, "memory": 8192, "agents": 1000}``)."""
    load: dict[str, float] = msgspec.field(default_factory=dict)
    """Current use of the same resources (``{"agents": 12, "cpu": 1.5}``)."""
    version: str = ""
    """Software version."""
    wire_features: tuple[str, ...] = ()
    """Optional node-to-node wire features the node serves (e.g. ``"casts"``); senders use a
    feature only towards nodes that list it, so mixed-version clusters keep working."""
    started_at: float = 0.0
    """Unix time the node started."""
    status: str = "up"
    """``up`` or ``draining`` (draining nodes accept no new agents)."""
    tenant: str = "default"
    """The tenant whose agents the node serves (soft tenants share one account; each node's
    view holds only its own tenant's members). Not written for the default tenant."""
    revision: int = 0
    """KV revision this record was read at (not stored; 0 when not read from the server)."""

    def encode(self) -> bytes:
        """JSON bytes as stored (without the revision)."""
        return _ENCODER.encode(msgspec.structs.replace(self, revision=0))

    @classmethod
    def decode(cls, data: bytes, revision: int = 0) -> NodeRecord:
        """Parse stored JSON; ``revision`` is attached."""
        rec = _NODE_DECODER.decode(data)
        return msgspec.structs.replace(rec, revision=revision) if revision else rec

    @property
    def accepting(self) -> bool:
        """True if the node accepts new agents (not draining)."""
        return self.status == "up"


_ENCODER = msgspec.json.Encoder()
_NODE_DECODER = msgspec.json.Decoder(NodeRecord)


@dataclass(frozen=True, slots=True)
class MembershipDiff:
    """What changed between two snapshots."""

    joined: tuple[str, ...] = ()
    """Ids present in the newer snapshot only."""
    left: tuple[str, ...] = ()
    """Ids present in the older snapshot only."""
    updated: tuple[str, ...] = ()
    """Ids in both whose status, capabilities or resources changed."""

    def __bool__(self) -> bool:
        return bool(self.joined or self.left or self.updated)


@dataclass(frozen=True, slots=True)
class MembershipSnapshot:
    """An immutable view of the live members at one version."""

    version: int = 0
    """Local version: grows by one with every applied change (only moves forward)."""
    revision: int = 0
    """Highest KV revision applied."""
    members: Mapping[str, NodeRecord] = field(default_factory=lambda: MappingProxyType({}))
    """Live members by id."""

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.members

    def __len__(self) -> int:
        return len(self.members)

    def get(self, node_id: str) -> NodeRecord | None:
        """The record of ``node_id`` or None."""
        return self.members.get(node_id)

    def ids(self) -> list[str]:
        """Sorted live member ids."""
        return sorted(self.members)

    def records(self) -> list[NodeRecord]:
        """Live member records sorted by id."""
        return [self.members[i] for i in sorted(self.members)]

    def diff(self, older: MembershipSnapshot) -> MembershipDiff:
        """What changed from ``older`` to this snapshot."""
        new, old = self.members, older.members
        updated = tuple(
            sorted(
                i
                for i in new.keys() & old.keys()
                if (new[i].status, new[i].capabilities, new[i].resources)
                != (old[i].status, old[i].capabilities, old[i].resources)
            )
        )
        return MembershipDiff(
            joined=tuple(sorted(new.keys() - old.keys())),
            left=tuple(sorted(old.keys() - new.keys())),
            updated=updated,
        )


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """A change of membership seen by this node."""

    kind: EventKind
    """``join``, ``leave`` (graceful), ``expire`` (lease ran out) or ``update``."""
    node_id: str
    """The node concerned."""
    record: NodeRecord | None
    """Its record (the last known one for ``leave``/``expire``)."""
    version: int
    """Snapshot version after the change."""


Listener = Callable[[MembershipEvent], Any]


class EventStream:
    """An async iterator of :class:`MembershipEvent`; registered as soon as it is created."""

    def __init__(self, registry: list[asyncio.Queue[MembershipEvent]]) -> None:
        self._registry = registry
        self._queue: asyncio.Queue[MembershipEvent] = asyncio.Queue()
        registry.append(self._queue)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> MembershipEvent:
        return await self._queue.get()

    async def aclose(self) -> None:
        """Stop receiving events."""
        with contextlib.suppress(ValueError):
            self._registry.remove(self._queue)


class MembershipView:
    """The live view a :class:`~foundation.membership.membership.Membership` keeps: the current
    snapshot, listeners and event streams, and waits on the snapshot."""

    def __init__(self) -> None:
        self._snapshot = MembershipSnapshot()
        self._listeners: list[Listener] = []
        self._queues: list[asyncio.Queue[MembershipEvent]] = []
        self._changed = asyncio.Condition()

    @property
    def snapshot(self) -> MembershipSnapshot:
        """The current immutable snapshot."""
        return self._snapshot

    def is_live(self, node_id: str) -> bool:
        """True if ``node_id`` is a live member in the current snapshot."""
        return node_id in self._snapshot.members

    def members(self) -> list[NodeRecord]:
        """Live member records sorted by id."""
        return self._snapshot.records()

    # -- watching --------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` (sync or async) for every membership event."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def events(self) -> EventStream:
        """Async stream of membership events from this call on (``async for ev in ...``).

        Each call gets its own queue; close the stream (``await stream.aclose()``) when done.
        """
        return EventStream(self._queues)

    async def wait_members(
        self,
        node_ids: Iterable[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> MembershipSnapshot:
        """Wait until every id in ``node_ids`` is a live member; return that snapshot."""
        wanted = set(node_ids)
        return await self._wait(lambda s: wanted <= s.members.keys(), timeout)

    async def wait_gone(
        self,
        node_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> MembershipSnapshot:
        """Wait until ``node_id`` is not a live member (left or expired)."""
        return await self._wait(lambda s: node_id not in s.members, timeout)

    async def wait_version(
        self,
        version: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> MembershipSnapshot:
        """Wait until the snapshot version is at least ``version``."""
        return await self._wait(lambda s: s.version >= version, timeout)

    async def _wait(
        self,
        pred: Callable[[MembershipSnapshot], bool],
        timeout: float | None,  # noqa: ASYNC109
    ) -> MembershipSnapshot:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: pred(self._snapshot)), timeout)
            return self._snapshot

    async def _emit(self, kind: EventKind, node_id: str, record: NodeRecord | None) -> None:
        event = MembershipEvent(kind, node_id, record, self._snapshot.version)
        for queue in list(self._queues):
            queue.put_nowait(event)
        for fn in list(self._listeners):
            await call_hook(fn, event, log=log)


__all__ = [
    "EventKind",
    "EventStream",
    "MembershipDiff",
    "MembershipEvent",
    "MembershipSnapshot",
    "MembershipView",
    "NodeRecord",
]
