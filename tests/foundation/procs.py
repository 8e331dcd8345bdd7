"""Run cluster nodes as separate processes in tests, with fault hooks.

```python
async with NodeProcesses(url, app="tests.foundation.apps:AGENTS") as procs:
    await procs.start("n1", "n2", "n3")      # returns once each has joined the membership
    procs.kill("n2")                          # SIGKILL
    procs.pause("n3"); procs.resume("n3")    # SIGSTOP / SIGCONT
    await procs.wait_left("n2")               # its node record is gone (expired or deleted)
```

Each node is ``python -m foundation.cli.main node --nats URL --app APP --name NAME``. Joining is
observed by watching the node's key in the nodes bucket (never by sleeping); a node's output goes
to a log file whose tail is shown when it fails to join. Every process started is killed and
reaped on exit, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from nats.aio.client import Client

from foundation.membership.membership import Membership
from foundation.nats.kv import connect
from foundation.nats.proc import die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class NodeProcess:
    """One node process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    paused: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pid(self) -> int:
        """Process id."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the node's output."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class NodeProcesses:
    """Start, fault and stop node processes against one NATS URL (an async context manager)."""

    def __init__(
        self,
        url: str,
        *,
        app: str = "foundation.demo_app:AGENTS",
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        join_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.app = app
        self.join_timeout = join_timeout
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), self._env.get("PYTHONPATH", "")) if p
        )
        self._env.update(env or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fdn-nodes-")
            log_dir = Path(self._tmp.name)
        self.log_dir = log_dir
        self.procs: dict[str, NodeProcess] = {}
        self._nc: Client | None = None
        self._membership: Membership | None = None
        self._membership_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kill and reap every process, close the watcher connection, remove temp logs."""
        self.cleanup()
        if self._membership is not None:
            with contextlib.suppress(Exception):
                await self._membership.stop()
            self._membership = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def cleanup(self) -> None:
        """Kill (SIGKILL after SIGCONT) and reap every process started here."""
        for proc in self.procs.values():
            if proc.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)

    # -- membership watch ----------------------------------------------------------------------

    async def membership(self) -> Membership:
        """An observer :class:`Membership` (watches the nodes bucket; joins nothing)."""
        # Several waits start at once (wait_joined gathers them): only the first may create
        # the observer, or the others would leak connections and watch tasks.
        async with self._membership_lock:
            if self._membership is None:
                self._nc = await connect(self.url, name="test-procs")
                self._membership = Membership(self._nc, None)
                await self._membership.start()
        return self._membership

    async def _wait(self, name: str, present: bool, within: float) -> None:
        members = await self.membership()
        proc = self.procs.get(name)

        async def exited() -> None:
            while proc is not None and proc.alive:  # noqa: ASYNC110 - Popen has no exit event
                await asyncio.sleep(0.05)  # polling the child's exit status, not the cluster

        waiter = asyncio.ensure_future(
            members.wait_members([name]) if present else members.wait_gone(name)
        )
        watcher = asyncio.ensure_future(exited())
        try:
            done, _ = await asyncio.wait(
                {waiter, watcher}, timeout=within, return_when="FIRST_COMPLETED"
            )
        finally:
            for t in (waiter, watcher):
                t.cancel()
            await asyncio.gather(waiter, watcher, return_exceptions=True)
        if waiter in done and not waiter.cancelled() and waiter.exception() is None:
            return
        tail = proc.log_tail() if proc is not None else ""
        state = "join" if present else "leave"
        if watcher in done and present:
            raise RuntimeError(f"node {name} exited before it joined:\n{tail}")
        raise RuntimeError(f"node {name} did not {state} in {within}s:\n{tail}")

    async def wait_joined(self, *names: str, within: float | None = None) -> None:
        """Return when every named node is a live member (seen by the membership watch)."""
        budget = within or self.join_timeout
        await asyncio.gather(*(self._wait(n, True, budget) for n in names))

    async def wait_left(self, *names: str, within: float | None = None) -> None:
        """Return when no named node is a member any more (left, expired or deleted)."""
        budget = within or self.join_timeout
        await asyncio.gather(*(self._wait(n, False, budget) for n in names))

    # -- processes -------------------------------------------------------------------------------

    def spawn(self, name: str, *extra_args: str) -> NodeProcess:
        """Start node ``name`` without waiting for it to join."""
        if name in self.procs and self.procs[name].alive:
            raise RuntimeError(f"node {name} is already running")
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                [
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
                    *extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                cwd=str(REPO_ROOT),
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        proc = NodeProcess(name=name, popen=popen, log_path=log_path, extra_args=extra_args)
        self.procs[name] = proc
        return proc

    async def start(self, *names: str, extra_args: tuple[str, ...] = ()) -> list[NodeProcess]:
        """Start the named nodes and return once each has joined the membership."""
        procs = [self.spawn(n, *extra_args) for n in names]
        await self.wait_joined(*names)
        return procs

    def _proc(self, name: str) -> NodeProcess:
        try:
            return self.procs[name]
        except KeyError:
            raise KeyError(f"no node process named {name!r}") from None

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` and reap it."""
        proc = self._proc(name)
        with contextlib.suppress(ProcessLookupError):
            proc.popen.kill()
        proc.popen.wait(timeout=10)

    def pause(self, name: str) -> None:
        """SIGSTOP node ``name`` (a long GC pause or a frozen VM)."""
        proc = self._proc(name)
        os.kill(proc.pid, signal.SIGSTOP)
        proc.paused = True

    def resume(self, name: str) -> None:
        """SIGCONT node ``name``."""
        proc = self._proc(name)
        os.kill(proc.pid, signal.SIGCONT)
        proc.paused = False

    async def terminate(self, name: str, *, within: float = 20.0) -> int:
        """SIGTERM node ``name`` (graceful drain) and wait for it to exit; returns its code."""
        proc = self._proc(name)
        if proc.paused:
            self.resume(name)
        proc.popen.terminate()
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(None, proc.popen.wait), within)
        except TimeoutError:
            proc.popen.kill()
            raise


__all__ = ["NodeProcess", "NodeProcesses"]
