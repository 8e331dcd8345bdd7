"""The cluster's agents as tools: :class:`ClusterToolCatalog`, a ``jido.ai`` tool source.

Every agent in the registry whose class is known here offers its routes without wildcards as
tools named ``<agent_id>__<signal type with dots as _>`` (as ``jido.ai.AgentRouteTools`` does
for one runtime); a tool call sends the route's signal through a :class:`ClusterRef`, so it
reaches the agent wherever it runs now, after failover included. The call's idempotency key
travels as the signal's ``idempotencykey`` extension.

Register it on a node so every LLM agent there can use the cluster's agents::

    node = Node(nats=url, agents=[Assistant, Inventory])
    await node.start()
    node.services.add(ToolSource, ClusterToolCatalog.for_node(node))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from foundation.messaging.ref import ClusterRef
from foundation.registry.registry import ClusterRegistry
from jido import Signal
from jido.ai import RouteTools, class_route_tools

__all__ = ["ClusterToolCatalog"]


class _NodeLike(Protocol):
    registry: ClusterRegistry
    tenant: str

    def ref(self, agent_id: str, *, tenant: str | None = None) -> ClusterRef: ...


class ClusterToolCatalog(RouteTools):
    """The routes of the cluster's agents (from the registry) as LLM tools.

    ``types`` maps agent type names (as registered) to their classes: an agent whose class is
    not known here is not offered. ``ref`` makes the :class:`ClusterRef` a call goes through.
    ``agents`` limits the offer to these ids, ``agent_types`` to these type names; the caller
    itself is never offered its own routes.
    """

    def __init__(
        self,
        registry: ClusterRegistry,
        types: Mapping[str, type],
        ref: Callable[[str], ClusterRef],
        *,
        tenant: str | None = None,
        agents: Sequence[str] | None = None,
        agent_types: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.registry = registry
        self.types = dict(types)
        self.ref = ref
        self.tenant = tenant
        self.agents = set(agents) if agents is not None else None
        self.agent_types = set(agent_types) if agent_types is not None else None
        self.timeout = timeout

    @classmethod
    def for_node(
        cls, node: _NodeLike, types: Mapping[str, type] | Sequence[type] | None = None, **kw: Any
    ) -> ClusterToolCatalog:
        """The catalog a :class:`~foundation.Node` offers: its registry, its refs and the
        agent classes ``types`` (default: the classes the node hosts)."""
        from foundation.hosting.clustered import type_name_of

        if types is None:
            known: Mapping[str, type] = getattr(getattr(node, "host", None), "types", {})
        elif isinstance(types, Mapping):
            known = types
        else:
            known = {type_name_of(t): t for t in types}
        return cls(node.registry, known, node.ref, tenant=node.tenant, **kw)

    def routes(self) -> dict[str, tuple[str, str, Any]]:
        """Tool name → (agent id, signal type, routed action), from the registry's cache."""
        out: dict[str, tuple[str, str, Any]] = {}
        for record in self.registry.records(tenant=self.tenant):
            if self.agents is not None and record.agent_id not in self.agents:
                continue
            if self.agent_types is not None and record.type not in self.agent_types:
                continue
            cls = self.types.get(record.type)
            if cls is not None and hasattr(cls, "routes"):
                class_route_tools(record.agent_id, cls, out)
        return out

    async def send(self, agent_id: str, signal: Signal) -> Any:
        """Call the agent through its :class:`ClusterRef` (wherever it runs now)."""
        return await self.ref(agent_id).call(signal, timeout=self.timeout)
