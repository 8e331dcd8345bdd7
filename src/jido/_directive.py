"""Directives: what an action asks the runtime to do besides changing state.

An action returns ``(result, directive_or_list)``; the agent applies state operations itself
(:class:`SetPath`, :class:`DeleteKeys`, :class:`Replace`) before the new state is validated, and
hands every other directive to the runtime, which carries them out in order after the command
committed (a failed or rolled-back command carries out none of them):

* :class:`Emit` — send a signal to the bus, to another agent by id, or back to this agent;
* :class:`Schedule` / :class:`Cancel` — deliver a signal to this agent after a delay or on a
  cron expression, and cancel it by key;
* :class:`Spawn` / :class:`StopChild` — start a child agent (stopped with its parent) and stop it;
* :class:`StartSensor` / :class:`StopSensor` — run a sensor owned by this agent;
* :class:`Stop` — stop this agent once the command is done.

Directives are frozen dataclasses: cheap to build, safe to keep in test assertions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from croniter import croniter
from pydantic import BaseModel

from jido._errors import DefinitionError, ValidationError
from jido._signal import Signal

if TYPE_CHECKING:
    from jido._agent import Agent

__all__ = [
    "Cancel",
    "DeleteKeys",
    "Directive",
    "Emit",
    "Replace",
    "Schedule",
    "SetPath",
    "Spawn",
    "StartSensor",
    "StateOp",
    "Stop",
    "StopChild",
    "StopSensor",
]


class Directive:
    """Base class of every directive (an instruction from an action to the runtime)."""

    __slots__ = ()


class StateOp(Directive):
    """Base class of the explicit state operations, applied by the agent before validation."""

    __slots__ = ()

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        """Return the state dict with this operation applied (``state`` may be mutated)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Emit(Directive):
    """Send ``signal`` once the command has committed.

    With no target it is published on the runtime's bus. ``to`` names another agent (the signal
    is cast into its mailbox; a full mailbox or a missing agent becomes a dead letter) and
    ``to_self=True`` casts it back into this agent's own mailbox. ``dispatch`` may instead give
    any dispatch adapter (an object with ``async dispatch(signal)``). A delivery that fails
    does not undo the committed command: it is recorded in the runtime's ``dead_letters``.
    """

    signal: Signal
    to: str | None = None
    to_self: bool = False
    dispatch: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.signal, Signal):
            raise ValidationError(
                f"Emit needs a jido.Signal, got {type(self.signal).__name__}",
                details={"got": type(self.signal).__name__},
            )
        if sum((self.to is not None, self.to_self, self.dispatch is not None)) > 1:
            raise ValidationError(
                "Emit takes at most one of to=, to_self=True and dispatch=",
                details={"signal_type": self.signal.type},
            )


@dataclass(frozen=True, slots=True)
class Schedule(Directive):
    """Deliver ``signal`` to this agent after ``delay`` seconds, or repeatedly on ``cron``.

    ``cron`` is a standard five-field cron expression (evaluated in UTC). ``key`` names the
    schedule so a later :class:`Cancel` can remove it; scheduling again under the same key
    replaces the earlier schedule. Without a key, the signal's id is the key.
    """

    signal: Signal
    delay: float | None = None
    cron: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.signal, Signal):
            raise ValidationError("Schedule needs a jido.Signal", details={})
        if (self.delay is None) == (self.cron is None):
            raise ValidationError(
                "Schedule takes exactly one of delay= (seconds) or cron= (a cron expression)",
                details={"signal_type": self.signal.type},
            )
        if self.delay is not None and (
            isinstance(self.delay, bool)
            or not isinstance(self.delay, int | float)
            or self.delay < 0
        ):
            raise ValidationError(
                f"Schedule delay must be a number of seconds >= 0, got {self.delay!r}",
                details={"delay": repr(self.delay)},
            )
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValidationError(
                f"Schedule cron {self.cron!r} is not a valid cron expression "
                "(use five fields, e.g. '*/5 * * * *')",
                details={"cron": self.cron},
            )

    @property
    def schedule_key(self) -> str:
        """The key under which the schedule is kept (``key`` or the signal id)."""
        return self.key if self.key is not None else self.signal.id


@dataclass(frozen=True, slots=True)
class Cancel(Directive):
    """Cancel the schedule named ``key`` (no error if it already fired or never existed)."""

    key: str


@dataclass(frozen=True, slots=True)
class Spawn(Directive):
    """Start a child agent of class ``agent`` with id ``id`` (default: ``<parent id>/<n>``).

    The child is stopped when its parent stops; the parent receives a
    ``jido.agent.child.exited`` signal when the child exits (if it routes that type).
    """

    agent: type[Agent]
    id: str | None = None
    state: Mapping[str, Any] | Any = None

    def __post_init__(self) -> None:
        from jido._agent import Agent

        if not (isinstance(self.agent, type) and issubclass(self.agent, Agent)):
            raise DefinitionError(
                f"Spawn needs an Agent subclass, got {self.agent!r}",
                details={"got": repr(self.agent)},
            )


@dataclass(frozen=True, slots=True)
class StopChild(Directive):
    """Stop the child agent ``id`` (and its own children)."""

    id: str
    reason: str = "normal"


@dataclass(frozen=True, slots=True)
class StartSensor(Directive):
    """Start ``sensor`` owned by this agent (it is stopped with the agent).

    Its signals go into this agent's mailbox, or onto the runtime's bus with ``to_bus=True``.
    ``key`` names it for :class:`StopSensor` (default: the sensor's ``name``).

    With a store, the sensor is **durable** (``durable=True``, the default): its class, id,
    source and config are committed in the agent's checkpoint with the command that returned
    the directive, and whoever starts the agent next (a restart, a new owner) starts it again.
    That needs a class importable by ``module:qualname`` and a config that round-trips through
    JSON; otherwise the directive fails with a :class:`~jido.ValidationError`. Pass
    ``durable=False`` for a sensor that should run only while this process runs the agent.
    See ``jido._sensors_durable``.
    """

    sensor: Any
    key: str | None = None
    to_bus: bool = False
    durable: bool = True

    @property
    def sensor_key(self) -> str:
        """The key under which the sensor is kept."""
        if self.key is not None:
            return self.key
        name = getattr(self.sensor, "name", None)
        return name if isinstance(name, str) and name else f"sensor-{id(self.sensor):x}"


@dataclass(frozen=True, slots=True)
class StopSensor(Directive):
    """Stop the sensor this agent started under ``key``."""

    key: str


@dataclass(frozen=True, slots=True)
class Stop(Directive):
    """Stop this agent after the current command (``reason`` is reported to listeners)."""

    reason: str = "normal"


def _split_path(path: str | Sequence[str]) -> tuple[str, ...]:
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ValidationError(
            f"a state path must be a non-empty dotted string or sequence of keys, got {path!r}",
            details={"path": repr(path)},
        )
    return parts


@dataclass(frozen=True, slots=True)
class SetPath(StateOp):
    """Set the value at ``path`` (``"a.b.c"`` or ``("a", "b", "c")``) in the state.

    Missing intermediate dicts are created. The new state is validated as a whole.
    """

    path: str | Sequence[str]
    value: Any

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        """Set the value (copying every dict along the path, never mutating shared data)."""
        parts = _split_path(self.path)
        node = state
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, Mapping):
                child = dict(child)
            elif isinstance(child, BaseModel):
                child = child.model_dump()
            elif child is None:
                child = {}
            else:
                raise ValidationError(
                    f"cannot set {'.'.join(parts)}: {part!r} holds a "
                    f"{type(child).__name__}, not a mapping",
                    details={"path": list(parts)},
                )
            node[part] = child
            node = child
        node[parts[-1]] = self.value
        return state


@dataclass(frozen=True, slots=True)
class DeleteKeys(StateOp):
    """Remove top-level ``keys`` from the state (their fields fall back to defaults)."""

    keys: tuple[str, ...] = field(default_factory=tuple)

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        """Drop the keys (missing keys are ignored)."""
        keys = (self.keys,) if isinstance(self.keys, str) else self.keys
        for key in keys:
            state.pop(key, None)
        return state


@dataclass(frozen=True, slots=True)
class Replace(StateOp):
    """Replace the whole state with ``state`` (a dict or a model), validated as usual."""

    state: Mapping[str, Any] | Any

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        """Return the replacement as a dict."""
        new = self.state
        if hasattr(new, "model_dump"):
            return dict(new.model_dump())
        if isinstance(new, Mapping):
            return dict(new)
        raise ValidationError(
            f"Replace needs a dict or a pydantic model, got {type(new).__name__}",
            details={"got": type(new).__name__},
        )
