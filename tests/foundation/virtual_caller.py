"""A node process that calls virtual agents on request (activation-race tests).

``python -m tests.foundation.virtual_caller URL NAME PEERS`` (``PEERS``: every caller's name,
comma-separated; it is ready once they are all members): a request to ``test.vcall.<NAME>``
carrying an agent id (or ``{"id": ..., "remind": seconds}``) calls
``node.ref(id).call(tally.bump)`` (no spawn: the id's prefix names a
virtual type) and answers ``{"count": ..., "activations": ...}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
from nats.aio.msg import Msg

from foundation._node import Node
from jido import JidoError, Signal
from tests.foundation.virtual_app import AGENTS


async def main(url: str, name: str, peers: str) -> None:
    async with Node(nats=url, name=name, agents=AGENTS, reconcile_interval=0.2) as node:

        async def on_call(msg: Msg) -> None:
            agent_id, remind = msg.data.decode(), None
            if agent_id.startswith("{"):  # {"id": ..., "remind": seconds}
                asked = orjson.loads(agent_id)
                agent_id, remind = asked["id"], asked.get("remind")
            bump = Signal(type="tally.bump", source="/race", data={"remind": remind})
            try:
                out = await node.ref(agent_id).call(bump)
                body = {"count": out["count"], "activations": node._counters.get("activations", 0)}
            except JidoError as exc:
                body = {"error": exc.to_dict()}
            await msg.respond(orjson.dumps(body))

        await node.nc.subscribe(f"test.vcall.{name}", cb=on_call)
        await node.nc.flush()
        await node.membership.wait_members(peers.split(","))
        print(f"node {name} ready pid {os.getpid()}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
