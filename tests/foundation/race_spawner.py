"""A process that joins the cluster as a node and spawns agents on request (spawn-race tests).

``python -m tests.foundation.race_spawner URL NAME``: on every request to ``test.race.<NAME>``
carrying an agent id, it calls ``node.spawn(ClusteredCounter, id=...)`` and answers
``{"ok": owner}`` or ``{"error": <JidoError dict>}``.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
from nats.aio.msg import Msg

from foundation._node import Node
from jido import JidoError
from tests.foundation.apps import AGENTS, ClusteredCounter


async def main(url: str, name: str) -> None:
    async with Node(nats=url, name=name, agents=AGENTS) as node:

        async def on_go(msg: Msg) -> None:
            agent_id = msg.data.decode()
            try:
                await node.spawn(ClusteredCounter, id=agent_id)
                record = await node.registry.lookup(agent_id, consistent=True)
                body = {"ok": record.node}
            except JidoError as exc:
                body = {"error": exc.to_dict()}
            await msg.respond(orjson.dumps(body))

        await node.nc.subscribe(f"test.race.{name}", cb=on_go)
        await node.nc.flush()
        print(f"node {name} ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
