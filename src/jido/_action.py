"""``Action``: a validated unit of work that is also an LLM tool, ``@action`` and ``ActionContext``.

An action declares a pydantic ``Params`` model (validation and JSON Schema), an optional
``Result`` model, metadata (name, description, category, tags, version) and ``run``. Everything the
engine needs per call (the params model, whether ``run`` is a coroutine, which hooks are set) is
computed once at class creation so the hot path does no introspection.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, create_model

from jido._errors import DefinitionError, JidoError
from jido._naming import own_description, snake_case

if TYPE_CHECKING:
    from jido._schema import ToolFormat

__all__ = [
    "DEFAULT_MAX_STRING_LENGTH",
    "DEFAULT_TIMEOUT",
    "Action",
    "ActionContext",
    "action",
]

#: Default per-attempt timeout in seconds: generous enough for an action that calls an LLM.
DEFAULT_TIMEOUT = 120.0
#: Default maximum length of any string in incoming params (configurable per action).
DEFAULT_MAX_STRING_LENGTH = 100_000

ExtraMode = Literal["forbid", "ignore", "allow"]

_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(slots=True)
class ActionContext:
    """What an action sees of the world while it runs.

    ``state`` is the agent's current state model (or ``None`` outside an agent), ``agent_id`` the
    running agent, ``signal`` the signal being handled, ``deadline`` an absolute
    ``loop.time()`` by which the work must be done (``None``: no deadline beyond the action's own
    timeout) and ``metadata`` free-form data (trace ids, caller info, configuration).
    Nested ``execute`` calls made with this context get only the remaining time before
    ``deadline``.
    """

    state: Any = None
    agent_id: str | None = None
    signal: Any = None
    deadline: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class _EmptyParams(BaseModel):
    """No parameters."""

    model_config = ConfigDict(extra="forbid")


def _is_overridden(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(Action, name)


def _prepare_params(cls: type[Action]) -> type[BaseModel]:
    """Return the params model to validate with, applying the action's ``extra`` policy.

    A ``Params`` that sets ``extra`` in its own ``model_config`` keeps it; otherwise a subclass
    with ``extra=cls.extra`` (``"forbid"`` by default) is made, named like the original.
    """
    params = cls.__dict__.get("Params")
    if params is None:
        inherited: type[BaseModel] = cls.Params
        if "extra" not in cls.__dict__ or inherited.model_config.get("extra") == cls.extra:
            return inherited
        params = inherited  # the action changes the unknown-keys policy of inherited Params
    else:
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise DefinitionError(
                f"{cls.__name__}.Params must be a pydantic BaseModel subclass, got {params!r}",
                details={"action": cls.__name__},
            )
        if "extra" in params.__dict__.get("model_config", {}):
            return params
    namespace: dict[str, Any] = {
        "model_config": ConfigDict(extra=cls.extra),
        "__module__": params.__module__,
        "__qualname__": params.__qualname__,
        "__doc__": params.__doc__,
    }
    derived: type[BaseModel] = type(params.__name__, (params,), namespace)
    return derived


class Action:
    """Base class of every action.

    Subclass it, write a docstring (it becomes the tool description), declare ``Params`` and
    implement ``run``::

        class Deposit(Action):
            \"\"\"Deposit money into the account.\"\"\"

            class Params(BaseModel):
                amount: int = Field(gt=0, description="Amount in cents")

            async def run(self, params, ctx):
                return {"balance": ctx.state.balance + params.amount}

    ``run`` may be ``async def`` or a plain ``def`` (then it runs in a worker thread so it never
    blocks the event loop; such code can call :func:`jido.check_cancelled` to stop early). It may
    return a dict, a pydantic model, ``None`` or ``(result, directive_or_list_of_directives)``.

    Class attributes (all optional): ``name`` (default: snake_case class name), ``description``
    (default: the docstring), ``category``, ``tags``, ``vsn``, ``Params``, ``Result`` (validates
    the output), ``timeout`` (seconds per attempt, ``None`` for none), ``max_retries`` (retries of
    retryable errors only), ``backoff_base`` / ``backoff_max`` (exponential backoff with jitter),
    ``retry_on`` (exception types raised by ``run`` to treat as retryable), ``extra`` (unknown
    params keys: ``"forbid"`` by default, or ``"ignore"`` / ``"allow"``), ``max_string_length``
    (longest accepted string anywhere in the params, ``None`` for no limit).

    Hooks (override any; each may be sync or async): ``before_validate``, ``after_validate``,
    ``after_run``, ``on_error`` and ``compensate``.
    """

    name: ClassVar[str] = "action"
    description: ClassVar[str] = ""
    category: ClassVar[str | None] = None
    tags: ClassVar[tuple[str, ...]] = ()
    vsn: ClassVar[str] = "1.0.0"
    Params: ClassVar[type[BaseModel]] = _EmptyParams
    Result: ClassVar[type[BaseModel] | None] = None
    timeout: ClassVar[float | None] = DEFAULT_TIMEOUT
    max_retries: ClassVar[int] = 0
    backoff_base: ClassVar[float] = 0.1
    backoff_max: ClassVar[float] = 10.0
    retry_on: ClassVar[tuple[type[BaseException], ...]] = ()
    extra: ClassVar[ExtraMode] = "forbid"
    max_string_length: ClassVar[int | None] = DEFAULT_MAX_STRING_LENGTH
    compensation_timeout: ClassVar[float] = 30.0

    # Precomputed at class creation (read by the engine; not part of the public surface).
    _run_is_async: ClassVar[bool] = True
    _has_before_validate: ClassVar[bool] = False
    _has_after_validate: ClassVar[bool] = False
    _has_after_run: ClassVar[bool] = False
    _has_on_error: ClassVar[bool] = False
    _has_compensate: ClassVar[bool] = False
    _any_hooks: ClassVar[bool] = False
    _tool_cache: ClassVar[dict[tuple[str, bool], dict[str, Any]]] = {}
    _param_fields: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "name" not in own:
            cls.name = snake_case(cls.__name__)
        if not isinstance(cls.name, str) or not _NAME_RE.match(cls.name):
            raise DefinitionError(
                f"action name {cls.name!r} of {cls.__qualname__} is invalid: use 1-64 characters "
                "from a-z, A-Z, 0-9, '_' and '-' (tool names must match ^[a-zA-Z0-9_-]{1,64}$)",
                details={"action": cls.__qualname__, "name": cls.name},
            )
        if "description" not in own:
            cls.description = own_description(cls)
        if isinstance(cls.tags, str) or not all(isinstance(t, str) for t in cls.tags):
            raise DefinitionError(
                f"{cls.__qualname__}.tags must be a tuple of strings, got {cls.tags!r}",
                details={"action": cls.name},
            )
        cls.tags = tuple(cls.tags)
        if cls.extra not in ("forbid", "ignore", "allow"):
            raise DefinitionError(
                f"{cls.__qualname__}.extra must be 'forbid', 'ignore' or 'allow', "
                f"got {cls.extra!r}",
                details={"action": cls.name},
            )
        result = cls.Result
        if result is not None and not (isinstance(result, type) and issubclass(result, BaseModel)):
            raise DefinitionError(
                f"{cls.__qualname__}.Result must be a pydantic BaseModel subclass or None",
                details={"action": cls.name},
            )
        if cls.max_retries < 0:
            raise DefinitionError(
                f"{cls.__qualname__}.max_retries must be >= 0", details={"action": cls.name}
            )
        cls.Params = _prepare_params(cls)
        names: set[str] = set()
        for fname, finfo in cls.Params.model_fields.items():
            names.add(fname)
            if finfo.alias:
                names.add(finfo.alias)
        cls._param_fields = frozenset(names)
        cls._run_is_async = inspect.iscoroutinefunction(cls.run)
        cls._has_before_validate = _is_overridden(cls, "before_validate")
        cls._has_after_validate = _is_overridden(cls, "after_validate")
        cls._has_after_run = _is_overridden(cls, "after_run")
        cls._has_on_error = _is_overridden(cls, "on_error")
        cls._has_compensate = _is_overridden(cls, "compensate")
        cls._any_hooks = (
            cls._has_before_validate
            or cls._has_after_validate
            or cls._has_after_run
            or cls._has_on_error
        )
        cls._tool_cache = {}

    def run(self, params: Any, ctx: ActionContext) -> Any:
        """Do the work. Override it with ``async def run`` (or a plain ``def`` for blocking code,
        which the engine runs in a worker thread)."""
        raise DefinitionError(
            f"action {self.name!r} does not implement run(self, params, ctx)",
            details={"action": self.name},
        )

    # -- hooks (sync or async; the engine skips the ones not overridden) --------------------

    def before_validate(self, params: dict[str, Any], ctx: ActionContext) -> Any:
        """Called with the raw params dict before validation; may return a replacement dict."""
        return None

    def after_validate(self, params: BaseModel, ctx: ActionContext) -> Any:
        """Called with the validated params; may return a replacement ``Params`` instance."""
        return None

    def after_run(self, result: dict[str, Any], ctx: ActionContext) -> Any:
        """Called with the result dict after a successful run; may return a replacement dict."""
        return None

    def on_error(self, error: JidoError, ctx: ActionContext) -> Any:
        """Called with the typed error of every failed attempt (before any retry)."""
        return None

    def compensate(self, params: BaseModel, error: JidoError, ctx: ActionContext) -> Any:
        """Undo partial work after the final failure. ``error`` is the original error.

        Return a dict describing what was undone (or ``None``). If this raises, the caller gets a
        ``CompensationError`` carrying both errors.
        """
        return None

    # -- tools ------------------------------------------------------------------------------

    @classmethod
    def to_tool(cls, format: ToolFormat = "openai", *, strict: bool = True) -> dict[str, Any]:
        """Describe this action as an LLM tool (cached per class and format).

        ``format="openai"`` gives ``{"type": "function", "function": {"name", "description",
        "parameters", "strict": true}}``; ``"anthropic"`` gives ``{"name", "description",
        "input_schema"}``; ``"mcp"`` gives ``{"name", "description", "inputSchema"}``. The schema
        follows OpenAI strict-mode rules. The returned top-level dict is fresh; the nested schema
        is shared between calls, so copy it before modifying it.
        """
        cached = cls._tool_cache.get((format, strict))
        if cached is None:
            from jido._schema import build_tool

            cached = build_tool(cls, format, strict)
            cls._tool_cache[(format, strict)] = cached
        out = cached.copy()
        if format == "openai":
            out["function"] = out["function"].copy()
        return out

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        """The strict JSON Schema of ``Params`` (as used in tools)."""
        from jido._schema import strict_schema

        return strict_schema(cls.Params)


# ----------------------------------------------------------------------------------------------
# @action: build an Action class from a typed function
# ----------------------------------------------------------------------------------------------

_CTX_NAMES = frozenset({"ctx", "context"})


def _build_from_function(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    category: str | None,
    tags: tuple[str, ...],
    vsn: str,
    timeout: float | None,
    max_retries: int,
    retry_on: tuple[type[BaseException], ...],
    extra: ExtraMode,
) -> type[Action]:
    sig = inspect.signature(fn)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # unresolved forward reference etc.
        raise DefinitionError(
            f"cannot read the type hints of {fn.__qualname__}: {exc}",
            details={"function": fn.__qualname__},
            cause=exc,
        ) from exc
    fields: dict[str, Any] = {}
    ctx_param: str | None = None
    for pname, p in sig.parameters.items():
        ann = hints.get(pname, Any)
        if pname in _CTX_NAMES or ann is ActionContext:
            ctx_param = pname
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DefinitionError(
                f"@action function {fn.__qualname__} may not take *args/**kwargs ({pname})",
                details={"function": fn.__qualname__, "parameter": pname},
            )
        if p.kind is p.POSITIONAL_ONLY:
            raise DefinitionError(
                f"@action function {fn.__qualname__}: positional-only parameter {pname} "
                "cannot be passed by name",
                details={"function": fn.__qualname__, "parameter": pname},
            )
        default: Any = ... if p.default is p.empty else p.default
        fields[pname] = (ann, default)
    params_model: type[BaseModel] = create_model(
        f"{fn.__name__.title().replace('_', '')}Params",
        __config__=ConfigDict(extra=extra),
        __module__=fn.__module__,
        **fields,
    )
    ret = hints.get("return")
    result_model = ret if isinstance(ret, type) and issubclass(ret, BaseModel) else None
    is_async = inspect.iscoroutinefunction(fn)
    field_names = tuple(fields)
    ctx_name = ctx_param

    def _wrap(value: Any) -> Any:
        if value is None or isinstance(value, Mapping | BaseModel | tuple):
            return value
        return {"result": value}

    def _kwargs(params: BaseModel, ctx: ActionContext) -> dict[str, Any]:
        kw = {f: getattr(params, f) for f in field_names}
        if ctx_name is not None:
            kw[ctx_name] = ctx
        return kw

    run: Callable[..., Any]
    if is_async:

        async def run(self: Action, params: BaseModel, ctx: ActionContext) -> Any:
            return _wrap(await fn(**_kwargs(params, ctx)))

    else:

        def run(self: Action, params: BaseModel, ctx: ActionContext) -> Any:
            return _wrap(fn(**_kwargs(params, ctx)))

    doc = fn.__doc__
    namespace: dict[str, Any] = {
        "__doc__": doc,
        "__module__": fn.__module__,
        "__qualname__": fn.__qualname__,
        "name": name or fn.__name__,
        "description": description if description is not None else own_description(fn),
        "category": category,
        "tags": tuple(tags),
        "vsn": vsn,
        "timeout": timeout,
        "max_retries": max_retries,
        "retry_on": retry_on,
        "extra": extra,
        "Params": params_model,
        "Result": result_model,
        "run": run,
        "fn": staticmethod(fn),
    }
    cls_name = "".join(part.title() for part in fn.__name__.split("_")) or "FunctionAction"
    return type(cls_name, (Action,), namespace)


@overload
def action(fn: Callable[..., Any], /) -> type[Action]: ...


@overload
def action(
    *,
    name: str | None = None,
    description: str | None = None,
    category: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    vsn: str = "1.0.0",
    timeout: float | None = DEFAULT_TIMEOUT,
    max_retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (),
    extra: ExtraMode = "forbid",
) -> Callable[[Callable[..., Any]], type[Action]]: ...


def action(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    category: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    vsn: str = "1.0.0",
    timeout: float | None = DEFAULT_TIMEOUT,
    max_retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (),
    extra: ExtraMode = "forbid",
) -> type[Action] | Callable[[Callable[..., Any]], type[Action]]:
    """Turn a typed function into an :class:`Action` class.

    Parameters become ``Params`` fields (defaults, ``Field(...)`` constraints and descriptions,
    ``Annotated`` metadata all apply); a parameter named ``ctx`` (or annotated
    ``ActionContext``) receives the context instead. The docstring is the description; a
    ``BaseModel`` return annotation becomes ``Result``. A non-dict return value ``v`` is returned
    as ``{"result": v}``. Works as ``@action`` or ``@action(name=..., tags=...)``; the original
    function stays reachable as ``.fn``::

        @action(category="math")
        async def add(a: int, b: int = Field(0, ge=0)) -> dict[str, int]:
            \"\"\"Add two numbers.\"\"\"
            return {"sum": a + b}
    """

    def deco(f: Callable[..., Any]) -> type[Action]:
        if not callable(f):
            raise DefinitionError(f"@action needs a function, got {f!r}")
        return _build_from_function(
            f,
            name=name,
            description=description,
            category=category,
            tags=tuple(tags),
            vsn=vsn,
            timeout=timeout,
            max_retries=max_retries,
            retry_on=retry_on,
            extra=extra,
        )

    if fn is not None:
        return deco(fn)
    return deco
