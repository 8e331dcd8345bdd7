"""Fixtures for the cluster layer: real ``nats-server`` processes on free loopback ports.

- ``nats_server``: one server with JetStream, data in the test's tmp dir.
- ``nats_cluster``: three servers with routes on loopback (slower; use sparingly).
- ``nats_connect``: ``await nats_connect(url_or_server)`` returns a connected client that is
  closed at teardown.
- ``node_cluster(url)``: node processes of a test app (a :class:`foundation.testing.LocalCluster`
  that imports from this repository).

Every fixture stops what it started.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from foundation.nats.kv import connect
from foundation.testing import LocalCluster, NatsCluster, NatsProxy, NatsServer

Connect = Callable[..., Awaitable[NatsClient]]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root: node processes import the test apps (``tests.foundation...``) from it."""


def repo_env(**extra: str) -> dict[str, str]:
    """This process's environment with :data:`REPO_ROOT` in front of ``PYTHONPATH`` (a child
    process then imports the test apps, and this checkout's packages), plus ``extra``."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


async def run_cli(*args: str, merge: bool = True) -> tuple[int, str, str]:
    """Run ``python -m foundation ARGS`` from the repository; ``(exit code, stdout, stderr)``
    (``merge``: stderr into stdout, so the third item is empty)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "foundation",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge else asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env=repo_env(),
    )
    out, err = await proc.communicate()
    return int(proc.returncode or 0), out.decode(), (err or b"").decode()


def node_cluster(
    nats: str | NatsServer | NatsCluster,
    *,
    app: str = "tests.foundation.apps:AGENTS",
    nodes: Sequence[str] = (),
    **options: Any,
) -> LocalCluster:
    """Node processes of ``app`` against ``nats`` (none until started: ``start_nodes``)."""
    return LocalCluster(
        nats=nats, nodes=nodes, app=app, pythonpath=[REPO_ROOT], cwd=REPO_ROOT, **options
    )


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """One real nats-server (JetStream) on a free loopback port."""
    srv = NatsServer(store_dir=tmp_path / "jetstream")
    await srv.astart()
    try:
        yield srv
    finally:
        await srv.astop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A real 3-server JetStream cluster (routes on loopback), ready (meta leader elected)."""
    cluster = NatsCluster(3, store_root=tmp_path / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def nats_connect() -> AsyncIterator[Connect]:
    """Factory connecting NATS clients that are all closed at teardown."""
    clients: list[NatsClient] = []

    async def _connect(target: NatsServer | NatsCluster | str, **options: Any) -> NatsClient:
        url = target.url if isinstance(target, NatsServer | NatsCluster) else target
        nc = await connect(url, **options)
        clients.append(nc)
        return nc

    try:
        yield _connect
    finally:
        for nc in clients:
            try:
                await nc.close()
            except asyncio.CancelledError:
                # nats-py surfaces a cancelled close-waiter when the peer (e.g. a stopped
                # proxy) already dropped the socket; only a real cancellation propagates.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception:
                pass


async def eventually(
    fn: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds the polling loop
    interval: float = 0.02,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Any:
    """Await ``fn()`` until it returns a truthy value without raising ``retry_on``.

    Polls a condition (bounded by ``timeout``) instead of sleeping a guessed time; fails the
    test with the last error when the condition never holds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = await fn()
            if value:
                return value
        except retry_on as exc:
            last = exc
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s (last error: {last!r})")
        await asyncio.sleep(interval)


TcpProxy = NatsProxy
"""The pausable proxy of the tests: :class:`foundation.testing.NatsProxy` (``pause`` holds every
connection, ``cut`` one client's by name)."""


@pytest.fixture
async def tcp_proxy(nats_server: NatsServer) -> AsyncIterator[TcpProxy]:
    """A pausable proxy in front of ``nats_server`` (cut one client off without the others)."""
    proxy = await TcpProxy(nats_server.port).start()
    try:
        yield proxy
    finally:
        await proxy.stop()
