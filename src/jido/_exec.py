"""The execution engine: validate, run under a deadline, retry, compensate, chain and plan.

``execute(action, params, ctx)`` validates ``params`` against the action's ``Params`` model, runs
``run`` under a per-attempt timeout bounded by the context's deadline, retries errors marked
retryable with exponential backoff and jitter, calls ``compensate`` after the final failure and
returns an :class:`Outcome`. Everything that goes wrong surfaces as a typed ``JidoError``.

The hot path (no hooks, no retries) does one pydantic validation, one ``asyncio.timeout_at`` and
one dict normalisation; per-class facts are precomputed by ``Action.__init_subclass__``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import functools
import inspect
import math
import random
import threading
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import BaseModel

from jido._action import Action, ActionContext
from jido._errors import (
    CancelledError,
    CompensationError,
    DefinitionError,
    ExecutionError,
    JidoError,
    TimeoutError,
    ValidationError,
)

__all__ = [
    "Outcome",
    "Plan",
    "PlanStep",
    "chain",
    "check_cancelled",
    "execute",
    "run_action",
    "validation_error_from_pydantic",
]

_MAX_MESSAGE_ERRORS = 5

#: Set (in a copied context) for a synchronous ``run`` executing in a worker thread.
_CANCEL_EVENT: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "jido_cancel_event", default=None
)

# Indirection so tests can observe backoff delays without waiting for them.
_sleep = asyncio.sleep


@dataclass(slots=True)
class Outcome:
    """What a successful execution produced.

    ``result`` is the result dict (a returned model is dumped to a dict, ``None`` becomes ``{}``),
    ``directives`` the directives ``run`` returned (opaque to the engine, in order) and
    ``attempts`` how many attempts it took.
    """

    result: dict[str, Any]
    directives: list[Any] = field(default_factory=list)
    attempts: int = 1


def check_cancelled() -> None:
    """Raise ``CancelledError`` if the synchronous action running in this thread was abandoned.

    The engine runs a plain ``def run`` in a worker thread. A thread cannot be killed, so when the
    call times out or is cancelled the engine sets a flag that long-running sync code should poll
    with this function. Outside such a thread it does nothing.
    """
    event = _CANCEL_EVENT.get()
    if event is not None and event.is_set():
        raise CancelledError(
            "the action was cancelled or timed out; stop the work",
            details={"where": "worker thread"},
        )


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------


def _loc_str(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def validation_error_from_pydantic(
    exc: pydantic.ValidationError, *, action: str, what: str = "params"
) -> ValidationError:
    """Translate a pydantic ``ValidationError`` into a jido ``ValidationError``.

    ``details["errors"]`` lists every problem as ``{"loc", "msg", "type", "input_type"}`` so a
    caller (or an LLM) can see which field was wrong and why.
    """
    errors: list[dict[str, Any]] = []
    for e in exc.errors(include_url=False):
        errors.append(
            {
                "loc": list(e["loc"]),
                "msg": e["msg"],
                "type": e["type"],
                "input_type": type(e.get("input")).__name__,
            }
        )
    parts = [f"{_loc_str(e['loc'])}: {e['msg']}" for e in errors[:_MAX_MESSAGE_ERRORS]]
    if len(errors) > _MAX_MESSAGE_ERRORS:
        parts.append(f"... and {len(errors) - _MAX_MESSAGE_ERRORS} more")
    message = f"invalid {what} for action {action!r}: " + "; ".join(parts)
    return ValidationError(
        message, details={"action": action, "stage": what, "errors": errors}, cause=exc
    )


def _oversize_errors(data: Any, limit: int) -> list[dict[str, Any]]:
    """Every string value longer than ``limit`` in a JSON-like structure, with its path."""
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if len(value) > limit:
                found.append(
                    {
                        "loc": path,
                        "msg": f"string is {len(value)} characters long; at most {limit} "
                        "are accepted (send less, or raise the action's max_string_length)",
                        "type": "string_too_long",
                        "input_type": "str",
                    }
                )
        elif isinstance(value, Mapping):
            for k, v in value.items():
                stack.append((v, [*path, k]))
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                stack.append((v, [*path, i]))
    return found


def _wrap_exception(cls: type[Action], exc: BaseException) -> JidoError:
    """Turn an exception raised by ``run`` into a typed error (JidoErrors pass through)."""
    if isinstance(exc, JidoError):
        return exc
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError(
            f"action {cls.name!r} raised a timeout: {exc}",
            details={"action": cls.name, "exception": type(exc).__name__},
            cause=exc,
        )
    retryable = bool(cls.retry_on) and isinstance(exc, cls.retry_on)
    return ExecutionError(
        f"action {cls.name!r} failed: {type(exc).__name__}: {exc}",
        details={"action": cls.name, "exception": type(exc).__name__, "error": str(exc)},
        retryable=retryable,
        cause=exc,
    )


# ----------------------------------------------------------------------------------------------
# validation and results
# ----------------------------------------------------------------------------------------------


def _validate(cls: type[Action], raw: Any) -> BaseModel:
    params_cls = cls.Params
    if type(raw) is dict:
        data = raw
    elif raw is None:
        data = {}
    elif isinstance(raw, params_cls):
        return raw
    elif isinstance(raw, BaseModel):
        data = raw.model_dump(by_alias=True)
    elif isinstance(raw, Mapping):
        data = dict(raw)
    else:
        raise ValidationError(
            f"params for action {cls.name!r} must be a dict or a {params_cls.__name__} "
            f"instance, got {type(raw).__name__}",
            details={
                "action": cls.name,
                "stage": "params",
                "errors": [
                    {
                        "loc": [],
                        "msg": "expected an object",
                        "type": "model_type",
                        "input_type": type(raw).__name__,
                    }
                ],
            },
        )
    limit = cls.max_string_length
    if data and limit is not None:
        too_long = _oversize_errors(data, limit)
        if too_long:
            parts = [f"{_loc_str(e['loc'])}: {e['msg']}" for e in too_long[:_MAX_MESSAGE_ERRORS]]
            raise ValidationError(
                f"invalid params for action {cls.name!r}: " + "; ".join(parts),
                details={"action": cls.name, "stage": "params", "errors": too_long},
            )
    try:
        return params_cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error_from_pydantic(exc, action=cls.name) from None


def _normalize(cls: type[Action], raw: Any) -> Outcome:
    directives: list[Any]
    if type(raw) is tuple:
        if len(raw) != 2:
            raise ExecutionError(
                f"action {cls.name!r} returned a tuple of {len(raw)} items; "
                "return (result, directive_or_list_of_directives)",
                details={"action": cls.name},
            )
        raw, extra = raw
        if extra is None:
            directives = []
        elif isinstance(extra, list | tuple):
            directives = list(extra)
        else:
            directives = [extra]
    else:
        directives = []
    result: dict[str, Any]
    if type(raw) is dict:
        result = raw
    elif raw is None:
        result = {}
    elif isinstance(raw, BaseModel):
        if cls.Result is not None and isinstance(raw, cls.Result):
            return Outcome(raw.model_dump(), directives)
        result = raw.model_dump()
    elif isinstance(raw, Mapping):
        result = dict(raw)
    else:
        raise ExecutionError(
            f"action {cls.name!r} returned {type(raw).__name__}; return a dict, a pydantic "
            "model, None or (result, directives)",
            details={"action": cls.name, "returned_type": type(raw).__name__},
        )
    if cls.Result is not None:
        try:
            result = cls.Result.model_validate(result).model_dump()
        except pydantic.ValidationError as exc:
            err = validation_error_from_pydantic(exc, action=cls.name, what="result")
            raise ExecutionError(
                f"action {cls.name!r} returned a result that does not match its Result model: "
                + err.message.split(": ", 1)[-1],
                details=err.details,
                cause=exc,
            ) from None
    return Outcome(result, directives)


# ----------------------------------------------------------------------------------------------
# one attempt
# ----------------------------------------------------------------------------------------------


def _resolve(action: type[Action] | Action) -> tuple[type[Action], Action]:
    if isinstance(action, type):
        if not issubclass(action, Action):
            raise DefinitionError(
                f"{action!r} is not an Action subclass", details={"got": repr(action)}
            )
        return action, action()
    if not isinstance(action, Action):
        raise DefinitionError(
            f"execute() needs an Action class or instance, got {type(action).__name__}",
            details={"got": type(action).__name__},
        )
    return type(action), action


def _timeout_error(cls: type[Action], timeout: float | None, from_ctx: bool) -> TimeoutError:
    if from_ctx:
        msg = f"action {cls.name!r} ran past the caller's deadline"
    else:
        msg = f"action {cls.name!r} timed out after {timeout}s"
    return TimeoutError(
        msg + " (raise the timeout or make the action faster)",
        details={"action": cls.name, "timeout": timeout, "deadline_from_context": from_ctx},
    )


_EXPIRED: Any = object()


class _Resume:
    """Await the rest of a coroutine that has already been stepped once (see ``_run_until``)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        value = self.first
        self.first = None
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _run_until(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop, deadline: float
) -> Any:
    """Run ``coro`` in the current task, cancelling it at ``deadline``; ``_EXPIRED`` if it did.

    The first step runs directly: a coroutine that finishes without suspending (the common case
    for small actions) needs no timer at all. Only once it suspends is a timer armed.
    """
    try:
        first = coro.send(None)
    except StopIteration as stop:
        return stop.value
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - execute() always runs inside a task
        raise RuntimeError("execute() must run inside an asyncio task")
    alarm = _Alarm(task)
    handle = loop.call_at(deadline, alarm.fire)
    try:
        value = await _Resume(coro, first)
    except asyncio.CancelledError:
        if alarm.fired and task.uncancel() <= alarm.cancelling:
            return _EXPIRED
        raise
    finally:
        handle.cancel()
    if alarm.fired:
        task.uncancel()  # the run swallowed our cancel; keep the count balanced
    return value


class _Alarm:
    """Cancels a task at its deadline (cheaper than ``asyncio.timeout_at`` on the hot path)."""

    __slots__ = ("cancelling", "fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False
        self.cancelling = task.cancelling()

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


async def _attempt(
    cls: type[Action],
    inst: Action,
    params: BaseModel,
    ctx: ActionContext,
    timeout: float | None,  # noqa: ASYNC109 - seconds for this attempt, enforced below
) -> Outcome:
    deadline = ctx.deadline
    from_ctx = deadline is not None
    loop = None
    if timeout is not None:
        loop = asyncio.get_running_loop()
        own = loop.time() + timeout
        if deadline is None or own < deadline:
            deadline = own
            from_ctx = False
    if deadline is not None and deadline is not ctx.deadline:
        run_ctx = ActionContext(ctx.state, ctx.agent_id, ctx.signal, deadline, ctx.metadata)
    else:
        run_ctx = ctx
    try:
        if cls._run_is_async:
            if deadline is None:
                raw = await inst.run(params, run_ctx)
            else:
                if loop is None:
                    loop = asyncio.get_running_loop()
                if deadline <= loop.time():
                    raise _timeout_error(cls, timeout, from_ctx)
                raw = await _run_until(inst.run(params, run_ctx), loop, deadline)
                if raw is _EXPIRED:
                    raise _timeout_error(cls, timeout, from_ctx)
        else:
            raw = await _run_in_thread(cls, inst, params, run_ctx, deadline, timeout, from_ctx)
        return _normalize(cls, raw)
    except JidoError:
        raise
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller cancelled us: let cancellation propagate
        raise CancelledError(
            f"action {cls.name!r} was cancelled from inside its run",
            details={"action": cls.name},
        ) from None
    except Exception as exc:
        raise _wrap_exception(cls, exc) from exc


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _in_thread(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], name: str
) -> asyncio.Future[Any]:
    """Run ``fn`` in a new daemon thread; its outcome settles the returned future.

    A dedicated daemon thread (not the loop's shared executor) means a blocking action that never
    returns neither starves other users of the executor nor keeps the process from exiting.
    """
    fut: asyncio.Future[Any] = loop.create_future()

    def work() -> None:
        try:
            result = fn()
        except StopIteration as exc:  # futures refuse StopIteration: keep it, wrapped
            outcome: tuple[bool, Any] = (False, RuntimeError(f"run raised StopIteration: {exc}"))
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            outcome = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            loop.call_soon_threadsafe(_settle, fut, *outcome)

    threading.Thread(target=work, name=f"jido-action-{name}", daemon=True).start()
    return fut


async def _run_in_thread(
    cls: type[Action],
    inst: Action,
    params: BaseModel,
    ctx: ActionContext,
    deadline: float | None,
    timeout: float | None,  # noqa: ASYNC109 - only reported in the error; deadline enforces
    from_ctx: bool,
) -> Any:
    loop = asyncio.get_running_loop()
    event = threading.Event()
    cctx = contextvars.copy_context()
    cctx.run(_CANCEL_EVENT.set, event)
    call = functools.partial(cctx.run, inst.run, params, ctx)
    fut = _in_thread(loop, call, cls.name)
    try:
        if deadline is None:
            return await fut
        if deadline <= loop.time():
            raise _timeout_error(cls, timeout, from_ctx)
        cm = asyncio.timeout_at(deadline)
        try:
            async with cm:
                return await fut
        except builtins.TimeoutError:
            if cm.expired():
                raise _timeout_error(cls, timeout, from_ctx) from None
            raise
    finally:
        if not fut.done() or fut.cancelled():
            event.set()


# ----------------------------------------------------------------------------------------------
# hooks
# ----------------------------------------------------------------------------------------------


async def _hook(fn: Any, *args: Any) -> Any:
    """Call a hook (sync or async); a non-jido exception becomes an ``ExecutionError``."""
    try:
        value = fn(*args)
        if inspect.isawaitable(value):
            value = await value
    except JidoError:
        raise
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ExecutionError(
            f"hook {name} raised {type(exc).__name__}: {exc}",
            details={"hook": getattr(fn, "__name__", name), "exception": type(exc).__name__},
            cause=exc,
        ) from exc
    return value


async def _notify_error(inst: Action, err: JidoError, ctx: ActionContext) -> None:
    """Call ``on_error``; its own failure is recorded on ``err`` rather than replacing it."""
    try:
        await _hook(inst.on_error, err, ctx)
    except JidoError as hook_err:
        err.details.setdefault("on_error_failed", hook_err.message)


async def _validate_with_hooks(
    cls: type[Action], inst: Action, raw: Any, ctx: ActionContext
) -> BaseModel:
    if cls._has_before_validate:
        data = raw
        if data is None:
            data = {}
        elif isinstance(data, BaseModel):
            data = data.model_dump(by_alias=True)
        elif isinstance(data, Mapping):
            data = dict(data)
        replaced = await _hook(inst.before_validate, data, ctx)
        raw = data if replaced is None else replaced
    params = _validate(cls, raw)
    if cls._has_after_validate:
        replaced = await _hook(inst.after_validate, params, ctx)
        if replaced is not None:
            if not isinstance(replaced, cls.Params):
                raise DefinitionError(
                    f"{cls.__qualname__}.after_validate must return a {cls.Params.__name__} "
                    f"or None, got {type(replaced).__name__}",
                    details={"action": cls.name},
                )
            params = replaced
    return params


def _backoff_delay(cls: type[Action], attempt: int) -> float:
    """Exponential backoff with jitter: a random delay in [base*2^n / 2, base*2^n], capped."""
    ceiling = min(float(cls.backoff_max), float(cls.backoff_base) * (2.0**attempt))
    return ceiling * (0.5 + random.random() / 2)


async def _compensate(
    cls: type[Action], inst: Action, params: BaseModel, error: JidoError, ctx: ActionContext
) -> JidoError:
    """Run ``compensate`` after the final failure; return the error the caller should get."""
    try:
        async with asyncio.timeout(cls.compensation_timeout):
            if inspect.iscoroutinefunction(inst.compensate):
                value = await inst.compensate(params, error, ctx)
            else:
                loop = asyncio.get_running_loop()
                value = await _in_thread(
                    loop,
                    functools.partial(
                        contextvars.copy_context().run, inst.compensate, params, error, ctx
                    ),
                    cls.name,
                )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, builtins.TimeoutError) and not isinstance(exc, JidoError):
            problem = f"compensation timed out after {cls.compensation_timeout}s"
        else:
            problem = f"{type(exc).__name__}: {exc}"
        comp = CompensationError(
            f"action {cls.name!r} failed ({error.message}) and its compensation failed too "
            f"({problem}); the original error is in details['original']",
            details={
                "action": cls.name,
                "original": error.to_dict(),
                "compensation_error": exc.to_dict()
                if isinstance(exc, JidoError)
                else {"type": type(exc).__name__, "message": str(exc)},
            },
            cause=error,
        )
        comp.original = error  # type: ignore[attr-defined]
        return comp
    error.details["compensation"] = {
        "compensated": True,
        "result": value if isinstance(value, dict) else ({} if value is None else value),
    }
    return error


# ----------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------


async def execute(
    action: type[Action] | Action,
    params: Mapping[str, Any] | BaseModel | None = None,
    ctx: ActionContext | None = None,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - part of the public contract
    max_retries: int | None = None,
) -> Outcome:
    """Validate ``params``, run ``action`` and return its :class:`Outcome`.

    ``action`` is an Action class or instance; ``params`` a dict or ``Params`` instance.
    ``timeout`` (seconds per attempt; ``math.inf`` for none) and ``max_retries`` override the
    action's defaults. The attempt deadline never extends past ``ctx.deadline``, and ``run``
    receives a context whose ``deadline`` is the attempt deadline, so nested calls get only the
    remaining time. Only errors with ``retryable=True`` are retried, with exponential backoff and
    jitter. After the final failure ``compensate`` runs with the original error. Raises
    ``ValidationError``, ``ExecutionError``, ``TimeoutError``, ``CancelledError`` or
    ``CompensationError``; cancelling the calling task cancels the work at once (the
    cancellation propagates unchanged and no compensation runs).
    """
    cls, inst = _resolve(action)
    if ctx is None:
        ctx = ActionContext()
    t = cls.timeout if timeout is None else timeout
    if t is not None and math.isinf(t):
        t = None
    retries = cls.max_retries if max_retries is None else max_retries
    if not cls._any_hooks and retries == 0 and not cls._has_compensate:
        # Fast path: no hooks, no retries, nothing to undo.
        return await _attempt(cls, inst, _validate(cls, params), ctx, t)
    return await _execute_full(cls, inst, params, ctx, t, retries)


async def _execute_full(
    cls: type[Action],
    inst: Action,
    raw: Any,
    ctx: ActionContext,
    timeout: float | None,  # noqa: ASYNC109 - per-attempt timeout passed to _attempt
    retries: int,
) -> Outcome:
    try:
        params = await _validate_with_hooks(cls, inst, raw, ctx)
    except JidoError as err:
        if cls._has_on_error:
            await _notify_error(inst, err, ctx)
        raise
    attempt = 0
    while True:
        try:
            outcome = await _attempt(cls, inst, params, ctx, timeout)
            if cls._has_after_run:
                replaced = await _hook(inst.after_run, outcome.result, ctx)
                if replaced is not None:
                    if not isinstance(replaced, Mapping):
                        raise DefinitionError(
                            f"{cls.__qualname__}.after_run must return a dict or None, got "
                            f"{type(replaced).__name__}",
                            details={"action": cls.name},
                        )
                    outcome.result = dict(replaced)
            outcome.attempts = attempt + 1
            return outcome
        except JidoError as err:
            if cls._has_on_error:
                await _notify_error(inst, err, ctx)
            if err.retryable and attempt < retries:
                delay = _backoff_delay(cls, attempt)
                loop = asyncio.get_running_loop()
                if ctx.deadline is None or loop.time() + delay < ctx.deadline:
                    attempt += 1
                    await _sleep(delay)
                    continue
                err.details.setdefault("retry_stopped", "no time left before the deadline")
            err.details.setdefault("attempts", attempt + 1)
            if cls._has_compensate:
                final = await _compensate(cls, inst, params, err, ctx)
                if final is not err:
                    raise final from err
            raise


async def run_action(
    action: type[Action] | Action,
    params: Mapping[str, Any] | BaseModel | None = None,
    ctx: ActionContext | None = None,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - part of the public contract
    max_retries: int | None = None,
) -> dict[str, Any]:
    """Like :func:`execute` but return only the result dict (directives are dropped)."""
    outcome = await execute(action, params, ctx, timeout=timeout, max_retries=max_retries)
    return outcome.result


# ----------------------------------------------------------------------------------------------
# chains
# ----------------------------------------------------------------------------------------------

ChainItem = type[Action] | Action | tuple[type[Action] | Action, Mapping[str, Any]]


def _accepted(cls: type[Action], data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that ``cls.Params`` accepts (all of them unless extra='forbid')."""
    if cls.Params.model_config.get("extra") != "forbid":
        return dict(data)
    names = cls._param_fields
    return {k: v for k, v in data.items() if k in names}


async def chain(
    actions: Iterable[ChainItem],
    params: Mapping[str, Any] | None = None,
    ctx: ActionContext | None = None,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - bounds the whole chain via ctx.deadline
) -> Outcome:
    """Run actions one after another; each result is merged into the params of the next.

    An item is an action or ``(action, extra_params)``. Each action receives the keys of the
    accumulated data that its ``Params`` declares (all keys if it accepts extras). The returned
    outcome's ``result`` is the accumulated data (initial params merged with every result, later
    keys winning) and ``directives`` all directives in order. The first failure stops the chain
    and is raised with ``details["chain_index"]`` and ``details["chain_action"]``. ``timeout``
    bounds the whole chain.
    """
    if ctx is None:
        ctx = ActionContext()
    loop = asyncio.get_running_loop()
    if timeout is not None:
        end = loop.time() + timeout
        if ctx.deadline is None or end < ctx.deadline:
            ctx = ActionContext(ctx.state, ctx.agent_id, ctx.signal, end, ctx.metadata)
    acc: dict[str, Any] = dict(params or {})
    directives: list[Any] = []
    for index, item in enumerate(actions):
        if isinstance(item, tuple):
            act, extra = item
        else:
            act, extra = item, {}
        cls = act if isinstance(act, type) else type(act)
        step_params = _accepted(cls, {**acc, **extra}) if isinstance(cls, type) else dict(acc)
        try:
            out = await execute(act, step_params, ctx)
        except JidoError as err:
            err.details.setdefault("chain_index", index)
            err.details.setdefault("chain_action", getattr(cls, "name", repr(cls)))
            raise
        acc.update(out.result)
        directives.extend(out.directives)
    return Outcome(acc, directives)


# ----------------------------------------------------------------------------------------------
# plans
# ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PlanStep:
    """One step of a :class:`Plan`: a named action with params and the steps it depends on."""

    name: str
    action: type[Action] | Action
    params: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()


class Plan:
    """A set of named action steps with dependencies, run in parallel phases.

    ``plan.add("fetch", Fetch, {"url": u})``, then
    ``plan.add("parse", Parse, depends_on=["fetch"])``.
    ``phases()`` gives the steps grouped so that every step's dependencies are in earlier phases
    (a cycle or an unknown dependency raises ``DefinitionError``). ``await plan.run(ctx)`` runs
    each phase's steps concurrently; a step's params are its own params merged over the results
    of its dependencies (in ``depends_on`` order, filtered to what its ``Params`` accepts).
    """

    def __init__(self) -> None:
        self._steps: dict[str, PlanStep] = {}

    def add(
        self,
        name: str,
        action: type[Action] | Action,
        params: Mapping[str, Any] | None = None,
        *,
        depends_on: Iterable[str] = (),
    ) -> Plan:
        """Add a step (names must be unique); returns the plan for chaining."""
        if name in self._steps:
            raise DefinitionError(
                f"plan already has a step named {name!r}; step names must be unique",
                details={"step": name},
            )
        deps = tuple(depends_on)
        if isinstance(deps, str):  # pragma: no cover - guarded by tuple() above
            deps = (deps,)
        self._steps[name] = PlanStep(name, action, dict(params or {}), deps)
        return self

    @property
    def steps(self) -> dict[str, PlanStep]:
        """The steps by name (a copy)."""
        return dict(self._steps)

    def phases(self) -> list[list[str]]:
        """Group step names into phases in dependency order (Kahn's algorithm).

        Raises ``DefinitionError`` naming the cycle, or the unknown dependency.
        """
        for step in self._steps.values():
            for dep in step.depends_on:
                if dep not in self._steps:
                    raise DefinitionError(
                        f"step {step.name!r} depends on unknown step {dep!r}",
                        details={"step": step.name, "unknown": dep},
                    )
        indegree = {n: len(set(s.depends_on)) for n, s in self._steps.items()}
        dependents: dict[str, list[str]] = {n: [] for n in self._steps}
        for n, s in self._steps.items():
            for dep in set(s.depends_on):
                dependents[dep].append(n)
        ready = [n for n in self._steps if indegree[n] == 0]
        phases: list[list[str]] = []
        placed = 0
        while ready:
            phases.append(ready)
            placed += len(ready)
            nxt: list[str] = []
            for n in ready:
                for m in dependents[n]:
                    indegree[m] -= 1
                    if indegree[m] == 0:
                        nxt.append(m)
            ready = nxt
        if placed != len(self._steps):
            cycle = self._find_cycle({n for n, d in indegree.items() if d > 0})
            raise DefinitionError(
                "plan has a dependency cycle: " + " -> ".join(cycle),
                details={"cycle": cycle},
            )
        return phases

    def _find_cycle(self, remaining: set[str]) -> list[str]:
        # Every remaining node has a remaining dependency; walk until a node repeats.
        start = min(remaining)
        seen: dict[str, int] = {}
        path: list[str] = []
        node = start
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = min(d for d in self._steps[node].depends_on if d in remaining)
        return [*path[seen[node] :], node]

    async def run(self, ctx: ActionContext | None = None) -> dict[str, Outcome]:
        """Run the plan; return each step's outcome by name.

        The first failing step cancels the rest of its phase and is raised with
        ``details["plan_step"]`` and ``details["completed_steps"]``.
        """
        phases = self.phases()
        if ctx is None:
            ctx = ActionContext()
        results: dict[str, Outcome] = {}
        for phase in phases:
            tasks: dict[asyncio.Task[Outcome], str] = {}
            for name in phase:
                step = self._steps[name]
                cls = step.action if isinstance(step.action, type) else type(step.action)
                merged: dict[str, Any] = {}
                for dep in step.depends_on:
                    merged.update(results[dep].result)
                merged.update(step.params)
                coro = execute(step.action, _accepted(cls, merged), ctx)
                tasks[asyncio.ensure_future(coro)] = name
            try:
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            failed = [t for t in done if t.exception() is not None]
            if failed:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                first = failed[0]
                err = first.exception()
                assert err is not None
                for t in done:
                    if t.exception() is None:
                        results[tasks[t]] = t.result()
                if isinstance(err, JidoError):
                    err.details.setdefault("plan_step", tasks[first])
                    err.details.setdefault("completed_steps", sorted(results))
                raise err
            for t in done:
                results[tasks[t]] = t.result()
        return results
