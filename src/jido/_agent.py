"""``Agent``: a typed state model, the actions it may run, routes from signals to them, skills.

The definition is checked when the class is created (unknown route targets, actions missing from
``actions``, skill conflicts are :class:`~jido.DefinitionError`). An agent can be driven purely,
without a runtime::

    agent = Account.new(id="acc-1")
    agent, directives = await agent.cmd(Deposit, {"amount": 5})
    agent.state.balance          # 5
    agent, directives = await agent.handle(Signal(type="account.deposit", ...))

``cmd`` never changes the agent it is called on: it returns a new agent with the new state
(validated against ``state_model``) and the directives the actions returned.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import pydantic
from pydantic import BaseModel, Field, create_model

from jido._action import Action, ActionContext
from jido._directive import Directive, StateOp
from jido._errors import (
    DefinitionError,
    ExecutionError,
    JidoError,
    RoutingError,
    StateError,
    ValidationError,
)
from jido._exec import execute, validation_error_from_pydantic
from jido._naming import own_description, snake_case
from jido._router import Router
from jido._signal import Signal
from jido._skill import Skill

__all__ = ["Agent", "Instruction"]


#: Signal type a parent receives when one of its children exits.
CHILD_EXITED = "jido.agent.child.exited"


class _EmptyState(BaseModel):
    """An agent without state fields."""


@dataclass(slots=True)
class Instruction:
    """One unit of work for :meth:`Agent.cmd`: an action, its params and extra context.

    ``context`` is merged into the ``ActionContext.metadata`` the action sees.
    """

    action: type[Action]
    params: Mapping[str, Any] | BaseModel | None = None
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class _Binding:
    """How an action is mounted: under a skill's state slice (``key``) or on the whole state."""

    action: type[Action]
    instance: Action
    key: str | None
    skill: Skill | None
    slice_model: type[BaseModel] | None
    slice_fields: frozenset[str] | None


def _hook_kind(cls: type, name: str) -> int:
    """0: not overridden, 1: plain function, 2: coroutine function."""
    fn = getattr(cls, name)
    if fn is getattr(Agent, name):
        return 0
    return 2 if inspect.iscoroutinefunction(fn) else 1


def _fields_of(model: type[BaseModel]) -> frozenset[str] | None:
    """Field names results may merge into; ``None`` when the model accepts extra keys."""
    if model.model_config.get("extra") == "allow":
        return None
    return frozenset(model.model_fields)


def state_error(agent: str, exc: pydantic.ValidationError) -> StateError:
    """Turn a pydantic error on a state change into a :class:`~jido.StateError`."""
    err = validation_error_from_pydantic(exc, action=agent, what="state")
    return StateError(
        f"agent {agent!r}: the new state does not validate against state_model "
        f"({err.message.split(': ', 1)[-1]}); the old state was kept",
        details=err.details,
    )


class Agent:
    """Base class of every agent.

    Class attributes:

    * ``state_model`` — pydantic model of the state (default: no fields);
    * ``actions`` — the actions the agent may run;
    * ``routes`` — ``(pattern, action[, priority])`` tuples mapping signal types to actions
      (``action`` may be the class or its ``name``); patterns use ``*`` / ``**`` wildcards;
    * ``skills`` — :class:`~jido.Skill` classes or configured instances, mounted in order;
    * ``name`` (default: snake_case class name), ``description`` (default: docstring), ``tags``,
      ``vsn``;
    * runtime options (``None``: the runtime's default): ``mailbox_size``, ``checkpoint``
      (``"every"``, ``"on_stop"``, ``"never"`` or an int N = every N commands),
      ``hibernate_after`` (idle seconds), ``max_restarts`` / ``restart_window``, and
      ``idle_timeout`` (idle seconds after which the agent is passivated: committed to the
      store and stopped, started again by its next message through ``runtime.ref(id, cls=...)``).

    Hooks (override any; sync or async): ``mount()`` when started by a runtime,
    ``before_run(instruction)`` (may return a replacement instruction), ``after_run(instruction,
    result)`` (may return a replacement result dict), ``on_error(instruction, error)`` and
    ``shutdown(reason)``. A hook that raises crashes the agent (the runtime restarts it).

    Class keywords are passed on cooperatively, so mixins may take their own
    (``class X(Clustered, Account, critical=True)``).
    """

    name: ClassVar[str] = "agent"
    description: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...]] = ()
    vsn: ClassVar[str] = "1.0.0"
    state_model: ClassVar[type[BaseModel]] = _EmptyState
    actions: ClassVar[Sequence[type[Action]]] = ()
    routes: ClassVar[Sequence[tuple[Any, ...]]] = ()
    skills: ClassVar[Sequence[Skill | type[Skill]]] = ()

    mailbox_size: ClassVar[int | None] = None
    checkpoint: ClassVar[str | int | None] = None
    hibernate_after: ClassVar[float | None] = None
    idle_timeout: ClassVar[float | None] = None
    max_restarts: ClassVar[int | None] = None
    restart_window: ClassVar[float | None] = None

    # Computed at class creation (read by the runtime; not public).
    _router: ClassVar[Router] = Router()
    _bindings: ClassVar[dict[type[Action], _Binding]] = {}
    _by_name: ClassVar[dict[str, type[Action]]] = {}
    _skills: ClassVar[tuple[Skill, ...]] = ()
    _state_cls: ClassVar[type[BaseModel]] = _EmptyState
    _state_fields: ClassVar[frozenset[str] | None] = frozenset()
    _type_name: ClassVar[str] = "jido:Agent"
    _h_mount: ClassVar[int] = 0
    _h_before: ClassVar[int] = 0
    _h_after: ClassVar[int] = 0
    _h_error: ClassVar[int] = 0
    _h_shutdown: ClassVar[int] = 0

    __slots__ = ("id", "result", "state")

    id: str
    """The agent's id."""
    state: BaseModel
    """The current state (an instance of ``state_model``, extended with skill slices)."""
    result: dict[str, Any]
    """The result of the last command run by :meth:`cmd` (empty for a new agent)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _prepare(cls)

    def __init__(self, id: str, state: BaseModel) -> None:
        """Low-level constructor; use :meth:`new` (validates the state)."""
        self.id = id
        self.state = state
        self.result = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, state={self.state!r})"

    # -- pure API ------------------------------------------------------------------------------

    @classmethod
    def new(cls, id: str | None = None, state: Mapping[str, Any] | BaseModel | None = None) -> Self:
        """Build an agent with ``state`` validated against the state model (defaults if None).

        Raises :class:`~jido.StateError` if the state does not validate.
        """
        return cls(id if id is not None else str(uuid.uuid4()), cls.validate_state(state))

    @classmethod
    def validate_state(cls, state: Mapping[str, Any] | BaseModel | None) -> BaseModel:
        """Validate ``state`` (dict, model or ``None`` for defaults) into the state model."""
        model = cls._state_cls
        try:
            if state is None:
                return model()
            if isinstance(state, model):
                return state
            if isinstance(state, BaseModel):
                return model.model_validate(dict(state))
            return model.model_validate(state)
        except pydantic.ValidationError as exc:
            raise state_error(cls.name, exc) from None

    def instructions(self, work: Any, params: Any = None) -> list[Instruction]:
        """Normalise ``work`` into instructions.

        Accepts an action class or name, an :class:`Instruction`, ``(action, params)`` /
        ``(action, params, context)`` tuples, or a list of those. Raises
        :class:`~jido.ValidationError` for an action this agent does not declare.
        """
        return self._instructions(work, params)

    # cmd() goes through this name, so a subclass may use ``instructions`` for something else
    # (an LLM agent's system prompt)
    def _instructions(self, work: Any, params: Any = None) -> list[Instruction]:
        cls = type(self)
        if isinstance(work, list):
            if params is not None:
                raise ValidationError("give params inside each item when passing a list")
            out: list[Instruction] = []
            for item in work:
                out.extend(self._instructions(item))
            return out
        if isinstance(work, Instruction):
            cls._binding(work.action)
            return [work]
        if isinstance(work, tuple):
            if not 1 <= len(work) <= 3:
                raise ValidationError(
                    f"an instruction tuple is (action, params[, context]), got {work!r}"
                )
            ctx = work[2] if len(work) == 3 else {}
            return [
                Instruction(cls._resolve_action(work[0]), work[1] if len(work) > 1 else None, ctx)
            ]
        return [Instruction(cls._resolve_action(work), params)]

    async def cmd(
        self,
        work: Any,
        params: Mapping[str, Any] | BaseModel | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        signal: Signal | None = None,
    ) -> tuple[Self, list[Directive]]:
        """Run one or more instructions against the state; return ``(new_agent, directives)``.

        Instructions run in order, each seeing the state left by the previous one. Results are
        merged into the state and validated; state operations among the directives are applied
        too. On any error nothing changes: the error is raised (after ``on_error``) and this
        agent keeps its state. ``new_agent.result`` is the last instruction's result.
        """
        items = self._instructions(work, params)
        if context:
            items = [Instruction(i.action, i.params, {**i.context, **context}) for i in items]
        state = self.state
        effects: list[Directive] = []
        result: dict[str, Any] = {}
        for inst in items:
            state, result, more = await self._step(inst, state, signal)
            effects.extend(more)
        new = type(self)(self.id, state)
        new.result = result
        return new, effects

    async def handle(self, signal: Signal) -> tuple[Self, list[Directive]]:
        """Route ``signal`` to its action (data as params) and run it like :meth:`cmd`.

        Raises :class:`~jido.RoutingError` when no route matches.
        """
        action = type(self)._route(signal)
        return await self.cmd(Instruction(action, _params_of(signal)), signal=signal)

    # -- the step shared by cmd() and the runtime ------------------------------------------------

    async def _step(
        self,
        inst: Instruction,
        state: BaseModel,
        signal: Signal | None,
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[BaseModel, dict[str, Any], list[Directive]]:
        """Run one instruction against ``state``: ``(new_state, result, other_directives)``.

        Never mutates ``self``. Typed errors (validation, action, state) are raised after the
        ``on_error`` hook; a hook raising propagates as is (the runtime treats it as a crash).
        """
        cls = type(self)
        if cls._h_before:
            replaced = self.before_run(inst)
            if cls._h_before == 2:
                replaced = await replaced
            if replaced is not None:
                inst = replaced
        binding = cls._bindings.get(inst.action) or cls._binding(inst.action)
        key = binding.key
        try:
            if key is None:
                view = state
                metadata: dict[str, Any] = dict(inst.context) if inst.context else {}
            else:
                view = getattr(state, key)
                metadata = {**inst.context, "skill_config": binding.skill.config}  # type: ignore[union-attr]
                metadata["agent_state"] = state
            if meta:
                metadata.setdefault("meta", meta)
            ctx = ActionContext(view, self.id, signal, None, metadata)
            outcome = await execute(binding.instance, inst.params, ctx)
            result = outcome.result
            new_state = state
            if result:
                new_state = _merge(cls, binding, state, result)
            effects: list[Directive] = []
            if outcome.directives:
                ops: list[StateOp] = []
                for d in outcome.directives:
                    if isinstance(d, StateOp):
                        ops.append(d)
                    elif isinstance(d, Directive):
                        effects.append(d)
                    else:
                        raise ExecutionError(
                            f"action {binding.action.name!r} returned {d!r} as a directive; "
                            "return jido directives (Emit, Schedule, Spawn, SetPath, ...)",
                            details={"action": binding.action.name, "got": type(d).__name__},
                        )
                if ops:
                    new_state = _apply_ops(cls, new_state, ops)
        except JidoError as err:
            if cls._h_error:
                r = self.on_error(inst, err)
                if cls._h_error == 2:
                    await r
            raise
        if cls._h_after:
            replaced_result = self.after_run(inst, result)
            if cls._h_after == 2:
                replaced_result = await replaced_result
            if replaced_result is not None:
                result = replaced_result
        return new_state, result, effects

    # -- hooks -----------------------------------------------------------------------------------

    def mount(self) -> Any:
        """Called (sync or async) when a runtime starts or restarts this agent."""
        return None

    def before_run(self, instruction: Instruction) -> Any:
        """Called before each instruction; may return a replacement :class:`Instruction`."""
        return None

    def after_run(self, instruction: Instruction, result: dict[str, Any]) -> Any:
        """Called after each successful instruction; may return a replacement result dict."""
        return None

    def on_error(self, instruction: Instruction, error: JidoError) -> Any:
        """Called when an instruction fails (state unchanged); the error is raised after it."""
        return None

    def shutdown(self, reason: str) -> Any:
        """Called when the agent stops (``reason``: ``"normal"``, ``"crashed"``, ...)."""
        return None

    # -- class-level helpers -------------------------------------------------------------------

    @classmethod
    def _resolve_action(cls, target: Any) -> type[Action]:
        if isinstance(target, str):
            found = cls._by_name.get(target)
            if found is None:
                raise ValidationError(
                    f"agent {cls.name!r} has no action named {target!r}; "
                    f"known: {sorted(cls._by_name)}",
                    details={"agent": cls.name, "action": target},
                )
            return found
        cls._binding(target)
        result: type[Action] = target
        return result

    @classmethod
    def _binding(cls, action: Any) -> _Binding:
        binding = cls._bindings.get(action)
        if binding is None:
            raise ValidationError(
                f"agent {cls.name!r} does not declare action {action!r}; add it to `actions` "
                "(or to a mounted skill)",
                details={"agent": cls.name, "action": getattr(action, "name", repr(action))},
            )
        return binding

    @classmethod
    def _route(cls, signal: Signal) -> type[Action]:
        routes = cls._router.route(signal)
        if not routes:
            raise RoutingError(
                f"agent {cls.name!r} has no route for signal type {signal.type!r}; "
                "add a route for it",
                details={"agent": cls.name, "signal_type": signal.type, "signal_id": signal.id},
            )
        target: type[Action] = routes[0].target
        return target

    @classmethod
    def handles(cls, signal_type: str) -> bool:
        """True when some route of this agent matches ``signal_type``."""
        return bool(cls._router.route(signal_type))


def _params_of(signal: Signal) -> Any:
    data = signal.data
    if data is None:
        return None
    if isinstance(data, Mapping | BaseModel):
        return data
    raise ValidationError(
        f"signal {signal.type!r} carries {type(data).__name__} data; an agent needs an object "
        "(the action's params)",
        details={"signal_type": signal.type, "signal_id": signal.id},
    )


def _values_of(model: BaseModel) -> dict[str, Any]:
    """The field values of ``model`` as ``dict(model)`` gives them, without pydantic's iterator."""
    extra = model.__pydantic_extra__
    return {**model.__dict__, **extra} if extra else model.__dict__


def _merge(
    cls: type[Agent], binding: _Binding, state: BaseModel, result: dict[str, Any]
) -> BaseModel:
    key = binding.key
    if key is None:
        fields = cls._state_fields
        upd = result if fields is None else {k: v for k, v in result.items() if k in fields}
        if not upd:
            return state
        try:
            return cls._state_cls.model_validate({**_values_of(state), **upd})
        except pydantic.ValidationError as exc:
            raise state_error(cls.name, exc) from None
    model = binding.slice_model
    assert model is not None
    fields = binding.slice_fields
    upd = result if fields is None else {k: v for k, v in result.items() if k in fields}
    if not upd:
        return state
    try:
        new_slice = model.model_validate({**_values_of(getattr(state, key)), **upd})
        return cls._state_cls.model_validate({**_values_of(state), key: new_slice})
    except pydantic.ValidationError as exc:
        raise state_error(cls.name, exc) from None


def _apply_ops(cls: type[Agent], state: BaseModel, ops: list[StateOp]) -> BaseModel:
    data: dict[str, Any] = state.model_dump()
    for op in ops:
        data = op.apply(data)
    try:
        return cls._state_cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise state_error(cls.name, exc) from None


# ----------------------------------------------------------------------------------------------
# definition-time checks
# ----------------------------------------------------------------------------------------------


def _fail(cls: type, message: str, **details: Any) -> DefinitionError:
    return DefinitionError(
        f"agent {cls.__qualname__}: {message}", details={"agent": cls.__qualname__, **details}
    )


def _prepare(cls: type[Agent]) -> None:
    own = cls.__dict__
    if "name" not in own:
        cls.name = snake_case(cls.__name__)
    if "description" not in own:
        cls.description = own_description(cls)
    cls.tags = tuple(cls.tags)
    cls._type_name = f"{cls.__module__}:{cls.__qualname__}"
    model = cls.state_model
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise _fail(cls, f"state_model must be a pydantic BaseModel subclass, got {model!r}")
    try:
        model()
    except pydantic.ValidationError as exc:
        raise _fail(
            cls,
            "state_model must be buildable from its defaults (give every field a default): "
            f"{exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}",
        ) from None
    for attr, low in (("mailbox_size", 1), ("max_restarts", 0)):
        value = getattr(cls, attr)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < low
        ):
            raise _fail(cls, f"{attr} must be an int >= {low} or None, got {value!r}")
    for attr in ("hibernate_after", "restart_window", "idle_timeout"):
        value = getattr(cls, attr)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise _fail(cls, f"{attr} must be a number of seconds >= 0 or None, got {value!r}")
    _check_checkpoint_policy(cls, cls.checkpoint)

    # actions declared by the agent itself
    bindings: dict[type[Action], _Binding] = {}
    by_name: dict[str, type[Action]] = {}

    def add_action(act: Any, skill: Skill | None) -> None:
        if not (isinstance(act, type) and issubclass(act, Action)):
            owner = f"skill {type(skill).__name__}" if skill is not None else "actions"
            raise _fail(cls, f"{owner} must list Action subclasses, got {act!r}")
        if act in bindings:
            prev = bindings[act].skill
            if prev is skill:
                return
            raise _fail(
                cls,
                f"action {act.name!r} is declared by both "
                f"{_owner(prev)} and {_owner(skill)}; declare it once",
                action=act.name,
            )
        other = by_name.get(act.name)
        if other is not None and other is not act:
            raise _fail(
                cls,
                f"two different actions are named {act.name!r} ({other.__qualname__} and "
                f"{act.__qualname__}); give one another name",
                action=act.name,
            )
        by_name[act.name] = act
        if skill is None:
            bindings[act] = _Binding(act, act(), None, None, None, None)
        else:
            smodel = type(skill).state_model
            if smodel is None:
                raise _fail(
                    cls,
                    f"skill {type(skill).__name__} has actions but no state_model; give it one "
                    "(its actions see it as ctx.state)",
                    skill=type(skill).name,
                )
            bindings[act] = _Binding(
                act, act(), type(skill).state_key, skill, smodel, _fields_of(smodel)
            )

    if isinstance(cls.actions, str | bytes) or not isinstance(cls.actions, Sequence):
        raise _fail(cls, "actions must be a list of Action subclasses")
    for act in cls.actions:
        add_action(act, None)

    # skills, in declaration order
    skills: list[Skill] = []
    slices: dict[str, Any] = {}
    seen_names: set[str] = set()
    for entry in cls.skills:
        if isinstance(entry, type) and issubclass(entry, Skill):
            try:
                skill = entry()
            except DefinitionError as exc:
                raise _fail(cls, exc.message, skill=entry.name) from None
        elif isinstance(entry, Skill):
            skill = entry
        else:
            raise _fail(cls, f"skills must list Skill classes or instances, got {entry!r}")
        scls = type(skill)
        if scls.name in seen_names:
            raise _fail(cls, f"skill {scls.name!r} is mounted twice", skill=scls.name)
        seen_names.add(scls.name)
        key = scls.state_key
        assert key is not None
        if scls.state_model is not None:
            if key in model.model_fields:
                raise _fail(
                    cls,
                    f"skill {scls.name!r} keeps its state under {key!r}, which is already a "
                    "field of state_model; rename the field or set the skill's state_key",
                    skill=scls.name,
                    state_key=key,
                )
            if key in slices:
                raise _fail(
                    cls,
                    f"skills {slices[key][0]!r} and {scls.name!r} both keep state under {key!r}; "
                    "set a different state_key on one of them",
                    state_key=key,
                )
            slices[key] = (scls.name, scls.state_model)
        for act in scls.actions:
            add_action(act, skill)
        skills.append(skill)

    # routes: agent routes first, then skill routes in mount order
    router = Router()
    seen_routes: dict[tuple[str, int], tuple[type[Action], str]] = {}

    def add_route(item: Any, where: str) -> None:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise _fail(cls, f"{where}: a route is (pattern, action[, priority]), got {item!r}")
        pattern, target = item[0], item[1]
        priority = item[2] if len(item) == 3 else 0
        if isinstance(target, str):
            act = by_name.get(target)
            if act is None:
                raise _fail(
                    cls,
                    f"{where}: route {pattern!r} targets unknown action {target!r}; "
                    f"known actions: {sorted(by_name)}",
                    pattern=pattern,
                )
        elif isinstance(target, type) and issubclass(target, Action):
            if target not in bindings:
                raise _fail(
                    cls,
                    f"{where}: route {pattern!r} targets {target.__qualname__}, which is not in "
                    "the agent's actions (or a mounted skill's); add it to `actions`",
                    pattern=pattern,
                    action=target.name,
                )
            act = target
        else:
            raise _fail(
                cls,
                f"{where}: route {pattern!r} must target an Action class or action name, "
                f"got {target!r}",
                pattern=pattern,
            )
        dup = seen_routes.get((pattern, priority))
        if dup is not None and dup[0] is not act:
            raise _fail(
                cls,
                f"route {pattern!r} (priority {priority}) leads to both {dup[0].name!r} "
                f"({dup[1]}) and {act.name!r} ({where}); give one a different priority",
                pattern=pattern,
            )
        seen_routes[(pattern, priority)] = (act, where)
        try:
            router.add(pattern, act, priority=priority)
        except JidoError as exc:
            raise _fail(cls, f"{where}: {exc.message}", pattern=pattern) from None

    if isinstance(cls.routes, str | bytes) or not isinstance(cls.routes, Sequence):
        raise _fail(cls, "routes must be a list of (pattern, action[, priority]) tuples")
    for item in cls.routes:
        add_route(item, "routes")
    for skill in skills:
        for item in type(skill).routes:
            add_route(item, f"skill {type(skill).name!r}")

    # the state model, extended with one field per skill slice
    full: type[BaseModel] = model
    if slices:
        extra: dict[str, Any] = {
            key: (smodel, Field(default_factory=smodel)) for key, (_n, smodel) in slices.items()
        }
        full = create_model(
            f"{cls.__name__}State", __base__=model, __module__=cls.__module__, **extra
        )

    cls._router = router
    cls._bindings = bindings
    cls._by_name = by_name
    cls._skills = tuple(skills)
    cls._state_cls = full
    cls._state_fields = _fields_of(full)
    cls._h_mount = _hook_kind(cls, "mount")
    cls._h_before = _hook_kind(cls, "before_run")
    cls._h_after = _hook_kind(cls, "after_run")
    cls._h_error = _hook_kind(cls, "on_error")
    cls._h_shutdown = _hook_kind(cls, "shutdown")


def _owner(skill: Skill | None) -> str:
    return "the agent's actions" if skill is None else f"skill {type(skill).name!r}"


def _check_checkpoint_policy(cls: type, value: Any) -> None:
    if value is None or value in ("every", "on_stop", "never"):
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    raise _fail(
        cls,
        f"checkpoint must be 'every', 'on_stop', 'never' or an int N >= 1, got {value!r}",
    )
