"""A loopback NATS proxy that cuts chosen connections by their client name (gray failures).

Every NATS client sends ``CONNECT {..., "name": "..."}`` as its first line. The proxy reads that
name and, while a name is cut, holds the connection's bytes in both directions (nothing is
dropped or closed: the TCP connection just stops moving, as in a partition). A node's data
connection is named ``foundation-node-<id>``, its lease and control connections
``foundation-node-<id>-lease`` / ``-control``, so one of them can be cut alone.

```python
proxy = await NamedProxy(server.port).start()
node = Node(proxy.url, ...)
proxy.cut("foundation-node-n1")   # only n1's data connection stops
proxy.heal("foundation-node-n1")
await proxy.stop()
```
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

_NAME = re.compile(rb'"name"\s*:\s*"([^"]*)"')


@dataclass
class _Conn:
    name: str = ""
    flowing: asyncio.Event = field(default_factory=asyncio.Event)


class NamedProxy:
    """See the module docs."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: list[_Conn] = []
        self._cut: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        """Client URL of the proxy."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> NamedProxy:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def names(self) -> list[str]:
        """Client names of the connections seen so far."""
        return sorted({c.name for c in self._conns if c.name})

    def cut(self, name: str) -> None:
        """Hold every connection (current and future) whose client name is ``name``."""
        self._cut.add(name)
        for conn in self._conns:
            if conn.name == name:
                conn.flowing.clear()

    def heal(self, name: str) -> None:
        """Let the connections named ``name`` flow again."""
        self._cut.discard(name)
        for conn in self._conns:
            if conn.name == name:
                conn.flowing.set()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        *,
        from_client: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if from_client and not conn.name:
                    found = _NAME.search(data)
                    if found:
                        conn.name = found.group(1).decode(errors="replace")
                        if conn.name in self._cut:
                            conn.flowing.clear()
                await conn.flowing.wait()
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        conn = _Conn()
        conn.flowing.set()
        self._conns.append(conn)
        self._writers += [writer, up_writer]
        for src, dst, from_client in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pump(src, dst, conn, from_client=from_client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Close the listener and every connection."""
        for conn in self._conns:
            conn.flowing.set()
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            with contextlib.suppress(Exception):
                w.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()
