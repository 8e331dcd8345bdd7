"""Extension points of the loop: where tools come from, and who pays for tokens.

Both are small protocols looked up in ``runtime.services`` (see :class:`~jido.Services`), so a
layer above ``jido`` — the cluster layer's tool catalog, a tenant quota — plugs in without
``jido`` importing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jido.ai._types import ToolSpec

__all__ = ["SourceTool", "TokenBudget", "ToolSource"]


@dataclass(frozen=True, slots=True)
class SourceTool:
    """A tool offered by a :class:`ToolSource`.

    ``idempotent``: running it twice has the effect of running it once (the loop may re-run it
    when its outcome was lost); ``requires_approval``: the turn parks until a person approves.
    """

    spec: ToolSpec
    idempotent: bool = False
    requires_approval: bool = False


@runtime_checkable
class ToolSource(Protocol):
    """Tools that are not the agent's own actions (other agents' routes, MCP servers, ...).

    Register one on a runtime (``rt.services.add(ToolSource, source)``) to offer its tools to
    every LLM agent there, or list it in an agent's ``tool_sources``.
    """

    async def list_tools(self, agent_id: str) -> Sequence[SourceTool]:
        """The tools offered to agent ``agent_id`` now."""
        ...

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], *, idempotency_key: str, agent_id: str
    ) -> str:
        """Run tool ``name`` and return the JSON text the model reads.

        Failures are returned as ``{"error": {...}}`` JSON (never raised) so the model can
        correct itself; ``idempotency_key`` is stable across retries of the same tool call.
        """
        ...


@runtime_checkable
class TokenBudget(Protocol):
    """A token budget shared by agents (per tenant, per user, ...).

    Before each model call the loop reserves an estimate; after it, it reconciles the
    reservation with the tokens really used (0 when the call failed). ``reserve`` refuses by
    raising a :class:`~jido.JidoError` (e.g. :class:`~jido.ai.BudgetExceededError`), which ends
    the turn with that error.
    """

    async def reserve(self, agent_id: str, tokens: int) -> Any:
        """Reserve ``tokens`` for a call of agent ``agent_id``; return a reservation handle."""
        ...

    async def reconcile(self, reservation: Any, used: int) -> None:
        """Settle ``reservation`` with the ``used`` tokens."""
        ...
