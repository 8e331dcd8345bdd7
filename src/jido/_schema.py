"""Actions as LLM tools, part one: strict JSON Schema conversion and tool descriptions.

``strict_schema(model)`` turns a pydantic model's JSON Schema into the subset accepted by OpenAI
strict mode (also valid for Anthropic and MCP): every object lists all its properties in
``required`` and has ``additionalProperties: false``; optional fields become nullable; nested models
are inlined (recursive ones stay as ``$defs``/``$ref``); descriptions, enums, numeric bounds,
patterns, supported formats and array bounds are kept; everything else (``title``, ``default``,
``examples``, unsupported formats, ...) is dropped. Validation still happens on our side with the
full pydantic model, so dropped keywords are still enforced.

Running the tool calls an LLM makes is :mod:`jido._tool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from jido._errors import DefinitionError

if TYPE_CHECKING:
    from jido._action import Action

__all__ = ["SUPPORTED_FORMATS", "ToolFormat", "build_tool", "strict_schema"]

ToolFormat = Literal["openai", "anthropic", "mcp"]

#: String formats OpenAI strict mode accepts; other formats are dropped from tool schemas.
SUPPORTED_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_PASSTHROUGH = (
    "description",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
)


class _NotStrict(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _collect_refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(_ref_name(ref))
        for v in node.values():
            _collect_refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _collect_refs(v, out)


def _recursive_defs(defs: dict[str, Any]) -> set[str]:
    edges = {}
    for name, body in defs.items():
        refs: set[str] = set()
        _collect_refs(body, refs)
        edges[name] = refs
    recursive: set[str] = set()
    for start in defs:
        stack = list(edges[start])
        seen: set[str] = set()
        while stack:
            n = stack.pop()
            if n == start:
                recursive.add(start)
                break
            if n in seen or n not in edges:
                continue
            seen.add(n)
            stack.extend(edges[n])
    return recursive


class _Converter:
    def __init__(self, defs: dict[str, Any], strict: bool) -> None:
        self.defs = defs
        self.strict = strict
        self.recursive = _recursive_defs(defs)
        self.used_defs: dict[str, Any] = {}

    def fail(self, path: str, problem: str) -> None:
        if self.strict:
            raise _NotStrict(path, problem)

    def convert(self, node: Any, path: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            self.fail(path, "boolean schema is not supported")
            return {}
        # Resolve $ref (and pydantic's allOf-with-one-ref wrapper) by inlining non-recursive defs.
        if "allOf" in node and len(node["allOf"]) == 1:
            merged = {k: v for k, v in node.items() if k != "allOf"}
            inner = node["allOf"][0]
            node = {**inner, **merged} if isinstance(inner, dict) else merged
        if "$ref" in node:
            name = _ref_name(node["$ref"])
            if name in self.recursive:
                if name not in self.used_defs:
                    self.used_defs[name] = {}  # placeholder breaks the recursion
                    self.used_defs[name] = self.convert(self.defs[name], f"$defs.{name}")
                return {"$ref": f"#/$defs/{name}"}
            body = dict(self.defs[name])
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            body.update(siblings)
            node = body
        out: dict[str, Any] = {}
        if "description" in node and isinstance(node["description"], str):
            out["description"] = node["description"]
        if "oneOf" in node or "anyOf" in node:
            options = node.get("anyOf") or node.get("oneOf") or []
            converted: list[dict[str, Any]] = []
            for i, opt in enumerate(options):
                c = self.convert(opt, f"{path}|{i}")
                inner_desc_free = {k: v for k, v in c.items() if k != "description"}
                if "anyOf" in inner_desc_free and len(inner_desc_free) == 1:
                    converted.extend(inner_desc_free["anyOf"])
                elif inner_desc_free not in converted:
                    converted.append(inner_desc_free)
            if len(converted) == 1:
                out.update(converted[0])
            else:
                out["anyOf"] = converted
            return out
        if "allOf" in node:
            self.fail(path, "allOf with several schemas is not supported")
        if "const" in node:
            out["enum"] = [node["const"]]
            if "type" in node:
                out["type"] = node["type"]
            return out
        if "enum" in node:
            out["enum"] = list(node["enum"])
            if "type" in node:
                out["type"] = node["type"]
            return out
        typ = node.get("type")
        if typ is None:
            if "properties" in node:
                typ = "object"
            else:
                self.fail(
                    path, "a value of any type (e.g. Any) cannot be expressed; give it a type"
                )
                return out
        out["type"] = typ
        main = typ if isinstance(typ, str) else next((t for t in typ if t != "null"), "null")
        if main == "object":
            self._object(node, out, path)
        elif main == "array":
            if "prefixItems" in node:
                self.fail(path, "tuples (prefixItems) are not supported; use a list or a model")
                if not self.strict:
                    out["prefixItems"] = [
                        self.convert(p, f"{path}[{i}]") for i, p in enumerate(node["prefixItems"])
                    ]
            if "items" in node:
                out["items"] = self.convert(node["items"], f"{path}[]")
            elif "prefixItems" not in node:
                self.fail(path, "a list of values of any type cannot be expressed; type its items")
        for key in _PASSTHROUGH[1:]:
            if key in node:
                out[key] = node[key]
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in SUPPORTED_FORMATS:
            out["format"] = fmt
        return out

    def _object(self, node: dict[str, Any], out: dict[str, Any], path: str) -> None:
        props = node.get("properties")
        additional = node.get("additionalProperties")
        if props is not None and additional is True:
            # A model that accepts extra keys: advertise only its declared fields when strict.
            if not self.strict:
                out["additionalProperties"] = True
            additional = None
        if props is None or (additional not in (None, False)):
            self.fail(
                path,
                "a free-form object (dict) cannot be expressed in strict mode; use a pydantic "
                "model with named fields, or to_tool(strict=False)",
            )
            if not self.strict:
                if isinstance(additional, dict):
                    out["additionalProperties"] = self.convert(additional, f"{path}.*")
                if props is None:
                    return
        required = set(node.get("required", ()))
        out_props: dict[str, Any] = {}
        for key, sub in (props or {}).items():
            c = self.convert(sub, f"{path}.{key}" if path else key)
            if key not in required:
                c = _nullable(c)
            out_props[key] = c
        out["properties"] = out_props
        out["required"] = list(out_props)
        if self.strict or "additionalProperties" not in out:
            out["additionalProperties"] = False


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Make ``schema`` accept ``null`` (OpenAI strict mode's way to express optional fields)."""
    if "anyOf" in schema:
        if {"type": "null"} not in schema["anyOf"]:
            return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
        return schema
    typ = schema.get("type")
    simple = typ is not None and "enum" not in schema and "$ref" not in schema
    if simple and isinstance(typ, str) and typ not in ("object", "array"):
        return {**schema, "type": [typ, "null"]}
    if simple and isinstance(typ, list):
        return schema if "null" in typ else {**schema, "type": [*typ, "null"]}
    if "enum" in schema and None in schema["enum"]:
        return schema
    body = {k: v for k, v in schema.items() if k != "description"}
    out: dict[str, Any] = {}
    if "description" in schema:
        out["description"] = schema["description"]
    out["anyOf"] = [body, {"type": "null"}]
    return out


def strict_schema(model: type[BaseModel], *, strict: bool = True) -> dict[str, Any]:
    """Convert ``model``'s JSON Schema to the OpenAI strict-mode subset (see module doc).

    Raises ``DefinitionError`` naming the field when something cannot be expressed strictly
    (free-form dicts, ``Any``, tuples); pass ``strict=False`` to keep such parts loosely typed.
    """
    try:
        raw = model.model_json_schema()
    except Exception as exc:
        raise DefinitionError(
            f"cannot build a JSON schema for {model.__name__}: {exc}",
            details={"model": model.__name__},
            cause=exc,
        ) from exc
    defs = raw.pop("$defs", {})
    conv = _Converter(defs, strict)
    if "$ref" in raw:  # a self-recursive model: the root itself is a $ref into $defs
        raw = {**defs[_ref_name(raw.pop("$ref"))], **raw}
    try:
        root = conv.convert(raw, "")
    except _NotStrict as exc:
        raise DefinitionError(
            f"{model.__name__} cannot be a strict tool schema: field {exc.path or '(root)'}: "
            f"{exc.problem}",
            details={"model": model.__name__, "field": exc.path, "problem": exc.problem},
        ) from None
    if root.get("type") != "object":
        raise DefinitionError(
            f"{model.__name__}: a tool's parameters must be an object",
            details={"model": model.__name__},
        )
    root.pop("description", None)
    if conv.used_defs:
        root["$defs"] = conv.used_defs
    return root


def build_tool(cls: type[Action], format: str, strict: bool) -> dict[str, Any]:
    """Build the (uncached) tool description of ``cls``; ``Action.to_tool`` caches it."""
    schema = strict_schema(cls.Params, strict=strict)
    description = cls.description or f"Run the {cls.name} action."
    if format == "openai":
        return {
            "type": "function",
            "function": {
                "name": cls.name,
                "description": description,
                "parameters": schema,
                "strict": strict,
            },
        }
    if format == "anthropic":
        return {"name": cls.name, "description": description, "input_schema": schema}
    if format == "mcp":
        return {"name": cls.name, "description": description, "inputSchema": schema}
    raise DefinitionError(
        f"unknown tool format {format!r}; use 'openai', 'anthropic' or 'mcp'",
        details={"format": format},
    )
