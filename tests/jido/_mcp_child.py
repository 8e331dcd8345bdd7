"""Child process of the MCP stdio test: a runtime served over stdio."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from jido import Action, ActionContext, Runtime
from jido.ai.mcp import mcp_server, serve_stdio


class Shout(Action):
    """Upper-case a word."""

    name = "shout"

    class Params(BaseModel):
        word: str

    async def run(self, params: Shout.Params, ctx: ActionContext) -> dict[str, str]:
        return {"loud": params.word.upper()}


async def main() -> None:
    async with Runtime() as rt:
        await serve_stdio(mcp_server(rt, actions=[Shout]))


if __name__ == "__main__":
    asyncio.run(main())
