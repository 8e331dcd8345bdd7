"""Child process of the kill test: an LLM agent whose tool SIGKILLs its own process right
after its external effect, before the result can be committed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from jido import Action, ActionContext, Runtime, Signal, SQLiteStore
from jido.ai import LLMAgent, OpenAIModel
from jido.ai.testing import OpenAITestServer, call, tool_reply


class Sent(BaseModel):
    sent: list[str] = []


class Send(Action):
    """Send a parcel (an external effect recorded in a sink file)."""

    name = "send"

    def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        key = ctx.metadata["idempotency_key"]
        with open(Courier.sink, "a", encoding="utf-8") as f:
            f.write(key + "\n")
        if Courier.die:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"sent": [*ctx.state.sent, key]}

    async def reconcile(self, key: str, params: Any, ctx: ActionContext) -> dict[str, Any] | None:
        text = await asyncio.to_thread(Path(Courier.sink).read_text, encoding="utf-8")
        if key in text.split():
            return {"sent": [*ctx.state.sent, key]}
        return None


class Courier(LLMAgent):
    """Sends parcels."""

    state_model = Sent
    actions = [Send]
    instructions = "courier"
    sink: ClassVar[str] = ""
    die: ClassVar[bool] = False


async def main(db: str, sink: str) -> None:
    Courier.sink = sink
    Courier.die = True
    async with OpenAITestServer(tool_reply(call("send", {}, id="k1"))) as server:
        Courier.model = OpenAIModel(base_url=server.url, model="m", api_key="k")
        async with Runtime(SQLiteStore(db)) as rt:
            ref = await rt.start(Courier, id="kid")
            await ref.call(Signal(type="ai.prompt", source="/t", data={"text": "send it"}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
