"""The local cluster of ``foundation demo`` and ``foundation up`` (node processes on one NATS),
and what the demo's acts share: :class:`DemoOptions`, :class:`DemoContext`, the :class:`Act`
protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from rich.console import Console

from foundation.nats.proc import die_with_parent

DEFAULT_APP = "foundation.demo_app:AGENTS"


# -- local cluster of node processes -----------------------------------------------------------


@dataclass
class NodeProc:
    """One ``foundation node`` child process."""

    name: str
    proc: asyncio.subprocess.Process
    output: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.returncode is None


class LocalCluster:
    """An embedded NATS (1 server or a 3-server cluster) plus N node processes on this machine.

    Use as ``async with LocalCluster(nodes=3) as lc:``; every process it started is stopped on
    exit (SIGTERM, then SIGKILL after ``stop_timeout``).
    """

    def __init__(
        self,
        *,
        nodes: int = 3,
        nats_servers: int = 1,
        app: str = DEFAULT_APP,
        store_dir: str | os.PathLike[str] | None = None,
        name_prefix: str = "node",
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.nodes = nodes
        self.nats_servers = nats_servers
        self.app = app
        self._store_dir = store_dir
        self.names = [f"{name_prefix}-{i + 1}" for i in range(nodes)]
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.url = ""
        self.procs: dict[str, NodeProc] = {}
        self._server: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start NATS, then every node process; return once each node said it is ready."""
        from foundation.nats.server import NatsCluster, NatsServer

        root = self._store_dir
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="foundation-demo-")
            root = self._tmp.name
        if self.nats_servers == 3:
            cluster = NatsCluster(3, store_root=Path(root) / "nats")
            await asyncio.to_thread(cluster.start)
            self._server = cluster
            self.url = ",".join(cluster.urls)
        else:
            server = NatsServer(store_dir=Path(root) / "nats")
            await server.astart()
            self._server = server
            self.url = server.url
        await asyncio.gather(*(self.start_node(n) for n in self.names))

    async def start_node(self, name: str) -> NodeProc:
        """Start node ``name`` and wait for its ready line."""
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "foundation.cli.main",
            "node",
            "--nats",
            self.url,
            "--app",
            self.app,
            "--name",
            name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
        )
        node = NodeProc(name=name, proc=proc)
        self.procs[name] = node
        ready = asyncio.get_running_loop().create_future()
        node.reader = asyncio.create_task(self._read(node, ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.ready_timeout)
        except TimeoutError as exc:
            raise RuntimeError(
                f"node {name} did not start within {self.ready_timeout}s:\n"
                + "\n".join(node.output[-20:])
            ) from exc
        return node

    async def _read(self, node: NodeProc, ready: asyncio.Future[None]) -> None:
        assert node.proc.stdout is not None
        marker = f"node {node.name} ready"
        while True:
            line = await node.proc.stdout.readline()
            if not line:
                break
            text = line.decode(errors="replace").rstrip()
            node.output.append(text)
            del node.output[:-200]
            if not ready.done() and marker in text:
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(
                RuntimeError(f"node {node.name} exited:\n" + "\n".join(node.output[-20:]))
            )
            ready.exception()

    def pids(self) -> dict[str, int]:
        """Process id of every node process started (and of the embedded NATS: ``nats``)."""
        out = {name: node.proc.pid for name, node in self.procs.items()}
        pid = getattr(self._server, "pid", None)
        if isinstance(pid, int):
            out["nats"] = pid
        return out

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (for fault acts)."""
        node = self.procs[name]
        if node.alive:
            node.proc.kill()

    async def stop_node(self, name: str) -> None:
        """SIGTERM node ``name`` (it drains) and wait; SIGKILL after ``stop_timeout``."""
        node = self.procs[name]
        if node.alive:
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGCONT)
                node.proc.terminate()
            try:
                await asyncio.wait_for(node.proc.wait(), self.stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.kill()
                await node.proc.wait()
        if node.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.reader, 2.0)

    async def stop(self) -> None:
        """Stop every node process (killed, not drained: the demo is over), then NATS."""
        for node in self.procs.values():
            if node.alive:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.kill()
        for node in self.procs.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.proc.wait(), self.stop_timeout)
            if node.reader is not None:
                node.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await node.reader
        if self._server is not None:
            if hasattr(self._server, "astop"):
                await self._server.astop()
            else:
                await asyncio.to_thread(self._server.stop)
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# -- acts ----------------------------------------------------------------------------------------


@dataclass
class DemoOptions:
    """Knobs of the demo (the CLI's options)."""

    nodes: int = 3
    duration: float = 8.0
    orders: int = 24
    concurrency: int = 32
    notifiers: int = 3


@dataclass
class DemoContext:
    """What acts share: the options, the console, the cluster, a driver node, the results."""

    options: DemoOptions
    console: Console
    cluster: LocalCluster | None = None
    node: Any = None
    desks: list[str] = field(default_factory=list)
    notifiers: list[str] = field(default_factory=list)
    inventory: str = "inventory"
    latencies: list[float] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    casts: int = 0
    load_seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    dashboard: Any = None


class Act(Protocol):
    """One step of the demo."""

    name: str
    title: str

    async def run(self, ctx: DemoContext) -> None:
        """Do the act's work; raise to abort the demo."""
        ...


__all__ = ["DEFAULT_APP", "Act", "DemoContext", "DemoOptions", "LocalCluster", "NodeProc"]
