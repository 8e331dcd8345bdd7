"""The ``Clustered`` mixin: the one change that makes a ``jido`` agent run on a cluster.

```python
class ClusteredAccount(Clustered, Account, critical=True, placement="least_loaded"):
    pass
```

The mixin only records *how* the agent is clustered (a frozen :class:`ClusterSpec` stored on the
class); the agent definition (state model, actions, routes, skills, hooks) is untouched and is
still checked by ``jido.Agent.__init_subclass__``, to which every other class keyword is passed on.
An agent class without the mixin keeps working on one node exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from jido import DefinitionError

DeliveryMode = Literal["at_most_once", "at_least_once"]
"""How signals cast to an agent travel: core NATS, or a JetStream inbox with acks."""

DELIVERY_MODES: tuple[str, ...] = ("at_most_once", "at_least_once")

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """How an agent class is clustered; read by placement, the registry and failover.

    Attributes:
        critical: a critical agent is re-placed with its last committed state when its node dies;
            a non-critical one is dropped from the registry.
        placement: name of a placement strategy (``"least_loaded"``, ``"local"``, ...) or a
            strategy object accepted by the placement director.
        capabilities: capabilities a node must offer to host the agent.
        resources: resources the agent needs (``{"cpu": 0.5, "memory": 64}``): reserved on the
            node that runs it, by CAS against the capacity the node declares (see
            ``foundation.placement.reservations``); no node with them free is
            ``NoCapacityError``.
        delivery: default delivery mode of signals cast to the agent.
        type_name: the stable name of the agent type in the registry (``module:qualname``);
            every node hosting the type must know a class under this name.
        virtual: a message to an id of this type that no node owns activates it (placed,
            claimed, state from the store or the defaults) instead of failing; see
            ``foundation.hosting.virtual``.
        idle_timeout: seconds without a command after which a virtual agent is passivated
            (state committed, registry record removed, out of memory); ``None``: never.
        id_prefix: ids starting with it are of this virtual type, for refs made without the
            class (default ``<class name in lower case>-``, e.g. ``session-42``).
    """

    critical: bool = False
    placement: Any = "least_loaded"
    capabilities: tuple[str, ...] = ()
    resources: Mapping[str, float] = field(default_factory=dict)
    delivery: DeliveryMode = "at_most_once"
    type_name: str = ""
    virtual: bool = False
    idle_timeout: float | None = None
    id_prefix: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the placement is given by name when it is an object)."""
        placement = self.placement
        if not isinstance(placement, str):
            placement = str(getattr(placement, "name", type(placement).__name__))
        return {
            "critical": self.critical,
            "placement": placement,
            "capabilities": list(self.capabilities),
            "resources": dict(self.resources),
            "delivery": self.delivery,
            "type_name": self.type_name,
            "virtual": self.virtual,
            "idle_timeout": self.idle_timeout,
            "id_prefix": self.id_prefix,
        }


def type_name_of(cls: type) -> str:
    """The registry name of an agent class: ``module:qualname`` unless the spec overrides it."""
    spec = cluster_spec(cls)
    if spec is not None and spec.type_name:
        return spec.type_name
    return f"{cls.__module__}:{cls.__qualname__}"


class Clustered:
    """Mixin that makes a ``jido.Agent`` subclass placeable on any node of a cluster.

    Put it first in the bases and give the cluster options as class keywords::

        class Orders(Clustered, OrderAgent, critical=True, placement="least_loaded",
                     capabilities=["orders"], resources={"cpu": 0.1}, delivery="at_least_once"):
            pass

    Every keyword not listed here is passed on to the next ``__init_subclass__`` (``jido.Agent``),
    so the agent definition is checked exactly as without the mixin. Subclasses of a clustered
    class inherit its options unless they give new ones.
    """

    __cluster__: ClassVar[ClusterSpec] = ClusterSpec()

    def __init_subclass__(
        cls,
        *,
        critical: bool | None = None,
        placement: Any = None,
        capabilities: Iterable[str] | None = None,
        resources: Mapping[str, float] | None = None,
        delivery: str | None = None,
        type_name: str | None = None,
        virtual: bool | None = None,
        idle_timeout: float | None = None,
        id_prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        inherited = _inherited_spec(cls)
        is_virtual = inherited.virtual if virtual is None else _check_bool(cls, virtual, "virtual")
        if idle_timeout is not None and (
            isinstance(idle_timeout, bool)
            or not isinstance(idle_timeout, int | float)
            or idle_timeout <= 0
        ):
            raise _fail(cls, "idle_timeout", "use a number of seconds > 0", idle_timeout)
        spec = ClusterSpec(
            critical=inherited.critical if critical is None else _check_bool(cls, critical),
            placement=(
                inherited.placement if placement is None else _check_placement(cls, placement)
            ),
            capabilities=(
                inherited.capabilities
                if capabilities is None
                else _check_capabilities(cls, capabilities)
            ),
            resources=(
                dict(inherited.resources) if resources is None else _check_resources(cls, resources)
            ),
            delivery=inherited.delivery if delivery is None else _check_delivery(cls, delivery),
            type_name=type_name or f"{cls.__module__}:{cls.__qualname__}",
            virtual=is_virtual,
            idle_timeout=inherited.idle_timeout if idle_timeout is None else float(idle_timeout),
            id_prefix=id_prefix or (f"{cls.__name__.lower()}-" if is_virtual else ""),
        )
        cls.__cluster__ = spec


def _inherited_spec(cls: type) -> ClusterSpec:
    for base in cls.__mro__[1:]:
        spec = base.__dict__.get("__cluster__")
        if isinstance(spec, ClusterSpec):
            return spec
    return ClusterSpec()


def cluster_spec(cls: type) -> ClusterSpec | None:
    """The :class:`ClusterSpec` of a class using :class:`Clustered`, else ``None``."""
    if isinstance(cls, type) and issubclass(cls, Clustered) and cls is not Clustered:
        return cls.__cluster__
    return None


def is_clustered(cls: type) -> bool:
    """True when ``cls`` mixes in :class:`Clustered`."""
    return cluster_spec(cls) is not None


def _fail(cls: type, option: str, message: str, value: Any) -> DefinitionError:
    return DefinitionError(
        f"{cls.__qualname__}: Clustered option {option}={value!r} is invalid: {message}",
        details={"agent": cls.__qualname__, "option": option, "value": repr(value)},
    )


def _check_bool(cls: type, value: Any, option: str = "critical") -> bool:
    if not isinstance(value, bool):
        raise _fail(cls, option, "use True or False", value)
    return value


def _check_placement(cls: type, value: Any) -> Any:
    if isinstance(value, str):
        if not value or not _TOKEN.match(value):
            raise _fail(cls, "placement", "give a strategy name such as 'least_loaded'", value)
        return value
    if callable(getattr(value, "choose", None)) or callable(getattr(value, "select", None)):
        return value
    raise _fail(cls, "placement", "give a strategy name or a placement strategy object", value)


def _check_capabilities(cls: type, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise _fail(cls, "capabilities", "give a list of names, not one string", value)
    caps = tuple(value)
    for cap in caps:
        if not isinstance(cap, str) or not cap:
            raise _fail(cls, "capabilities", "every capability must be a non-empty string", value)
    return tuple(sorted(set(caps)))


def _check_resources(cls: type, value: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise _fail(cls, "resources", "give a mapping such as {'cpu': 0.5}", value)
    out: dict[str, float] = {}
    for name, amount in value.items():
        if (
            not isinstance(name, str)
            or isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or amount < 0
        ):
            raise _fail(cls, "resources", "names are strings, amounts non-negative numbers", value)
        out[name] = float(amount)
    return out


def _check_delivery(cls: type, value: str) -> DeliveryMode:
    if value == "at_most_once":
        return "at_most_once"
    if value == "at_least_once":
        return "at_least_once"
    raise _fail(cls, "delivery", f"use one of {', '.join(DELIVERY_MODES)}", value)


__all__ = [
    "DELIVERY_MODES",
    "ClusterSpec",
    "Clustered",
    "DeliveryMode",
    "cluster_spec",
    "is_clustered",
    "type_name_of",
]
