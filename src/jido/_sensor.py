"""Sensors: event sources that emit signals into an agent or onto a bus.

A sensor has an ``id``, a validated ``config`` and a small async lifecycle:
``await sensor.start(emit)`` (``emit`` is an async callable taking a :class:`~jido.Signal`)
and ``await sensor.stop()``. While it runs, the sensor's work lives in one asyncio task that
``stop()`` cancels and awaits, so a stopped sensor leaves nothing behind.

Write a sensor by subclassing :class:`Sensor` and overriding ``run`` (a loop that calls
``await self.emit(...)``), or ``setup`` / ``teardown`` for callback-driven sources::

    class Thermometer(Sensor):
        class Config(BaseModel):
            every: float = 5.0

        async def run(self) -> None:
            while True:
                await self.emit(self.signal("room.temperature", {"celsius": read()}))
                await self.clock.sleep(self.config.every)

Built-ins: :class:`HeartbeatSensor` (every interval), :class:`CronSensor` (cron expression)
and :class:`BusSensor` (forwards bus signals matching a pattern). Time comes from a
:class:`SensorClock`, which tests replace to drive time-based sensors without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field

from jido._errors import DefinitionError, JidoError, ValidationError
from jido._signal import Signal, validate_type

__all__ = [
    "BusSensor",
    "CronSensor",
    "EmitFn",
    "HeartbeatSensor",
    "Sensor",
    "SensorClock",
    "SensorError",
]

EmitFn = Callable[[Signal], Awaitable[Any]]
"""What a sensor sends its signals to: an async callable taking one :class:`~jido.Signal`.

(Not the :class:`jido.Emit` directive, which an action returns to make its agent emit.)"""

_log = logging.getLogger("jido.sensor")
_ids = itertools.count(1)

ERROR_TYPE = "jido.sensor.error"
"""Type of the signal a sensor emits when its ``run`` fails."""


class SensorError(JidoError):
    """A sensor was used wrongly (started twice, emitting while stopped) or failed to start."""

    type = "sensor_error"


class SensorClock:
    """Where sensors get time from: real time by default.

    Tests pass a subclass whose ``sleep`` returns at once after advancing a virtual time,
    so heartbeat and cron sensors can be driven deterministically.
    """

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (for intervals)."""
        return time.monotonic()

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware (for cron schedules)."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable)."""
        await asyncio.sleep(seconds)


_REAL_CLOCK = SensorClock()


class _NoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _config_error(cls: type, exc: pydantic.ValidationError) -> ValidationError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
    )
    return ValidationError(
        f"invalid configuration for {cls.__name__}: {problems}",
        details={
            "sensor": cls.__name__,
            "errors": [
                {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
                for err in exc.errors()
            ],
        },
        cause=exc,
    )


def _validate_config(cls: type[Sensor], config: dict[str, Any]) -> Any:
    model = cls.Config
    if model.model_config.get("extra") != "allow":
        known = set(model.model_fields)
        known.update(f.alias for f in model.model_fields.values() if f.alias)
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValidationError(
                f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
                f"it takes: {', '.join(sorted(model.model_fields)) or 'no options'}",
                details={"sensor": cls.__name__, "unknown": unknown},
            )
    try:
        return model.model_validate(config)
    except pydantic.ValidationError as exc:
        raise _config_error(cls, exc) from None


def _signal_type(value: str) -> str:
    try:
        validate_type(value)
    except JidoError as exc:
        raise ValueError(exc.message) from None
    return value


class Sensor:
    """Base class of event sources that emit signals.

    Subclasses override ``run`` (the sensor's loop, run in its own task), or ``setup`` and
    ``teardown`` (to attach to and detach from a callback-driven source), or both. Put the
    sensor's options in a nested pydantic ``Config`` model: keyword arguments to the
    constructor are validated against it and kept in ``self.config``.

    Lifecycle: ``start(emit)`` runs ``setup`` (its errors go to the caller), then starts the
    task running ``run``; ``stop()`` cancels that task, waits for it, and ``teardown`` runs.
    If ``run`` returns, the sensor has finished (``running`` becomes false). If it raises, the
    error is logged, kept in ``error`` and reported as a ``jido.sensor.error`` signal through
    ``emit``. A sensor can be started again after it stopped.

    Attributes: ``id`` (given, or derived from the class name), ``config``, ``source`` (the
    ``source`` of emitted signals, default ``/jido/sensors/<id>``), ``clock``, and counters
    ``emitted`` and ``dropped``.
    """

    Config: ClassVar[type[BaseModel]] = _NoConfig
    """The pydantic model of this sensor's options."""

    def __init__(
        self,
        *,
        id: str | None = None,
        source: str | None = None,
        clock: SensorClock | None = None,
        **config: Any,
    ) -> None:
        cls = type(self)
        if cls.run is Sensor.run and cls.setup is Sensor.setup:
            raise DefinitionError(
                f"sensor {cls.__name__} does nothing: override run() (a loop that emits) "
                "or setup()/teardown() (attach to a source)",
                details={"sensor": cls.__name__},
            )
        if id is not None and (not isinstance(id, str) or not id):
            raise ValidationError(f"sensor id must be a non-empty string, got {id!r}")
        self.id: str = id or f"{cls.__name__.lower()}-{next(_ids)}"
        self.source: str = source or f"/jido/sensors/{self.id}"
        self.clock: SensorClock = clock or _REAL_CLOCK
        self.config: Any = _validate_config(cls, config)
        self.emitted = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self._emit: EmitFn | None = None
        self._task: asyncio.Task[None] | None = None

    # -- to override ---------------------------------------------------------------------

    async def setup(self) -> None:
        """Attach to the source before ``run`` starts; errors fail ``start()``."""

    async def run(self) -> None:
        """The sensor's work, in its own task; by default wait until stopped."""
        await asyncio.Event().wait()

    async def teardown(self) -> None:
        """Detach from the source; runs once after ``run`` ends (stopped, finished or failed)."""

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The sensor's ``id``: the default key an owner (an agent) keeps it under."""
        return self.id

    @property
    def running(self) -> bool:
        """True between ``start()`` and the end of the sensor's task."""
        return self._task is not None and not self._task.done()

    async def start(self, emit: EmitFn) -> None:
        """Start emitting signals to ``emit``. Raises :class:`SensorError` if already running."""
        if self.running:
            raise SensorError(
                f"sensor {self.id!r} is already running; stop() it before starting it again",
                details={"sensor": self.id},
            )
        if not callable(emit):
            raise ValidationError(f"emit must be an async callable, got {emit!r}")
        self._emit = emit
        self.error = None
        try:
            await self.setup()
        except BaseException:
            self._emit = None
            raise
        self._task = asyncio.get_running_loop().create_task(
            self._main(), name=f"jido-sensor-{self.id}"
        )

    async def stop(self) -> None:
        """Stop the sensor and wait until its task has ended. Idempotent.

        Called from inside the sensor's own task, it only requests the stop.
        """
        task = self._task
        if task is None:
            return
        task.cancel()
        if task is not asyncio.current_task():
            await asyncio.wait([task])  # never raises the task's own outcome
            # a task cancelled before its first step never ran _main's cleanup
            await self._finish()

    async def _main(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.error = exc
            _log.error("sensor %s failed: %r", self.id, exc, exc_info=exc)
            await self._report(exc)
        finally:
            await self._finish()

    async def _finish(self) -> None:
        """Run ``teardown`` once per start and forget the target."""
        if self._emit is None:
            return
        self._emit = None
        try:
            await self.teardown()
        except Exception as exc:
            _log.error("sensor %s teardown failed: %r", self.id, exc, exc_info=exc)

    async def _report(self, exc: Exception) -> None:
        emit = self._emit
        if emit is None:  # pragma: no cover - set for the whole life of the task
            return
        if isinstance(exc, JidoError):
            error = exc.to_dict()
        else:
            error = {"type": "execution_error", "message": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(Exception):
            await emit(self.signal(ERROR_TYPE, {"sensor": self.id, "error": error}))

    # -- helpers for sensors ---------------------------------------------------------------

    def signal(self, type: str, data: Any = None, **attributes: Any) -> Signal:
        """Build a signal from this sensor (``source`` and ``subject`` set to this sensor)."""
        attributes.setdefault("subject", self.id)
        return Signal(type=type, source=self.source, data=data, **attributes)

    async def emit(self, signal: Signal) -> bool:
        """Send ``signal`` to the sensor's target; returns whether it was accepted.

        A retryable :class:`~jido.JidoError` from the target (a full mailbox, an agent being
        restarted) drops this one signal (``dropped`` counts it) and returns ``False``; any
        other error propagates and ends the sensor.
        """
        emit = self._emit
        if emit is None:
            raise SensorError(
                f"sensor {self.id!r} is not running; start() it before emitting",
                details={"sensor": self.id},
            )
        try:
            await emit(signal)
        except JidoError as exc:
            if not exc.retryable:
                raise
            self.dropped += 1
            _log.warning("sensor %s dropped a %s signal: %s", self.id, signal.type, exc.message)
            return False
        self.emitted += 1
        return True

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.id!r} {state}>"


# --------------------------------------------------------------------------------------------
# Heartbeat


class HeartbeatConfig(BaseModel):
    """Options of :class:`HeartbeatSensor`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = Field(gt=0, description="Seconds between beats.")
    type: str = Field("jido.sensor.heartbeat", description="Type of the emitted signals.")
    data: dict[str, Any] = Field(default_factory=dict, description="Extra data in every beat.")
    immediate: bool = Field(
        False, description="Emit the first beat at start, not after one interval."
    )

    _check_type = pydantic.field_validator("type")(_signal_type)


class HeartbeatSensor(Sensor):
    """Emits a signal every ``interval`` seconds: ``data = {**config.data, "count": n}``.

    Beats keep a fixed rate (no drift from the time an emit takes); slots that pass while the
    sensor is behind (a blocked loop, a slow target) are skipped, never emitted in a burst or
    back to back. ``HeartbeatSensor(interval=5.0, type="app.tick")``.
    """

    Config = HeartbeatConfig
    config: HeartbeatConfig

    async def run(self) -> None:
        """Beat until stopped."""
        cfg = self.config
        clock = self.clock
        interval = cfg.interval
        next_at = clock.monotonic() + (0.0 if cfg.immediate else interval)
        count = 0
        while True:
            delay = next_at - clock.monotonic()
            if delay > 0:
                await clock.sleep(delay)
            count += 1
            await self.emit(self.signal(cfg.type, {**cfg.data, "count": count}))
            next_at += interval
            behind = clock.monotonic() - next_at
            if behind >= 0:  # that slot has passed already: skip to the next one ahead
                next_at += (behind // interval + 1) * interval


# --------------------------------------------------------------------------------------------
# Cron


class CronConfig(BaseModel):
    """Options of :class:`CronSensor`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expression: str = Field(
        description="A cron expression (5 fields, or 6 with seconds last; @hourly etc.)."
    )
    timezone: str = Field("UTC", description="IANA time zone the expression is read in.")
    type: str = Field("jido.sensor.cron", description="Type of the emitted signals.")
    data: dict[str, Any] = Field(default_factory=dict, description="Extra data in every signal.")

    _check_type = pydantic.field_validator("type")(_signal_type)

    @pydantic.field_validator("expression")
    @classmethod
    def _check_expression(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (e.g. '*/5 * * * *')")
        return value

    @pydantic.field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value


class CronSensor(Sensor):
    """Emits a signal at each time matching a cron expression.

    ``data = {**config.data, "scheduled": <ISO time of the matched slot>, "expression": ...}``.
    ``CronSensor(expression="0 9 * * mon-fri", timezone="Europe/Paris")``. Slots missed while
    the loop was blocked or the machine slept are skipped; the next future slot is used.
    """

    Config = CronConfig
    config: CronConfig

    async def run(self) -> None:
        """Fire at each matching time until stopped."""
        cfg = self.config
        clock = self.clock
        zone = ZoneInfo(cfg.timezone)
        it = croniter(cfg.expression, clock.now().astimezone(zone))
        while True:
            slot: datetime = it.get_next(datetime)
            while True:  # sleep may end early (clock adjustments): wait until the slot is due
                remaining = (slot - clock.now()).total_seconds()
                if remaining <= 0:
                    break
                await clock.sleep(remaining)
            await self.emit(
                self.signal(
                    cfg.type,
                    {**cfg.data, "scheduled": slot.isoformat(), "expression": cfg.expression},
                )
            )
            now = clock.now()
            if (now - slot).total_seconds() > 0:
                # skip slots already in the past (we were late); keep the ones still ahead
                it = croniter(cfg.expression, now.astimezone(zone))


# --------------------------------------------------------------------------------------------
# Bus


class _Bus(Protocol):
    def subscribe(self, pattern: str, handler: Any, /) -> Any: ...


class BusConfig(BaseModel):
    """Options of :class:`BusSensor`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(
        min_length=1, description="Signal type pattern ('*' one segment, '**' any)."
    )
    buffer: int = Field(
        64,
        ge=1,
        description="Signals held between the bus and the target; when full, the bus "
        "subscription's own queue and overflow policy take over.",
    )


class BusSensor(Sensor):
    """Forwards the signals published on a :class:`~jido.Bus` whose type matches ``pattern``.

    ``BusSensor(bus, pattern="order.**")``. ``transform`` (optional) maps each signal to the
    signal to forward, or to ``None`` to skip it. Subscribes in ``start()`` (so everything
    published after ``start()`` returns is forwarded, in publication order) and unsubscribes
    when it stops. Back-pressure goes to the bus: a slow target fills the sensor's ``buffer``,
    then the subscription's queue, whose overflow policy decides. An error from ``transform``
    or a non-retryable error from the target ends the sensor like any failing sensor.
    """

    Config = BusConfig
    config: BusConfig

    def __init__(
        self,
        bus: _Bus,
        *,
        pattern: str,
        buffer: int = 64,
        transform: Callable[[Signal], Signal | None] | None = None,
        id: str | None = None,
        source: str | None = None,
        clock: SensorClock | None = None,
    ) -> None:
        super().__init__(id=id, source=source, clock=clock, pattern=pattern, buffer=buffer)
        self.bus = bus
        self.transform = transform
        self._subscription: Any = None
        self._inbox: asyncio.Queue[Signal] | None = None

    async def setup(self) -> None:
        """Subscribe to the bus."""
        self._inbox = asyncio.Queue(maxsize=self.config.buffer)
        self._subscription = self.bus.subscribe(self.config.pattern, self._inbox)

    async def run(self) -> None:
        """Forward received signals, one at a time, in order."""
        inbox, transform = self._inbox, self.transform
        if inbox is None:
            raise SensorError(f"BusSensor {self.id!r}: run() needs setup() (use start())")
        while True:
            signal = await inbox.get()
            out = transform(signal) if transform is not None else signal
            if out is not None:
                await self.emit(out)

    async def teardown(self) -> None:
        """Unsubscribe from the bus."""
        sub, self._subscription = self._subscription, None
        self._inbox = None
        if sub is not None:
            await sub.unsubscribe()
