"""Tiny built-in actions: ``Noop``, ``Sleep`` and ``Log``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jido._action import Action, ActionContext

__all__ = ["Log", "Noop", "Sleep"]

_LOG = logging.getLogger("jido.actions.log")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class Noop(Action):
    """Do nothing and return the given params unchanged (useful in tests, plans and routes)."""

    name = "noop"
    category = "core"
    tags = ("core", "test")
    extra = "allow"

    class Params(BaseModel):
        """Any keys; they are echoed back."""

        model_config = ConfigDict(extra="allow")

    async def run(self, params: BaseModel, ctx: ActionContext) -> dict[str, Any]:
        """Return the extra params as the result (nothing else happens)."""
        return dict(params.model_extra or {})


class Sleep(Action):
    """Wait for the given number of seconds, then return how long was slept."""

    name = "sleep"
    category = "core"
    tags = ("core", "time")
    timeout = None  # bounded by the duration limit and the caller's deadline

    class Params(BaseModel):
        duration: float = Field(ge=0, le=3600, description="Seconds to wait (0 to 3600)")

    async def run(self, params: Params, ctx: ActionContext) -> dict[str, Any]:
        """Sleep ``duration`` seconds (cancellable) and report it."""
        await asyncio.sleep(params.duration)
        return {"slept": params.duration}


class Log(Action):
    """Write a message to the log (logger ``jido.actions.log``) with the agent id attached."""

    name = "log"
    category = "core"
    tags = ("core", "observability")

    class Params(BaseModel):
        message: str = Field(max_length=10_000, description="The text to log")
        level: Literal["debug", "info", "warning", "error"] = Field(
            default="info", description="Log level"
        )

    async def run(self, params: Params, ctx: ActionContext) -> dict[str, Any]:
        """Write ``message`` to the ``jido.actions.log`` logger at ``level``."""
        _LOG.log(
            _LEVELS[params.level],
            params.message,
            extra={"agent_id": ctx.agent_id},
        )
        return {"logged": True, "level": params.level}
