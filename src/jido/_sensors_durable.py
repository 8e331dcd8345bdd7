"""Durable sensors: the sensors of one agent, committed with its checkpoint and started again.

A :class:`~jido.StartSensor` directive (``durable=True``, the default) run by an agent whose
runtime has a store records the sensor in the agent's checkpoint (its ``sensors`` field), in
the same write as the state change of the command that returned it; a
:class:`~jido.StopSensor` removes the record in the same way. Whoever starts the agent next from
the store (a restart of the process on the same SQLite file, a virtual agent's reactivation, a
new owner in a cluster after a failover or a hand-over) rebuilds every recorded sensor with
``cls(id=..., source=..., **config)`` and starts it with the same target (the agent's mailbox,
or the bus).

What is recorded, and when:

* Only the class, ``id``, ``source`` and ``config`` are kept: the class must be importable by
  ``module:qualname`` (defined at module level) and the config must come back equal through
  JSON. The runtime checks this when the directive runs by building one copy from the record;
  a sensor that does not pass fails the directive with a :class:`~jido.ValidationError`
  (``durable=False`` runs it without a record). A custom ``clock`` is not recorded: a rebuilt
  sensor uses real time.
* A sensor that finished or failed on its own stays recorded: it is started again on the
  agent's next activation. Only ``StopSensor(key)`` (or a ``StartSensor(..., durable=False)``
  under the same key) removes the record.
* A crash of the agent within one runtime (a restart from the last checkpoint) leaves its
  running sensors alone: they are never started twice.
* A recorded sensor that cannot be rebuilt or started (its class is gone, its config no
  longer validates, its ``setup`` fails) does not fail the activation: it is logged at WARNING
  and reported as a ``jido.sensor.error`` signal (to the agent if it routes that type, onto the
  bus for a bus sensor, else as a dead letter). Its record is kept until a ``StopSensor``.

At most once: a sensor's emission is not tied to a commit. What a sensor emitted that the agent
had not yet committed when its process died is lost, and a rebuilt sensor starts its own
counters afresh. Use ``Schedule(..., cron=...)`` for timed work that must happen exactly once.

Table format (plain data, so every store can keep it)::

    {key: {"class": "module:qualname", "id": ..., "source": ..., "config": {...},
           "to_bus": bool}}
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from jido._directive import Directive, StartSensor, StopSensor
from jido._errors import ValidationError
from jido._sensor import ERROR_TYPE, EmitFn, Sensor, SensorError
from jido._signal import Signal

if TYPE_CHECKING:
    from jido._agent import Agent

__all__ = ["SensorOwner", "rebuild", "record_of", "restore", "table_after"]

_log = logging.getLogger("jido.runtime")

Table = dict[str, dict[str, Any]]


class SensorOwner(Protocol):
    """What :func:`restore` needs of an agent's server."""

    id: str
    cls: type[Agent]
    rt: Any
    sensors: dict[str, Any] | None
    status: int

    def sensor_target(self, to_bus: bool) -> EmitFn:
        """Where a sensor of this agent emits: its mailbox, or the runtime's bus."""
        ...


def _import(path: str) -> Any:
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def rebuild(rec: Mapping[str, Any]) -> Sensor:
    """A new sensor built from record ``rec`` (raises when its class or config is not valid)."""
    path = rec["class"]
    cls = _import(path)
    if not (isinstance(cls, type) and issubclass(cls, Sensor)):
        raise ValidationError(f"{path} is not a jido.Sensor subclass", details={"class": path})
    config = rec.get("config") or {}
    return cls(id=rec["id"], source=rec["source"], **config)


def record_of(sensor: Any, to_bus: bool) -> dict[str, Any]:
    """The checkpoint record of ``sensor``; :class:`~jido.ValidationError` if it cannot rebuild."""
    cls = type(sensor)
    path = f"{cls.__module__}:{cls.__qualname__}"

    def refuse(why: str) -> ValidationError:
        return ValidationError(
            f"sensor {getattr(sensor, 'id', sensor)!r} ({path}) cannot be durable: {why}. Define "
            "the sensor class at module level with all its options in its Config (so it can be "
            "rebuilt from the checkpoint), or pass StartSensor(..., durable=False) to run it "
            "only while this process runs the agent",
            details={"class": path, "reason": why},
        )

    if not isinstance(sensor, Sensor):
        raise refuse("it is not a jido.Sensor")
    if "<" in cls.__qualname__:
        raise refuse("its class is defined inside a function")
    try:
        found = _import(path)
    except Exception as exc:
        raise refuse(f"{path} cannot be imported ({type(exc).__name__}: {exc})") from None
    if found is not cls:
        raise refuse(f"importing {path} gives another object than the sensor's class")
    try:
        config = json.loads(json.dumps(sensor.config.model_dump(mode="json")))
    except Exception as exc:
        raise refuse(f"its config is not JSON data ({type(exc).__name__}: {exc})") from None
    rec = {
        "class": path,
        "id": sensor.id,
        "source": sensor.source,
        "config": config,
        "to_bus": bool(to_bus),
    }
    try:
        copy = rebuild(rec)
    except Exception as exc:
        raise refuse(
            f"it cannot be built again from its id, source and config ({type(exc).__name__}: {exc})"
        ) from None
    if copy.config != sensor.config:
        raise refuse("its config does not come back the same through JSON")
    return rec


def table_after(
    table: Table | None, running: Mapping[str, Any] | None, effects: Iterable[Directive]
) -> Table:
    """The table to commit once ``effects`` are carried out.

    ``table`` is the agent's current table and ``running`` its sensors by key (a
    ``StartSensor`` under a key already in use will fail, so it changes nothing). Raises
    :class:`~jido.ValidationError` for a durable sensor that cannot be rebuilt.
    """
    out: Table | None = None
    live: set[str] | None = None
    for eff in effects:
        if isinstance(eff, StartSensor):
            if out is None or live is None:
                out, live = dict(table or {}), set(running or ())
            key = eff.sensor_key
            if key in live:
                continue
            live.add(key)
            if eff.durable:
                out[key] = record_of(eff.sensor, eff.to_bus)
            else:
                out.pop(key, None)
        elif isinstance(eff, StopSensor):
            if out is None or live is None:
                out, live = dict(table or {}), set(running or ())
            live.discard(eff.key)
            out.pop(eff.key, None)
    if out is None:
        return dict(table) if table else {}  # a copy: the checkpoint must not change under a store
    return out


async def restore(owner: SensorOwner, table: Mapping[str, Mapping[str, Any]]) -> None:
    """Start every sensor of a committed ``table`` for ``owner``; report those that fail."""
    for key, rec in table.items():
        try:
            sensor = rebuild(rec)
            await sensor.start(owner.sensor_target(bool(rec.get("to_bus", False))))
        except Exception as exc:
            await _report(owner, key, rec, exc)
            continue
        if owner.status:  # stopped while this one started: it must not outlive its agent
            await sensor.stop()
            return
        if owner.sensors is None:
            owner.sensors = {}
        owner.sensors[key] = sensor


async def _report(owner: SensorOwner, key: str, rec: Mapping[str, Any], exc: Exception) -> None:
    r: Mapping[str, Any] = rec if isinstance(rec, Mapping) else {}  # stored data may be anything
    path = r.get("class")
    err = SensorError(
        f"agent {owner.id!r}: sensor {key!r} ({path}) recorded in its checkpoint could not be "
        f"started again: {type(exc).__name__}: {exc}. Make {path} importable (with this config) "
        f"again, or drop the record with StopSensor({key!r})",
        details={"agent_id": owner.id, "sensor": key, "class": path},
        cause=exc,
    )
    _log.warning("%s", err.message)
    source = r.get("source")
    try:
        sig = Signal(
            type=ERROR_TYPE,
            source=source if isinstance(source, str) and source else f"/jido/agents/{owner.id}",
            subject=key,
            data={"sensor": r.get("id", key), "key": key, "error": err.to_dict()},
        )
    except Exception:  # a corrupt record: the warning above is all there is to report
        return
    to_bus = bool(r.get("to_bus", False))
    if to_bus or owner.cls.handles(ERROR_TYPE):
        with contextlib.suppress(Exception):
            await owner.sensor_target(to_bus)(sig)  # a refused delivery is a dead letter there
    else:
        owner.rt._dead(owner.id, sig, err)
