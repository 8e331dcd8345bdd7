"""A checker for OpenAI strict-mode tool schemas, used by the tool tests."""

from __future__ import annotations

from typing import Any

ALLOWED_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "anyOf",
        "description",
        "$ref",
        "$defs",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    }
)
TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)


def strict_violations(schema: dict[str, Any]) -> list[str]:
    """Every way ``schema`` breaks OpenAI strict-mode rules (empty list: it complies)."""
    problems: list[str] = []
    defs = schema.get("$defs", {})
    if schema.get("type") != "object":
        problems.append("root: must be an object")
    if "anyOf" in schema:
        problems.append("root: must not be anyOf")

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            problems.append(f"{path}: schema is not an object")
            return
        extra = set(node) - ALLOWED_KEYWORDS
        if extra:
            problems.append(f"{path}: unsupported keywords {sorted(extra)}")
        if "$defs" in node and path != "":
            problems.append(f"{path}: $defs only at the root")
        if "$ref" in node:
            if set(node) != {"$ref"}:
                problems.append(f"{path}: $ref with sibling keywords")
            ref = node["$ref"]
            if not ref.startswith("#/$defs/") or ref.split("/")[-1] not in defs:
                problems.append(f"{path}: dangling $ref {ref}")
            return
        if not ({"type", "anyOf", "enum"} & set(node)):
            problems.append(f"{path}: no type")
        typ = node.get("type")
        types = [typ] if isinstance(typ, str) else list(typ or [])
        if any(t not in TYPES for t in types):
            problems.append(f"{path}: bad type {typ!r}")
        if "format" in node and node["format"] not in FORMATS:
            problems.append(f"{path}: unsupported format {node['format']}")
        if "object" in types:
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties must be false")
            props = node.get("properties")
            if not isinstance(props, dict):
                problems.append(f"{path}: object without properties")
                props = {}
            if sorted(node.get("required", [])) != sorted(props):
                problems.append(f"{path}: every property must be required")
            for key, sub in props.items():
                walk(sub, f"{path}.{key}")
        if "array" in types:
            if "items" not in node:
                problems.append(f"{path}: array without items")
            else:
                walk(node["items"], f"{path}[]")
        for i, option in enumerate(node.get("anyOf", [])):
            walk(option, f"{path}|{i}")

    walk(schema, "")
    for name, body in defs.items():
        walk(body, f"$defs.{name}")
    return problems
