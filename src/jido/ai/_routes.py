"""Other agents' routes as tools: :class:`AgentRouteTools`, a tool source over a runtime."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from jido._action import Action
from jido._errors import JidoError, ValidationError
from jido._runtime import Runtime
from jido._signal import Signal
from jido._tool import _dumps, tool_error_json
from jido.ai._sources import SourceTool
from jido.ai._types import ToolSpec

__all__ = ["AgentRouteTools", "RouteTools", "class_route_tools", "route_tool_name", "route_tools"]

_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def route_tool_name(agent_id: str, signal_type: str) -> str:
    """The tool name of route ``signal_type`` of agent ``agent_id``:
    ``<agent_id>__<signal type with dots as _>`` (other characters as ``_``, at most 64)."""
    return _BAD.sub("_", f"{agent_id}__{signal_type.replace('.', '_')}")[:64]


Routes = dict[str, tuple[str, str, type[Action]]]
"""Tool name → (agent id, signal type, routed action)."""


def class_route_tools(agent_id: str, cls: Any, out: Routes | None = None) -> Routes:
    """The routes without wildcards of agent ``agent_id`` of class ``cls`` as tools (into
    ``out`` when given), leaving out the LLM loop's own ``ai.*`` routes."""
    out = {} if out is None else out
    for route in cls.routes:
        pattern, target = route[0], route[1]
        if not isinstance(pattern, str) or "*" in pattern or pattern.startswith("ai."):
            continue
        out[route_tool_name(agent_id, pattern)] = (agent_id, pattern, cls._resolve_action(target))
    return out


def route_tools(rt: Runtime, agents: Sequence[str] | None = None) -> Routes:
    """Tool name → (agent id, signal type, action) for the routes without wildcards of the
    running agents ``agents`` (default: all), leaving out the LLM loop's own ``ai.*`` routes."""
    out: Routes = {}
    for agent_id in rt.ids() if agents is None else agents:
        ref = rt.get(agent_id)
        if ref is not None:
            class_route_tools(agent_id, ref.agent_class, out)
    return out


class RouteTools:
    """A :class:`~jido.ai.ToolSource` offering agents' routes: subclasses say which routes
    there are (:meth:`routes`) and how a signal reaches an agent (:meth:`send`).

    A tool call sends the route's signal (arguments as data, the call's idempotency key as the
    ``idempotencykey`` extension) and returns the JSON result, or the structured error.
    """

    def routes(self) -> Routes:
        """The tools offered now."""
        raise NotImplementedError

    async def send(self, agent_id: str, signal: Signal) -> Any:
        """Deliver ``signal`` to agent ``agent_id`` and return its result."""
        raise NotImplementedError

    async def list_tools(self, agent_id: str) -> Sequence[SourceTool]:
        """The routes of the offered agents (not those of ``agent_id`` itself)."""
        return [
            SourceTool(
                ToolSpec(
                    name,
                    f"Send {pattern!r} to agent {target!r}. {act.description}".strip(),
                    act.to_tool()["function"]["parameters"],
                    True,
                )
            )
            for name, (target, pattern, act) in self.routes().items()
            if target != agent_id
        ]

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], *, idempotency_key: str, agent_id: str
    ) -> str:
        """Send the route's signal and return the JSON result (or the JSON error)."""
        found = self.routes().get(name)
        if found is None:
            err = ValidationError(f"there is no tool named {name!r}", details={"tool": name})
            return tool_error_json(err)
        target, pattern, _act = found
        signal = Signal(
            type=pattern,
            source=f"/agents/{agent_id}",
            data=dict(arguments),
            idempotencykey=idempotency_key,
        )
        try:
            return _dumps(await self.send(target, signal))
        except JidoError as err:
            err.details.setdefault("tool", name)
            return tool_error_json(err)


class AgentRouteTools(RouteTools):
    """The routes of other agents of a runtime as tools (calls go by ``rt.call``).

    ``agents`` limits the agents offered (default: every running agent but the caller). The
    cluster layer offers the agents of the whole cluster the same way.
    """

    def __init__(self, rt: Runtime, agents: Sequence[str] | None = None) -> None:
        self.rt = rt
        self.agents = list(agents) if agents is not None else None

    def routes(self) -> Routes:
        """The routes of the offered running agents."""
        return route_tools(self.rt, self.agents)

    async def send(self, agent_id: str, signal: Signal) -> Any:
        """``rt.call`` the agent."""
        return await self.rt.call(agent_id, signal)
