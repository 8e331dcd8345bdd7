"""Virtual agents: addressable by id at any time, activated by their first message, passivated
when idle.

A class declared ``Clustered(..., virtual=True, idle_timeout=60)`` needs no spawn:

* **activation** (:func:`activate`): a call or cast to an id of a virtual type that has no
  registry record places the agent (its placement strategy), claims the record by CAS (a
  create: of concurrent first messages from several nodes exactly one claim wins, the others
  read the winner's record) and starts it on the chosen node with its state from the store (or
  the model's defaults). The ref finds the type from the class it was made with
  (``node.ref(id, cls=Session)``) or from the id's prefix (``ClusterSpec.id_prefix``, by
  default ``session-`` for ``class Session``) among the virtual types the node hosts.
* **passivation** (:func:`passivate_idle`, run by every full reconciliation): an agent idle for
  ``idle_timeout`` seconds has its record removed by CAS (against the record it runs under, so
  a move or a newer activation wins) and is stopped; its state and schedules stay committed in
  the state store, where its next activation, on any node, finds them. An agent with a pending
  schedule passivates too: its earliest due time goes into the cluster's due index first
  (:class:`~foundation.hosting.wakeups.Wakeups`), which activates it again when due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from foundation import _wire as wire
from foundation._errors import AlreadyRegisteredError, ClusterError
from foundation.hosting.admission import claim_placed
from foundation.hosting.clustered import cluster_spec
from foundation.hosting.wakeups import Wakeups
from foundation.nats.kv import KV, BucketSpec
from foundation.registry.registry import RegistryRecord
from jido import JidoError

if TYPE_CHECKING:
    from foundation.hosting.host import AgentHost

log = logging.getLogger("foundation.node")

_CLAIM_TRIES = 4  # a claim that loses to a record removed in between (a passivation) tries again


class VirtualTypes:
    """The virtual agent types a node hosts, found by id prefix (longest prefix first)."""

    def __init__(self, types: Mapping[str, type]) -> None:
        found = []
        for cls in types.values():
            spec = cluster_spec(cls)
            if spec is not None and spec.virtual and spec.id_prefix:
                found.append((spec.id_prefix, cls))
        self._by_prefix = sorted(found, key=lambda p: -len(p[0]))

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def class_for(self, agent_id: str) -> type | None:
        """The virtual class whose ``id_prefix`` starts ``agent_id``, else ``None``."""
        for prefix, cls in self._by_prefix:
            if agent_id.startswith(prefix):
                return cls
        return None


def is_virtual(cls: type | None) -> bool:
    """True when ``cls`` is a clustered class declared ``virtual=True``."""
    spec = cluster_spec(cls) if cls is not None else None
    return spec is not None and spec.virtual


async def activate(host: AgentHost, agent_id: str, cls: type) -> RegistryRecord:
    """Place, claim and start virtual agent ``agent_id`` of class ``cls``; its record.

    When another node claimed it first, that node's record is returned once its owner has
    started it.
    """
    spec = cluster_spec(cls)
    if spec is None or not spec.virtual:
        raise ClusterError(
            f"{cls.__qualname__} is not a virtual agent type; spawn {agent_id!r} first",
            details={"agent_id": agent_id},
        )
    if host.admit is not None:
        await host.admit(agent_id)  # the tenant's agent quota
    for _ in range(_CLAIM_TRIES):
        try:
            record = await claim_placed(
                host, cls, spec, agent_id, away=host.draining, metadata={"virtual": True}
            )
        except AlreadyRegisteredError:
            won = await host.registry.lookup(agent_id, consistent=True)
            if won is None:
                continue  # removed between the claim and the read: claim again
            # Another node claimed it: ask its owner to start it too (a start is idempotent
            # and waits for the owner to see the claim), so this message finds it running.
            await _start(host, won)
            return won
        host.counters["activations"] = host.counters.get("activations", 0) + 1
        await _start(host, record)
        return record
    raise ClusterError(
        f"could not activate virtual agent {agent_id!r}: its record kept changing",
        details={"agent_id": agent_id},
    )


async def _start(host: AgentHost, record: RegistryRecord) -> None:
    if record.node == host.node_id:
        await host.activate(record)
    else:
        assert host._start_remote is not None
        await host._start_remote(record, None)


def _passivates(cls: type) -> bool:
    spec = cluster_spec(cls)
    return spec is not None and spec.virtual and spec.idle_timeout is not None


async def passivate_idle(host: AgentHost, wakeups: Wakeups | None = None) -> int:
    """Passivate this node's virtual agents idle past their ``idle_timeout``; how many.

    An agent with a pending schedule passivates only with ``wakeups`` (the cluster's due
    index), which gets its earliest due time before its record goes; without, it stays.
    """
    if not any(_passivates(cls) for cls in host.types.values()):
        return 0  # no type passivates: no walk over the node's agents every sweep
    done = 0
    runtime = host.runtime
    for i, (agent_id, ref) in enumerate(list(host.local.items())):
        if i % 500 == 0:
            await asyncio.sleep(0)  # never hold the loop for a whole node's agents
        if agent_id in host.unclustered or agent_id in host.parked:
            continue
        try:
            spec = cluster_spec(ref.agent_class)
        except JidoError:  # stopped since the listing (moved, fenced): nothing to passivate
            continue
        if spec is None or not spec.virtual or spec.idle_timeout is None:
            continue
        idle = runtime.idle_for(agent_id)
        if idle is None or idle < spec.idle_timeout:
            continue
        due = runtime.next_due(agent_id)
        if due is not None and wakeups is None:
            continue
        record = host.registry.cached(agent_id)
        if record is None or record.node != host.node_id:
            continue
        try:
            if due is not None:
                assert wakeups is not None
                await wakeups.note(agent_id, record.type, due)
            await host.registry.remove(agent_id, expected=record)
        except JidoError as exc:  # moved or re-claimed meanwhile: it stays as it is
            log.debug("node %s: %s not passivated: %s", host.node_id, agent_id, exc)
            continue
        await host.stop_local(agent_id)
        host.counters["passivations"] = host.counters.get("passivations", 0) + 1
        done += 1
    return done


async def open_wakeups(host: AgentHost, nc: Any, tenant: str, replicas: int) -> Wakeups | None:
    """Start waking this tenant's passivated virtual agents that are due (``None``, and no
    bucket opened, when the node hosts no virtual type)."""
    virtual = {name: cls for name, cls in host.types.items() if is_virtual(cls)}
    if not virtual:
        return None
    kv = await KV.open(
        nc,
        BucketSpec(wire.WAKEUPS_BUCKET, description="foundation due virtual agents"),
        replicas=replicas,
    )
    wakeups = Wakeups(kv, tenant, virtual)

    async def wake(agent_id: str, cls: type) -> None:
        await activate(host, agent_id, cls)

    await wakeups.start(wake)
    return wakeups


__all__ = ["VirtualTypes", "activate", "is_virtual", "open_wakeups", "passivate_idle"]
