"""Test kit for agents: drive an agent with signals, assert state and emitted signals.

Nothing here sleeps: every helper returns once the work it started has finished, and
schedules are fired by hand instead of waiting for their time::

    from jido.testing import AgentTest

    async def test_deposit() -> None:
        async with AgentTest(Account, state={"balance": 10}) as t:
            await t.send("account.deposit", {"amount": 5})
            t.assert_state(balance=15)
            t.assert_emitted("account.deposited", data={"balance": 15})
            err = await t.send_error("account.deposit", {"amount": -1})
            assert err.type == "validation_error"
            t.assert_state(balance=15)          # unchanged

The agent runs in a real :class:`~jido.Runtime` (with an optional store), so what passes here
behaves the same in production.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel

from jido._agent import Agent
from jido._bus import Bus
from jido._directive import Emit, Schedule
from jido._errors import JidoError
from jido._runtime import AgentDeadLetter, AgentRef, Runtime
from jido._signal import Signal
from jido._store import StateStore

__all__ = ["AgentTest", "EmittedSignal", "RecordingBus", "Transition"]


@dataclass(frozen=True, slots=True)
class Transition:
    """One committed command: the signal, the state before and after, and the result."""

    agent_id: str
    signal: Signal
    before: BaseModel
    after: BaseModel
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EmittedSignal:
    """A signal an agent emitted, and where to: ``"bus"``, ``"self"``, an agent id or
    ``"dispatch"``."""

    agent_id: str
    signal: Signal
    target: str


class RecordingBus:
    """A bus wrapper that records every published signal, then publishes it on ``inner``."""

    def __init__(self, inner: Bus | None = None) -> None:
        self.inner = inner if inner is not None else Bus(name="test")
        self.published: list[Signal] = []

    async def publish(self, *signals: Signal) -> list[int]:
        """Record and forward."""
        self.published.extend(signals)
        result: list[int] = await self.inner.publish(*signals)
        return result

    def subscribe(self, pattern: str, handler: Any, **kwargs: Any) -> Any:
        """Subscribe on the inner bus."""
        return self.inner.subscribe(pattern, handler, **kwargs)

    async def close(self) -> None:
        """Close the inner bus."""
        await self.inner.close()


def _matches(pattern: str, sig_type: str) -> bool:
    if pattern == sig_type:
        return True
    p = pattern.split(".")
    t = sig_type.split(".")

    def go(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(t)
        if p[i] == "**":
            return any(go(i + 1, k) for k in range(j, len(t) + 1))
        if j == len(t):
            return False
        if p[i] == "*" or fnmatch.fnmatchcase(t[j], p[i]):
            return go(i + 1, j + 1)
        return False

    return go(0, 0)


def _subset(expected: Mapping[str, Any], actual: Any) -> bool:
    if isinstance(actual, BaseModel):
        actual = actual.model_dump()
    if not isinstance(actual, Mapping):
        return False
    for key, value in expected.items():
        if key not in actual:
            return False
        got = actual[key]
        if isinstance(value, Mapping) and not isinstance(got, BaseModel | Mapping):
            return False
        if isinstance(value, Mapping):
            if not _subset(value, got):
                return False
        elif got != value:
            return False
    return True


class AgentTest:
    """Run one agent (plus any others you start) in a private runtime and observe it.

    Args:
        agent: the agent class under test.
        id: its id (default ``"agent-under-test"``).
        state: its initial state.
        store: a state store (default: none, state in memory only).
        runtime_options: extra keyword arguments for :class:`~jido.Runtime`.

    Attributes after entering: ``rt`` (the runtime), ``ref`` (the agent's ref), ``bus`` (a
    :class:`RecordingBus`), ``transitions``, ``emitted``.
    """

    def __init__(
        self,
        agent: type[Agent],
        *,
        id: str = "agent-under-test",
        state: Mapping[str, Any] | BaseModel | None = None,
        store: StateStore | None = None,
        source: str = "/test",
        **runtime_options: Any,
    ) -> None:
        self.agent_cls = agent
        self.id = id
        self.source = source
        self._state = state
        self.bus = RecordingBus()
        self.rt = Runtime(store=store, bus=self.bus, **runtime_options)
        self.transitions: list[Transition] = []
        self.emitted: list[EmittedSignal] = []
        self._ref: AgentRef | None = None

    async def __aenter__(self) -> Self:
        await self.rt.__aenter__()
        self.rt._tracer = self._trace
        self.rt._emit_tracer = self._trace_emit
        self._ref = await self.rt.start(self.agent_cls, id=self.id, state=self._state)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rt.close()

    def _trace(
        self, agent_id: str, signal: Signal, before: BaseModel, after: BaseModel, result: Any
    ) -> None:
        self.transitions.append(Transition(agent_id, signal, before, after, result))

    def _trace_emit(self, agent_id: str, d: Emit) -> None:
        if d.to_self:
            target = "self"
        elif d.to is not None:
            target = d.to
        elif d.dispatch is not None:
            target = "dispatch"
        else:
            target = "bus"
        self.emitted.append(EmittedSignal(agent_id, d.signal, target))

    # -- driving -------------------------------------------------------------------------------

    @property
    def ref(self) -> AgentRef:
        """The ref of the agent under test."""
        if self._ref is None:
            raise RuntimeError("use AgentTest as `async with AgentTest(...) as t:`")
        return self._ref

    def signal(self, type: str | Signal, data: Any = None) -> Signal:
        """Build a signal from a type and data (a :class:`~jido.Signal` is returned as is)."""
        if isinstance(type, Signal):
            return type
        return Signal(type=type, source=self.source, data=data)

    async def send(self, type: str | Signal, data: Any = None) -> dict[str, Any]:
        """``call`` the agent and return the result; then wait until all agents are idle."""
        result = await self.ref.call(self.signal(type, data))
        await self.settle()
        return result

    async def send_error(self, type: str | Signal, data: Any = None) -> JidoError:
        """``call`` the agent expecting a typed error; return it (fails if none is raised)."""
        try:
            result = await self.ref.call(self.signal(type, data))
        except JidoError as err:
            await self.settle()
            return err
        raise AssertionError(f"expected a JidoError for {type!r}, got the result {result!r}")

    async def cast(self, type: str | Signal, data: Any = None) -> None:
        """``cast`` to the agent and wait until every agent is idle."""
        await self.ref.cast(self.signal(type, data))
        await self.settle()

    async def settle(self) -> None:
        """Wait until every mailbox of the runtime is empty and nothing is running."""
        await self.rt.wait_idle()

    def schedules(self) -> dict[str, Schedule]:
        """The agent's pending schedules by key."""
        return self.rt.schedules(self.id)

    async def fire(self, key: str) -> None:
        """Deliver schedule ``key`` now (instead of waiting) and wait until idle."""
        if not self.rt.fire(self.id, key):
            raise AssertionError(
                f"no pending schedule {key!r}; pending: {sorted(self.schedules())}"
            )
        await self.settle()

    # -- observing -----------------------------------------------------------------------------

    @property
    def state(self) -> BaseModel:
        """The agent's current state."""
        srv = self.rt._server(self.id)
        if srv.agent is None:
            raise AssertionError("the agent is hibernated; use `await t.ref.state()`")
        return srv.agent.state

    @property
    def dead_letters(self) -> list[AgentDeadLetter]:
        """Signals that could not be delivered or handled."""
        return list(self.rt.dead_letters)

    def assert_state(self, **expected: Any) -> None:
        """Assert that the state's fields equal ``expected`` (nested dicts match subsets)."""
        state = self.state
        if not _subset(expected, state):
            raise AssertionError(f"state {state!r} does not match {expected!r}")

    def assert_emitted(
        self,
        pattern: str,
        *,
        data: Mapping[str, Any] | None = None,
        count: int | None = None,
        target: str | None = None,
    ) -> list[Signal]:
        """Assert that signals matching ``pattern`` (``*``/``**`` wildcards) were emitted.

        ``data`` must be a subset of each match's data; ``count`` the exact number of matches
        (default: at least one); ``target`` where they went (``"bus"``, ``"self"``, an id).
        Returns the matching signals in emission order.
        """
        found = [
            e.signal
            for e in self.emitted
            if _matches(pattern, e.signal.type)
            and (target is None or e.target == target)
            and (data is None or _subset(data, e.signal.data))
        ]
        if count is None and not found:
            seen = [(e.signal.type, e.target) for e in self.emitted]
            raise AssertionError(f"no emitted signal matches {pattern!r}; emitted: {seen}")
        if count is not None and len(found) != count:
            raise AssertionError(
                f"expected {count} emitted signal(s) matching {pattern!r}, got {len(found)}"
            )
        return found

    def assert_not_emitted(self, pattern: str) -> None:
        """Assert that no emitted signal matches ``pattern``."""
        self.assert_emitted(pattern, count=0)

    def assert_transitions(self, *types: str) -> None:
        """Assert the committed commands so far handled exactly these signal types, in order."""
        got = [t.signal.type for t in self.transitions if t.agent_id == self.id]
        if got != list(types):
            raise AssertionError(f"committed commands {got} != expected {list(types)}")
