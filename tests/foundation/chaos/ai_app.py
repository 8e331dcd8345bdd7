"""The LLM agent of the AI chaos test (importable by node processes).

Its model is the test process's OpenAI-compatible test server (``FOUNDATION_AI_CHAOS_MODEL``);
its one tool, ``effect``, appends ``<idempotency key> <time> <pid>`` to the sink file
(``FOUNDATION_AI_CHAOS_SINK``, one line per effect; appends of one short line are atomic) and
can SIGKILL its own process right after the effect (``die_pid``), or a moment later, while the
result is being committed (``die_in``). Its ``reconcile`` hook looks the key up in the sink.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from foundation.hosting.clustered import Clustered
from jido import Action, ActionContext
from jido.ai import LLMAgent, OpenAIModel

MODEL_ENV = "FOUNDATION_AI_CHAOS_MODEL"
SINK_ENV = "FOUNDATION_AI_CHAOS_SINK"


def sink_path() -> Path:
    """The effect sink file."""
    return Path(os.environ.get(SINK_ENV, "ai-chaos-sink.txt"))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Effect(Action):
    """Record an external effect under the call's idempotency key."""

    name = "effect"

    class Params(BaseModel):
        label: str
        die_pid: int = 0
        die_in: float = 0.0

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        key = str(ctx.metadata["idempotency_key"])
        with sink_path().open("a") as f:
            f.write(f"{key} {time.time():.6f} {os.getpid()}\n")
        if params.die_pid == os.getpid():
            if params.die_in:
                asyncio.get_running_loop().call_later(params.die_in, _die)
            else:
                _die()
        return {"last_label": params.label}

    async def reconcile(self, key: str, params: Any, ctx: ActionContext) -> dict[str, Any] | None:
        """The effect took place when the sink has the key."""
        try:
            lines = sink_path().read_text().splitlines()
        except FileNotFoundError:
            return None
        done = any(line.split(" ", 1)[0] == key for line in lines)
        return {"last_label": params.label} if done else None


class ChaosNotes(BaseModel):
    """The label of the last effect."""

    last_label: str = ""


class ChaosAssistant(Clustered, LLMAgent, critical=True):
    """A critical clustered LLM agent whose turns run several effect steps."""

    state_model = ChaosNotes
    actions = [Effect]
    model = OpenAIModel(
        base_url=os.environ.get(MODEL_ENV, "http://127.0.0.1:9/v1"),
        model="chaos",
        api_key="k",
        timeout=30.0,
        backoff_base=0.01,
    )
    instructions = "Run the effects you are asked for."


AGENTS = [ChaosAssistant]
