"""Actions as LLM tools, part two: running tool calls (schemas are :mod:`jido._schema`).

``execute_tool_call`` runs an LLM's tool call and always answers with a JSON string;
``parse_tool_arguments`` reads the arguments an LLM sent. The schema side (``strict_schema``,
``build_tool``, ``ToolFormat``) is re-exported here, so this module's names stay as they were.
"""

from __future__ import annotations

import types
import typing
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union

import orjson
from pydantic import BaseModel

from jido._action import Action, ActionContext
from jido._errors import DefinitionError, JidoError, ValidationError
from jido._exec import execute
from jido._schema import SUPPORTED_FORMATS, ToolFormat, build_tool, strict_schema

if TYPE_CHECKING:
    from jido._agent import Agent

__all__ = [
    "SUPPORTED_FORMATS",
    "ToolFormat",
    "build_tool",
    "execute_tool_call",
    "parse_tool_arguments",
    "strict_schema",
    "tool_index",
]


# ----------------------------------------------------------------------------------------------
# tool calls
# ----------------------------------------------------------------------------------------------

ToolSet = Iterable[type[Action] | Action] | Mapping[str, type[Action] | Action]


def tool_index(actions: ToolSet) -> dict[str, type[Action] | Action]:
    """Index actions by tool name; two different actions with one name raise ``DefinitionError``."""
    index: dict[str, type[Action] | Action] = {}
    items: Iterable[tuple[str | None, type[Action] | Action]] = (
        actions.items() if isinstance(actions, Mapping) else ((None, a) for a in actions)
    )
    for key, act in items:
        cls = act if isinstance(act, type) else type(act)
        if not (isinstance(cls, type) and issubclass(cls, Action)):
            raise DefinitionError(
                f"tools must be Action classes or instances, got {act!r}",
                details={"got": repr(act)},
            )
        name = key if key is not None else cls.name
        prev = index.get(name)
        if prev is not None and prev is not act:
            prev_cls = prev if isinstance(prev, type) else type(prev)
            raise DefinitionError(
                f"two tools are named {name!r} ({prev_cls.__qualname__} and {cls.__qualname__}); "
                "tool names must be unique: set a different `name` on one of them",
                details={
                    "name": name,
                    "actions": [prev_cls.__qualname__, cls.__qualname__],
                },
            )
        index[name] = act
    return index


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t[3:]
        if t[:4].lower() == "json":
            t = t[4:]
        if t.endswith("```"):
            t = t[:-3]
    return t.strip()


def parse_tool_arguments(arguments: str | bytes | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse LLM tool arguments into a dict, tolerating the usual quirks.

    Accepts a JSON object text, a JSON string that itself holds a JSON object (double-encoded),
    markdown code fences, empty text or ``None`` (no arguments) and an already-parsed mapping.
    Raises ``ValidationError`` saying what was wrong otherwise.
    """
    if arguments is None:
        return {}
    if isinstance(arguments, Mapping):
        return dict(arguments)
    value: Any = arguments
    for _ in range(3):
        if isinstance(value, bytes | bytearray):
            value = value.decode("utf-8", errors="replace")
        if not isinstance(value, str):
            break
        text = _strip_fences(value)
        if not text:
            return {}
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(
                f"tool arguments are not valid JSON ({exc}); send a JSON object",
                details={
                    "errors": [
                        {
                            "loc": [],
                            "msg": f"not valid JSON: {exc}",
                            "type": "json_invalid",
                            "input_type": "str",
                        }
                    ]
                },
            ) from None
    if not isinstance(value, dict):
        raise ValidationError(
            f"tool arguments must be a JSON object, got {type(value).__name__}",
            details={
                "errors": [
                    {
                        "loc": [],
                        "msg": "expected a JSON object with the tool's arguments",
                        "type": "model_type",
                        "input_type": type(value).__name__,
                    }
                ]
            },
        )
    return value


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip ``Annotated`` and ``Optional``; return (inner annotation, allows None)."""
    allows_none = annotation is Any or annotation is None or annotation is type(None)
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        allows_none = allows_none or len(rest) != len(args)
        if len(rest) == 1:
            inner, nested_none = _unwrap(rest[0])
            return inner, allows_none or nested_none
        for a in rest:
            inner, _ = _unwrap(a)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner, allows_none
        return annotation, allows_none
    return annotation, allows_none


def _structured(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel | dict | list):
        return True
    return typing.get_origin(annotation) in (list, dict, tuple, set, frozenset)


def _maybe_json(value: str) -> Any:
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return value
    return value


class _FieldPlan(typing.NamedTuple):
    """What argument normalisation needs to know about one field (computed once per model)."""

    name: str
    drop_null: bool  # null means "not given" (the field has a default and rejects None)
    structured: bool  # a JSON object/array sent as a string should be decoded
    model: type[BaseModel] | None  # nested model to normalise recursively
    item_model: type[BaseModel] | None  # list item model to normalise recursively


_PLANS: weakref.WeakKeyDictionary[type[BaseModel], dict[str, _FieldPlan]] = (
    weakref.WeakKeyDictionary()
)


def _plan(model: type[BaseModel]) -> dict[str, _FieldPlan]:
    plan = _PLANS.get(model)
    if plan is not None:
        return plan
    plan = {}
    for fname, finfo in model.model_fields.items():
        inner, allows_none = _unwrap(finfo.annotation)
        nested = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
        item_model = None
        if typing.get_origin(inner) is list:
            (item_ann,) = typing.get_args(inner) or (Any,)
            item_inner, _ = _unwrap(item_ann)
            if isinstance(item_inner, type) and issubclass(item_inner, BaseModel):
                item_model = item_inner
        fp = _FieldPlan(
            fname,
            not allows_none and not finfo.is_required(),
            _structured(inner),
            nested,
            item_model,
        )
        plan[fname] = fp
        if finfo.alias:
            plan[finfo.alias] = fp
    _PLANS[model] = plan
    return plan


def _normalize_args(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Undo LLM quirks against ``model``: nulls for defaulted fields, JSON-in-a-string values."""
    plan = _plan(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        fp = plan.get(key)
        if fp is None:
            out[key] = value
            continue
        if value is None:
            if not fp.drop_null:
                out[key] = value
            continue  # else: null means "not given", let the default apply
        if fp.structured and isinstance(value, str):
            value = _maybe_json(value)
        if fp.model is not None and isinstance(value, dict):
            value = _normalize_args(fp.model, value)
        elif fp.item_model is not None and isinstance(value, list):
            item_model = fp.item_model
            decoded = [_maybe_json(v) if isinstance(v, str) else v for v in value]
            value = [_normalize_args(item_model, v) if isinstance(v, dict) else v for v in decoded]
        out[key] = value
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, JidoError):
        return obj.to_dict()
    return str(obj)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _problem(entry: Mapping[str, Any], accepted: list[str]) -> str:
    kind = entry.get("type", "")
    msg = str(entry.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return "unknown argument; accepted arguments are: " + (", ".join(accepted) or "(none)")
    if kind == "missing":
        return "required argument is missing"
    got = entry.get("input_type")
    if got and kind not in ("string_too_long", "json_invalid"):
        return f"{msg} (got {'null' if got == 'NoneType' else got})"
    return msg


def tool_error_json(err: JidoError, accepted: list[str] | None = None) -> str:
    """The JSON error object a model reads: ``{"error": {"type", "message", "details", ...}}``.

    ``details["errors"]`` lists ``{"argument", "problem"}`` pairs naming each wrong argument.
    """
    details = {k: v for k, v in err.details.items() if k != "errors"}
    errors = []
    for entry in err.details.get("errors", ()) or ():
        if isinstance(entry, Mapping):
            loc = entry.get("loc", [])
            argument = ".".join(str(p) for p in loc) if loc else "(arguments)"
            errors.append({"argument": argument, "problem": _problem(entry, accepted or [])})
    details["errors"] = errors
    payload = {
        "error": {
            "type": err.type,
            "message": err.message,
            "retryable": err.retryable,
            "details": details,
        }
    }
    return _dumps(payload)


def _accepted_args(cls: type[Action]) -> list[str]:
    return [f.alias or n for n, f in cls.Params.model_fields.items()]


async def execute_tool_call(
    tool_name: str,
    arguments_json: str | bytes | Mapping[str, Any] | None,
    actions: ToolSet,
    ctx: ActionContext | None = None,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - per-attempt timeout handed to execute()
    agent: Agent | None = None,
) -> str:
    """Run an LLM tool call and return a JSON string for the model.

    With ``agent``, the tool runs as that agent's command: ``ctx.state`` is the agent's state
    (its skill slice for a skill's action), the result is merged into the state as
    :meth:`~jido.Agent.cmd` would, and ``agent.state`` is updated in place on success. The
    action must be one the agent declares. ``ctx.metadata`` (when ``ctx`` is given) is passed
    on as the instruction's context.

    ``actions`` is the tool set (Action classes/instances, a name mapping or a catalog); duplicate
    tool names raise ``DefinitionError`` (a programming error). The arguments are parsed
    leniently (double-encoded JSON, code fences, numbers as strings, nulls for optional fields,
    nested objects sent as JSON strings) and validated strictly. On success the JSON of the
    result dict is returned; on failure ``{"error": {"type", "message", "retryable",
    "details": {"errors": [{"argument", "problem"}], ...}}}`` telling the model what to fix.
    """
    index = tool_index(actions)
    act = index.get(tool_name)
    if act is None:
        available = sorted(index)
        err = ValidationError(
            f"there is no tool named {tool_name!r}; available tools: "
            + (", ".join(available) or "(none)"),
            details={
                "tool": tool_name,
                "available": available,
                "errors": [
                    {
                        "loc": ["(tool name)"],
                        "msg": f"unknown tool {tool_name!r}",
                        "type": "unknown_tool",
                    }
                ],
            },
        )
        return tool_error_json(err)
    cls = act if isinstance(act, type) else type(act)
    try:
        args = parse_tool_arguments(arguments_json)
        args = _normalize_args(cls.Params, args)
        if agent is not None:
            from jido._agent import Instruction

            meta = dict(ctx.metadata) if ctx is not None else {}
            signal = ctx.signal if ctx is not None else None
            state, result, _effects = await agent._step(
                Instruction(cls, args, meta), agent.state, signal
            )
            agent.state = state
            return _dumps(result)
        outcome = await execute(act, args, ctx, timeout=timeout)
    except JidoError as err:
        err.details.setdefault("tool", tool_name)
        return tool_error_json(err, _accepted_args(cls))
    return _dumps(outcome.result)
