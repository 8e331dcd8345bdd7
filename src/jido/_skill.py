"""``Skill``: a reusable bundle of actions, routes, a state slice and a config model.

A skill is mounted into an agent by listing it in the agent's ``skills``; skills are mounted in
declaration order. Its state lives under its own key of the agent's state (``state_key``, the
skill's ``name`` by default), its actions see that slice as ``ctx.state`` and their results merge
into it. The validated config is given to its actions as ``ctx.metadata["skill_config"]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic
from pydantic import BaseModel

from jido._action import Action
from jido._errors import DefinitionError
from jido._naming import own_description, snake_case

if TYPE_CHECKING:
    from jido._agent import Agent

__all__ = ["Skill"]

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Skill:
    """A bundle of actions, routes, state and config that any agent can mount.

    ::

        class CounterState(BaseModel):
            count: int = 0

        class CounterConfig(BaseModel):
            step: int = 1

        class Counting(Skill):
            \"\"\"Counts things.\"\"\"
            state_model = CounterState
            config_model = CounterConfig
            actions = [Increment]
            routes = [("counter.increment", Increment)]

        class Worker(Agent):
            state_model = WorkerState
            skills = [Counting(step=2)]      # or just [Counting] for the default config

    Class attributes: ``name`` (default: snake_case class name), ``description`` (default: the
    docstring), ``state_key`` (default: ``name``), ``state_model`` (``None``: no state slice),
    ``config_model`` (``None``: no config), ``actions``, ``routes`` (``(pattern, action[,
    priority])``). Override ``mount(agent)`` to run code when an agent carrying the skill starts.
    """

    name: ClassVar[str] = "skill"
    description: ClassVar[str] = ""
    state_key: ClassVar[str | None] = None
    state_model: ClassVar[type[BaseModel] | None] = None
    config_model: ClassVar[type[BaseModel] | None] = None
    actions: ClassVar[Sequence[type[Action]]] = ()
    routes: ClassVar[Sequence[tuple[Any, ...]]] = ()

    config: BaseModel | None
    """The validated config (an instance of ``config_model``), or ``None``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "name" not in own:
            cls.name = snake_case(cls.__name__)
        if "description" not in own:
            cls.description = own_description(cls)
        key = cls.state_key if "state_key" in own else None
        cls.state_key = key if key is not None else cls.name
        if not _KEY_RE.match(cls.state_key):
            raise DefinitionError(
                f"skill {cls.__qualname__}: state key {cls.state_key!r} must be an identifier "
                "(letters, digits, '_'); set state_key",
                details={"skill": cls.__qualname__, "state_key": cls.state_key},
            )
        for attr in ("state_model", "config_model"):
            model = getattr(cls, attr)
            if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise DefinitionError(
                    f"skill {cls.__qualname__}.{attr} must be a pydantic BaseModel subclass",
                    details={"skill": cls.__qualname__, "attribute": attr},
                )
        for act in cls.actions:
            if not (isinstance(act, type) and issubclass(act, Action)):
                raise DefinitionError(
                    f"skill {cls.__qualname__}.actions must list Action subclasses, got {act!r}",
                    details={"skill": cls.__qualname__},
                )
        if cls.state_model is not None:
            try:
                cls.state_model()
            except pydantic.ValidationError as exc:
                raise DefinitionError(
                    f"skill {cls.__qualname__}.state_model must be buildable from its defaults "
                    f"(give every field a default): {exc.errors()[0]['msg']}",
                    details={"skill": cls.__qualname__},
                    cause=exc,
                ) from None

    def __init__(self, **config: Any) -> None:
        """Make a mountable skill with ``config`` validated against ``config_model``.

        Raises :class:`~jido.DefinitionError` when the config is invalid or given to a skill
        without a ``config_model``.
        """
        cls = type(self)
        if cls.config_model is None:
            if config:
                raise DefinitionError(
                    f"skill {cls.name!r} takes no config (it has no config_model), got "
                    f"{sorted(config)}",
                    details={"skill": cls.name},
                )
            self.config = None
            return
        try:
            self.config = cls.config_model.model_validate(config)
        except pydantic.ValidationError as exc:
            raise DefinitionError(
                f"invalid config for skill {cls.name!r}: "
                + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
                details={"skill": cls.name, "errors": exc.errors(include_url=False)},
                cause=exc,
            ) from None

    def mount(self, agent: Agent) -> Any:
        """Called (sync or async) in declaration order when an agent carrying it starts."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config!r})"
