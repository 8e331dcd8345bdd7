"""``Runtime``: runs agents on one node, each as a lightweight server with a bounded mailbox.

Design (chosen for the hot path and for memory):

* Each agent is a small ``_Server`` object holding its state, a bounded FIFO mailbox and its
  bookkeeping. An agent has an asyncio task only while it has work: the first message into an
  idle mailbox starts a task that drains the mailbox one message at a time, in arrival order,
  and exits when it is empty. 100,000 idle agents therefore hold no task at all.
* ``call`` puts ``(signal, future, meta)`` into the mailbox and awaits the future: one future
  per call, no queue per call, no ``wait_for`` unless a timeout is given.
* A full mailbox raises :class:`~jido.MailboxFullError` at once (never a silent drop).
* ``AgentRef.call_batch`` puts several signals into the mailbox as one item: they run one
  command each, in order, in one mailbox turn, and their state is checkpointed once (the
  cluster layer commits a batch of inbox signals and its stream position in one write).
* A command is: route (cached per signal type) → action → merge + validate the state →
  checkpoint (per policy) → directives → reply. Anything that fails before the checkpoint
  leaves the state unchanged.
* An exception that is not a typed command error (a hook or a directive raising, a bug)
  crashes the agent: the caller gets an ``ExecutionError``, and the agent is restarted with its
  last checkpointed state, up to ``max_restarts`` times in ``restart_window`` seconds; then it
  stays stopped and a ``jido.agent.failed`` signal is published.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from pydantic import BaseModel

from jido._agent import CHILD_EXITED, Agent, Instruction, _params_of
from jido._bus import Bus
from jido._directive import (
    Cancel,
    Directive,
    Emit,
    Schedule,
    Spawn,
    StartSensor,
    Stop,
    StopChild,
    StopSensor,
)
from jido._dispatch import Dispatch
from jido._errors import (
    AgentNotFoundError,
    AgentStoppedError,
    ExecutionError,
    FencedError,
    JidoError,
    MailboxFullError,
    RoutingError,
    StoreError,
    TimeoutError,
    ValidationError,
)
from jido._info import AgentInfo, FailedCommand
from jido._sensors_durable import record_of, restore, table_after
from jido._services import Services
from jido._signal import Signal
from jido._store import Checkpoint, StateStore
from jido._timers import TimerBook, has_timer_effects
from jido._virtual import Activator, VirtualRef

__all__ = [
    "AgentDeadLetter",
    "AgentDispatch",
    "AgentEvent",
    "AgentExistsError",
    "AgentRef",
    "BatchOutcome",
    "Runtime",
]

_log = logging.getLogger("jido.runtime")

#: Signal type published when an agent exceeds its restart intensity and stays stopped.
AGENT_FAILED = "jido.agent.failed"

_RUNNING = 0
_STOPPING = 1
_STOPPED = 2

_R = TypeVar("_R")

#: The agent server whose command (or mount) is running in this task; set once per mailbox
#: drain, so code that runs inside an agent (the LLM loop) can reach its runtime and store.
_current: ContextVar[_Server | None] = ContextVar("jido_current_agent", default=None)


def current_server() -> _Server | None:
    """The server of the agent whose code runs in the current task, or ``None``."""
    return _current.get()


_FAIRNESS = 64  # messages drained before yielding to other tasks


class AgentExistsError(JidoError):
    """An agent with that id is already running here. Stop it first or pick another id."""

    type = "agent_exists"


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """A lifecycle event sent to runtime listeners.

    ``kind`` is one of ``started``, ``stopped``, ``crashed``, ``restarted``, ``hibernated``,
    ``thawed``. ``reason`` says why an agent stopped (``normal``, ``fenced``, ``failed``,
    ``parent``, ``passivated``, ...); ``error`` is set for ``crashed`` and for failures.
    """

    kind: str
    agent_id: str
    agent_type: str = ""
    reason: str | None = None
    error: JidoError | None = None
    parent: str | None = None
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AgentDeadLetter:
    """A signal that could not be delivered or handled, with the error saying why."""

    agent_id: str
    signal: Signal
    error: JidoError
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What :meth:`AgentRef.call_batch` did with a batch of signals.

    The first ``applied`` signals were applied, in order, and committed by one checkpoint;
    ``results[i]`` is the result dict of signal ``i`` — or the ``JidoError`` its directives
    raised after the commit (its state change stands; the error is also a dead letter).
    When ``applied`` is less than the batch size, ``error`` says why signal ``applied`` was not
    applied (its command error, an ``ExecutionError`` for a crash, or ``AgentStoppedError``
    when a ``Stop`` directive ended the agent); the signals after it were not run.
    """

    applied: int
    results: tuple[dict[str, Any] | JidoError, ...]
    error: JidoError | None = None


class _Batch:
    """One mailbox item holding several signals (see :meth:`AgentRef.call_batch`)."""

    __slots__ = ("metas", "signals")

    def __init__(
        self, signals: tuple[Signal, ...], metas: tuple[Mapping[str, Any] | None, ...]
    ) -> None:
        self.signals = signals
        self.metas = metas


_Item = tuple[Signal | _Batch, asyncio.Future[Any] | None, Any]

Listener = Callable[[AgentEvent], Any]
CommandHook = Callable[[str, type, Any], contextlib.AbstractContextManager[Any]]
"""``hook(agent_id, agent_class, item)``: a context entered around one mailbox item (see
``Runtime.command_hook``)."""


def _policy(value: str | int) -> tuple[int, bool]:
    """Checkpoint policy → (save every N commands (0: not per command), save on stop)."""
    if value == "every":
        return 1, True
    if value == "on_stop":
        return 0, True
    if value == "never":
        return 0, False
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, True
    raise ValidationError(
        f"checkpoint must be 'every', 'on_stop', 'never' or an int N >= 1, got {value!r}",
        details={"checkpoint": repr(value)},
    )


def _fail(fut: asyncio.Future[Any] | None, err: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(err)


class _Server:
    """One running agent: state, mailbox, and the bookkeeping of its lifecycle."""

    __slots__ = (
        "active",
        "agent",
        "cap",
        "children",
        "ckpt_every",
        "ckpt_on_stop",
        "cls",
        "epoch",
        "hibernate_after",
        "id",
        "last_active",
        "last_error",
        "mailbox",
        "meta",
        "parent",
        "restarts",
        "room",
        "rt",
        "saved_seq",
        "sensor_table",
        "sensors",
        "seq",
        "spawned",
        "status",
        "stop_reason",
        "stopped",
        "task",
        "timers",
    )

    def __init__(self, rt: Runtime, cls: type[Agent], agent: Agent) -> None:
        self.rt = rt
        self.cls = cls
        self.id = agent.id
        self.agent: Agent | None = agent
        self.mailbox: collections.deque[_Item] | None
        self.mailbox = None
        self.cap = cls.mailbox_size if cls.mailbox_size is not None else rt.mailbox_size
        self.active = False
        self.task: asyncio.Task[None] | None = None
        self.status = _RUNNING
        self.seq = 0
        self.saved_seq = 0
        self.epoch = 0
        self.meta: dict[str, Any] | None = None
        self.parent: str | None = None
        self.children: list[str] | None = None
        self.spawned = 0  # Spawn directives carried out: numbers default child ids
        self.timers: TimerBook | None = None
        self.sensors: dict[str, Any] | None = None
        self.sensor_table: dict[str, dict[str, Any]] | None = None  # durable sensors' records
        self.restarts: collections.deque[float] | None = None
        self.stop_reason: str | None = None
        self.stopped: asyncio.Future[None] | None = None
        self.room: asyncio.Future[None] | None = None  # resolved when a full mailbox drains
        self.last_active = time.monotonic()
        self.last_error: tuple[float, BaseException] | None = None
        policy = cls.checkpoint if cls.checkpoint is not None else rt.checkpoint
        self.ckpt_every, self.ckpt_on_stop = _policy(policy)
        if rt.store is None:
            self.ckpt_every, self.ckpt_on_stop = 0, False
        self.hibernate_after = (
            cls.hibernate_after if cls.hibernate_after is not None else rt.hibernate_after
        )

    # -- mailbox ---------------------------------------------------------------------------------

    def enqueue(self, signal: Signal | _Batch, fut: asyncio.Future[Any] | None, meta: Any) -> None:
        if self.status:
            raise AgentStoppedError(
                f"agent {self.id!r} is stopping or stopped; it takes no more signals",
                details={"agent_id": self.id},
            )
        mb = self.mailbox
        if mb is None:
            mb = self.mailbox = collections.deque()
        if len(mb) >= self.cap:
            raise MailboxFullError(
                f"mailbox of agent {self.id!r} is full ({self.cap} signals waiting); back off "
                "and retry, or raise mailbox_size",
                details={"agent_id": self.id, "mailbox_size": self.cap},
            )
        mb.append((signal, fut, meta))
        if not self.active:
            self.active = True
            self.task = self.rt._loop().create_task(self._drain())

    async def _drain(self) -> None:
        mb = self.mailbox
        assert mb is not None
        n = 0
        _current.set(self)  # this task's own context: no reset needed
        try:
            while mb and not self.status and self.stop_reason is None:
                item = mb.popleft()
                room = self.room
                if room is not None and len(mb) <= self.cap // 2:
                    self.room = None  # senders waiting for room refill half the mailbox at once
                    if not room.done():
                        room.set_result(None)
                hook = self.rt.command_hook
                if hook is not None:
                    with hook(self.id, self.cls, item):
                        await self._dispatch(item)
                elif item[0].__class__ is _Batch:
                    await self._process_batch(item)
                else:
                    await self._process(item)  # type: ignore[arg-type]
                n += 1
                if n % _FAIRNESS == 0 and mb:
                    await asyncio.sleep(0)
            if self.stop_reason is not None and not self.status:
                await self.shutdown(self.stop_reason)
        finally:
            self.active = False
            self.task = None
            self.last_active = time.monotonic()
            room, self.room = self.room, None
            if room is not None and not room.done():
                room.set_result(None)  # stopped or empty: let waiting senders look again

    async def _dispatch(self, item: Any) -> None:
        if item[0].__class__ is _Batch:
            await self._process_batch(item)
        else:
            await self._process(item)

    # -- one command -------------------------------------------------------------------------------

    async def _process(self, item: tuple[Signal, asyncio.Future[Any] | None, Any]) -> None:
        signal, fut, meta = item
        rt = self.rt
        book = self.timers
        if book is not None and book.firing:
            book.settle(signal.id)  # this command's commit is the firing's commit
        try:
            if self.agent is None:
                await self._thaw()
            agent = self.agent
            assert agent is not None
            cls = self.cls
            action = cls._route(signal)
            inst = Instruction(action, _params_of(signal))
            new_state, result, effects = await agent._step(inst, agent.state, signal, meta)
        except JidoError as err:
            self.last_error = (time.time(), err)
            if isinstance(err, RoutingError) or fut is None:
                rt._dead(self.id, signal, err)
            _fail(fut, err)
            if isinstance(err, FencedError) and err.details.get("key") == self.id:
                # a command that commits on its own (an LLM turn) found a newer owner
                await self.shutdown("fenced", fenced=True)
            return
        except asyncio.CancelledError:
            _fail(fut, AgentStoppedError(f"agent {self.id!r} was cancelled"))
            raise
        except Exception as exc:
            await self._crash(exc, fut, signal)
            return
        seq = self.seq + 1
        merged: dict[str, Any] | None
        if meta:
            merged = dict(self.meta) if self.meta else {}
            merged.update(meta)
        else:
            merged = self.meta
        every = self.ckpt_every
        if every and (every == 1 or seq - self.saved_seq >= every):
            try:
                await self._save(new_state, seq, merged, effects)
            except FencedError as err:
                self.last_error = (time.time(), err)
                if fut is None:
                    rt._dead(self.id, signal, err)
                _fail(fut, err)
                await self.shutdown("fenced", fenced=True)
                return
            except JidoError as err:
                self.last_error = (time.time(), err)
                if fut is None:
                    rt._dead(self.id, signal, err)
                _fail(fut, err)
                return
        before = agent.state
        agent.state = new_state
        self.seq = seq
        self.meta = merged
        if effects:
            try:
                await self._effects(effects, signal)
            except JidoError as err:
                if fut is None:
                    rt._dead(self.id, signal, err)
                _fail(fut, err)
                return
            except Exception as exc:
                await self._crash(exc, fut, signal)
                return
        if fut is not None and not fut.done():
            fut.set_result(result)
        tracer = rt._tracer
        if tracer is not None:
            tracer(self.id, signal, before, new_state, result)

    async def _process_batch(self, item: _Item) -> None:
        """Run a batch: one command per signal, in order, then one checkpoint for all of them.

        Nothing of the batch is visible (state, checkpoint, directives, replies) before its
        checkpoint is saved. The batch ends early at the first signal whose command fails (its
        error is that signal's outcome; the applied prefix is committed) or after a ``Stop``
        directive. A failed save rolls the whole batch back; a ``FencedError`` also stops the
        agent at once. Directives run after the save, signal by signal, in order.
        """
        batch, fut, _ = item
        assert isinstance(batch, _Batch) and fut is not None
        rt = self.rt
        signals, metas = batch.signals, batch.metas
        try:
            if self.agent is None:
                await self._thaw()
        except JidoError as err:
            _fail(fut, err)
            return
        except asyncio.CancelledError:
            _fail(fut, AgentStoppedError(f"agent {self.id!r} was cancelled"))
            raise
        except Exception as exc:
            await self._crash(exc, fut, signals[0])
            return
        agent = self.agent
        assert agent is not None
        cls = self.cls
        state = agent.state
        merged = self.meta
        done: list[tuple[Signal, dict[str, Any], list[Directive], BaseModel, BaseModel]] = []
        error: JidoError | None = None
        crashed: BaseException | None = None
        try:
            for i, signal in enumerate(signals):
                meta = metas[i]
                try:
                    action = cls._route(signal)
                    inst = Instruction(action, _params_of(signal))
                    new_state, result, effects = await agent._step(inst, state, signal, meta)
                except JidoError as err:
                    if isinstance(err, RoutingError):
                        rt._dead(self.id, signal, err)
                    error = err
                    break
                except Exception as exc:
                    crashed = exc
                    break
                if meta:
                    merged = dict(merged) if merged else {}
                    merged.update(meta)
                done.append((signal, result, effects, state, new_state))
                state = new_state
                if effects and any(isinstance(d, Stop) for d in effects):
                    if i + 1 < len(signals):
                        error = AgentStoppedError(
                            f"agent {self.id!r} stopped (Stop directive) before this signal",
                            details={"agent_id": self.id},
                        )
                    break
            n = len(done)
            if n:
                seq = self.seq + n
                every = self.ckpt_every
                if every and (every == 1 or seq - self.saved_seq >= every):
                    try:
                        await self._save(
                            state, seq, merged, [e for _s, _r, fx, _b, _a in done for e in fx]
                        )
                    except FencedError as err:
                        _fail(fut, err)
                        await self.shutdown("fenced", fenced=True)
                        return
                    except JidoError as err:
                        _fail(fut, err)  # rolled back: nothing of the batch was applied
                        return
                agent.state = state
                self.seq = seq
                self.meta = merged
        except asyncio.CancelledError:
            _fail(fut, AgentStoppedError(f"agent {self.id!r} was cancelled"))
            raise
        results: list[dict[str, Any] | JidoError] = []
        tracer = rt._tracer
        for signal, result, effects, before, after in done:
            outcome: dict[str, Any] | JidoError = result
            if effects:
                if self.status:
                    outcome = AgentStoppedError(
                        f"agent {self.id!r} stopped before carrying out this signal's directives",
                        details={"agent_id": self.id},
                    )
                    rt._dead(self.id, signal, outcome)
                else:
                    try:
                        await self._effects(effects, signal)
                    except JidoError as err:
                        rt._dead(self.id, signal, err)
                        outcome = err
                    except Exception as exc:
                        outcome = await self._crash(exc, None, signal)
            results.append(outcome)
            if tracer is not None:
                tracer(self.id, signal, before, after, result)
        if crashed is not None:
            if self.status:
                error = AgentStoppedError(
                    f"agent {self.id!r} stopped before this signal", details={"agent_id": self.id}
                )
            else:
                error = await self._crash(crashed, None, signals[len(done)])
        if error is not None:
            self.last_error = (time.time(), error)
        if not fut.done():
            fut.set_result(BatchOutcome(len(done), tuple(results), error))

    async def _save(
        self,
        state: BaseModel,
        seq: int,
        meta: dict[str, Any] | None,
        effects: list[Directive] | None = None,
    ) -> None:
        store = self.rt.store
        assert store is not None
        book = self.timers
        if book is None and effects and has_timer_effects(effects):
            book = self.timers = TimerBook(self.rt._loop(), self.fire)
        cp = Checkpoint(
            state=state.model_dump(),
            agent_type=self.cls._type_name,
            seq=seq,
            meta=meta if meta is not None else {},
            epoch=self.epoch,
            timers=book.table(effects or ()) if book is not None else {},
            sensors=table_after(self.sensor_table, self.sensors, effects or ()),
        )
        try:
            await store.save(self.id, cp)
        except JidoError:
            raise
        except Exception as exc:
            raise StoreError(
                f"saving the checkpoint of agent {self.id!r} failed: {exc!r}; the command was "
                "rolled back",
                details={"agent_id": self.id},
                cause=exc,
            ) from exc
        self.saved_seq = seq

    # -- directives --------------------------------------------------------------------------------

    async def _effects(self, effects: list[Directive], signal: Signal) -> None:
        rt = self.rt
        for d in effects:
            if isinstance(d, Emit):
                await rt._emit(self, d)
            elif isinstance(d, Schedule):
                self.schedule(d)
            elif isinstance(d, Cancel):
                self.cancel_timer(d.key)
            elif isinstance(d, Spawn):
                # never reuse a number: a child that exited leaves the list, not the sequence
                self.spawned += 1
                child_id = d.id if d.id is not None else f"{self.id}/{self.spawned}"
                await rt.start(d.agent, id=child_id, state=d.state, parent=self.id)
            elif isinstance(d, StopChild):
                if self.children is None or d.id not in self.children:
                    raise AgentNotFoundError(
                        f"agent {self.id!r} has no child {d.id!r}",
                        details={"agent_id": self.id, "child": d.id},
                    )
                child = rt._servers.get(d.id)
                if child is not None:
                    await child.shutdown(d.reason)
            elif isinstance(d, StartSensor):
                await self.start_sensor(d)
            elif isinstance(d, StopSensor):
                if self.sensor_table:
                    self.sensor_table.pop(d.key, None)
                sensor = self.sensors.pop(d.key, None) if self.sensors else None
                if sensor is not None:
                    await sensor.stop()
            elif isinstance(d, Stop):
                self.stop_reason = d.reason
            else:
                raise ExecutionError(
                    f"agent {self.id!r}: unknown directive {d!r}; this runtime carries out "
                    "Emit, Schedule, Cancel, Spawn, StopChild, StartSensor, StopSensor and Stop",
                    details={"agent_id": self.id, "directive": type(d).__name__},
                )

    def schedule(self, d: Schedule) -> None:
        book = self.timers
        if book is None:
            book = self.timers = TimerBook(self.rt._loop(), self.fire)
        book.arm(d)

    def cancel_timer(self, key: str) -> bool:
        return self.timers.cancel(key) if self.timers is not None else False

    def fire(self, key: str) -> None:
        """Deliver the signal of schedule ``key`` now (and re-arm a cron schedule)."""
        book = self.timers
        if book is None or self.status:
            return
        sig = book.take(key)
        if sig is None:
            return
        try:
            self.enqueue(sig, None, None)
        except JidoError as err:
            book.settle(sig.id)
            self.rt._dead(self.id, sig, err)

    async def start_sensor(self, d: StartSensor) -> None:
        key = d.sensor_key
        if self.sensors is None:
            self.sensors = {}
        if key in self.sensors:
            raise ValidationError(
                f"agent {self.id!r} already runs a sensor under key {key!r}; stop it first",
                details={"agent_id": self.id, "sensor": key},
            )
        if d.durable and (self.ckpt_every or self.ckpt_on_stop):
            record = record_of(d.sensor, d.to_bus)  # a ValidationError before anything starts
            if self.sensor_table is None:
                self.sensor_table = {}
            self.sensor_table[key] = record  # as committed, even if the start below fails
        elif self.sensor_table:
            self.sensor_table.pop(key, None)
        await d.sensor.start(self.sensor_target(d.to_bus))
        self.sensors[key] = d.sensor

    def sensor_target(self, to_bus: bool) -> Callable[[Signal], Awaitable[None]]:
        """Where a sensor of this agent emits: its mailbox, or the runtime's bus."""

        async def emit(sig: Signal) -> None:
            try:
                self.enqueue(sig, None, None)
            except JidoError as err:
                self.rt._dead(self.id, sig, err)
                raise

        async def publish(sig: Signal) -> None:
            await self.rt.bus.publish(sig)

        return publish if to_bus else emit

    # -- crash, restart, stop ----------------------------------------------------------------------

    async def _crash(
        self, exc: BaseException, fut: asyncio.Future[Any] | None, signal: Signal | None
    ) -> ExecutionError:
        """Fail ``fut``, then restart from the last checkpoint (or stop, past the limit).

        Returns the error given to the caller.
        """
        rt = self.rt
        err = first = ExecutionError(
            f"agent {self.id!r} crashed: {type(exc).__name__}: {exc}. It is restarted from its "
            "last checkpoint (within its restart limit).",
            details={"agent_id": self.id, "exception": type(exc).__name__},
            cause=exc,
        )
        _log.error("agent %r crashed", self.id, exc_info=exc)
        self.last_error = (time.time(), err)
        _fail(fut, err)
        rt._event("crashed", self, error=err)
        while True:
            now = time.monotonic()
            window = (
                self.cls.restart_window
                if self.cls.restart_window is not None
                else rt.restart_window
            )
            limit = self.cls.max_restarts if self.cls.max_restarts is not None else rt.max_restarts
            if self.restarts is None:
                self.restarts = collections.deque()
            while self.restarts and now - self.restarts[0] > window:
                self.restarts.popleft()
            if len(self.restarts) >= limit:
                await rt._publish_failed(self, err)
                await self.shutdown("failed", error=err)
                return first
            self.restarts.append(now)
            try:
                await self._restart()
            except Exception as again:
                err = ExecutionError(
                    f"agent {self.id!r} failed to restart: {type(again).__name__}: {again}",
                    details={"agent_id": self.id},
                    cause=again,
                )
                rt._event("crashed", self, error=err)
                continue
            rt._event("restarted", self)
            return first

    async def _restart(self) -> None:
        store = self.rt.store
        cls = self.cls
        state = self.agent.state if self.agent is not None else None
        if store is not None:
            cp = await store.load(self.id)
            if cp is not None:
                state = cls.validate_state(cp.state)
                self.seq = self.saved_seq = cp.seq
                self.meta = dict(cp.meta)
        agent = cls(self.id, cls.validate_state(state))
        self.agent = agent
        await _mount(agent, self)

    async def _thaw(self) -> None:
        store = self.rt.store
        assert store is not None
        cp = await store.load(self.id)
        cls = self.cls
        state = cls.validate_state(cp.state if cp is not None else None)
        self.agent = cls(self.id, state)
        self.rt._event("thawed", self)

    def info(self) -> AgentInfo:
        last = None
        if self.last_error is not None:
            at, err = self.last_error
            kind = getattr(err, "type", None)
            last = FailedCommand(
                at, kind if isinstance(kind, str) else type(err).__name__, str(err)[:500]
            )
        agent = self.agent
        size = None
        if agent is not None:
            size = len(agent.state.__pydantic_serializer__.to_json(agent.state))
        mailbox = len(self.mailbox) if self.mailbox is not None else 0
        status = "stopping" if self.status else "hibernated" if agent is None else "running"
        cls = self.cls
        return AgentInfo(
            id=self.id,
            agent_class=f"{cls.__module__}:{cls.__qualname__}",
            status=status,
            mailbox=mailbox,
            mailbox_size=self.cap,
            busy=self.active,
            commands=self.seq,
            checkpointed=self.saved_seq,
            epoch=self.epoch,
            restarts=len(self.restarts) if self.restarts else 0,
            idle_seconds=0.0 if self.active else max(0.0, time.monotonic() - self.last_active),
            schedules=len(self.timers.armed) + len(self.timers.firing) if self.timers else 0,
            state_bytes=size,
            last_error=last,
        )

    async def hibernate(self) -> bool:
        rt = self.rt
        if rt.store is None:
            raise ValidationError(
                f"agent {self.id!r} cannot hibernate without a state store; give the Runtime a "
                "store (MemoryStore or SQLiteStore)",
                details={"agent_id": self.id},
            )
        agent = self.agent
        if agent is None or self.active or self.status:
            return False
        seq = self.seq
        if seq != self.saved_seq or seq == 0:
            try:
                await self._save(agent.state, seq, self.meta)
            except FencedError:
                await self.shutdown("fenced", fenced=True)
                return False
        if self.active or self.seq != seq or self.status or self.agent is not agent:
            return False  # work arrived while saving: stay awake
        self.agent = None
        rt._event("hibernated", self)
        return True

    async def shutdown(
        self, reason: str, *, fenced: bool = False, error: JidoError | None = None
    ) -> None:
        """Stop: finish the in-flight command, fail what is queued, stop children, save."""
        loop = self.rt._loop()
        if self.status:
            if self.stopped is not None:
                await asyncio.shield(self.stopped)
            return
        self.status = _STOPPING
        self.stopped = loop.create_future()
        rt = self.rt
        try:
            task = self.task
            if task is not None and task is not asyncio.current_task() and not fenced:
                done, _ = await asyncio.wait([task], timeout=rt.stop_timeout)
                if not done:  # the in-flight command overran: cancel it (its caller is told)
                    _log.warning("agent %r: command still running at stop, cancelling", self.id)
                    task.cancel()
                    await asyncio.wait([task])
            mb = self.mailbox
            if mb:
                gone = AgentStoppedError(
                    f"agent {self.id!r} stopped ({reason}) before handling this signal",
                    details={"agent_id": self.id, "reason": reason},
                )
                while mb:
                    sig, fut, _meta = mb.popleft()
                    if fut is None and isinstance(sig, Signal):
                        rt._dead(self.id, sig, gone)
                    else:
                        _fail(fut, gone)
            if self.timers is not None:
                self.timers.disarm()  # still committed by the final save below
            if self.sensors:
                for sensor in list(self.sensors.values()):
                    try:
                        await sensor.stop()
                    except Exception:
                        _log.exception("stopping a sensor of agent %r failed", self.id)
                self.sensors = None
            if self.children:
                for child_id in list(self.children):
                    child = rt._servers.get(child_id)
                    if child is not None:
                        await child.shutdown("parent")
            agent = self.agent
            if not fenced and agent is not None and self.cls._h_shutdown:
                try:
                    r = agent.shutdown(reason)
                    if self.cls._h_shutdown == 2:
                        await r
                except Exception:
                    _log.exception("shutdown hook of agent %r raised", self.id)
            if (
                not fenced
                and error is None
                and agent is not None
                and self.ckpt_on_stop
                and (self.seq != self.saved_seq)
            ):
                try:
                    await self._save(agent.state, self.seq, self.meta)
                except JidoError:
                    _log.exception("final checkpoint of agent %r failed", self.id)
        finally:
            self.status = _STOPPED
            if rt._servers.get(self.id) is self:
                del rt._servers[self.id]
            rt._event("stopped", self, reason=reason, error=error)
            rt._child_exited(self, reason)
            self.stopped.set_result(None)


async def _mount(agent: Agent, srv: _Server) -> None:
    token = _current.set(srv)
    try:
        cls = type(agent)
        if cls._h_mount:
            r = agent.mount()
            if cls._h_mount == 2:
                await r
        for skill in cls._skills:
            r = skill.mount(agent)
            if isinstance(r, Awaitable):
                await r
    finally:
        _current.reset(token)


class AgentRef:
    """A handle on a running agent: ``call``, ``cast``, ``state``.

    A ref stays valid across restarts and hibernation; after the agent stopped, its methods
    raise :class:`~jido.AgentNotFoundError` (or reach a new agent started under the same id).
    """

    __slots__ = ("_rt", "_srv", "id")

    def __init__(self, rt: Runtime, srv: _Server) -> None:
        self._rt = rt
        self._srv = srv
        self.id: str = srv.id

    def __repr__(self) -> str:
        return f"AgentRef({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentRef) and other.id == self.id and other._rt is self._rt

    def __hash__(self) -> int:
        return hash(self.id)

    def _server(self) -> _Server:
        srv = self._srv
        if srv.status:
            srv = self._rt._server(self.id)
            self._srv = srv
        return srv

    async def call(
        self,
        signal: Signal,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - part of the public contract
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send ``signal`` and wait for the result dict of the action it is routed to.

        Raises the typed error of the command (``ValidationError``, ``RoutingError``,
        ``ExecutionError``, ``StateError``, ``FencedError``, ...), ``MailboxFullError`` when the
        mailbox is full, ``TimeoutError`` after ``timeout`` seconds (the command may still run).
        ``meta`` is merged into the checkpoint written for this command, in the same write.
        """
        srv = self._srv
        if srv.status:
            srv = self._server()
        if signal.__class__ is not Signal and not isinstance(signal, Signal):
            raise ValidationError(f"call takes a jido.Signal, got {type(signal).__name__}")
        fut: asyncio.Future[dict[str, Any]] = self._rt._loop().create_future()
        srv.enqueue(signal, fut, meta)
        return await self._reply(
            fut,
            timeout,
            lambda t: TimeoutError(
                f"agent {self.id!r} did not answer within {t}s; the command may still "
                "run. Retry with a longer timeout or check the agent's load.",
                details={"agent_id": self.id, "timeout": t, "signal_type": signal.type},
            ),
        )

    async def _reply(
        self,
        fut: asyncio.Future[_R],
        timeout: float | None,  # noqa: ASYNC109 - enforced below
        expired: Callable[[float], TimeoutError],
    ) -> _R:
        """Await ``fut`` within ``timeout`` (the runtime's ``call_timeout`` when None)."""
        if timeout is None:
            timeout = self._rt.call_timeout
            if timeout is None:
                return await fut
        cm = asyncio.timeout(timeout)
        try:
            async with cm:
                return await fut
        except builtins.TimeoutError:
            if cm.expired():
                raise expired(timeout) from None
            raise

    async def call_batch(
        self,
        signals: Sequence[Signal],
        *,
        metas: Sequence[Mapping[str, Any] | None] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - as in call
    ) -> BatchOutcome:
        """Run ``signals`` as one mailbox item: one command each, in order, one checkpoint.

        Each signal is routed and applied exactly as :meth:`call` would, against the state the
        previous one left; then the state of the whole batch is saved in **one** checkpoint
        write (with checkpoint-per-command) into which ``metas[i]`` of every applied signal is
        merged, in order — so the last one wins for a key present in several. Only then do the
        directives run (signal by signal) and the reply come: nothing of the batch is visible
        before its checkpoint is saved.

        Returns a :class:`BatchOutcome`. A command error ends the batch at that signal (the
        prefix before it is committed and reported in ``applied``; the error is in
        ``error``). Raises the save's error when the checkpoint fails (nothing of the batch
        was applied; a ``FencedError`` also stops the agent), ``MailboxFullError``,
        ``AgentStoppedError``, or ``TimeoutError`` after ``timeout`` seconds (the batch may
        still run).
        """
        srv = self._srv
        if srv.status:
            srv = self._server()
        batch = tuple(signals)
        if not batch:
            raise ValidationError("call_batch needs at least one signal")
        for sig in batch:
            if sig.__class__ is not Signal and not isinstance(sig, Signal):
                raise ValidationError(f"call_batch takes jido.Signals, got {type(sig).__name__}")
        if metas is None:
            per: tuple[Mapping[str, Any] | None, ...] = (None,) * len(batch)
        else:
            per = tuple(metas)
            if len(per) != len(batch):
                raise ValidationError(
                    f"call_batch got {len(per)} metas for {len(batch)} signals; give one meta "
                    "(or None) per signal",
                    details={"signals": len(batch), "metas": len(per)},
                )
        fut: asyncio.Future[BatchOutcome] = self._rt._loop().create_future()
        srv.enqueue(_Batch(batch, per), fut, None)
        return await self._reply(
            fut,
            timeout,
            lambda t: TimeoutError(
                f"agent {self.id!r} did not finish a batch of {len(batch)} signals within "
                f"{t}s; the batch may still run",
                details={"agent_id": self.id, "timeout": t, "signals": len(batch)},
            ),
        )

    async def cast(self, signal: Signal, *, meta: Mapping[str, Any] | None = None) -> None:
        """Put ``signal`` into the agent's mailbox and return at once.

        Raises ``MailboxFullError`` when the mailbox is full. Errors of the command itself are
        recorded as dead letters (``rt.dead_letters``).
        """
        srv = self._srv
        if srv.status:
            srv = self._server()
        if signal.__class__ is not Signal and not isinstance(signal, Signal):
            raise ValidationError(f"cast takes a jido.Signal, got {type(signal).__name__}")
        srv.enqueue(signal, None, meta)

    async def wait_room(self) -> None:
        """Return once the agent's mailbox has room for a :meth:`cast` (at once when it has).

        A sender that got ``MailboxFullError`` waits here instead of polling; it is woken when
        the mailbox has drained to half its size (or the agent stopped: the next cast says so).
        """
        srv = self._srv
        mb = srv.mailbox
        if srv.status or mb is None or len(mb) < srv.cap or not srv.active:
            return
        room = srv.room
        if room is None:
            room = srv.room = asyncio.get_running_loop().create_future()
        await asyncio.shield(room)

    async def state(self) -> BaseModel:
        """The agent's current state model (read from the store if it is hibernated)."""
        srv = self._server()
        agent = srv.agent
        if agent is not None:
            return agent.state
        store = self._rt.store
        assert store is not None
        cp = await store.load(self.id)
        return srv.cls.validate_state(cp.state if cp is not None else None)

    def info(self) -> AgentInfo:
        """Its runtime bookkeeping now: status, mailbox, commands, checkpoint, schedules,
        restarts, state size and last error (never the state's content)."""
        return self._server().info()

    @property
    def agent_class(self) -> type[Agent]:
        """The class of the agent."""
        return self._server().cls

    @property
    def running(self) -> bool:
        """True while an agent with this id runs in the runtime."""
        srv = self._rt._servers.get(self.id)
        return srv is not None and not srv.status


class Runtime:
    """Runs agents on this node; an async context manager.

    ::

        async with Runtime() as rt:
            ref = await rt.start(Account, id="acc-1")
            await ref.call(Signal(type="account.deposit", source="/app", data={"amount": 5}))

    Args:
        store: a :class:`~jido.StateStore` for checkpoints (``None``: state lives only in
            memory). The runtime opens it but does not close it.
        bus: the bus emitted signals go to (default: a private in-memory :class:`~jido.Bus`).
        mailbox_size: default bound of each mailbox.
        checkpoint: default policy with a store: ``"every"`` command (a call is answered after
            its checkpoint is saved), an int N (every N commands), ``"on_stop"`` or ``"never"``.
        hibernate_after: idle seconds after which an agent's state is saved and released
            (needs a store); ``None``: never.
        max_restarts / restart_window: restart intensity (N restarts in T seconds).
        call_timeout: default ``call`` timeout in seconds (``None``: wait for the reply).
        stop_timeout: how long stopping an agent waits for its in-flight command before
            cancelling it (``None``: wait as long as it takes).
        dead_letter_limit: how many dead letters are kept (oldest dropped first).
        services: extension points for the code the runtime runs (tool sources, token
            budgets, ...); default: an empty :class:`~jido.Services`, reachable as
            ``rt.services``.
    """

    def __init__(
        self,
        store: StateStore | None = None,
        bus: Any = None,
        *,
        mailbox_size: int = 1024,
        checkpoint: str | int = "every",
        hibernate_after: float | None = None,
        max_restarts: int = 3,
        restart_window: float = 5.0,
        call_timeout: float | None = None,
        stop_timeout: float | None = 10.0,
        dead_letter_limit: int = 10_000,
        services: Services | None = None,
    ) -> None:
        _policy(checkpoint)
        if not isinstance(mailbox_size, int) or mailbox_size < 1:
            raise ValidationError(f"mailbox_size must be an int >= 1, got {mailbox_size!r}")
        if hibernate_after is not None and not hibernate_after > 0:
            raise ValidationError(f"hibernate_after must be > 0 seconds, got {hibernate_after!r}")
        self.store = store
        self._own_bus = bus is None
        self.bus: Any = bus if bus is not None else Bus(name="runtime")
        self.mailbox_size = mailbox_size
        self.checkpoint = checkpoint
        self.hibernate_after = hibernate_after
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.call_timeout = call_timeout
        self.stop_timeout = stop_timeout
        self.dead_letters: collections.deque[AgentDeadLetter] = collections.deque(
            maxlen=dead_letter_limit
        )
        self.services: Services = services if services is not None else Services()
        self._servers: dict[str, _Server] = {}
        self._listeners: list[Listener] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        # Test-kit hooks: every committed command, every emitted signal.
        self._tracer: Callable[[str, Signal, BaseModel, BaseModel, dict[str, Any]], None] | None
        self._tracer = None
        self._emit_tracer: Callable[[str, Emit], None] | None = None
        self.dead_letters_total = 0
        """Dead letters recorded since start (``dead_letters`` keeps only the latest)."""
        self.command_hook: CommandHook | None = None
        """Observability hook: ``hook(agent_id, agent_class, item)`` is entered around each
        mailbox item (``item``: ``(signal or batch, reply future or None, meta)``) while the
        agent handles it; ``None``: none."""
        self._closed = False
        self._activator = Activator(self)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.store is not None:
            await self.store.open()
        self._loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every agent (children with their parents) and the runtime's own bus."""
        self._closed = True
        self._activator.close()
        await self.stop_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait([self._sweeper])
            self._sweeper = None
        while self._bg:
            await asyncio.wait(list(self._bg))
        if self._own_bus:
            await self.bus.close()

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._event_loop
        if loop is None:
            loop = self._event_loop = asyncio.get_running_loop()
        return loop

    # -- agents ------------------------------------------------------------------------------------

    async def start(
        self,
        agent: type[Agent],
        id: str,
        state: Mapping[str, Any] | BaseModel | None = None,
        *,
        parent: str | None = None,
    ) -> AgentRef:
        """Start an agent of class ``agent`` under ``id`` and return its :class:`AgentRef`.

        With a store, the agent's last checkpoint (if any) is restored and wins over ``state``;
        otherwise ``state`` (dict or model, default: the model's defaults) is validated.
        ``parent`` makes it a child of that running agent (stopped with it). Raises
        :class:`AgentExistsError`, :class:`~jido.StateError`, or the error of ``mount``.
        """
        if not (isinstance(agent, type) and issubclass(agent, Agent)) or agent is Agent:
            raise ValidationError(f"start() needs an Agent subclass, got {agent!r}")
        if id.__class__ is not str or not id:
            raise ValidationError(f"agent id must be a non-empty string, got {id!r}")
        if self._closed:
            raise AgentStoppedError("the runtime is closed; make a new Runtime")
        if id in self._servers:
            raise AgentExistsError(
                f"an agent with id {id!r} is already running; stop it first or use another id",
                details={"agent_id": id},
            )
        if agent.idle_timeout is not None and self.store is None:
            raise ValidationError(
                f"{agent.__name__} has idle_timeout but this runtime has no state store to "
                "passivate it to; give the Runtime a store (MemoryStore or SQLiteStore)",
                details={"agent_id": id},
            )
        parent_srv = None
        if parent is not None:
            parent_srv = self._servers.get(parent)
            if parent_srv is None or parent_srv.status:
                raise AgentNotFoundError(
                    f"parent agent {parent!r} is not running", details={"agent_id": parent}
                )
        cp = None
        store = self.store
        if store is not None:
            cp = await store.load(id)
            if id in self._servers:  # started concurrently while we loaded
                raise AgentExistsError(
                    f"an agent with id {id!r} is already running", details={"agent_id": id}
                )
        instance = agent(id, agent.validate_state(cp.state if cp is not None else state))
        srv = _Server(self, agent, instance)
        if cp is not None:
            srv.seq = srv.saved_seq = cp.seq
            srv.epoch = cp.epoch
            srv.meta = dict(cp.meta) if cp.meta else None
        srv.parent = parent
        self._servers[id] = srv
        try:
            if agent._h_mount or agent._skills:
                await _mount(instance, srv)
        except BaseException:
            del self._servers[id]
            srv.status = _STOPPED
            raise
        if cp is not None and cp.timers:
            srv.timers = TimerBook(self._loop(), srv.fire)
            srv.timers.restore(cp.timers)
        if cp is not None and cp.sensors:
            srv.sensor_table = dict(cp.sensors)  # kept even for a sensor that fails to start
            await restore(srv, cp.sensors)
        if parent_srv is not None:
            if parent_srv.children is None:
                parent_srv.children = []
            parent_srv.children.append(id)
        if (srv.hibernate_after is not None or agent.idle_timeout) and self._sweeper is None:
            self._sweeper = self._loop().create_task(self._sweep())
        if self._listeners:
            self._event("started", srv)
        return AgentRef(self, srv)

    def get(self, id: str) -> AgentRef | None:
        """The ref of the running agent ``id``, or ``None``."""
        srv = self._servers.get(id)
        if srv is None or srv.status:
            return None
        return AgentRef(self, srv)

    @overload
    def ref(self, id: str) -> AgentRef: ...

    @overload
    def ref(self, id: str, cls: type[Agent]) -> VirtualRef: ...

    def ref(self, id: str, cls: type[Agent] | None = None) -> AgentRef | VirtualRef:
        """Like :meth:`get` but raises :class:`~jido.AgentNotFoundError` when not running.

        With ``cls``: a :class:`~jido.VirtualRef`, which starts the agent as ``cls`` (from the
        store) on its first use and again after it was passivated (see :meth:`activate`).
        """
        if cls is not None:
            return VirtualRef(self, id, cls)
        return AgentRef(self, self._server(id))

    async def activate(self, cls: type[Agent], id: str) -> AgentRef:
        """Get-or-start: the running agent ``id``, else start it as ``cls`` from its last
        checkpoint (or the state model's defaults). Concurrent calls start it once."""
        return await self._activator.activate(cls, id)

    async def passivate(self, id: str) -> bool:
        """Commit agent ``id`` (state and schedules) to the store and stop it now; its next
        message through :meth:`activate` or a :class:`~jido.VirtualRef` starts it again, and a
        pending schedule starts it when due. ``False`` if it is busy."""
        if self.store is None:
            raise ValidationError("passivation needs a state store", details={"agent_id": id})
        return await self._activator.passivate(self._server(id))

    def ids(self) -> list[str]:
        """Ids of the running agents, in start order."""
        return [k for k, s in self._servers.items() if not s.status]

    def __len__(self) -> int:
        return len(self._servers)

    def __contains__(self, id: object) -> bool:
        return id in self._servers

    async def stop_all(self, reason: str = "shutdown") -> None:
        """Stop every running agent (parents first, each taking its children along)."""
        for srv in [s for s in self._servers.values() if s.parent is None]:
            await srv.shutdown(reason)
        for srv in list(self._servers.values()):
            await srv.shutdown(reason)

    async def stop(self, id: str, reason: str = "normal") -> None:
        """Stop agent ``id``: finish its current command, fail what is queued (callers get
        ``AgentStoppedError``), stop its children, sensors and schedules, save (per policy)."""
        await self._server(id).shutdown(reason)

    async def hibernate(self, id: str) -> bool:
        """Save agent ``id``'s state and release it now; it thaws on its next signal.

        Returns ``False`` if the agent is busy (it stays awake). Needs a store.
        """
        return await self._server(id).hibernate()

    def idle_for(self, id: str) -> float | None:
        """Seconds since agent ``id`` last finished a command (``None``: busy now, or not
        running)."""
        srv = self._servers.get(id)
        if srv is None or srv.status or srv.active:
            return None
        return time.monotonic() - srv.last_active

    def hibernated(self, id: str) -> bool:
        """True while agent ``id`` is hibernated."""
        return self._server(id).agent is None

    def children(self, id: str) -> list[str]:
        """Ids of the running children of agent ``id``."""
        srv = self._server(id)
        return [c for c in (srv.children or ()) if c in self._servers]

    def parent(self, id: str) -> str | None:
        """Id of agent ``id``'s parent, if it has one."""
        return self._server(id).parent

    def schedules(self, id: str) -> dict[str, Schedule]:
        """Pending schedules of agent ``id`` by key."""
        srv = self._server(id)
        return srv.timers.schedules() if srv.timers is not None else {}

    def next_due(self, id: str) -> float | None:
        """Unix time of agent ``id``'s earliest pending schedule (``None``: none pending)."""
        srv = self._server(id)
        return srv.timers.earliest() if srv.timers is not None else None

    def fire(self, id: str, key: str) -> bool:
        """Deliver schedule ``key`` of agent ``id`` now instead of at its time (tests)."""
        srv = self._server(id)
        if srv.timers is None or key not in srv.timers.armed:
            return False
        srv.fire(key)
        return True

    def sensors(self, id: str) -> dict[str, Any]:
        """Sensors run by agent ``id`` by key (durable ones started again from its checkpoint
        included; a recorded sensor that could not be rebuilt is not listed)."""
        return dict(self._server(id).sensors or {})

    async def call(
        self,
        id: str,
        signal: Signal,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``call`` agent ``id`` (see :meth:`AgentRef.call`)."""
        return await self.ref(id).call(signal, timeout=timeout, meta=meta)

    async def cast(self, id: str, signal: Signal, *, meta: Mapping[str, Any] | None = None) -> None:
        """``cast`` to agent ``id`` (see :meth:`AgentRef.cast`)."""
        await self.ref(id).cast(signal, meta=meta)

    async def wait_idle(self) -> None:
        """Wait until every mailbox is empty and no command is running (tests, shutdown)."""
        while True:
            busy = [s.task for s in self._servers.values() if s.task is not None]
            bg = list(self._bg)
            if not busy and not bg:
                return
            await asyncio.wait([*busy, *bg])

    def statistics(self) -> dict[str, int]:
        """A snapshot: agents running, active (with a task), hibernated, queued signals."""
        servers = list(self._servers.values())
        return {
            "agents": len(servers),
            "active": sum(1 for s in servers if s.active),
            "hibernated": sum(1 for s in servers if s.agent is None),
            "queued": sum(len(s.mailbox) for s in servers if s.mailbox),
            "dead_letters": len(self.dead_letters),
        }

    # -- listeners ---------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(AgentEvent)`` on every lifecycle event (a coroutine result is awaited in
        a background task). Exceptions from listeners are logged and ignored."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def _event(
        self,
        kind: str,
        srv: _Server,
        *,
        reason: str | None = None,
        error: JidoError | None = None,
    ) -> None:
        if not self._listeners:
            return
        ev = AgentEvent(kind, srv.id, srv.cls._type_name, reason, error, srv.parent)
        for fn in list(self._listeners):
            try:
                r = fn(ev)
                if isinstance(r, Awaitable):
                    self._background(r)
            except Exception:
                _log.exception("runtime listener %r raised on %s", fn, kind)

    # -- internals ---------------------------------------------------------------------------------

    def _server(self, id: str) -> _Server:
        srv = self._servers.get(id)
        if srv is not None and srv.status == _STOPPING:
            raise AgentStoppedError(
                f"agent {id!r} is stopping; it takes no more signals",
                details={"agent_id": id},
            )
        if srv is None or srv.status:
            raise AgentNotFoundError(
                f"no agent {id!r} is running in this runtime; start it first",
                details={"agent_id": id},
            )
        return srv

    def _background(self, aw: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await aw
            except Exception:
                _log.exception("background work of the runtime failed")

        task = self._loop().create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _dead(self, agent_id: str, signal: Signal, err: JidoError) -> None:
        self.dead_letters.append(AgentDeadLetter(agent_id, signal, err))
        self.dead_letters_total += 1
        _log.debug("dead letter for %r: %s", agent_id, err.message)

    async def _emit(self, srv: _Server, d: Emit) -> None:
        sig = d.signal
        if self._emit_tracer is not None:
            self._emit_tracer(srv.id, d)
        if d.to_self:
            try:
                srv.enqueue(sig, None, None)
            except JidoError as err:
                self._dead(srv.id, sig, err)
        elif d.to is not None:
            target = self._servers.get(d.to)
            if target is None or target.status:
                self._dead(
                    d.to,
                    sig,
                    AgentNotFoundError(
                        f"agent {srv.id!r} emitted {sig.type!r} to agent {d.to!r}, which is not "
                        "running",
                        details={"agent_id": d.to, "from": srv.id},
                    ),
                )
                return
            try:
                target.enqueue(sig, None, None)
            except JidoError as err:
                self._dead(d.to, sig, err)
        else:
            # the command has committed: a failed delivery is a dead letter, not its error
            try:
                if d.dispatch is not None:
                    await d.dispatch.dispatch(sig)
                else:
                    await self.bus.publish(sig)
            except JidoError as err:
                self._dead(srv.id, sig, err)

    async def _publish_failed(self, srv: _Server, err: JidoError) -> None:
        sig = Signal(
            AGENT_FAILED,
            f"/jido/agents/{srv.id}",
            {"agent_id": srv.id, "agent_type": srv.cls._type_name, "error": err.to_dict()},
        )
        try:
            await self.bus.publish(sig)
        except Exception:
            _log.exception("could not publish %s for agent %r", AGENT_FAILED, srv.id)

    def _child_exited(self, srv: _Server, reason: str) -> None:
        if srv.parent is None:
            return
        parent = self._servers.get(srv.parent)
        if parent is None or parent.status:
            return
        if parent.children is not None and srv.id in parent.children:
            parent.children.remove(srv.id)
        if not parent.cls.handles(CHILD_EXITED):
            return
        sig = Signal(
            CHILD_EXITED,
            f"/jido/agents/{srv.id}",
            {"id": srv.id, "agent_type": srv.cls._type_name, "reason": reason},
        )
        try:
            parent.enqueue(sig, None, None)
        except JidoError as err:
            self._dead(parent.id, sig, err)

    async def _sweep(self) -> None:
        """Hibernate (or passivate) agents idle for longer than their ``hibernate_after`` (or
        ``idle_timeout``)."""
        while True:
            periods = [
                p
                for s in self._servers.values()
                for p in (s.hibernate_after, s.cls.idle_timeout)
                if p
            ]
            period = min(periods) / 2 if periods else 1.0
            await asyncio.sleep(max(period, 0.01))
            now = time.monotonic()
            for srv in list(self._servers.values()):
                idle = srv.cls.idle_timeout
                if idle is not None and not srv.active and now - srv.last_active >= idle:
                    try:
                        await self._activator.passivate(srv)
                    except Exception:  # keep sweeping the others; the agent stays
                        _log.exception("passivating agent %r failed", srv.id)
                    continue
                after = srv.hibernate_after
                if (
                    after is not None
                    and srv.agent is not None
                    and not srv.active
                    and not srv.status
                    and now - srv.last_active >= after
                ):
                    try:
                        await srv.hibernate()
                    except Exception:  # keep sweeping the others; the agent stays awake
                        _log.exception("hibernating agent %r failed", srv.id)


class AgentDispatch(Dispatch):
    """Dispatch adapter that delivers signals to a local agent by id.

    ``mode="cast"`` (default) puts each signal into the agent's mailbox; ``mode="call"`` waits
    for the command to finish and raises its error. Usable wherever a dispatch adapter is (an
    ``Emit(dispatch=...)`` directive, a bus subscription handler, ``dispatch_all``)::

        bus.subscribe("order.**", AgentDispatch(rt, "orders"))
    """

    def __init__(
        self, runtime: Runtime, agent_id: str, *, mode: str = "cast", name: str | None = None
    ) -> None:
        if mode not in ("cast", "call"):
            raise ValidationError(f"AgentDispatch mode must be 'cast' or 'call', got {mode!r}")
        self.runtime = runtime
        self.agent_id = agent_id
        self.mode = mode
        self.name = name or f"agent:{agent_id}"

    async def dispatch(self, signal: Signal) -> None:
        """Deliver ``signal`` to the agent (``AgentNotFoundError`` if it is not running)."""
        if self.mode == "cast":
            await self.runtime.cast(self.agent_id, signal)
        else:
            await self.runtime.call(self.agent_id, signal)
