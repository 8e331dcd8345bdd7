"""Tool descriptions (strict schemas, formats, caching) and execute_tool_call."""

from __future__ import annotations

import datetime as dt
import json
from enum import StrEnum
from typing import Any, Literal, Optional

import jsonschema
import pytest
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Catalog,
    DefinitionError,
    ExecutionError,
    execute_tool_call,
    parse_tool_arguments,
    strict_schema,
)
from jido import ValidationError as JidoValidationError

from ._strict import strict_violations


class Size(StrEnum):
    S = "s"
    M = "m"


class Address(BaseModel):
    """A postal address."""

    street: str = Field(description="Street and number")
    zip_code: str = Field(pattern=r"^[0-9]{5}$")
    country: Literal["DE", "FR"] = "DE"


class Line(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=99)


class Order(Action):
    """Place an order."""

    category = "shop"
    tags = ("orders",)

    class Params(BaseModel):
        customer: str = Field(min_length=1, max_length=50, description="Customer name")
        size: Size = Size.M
        ship_to: Address = Field(description="Where to ship")
        bill_to: Address | None = None
        lines: list[Line] = Field(default_factory=list, min_length=0, max_length=10)
        express: bool = False
        note: Optional[str] = None  # noqa: UP045 - the Optional spelling is tested on purpose
        when: dt.datetime | None = None
        website: str | None = Field(default=None, json_schema_extra={"format": "uri"})
        ratio: float = Field(default=0.5, gt=0, lt=1)
        mode: Literal["fast"] = "fast"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"ok": True, "lines": len(params.lines), "bill": params.bill_to is not None}


def test_openai_anthropic_mcp_shapes() -> None:
    tool = Order.to_tool()
    assert tool["type"] == "function"
    fn = tool["function"]
    assert set(fn) == {"name", "description", "parameters", "strict"}
    assert (fn["name"], fn["description"], fn["strict"]) == ("order", "Place an order.", True)
    anth = Order.to_tool("anthropic")
    assert set(anth) == {"name", "description", "input_schema"}
    mcp = Order.to_tool(format="mcp")
    assert set(mcp) == {"name", "description", "inputSchema"}
    assert anth["input_schema"] == mcp["inputSchema"] == fn["parameters"]
    with pytest.raises(DefinitionError, match="unknown tool format"):
        Order.to_tool("gemini")  # type: ignore[arg-type]


def test_schema_is_strict_and_keeps_what_matters() -> None:
    schema = Order.to_tool()["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert strict_violations(schema) == []
    text = json.dumps(schema)
    assert '"title"' not in text and '"default"' not in text
    props = schema["properties"]
    assert props["customer"]["description"] == "Customer name"
    assert props["customer"]["type"] == "string"
    assert props["size"] == {"anyOf": [{"enum": ["s", "m"], "type": "string"}, {"type": "null"}]}
    ship = props["ship_to"]
    assert ship["description"] == "Where to ship"
    assert ship["properties"]["zip_code"]["pattern"] == r"^[0-9]{5}$"
    assert ship["properties"]["street"]["description"] == "Street and number"
    bill = props["bill_to"]
    assert {"type": "null"} in bill["anyOf"]
    lines = props["lines"]["anyOf"][0]
    assert lines["items"]["properties"]["quantity"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 99,
    }
    assert lines["maxItems"] == 10
    assert props["express"]["type"] == ["boolean", "null"]
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    when = props["when"]["anyOf"][0]
    assert when == {"type": "string", "format": "date-time"}
    assert "format" not in json.dumps(props["website"])  # "uri" is not supported by strict mode
    assert props["ratio"]["exclusiveMinimum"] == 0 and props["ratio"]["exclusiveMaximum"] == 1
    assert {"enum": ["fast"], "type": "string"} in props["mode"]["anyOf"]


def test_valid_params_validate_against_schema() -> None:
    schema = Order.to_tool()["function"]["parameters"]
    params = Order.Params(
        customer="ann",
        ship_to=Address(street="Main 1", zip_code="12345"),
        lines=[Line(sku="a", quantity=2)],
        when=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    jsonschema.Draft202012Validator(schema).validate(params.model_dump(mode="json"))


class Node(BaseModel):
    value: int
    children: list[Node] = []


def test_recursive_models_use_defs() -> None:
    class Tree(Action):
        class Params(BaseModel):
            root: Node

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return None

    schema = Tree.to_tool()["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert strict_violations(schema) == []
    assert "Node" in schema["$defs"]
    data = {"root": {"value": 1, "children": [{"value": 2, "children": []}]}}
    jsonschema.Draft202012Validator(schema).validate(data)


def test_free_form_dicts_are_refused_in_strict_mode() -> None:
    class Loose(Action):
        class Params(BaseModel):
            labels: dict[str, str]

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return None

    with pytest.raises(DefinitionError, match="labels") as info:
        Loose.to_tool()
    assert info.value.details["field"] == "labels"
    relaxed = Loose.to_tool(strict=False)
    assert relaxed["function"]["strict"] is False
    params = relaxed["function"]["parameters"]
    assert params["properties"]["labels"]["additionalProperties"] == {"type": "string"}


def test_to_tool_is_cached_and_safe_to_modify_at_top_level() -> None:
    first = Order.to_tool()
    second = Order.to_tool()
    assert first == second and first is not second
    assert first["function"]["parameters"] is second["function"]["parameters"]
    first["function"]["name"] = "changed"
    assert Order.to_tool()["function"]["name"] == "order"


def test_strict_schema_of_empty_model() -> None:
    class Nothing(BaseModel):
        pass

    assert strict_schema(Nothing) == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


# -- execute_tool_call -------------------------------------------------------------------------


async def call(args: Any, tools: Any = (Order,)) -> dict[str, Any]:
    out = await execute_tool_call("order", args, list(tools))
    assert isinstance(out, str)
    parsed: dict[str, Any] = json.loads(out)
    return parsed


BASE = {"customer": "ann", "ship_to": {"street": "Main 1", "zip_code": "12345"}}


async def test_tool_call_success_returns_json_result() -> None:
    assert await call(json.dumps(BASE)) == {"ok": True, "lines": 0, "bill": False}


async def test_tool_call_tolerates_llm_quirks() -> None:
    quirky = {
        **BASE,
        "lines": [{"sku": "a", "quantity": "3"}],  # number as string
        "express": None,  # null for a defaulted, non-nullable field
        "bill_to": json.dumps({"street": "B 2", "zip_code": "54321"}),  # object as JSON text
        "ratio": "0.25",
        "size": None,
        "note": None,
    }
    assert await call(json.dumps(quirky)) == {"ok": True, "lines": 1, "bill": True}
    # the whole arguments object double-encoded, and wrapped in a code fence
    assert (await call(json.dumps(json.dumps(BASE))))["ok"] is True
    assert (await call("```json\n" + json.dumps(BASE) + "\n```"))["ok"] is True
    # a list of objects given as a JSON string, items given as JSON strings
    lines = json.dumps([json.dumps({"sku": "x", "quantity": 1})])
    assert (await call(json.dumps({**BASE, "lines": lines})))["lines"] == 1
    # already-parsed arguments and bytes are accepted
    assert (await call(BASE))["ok"] is True
    assert (await call(json.dumps(BASE).encode()))["ok"] is True


async def test_tool_call_error_names_each_wrong_argument() -> None:
    bad = {
        "customer": "",
        "ship_to": {"street": "x", "zip_code": "abc"},
        "lines": [{"sku": "a", "quantity": 500}],
        "colour": "red",
    }
    out = await call(json.dumps(bad))
    err = out["error"]
    assert err["type"] == "validation_error"
    assert err["retryable"] is False
    problems = {e["argument"]: e["problem"] for e in err["details"]["errors"]}
    assert "at least 1 character" in problems["customer"]
    assert "pattern" in problems["ship_to.zip_code"]
    assert "less than or equal to 99" in problems["lines.0.quantity"]
    assert problems["colour"].startswith("unknown argument; accepted arguments are: customer")
    missing = await call(json.dumps({"customer": "a"}))
    probs = {e["argument"]: e["problem"] for e in missing["error"]["details"]["errors"]}
    assert probs == {"ship_to": "required argument is missing"}


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[1, 2]", '"just a string"', "42"],
)
async def test_tool_call_bad_json_is_a_readable_error(raw: str) -> None:
    err = (await call(raw))["error"]
    assert err["type"] == "validation_error"
    assert err["details"]["errors"][0]["argument"] == "(arguments)"


async def test_tool_call_empty_arguments_mean_no_arguments() -> None:
    class Ping(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"pong": True}

    for raw in ("", None, "  ", "{}"):
        assert json.loads(await execute_tool_call("ping", raw, [Ping])) == {"pong": True}


async def test_tool_call_unknown_tool_lists_available() -> None:
    out = json.loads(await execute_tool_call("ordr", "{}", [Order]))
    assert "available tools: order" in out["error"]["message"]
    assert out["error"]["details"]["errors"][0]["argument"] == "(tool name)"


async def test_tool_call_execution_error_is_json() -> None:
    class Explode(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ExecutionError("service down", retryable=True, details={"service": "x"})

    out = json.loads(await execute_tool_call("explode", "{}", [Explode]))
    assert out["error"]["type"] == "execution_error"
    assert out["error"]["retryable"] is True
    assert out["error"]["details"]["service"] == "x"
    assert out["error"]["details"]["errors"] == []


async def test_tool_call_result_with_non_json_values() -> None:
    class Stamp(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {
                "at": dt.date(2026, 1, 2),
                "tags": {"a"},
                "size": Size.S,
                "m": Line(sku="x", quantity=1),
            }

    out = json.loads(await execute_tool_call("stamp", None, [Stamp]))
    assert out == {"at": "2026-01-02", "tags": ["a"], "size": "s", "m": {"sku": "x", "quantity": 1}}


async def test_duplicate_tool_names_are_a_clear_error() -> None:
    class One(Action):
        name = "same"

    class Two(Action):
        name = "same"

    with pytest.raises(DefinitionError, match="tool names must be unique"):
        await execute_tool_call("same", "{}", [One, Two])
    with pytest.raises(DefinitionError, match="already has an action named 'same'"):
        Catalog([One, Two])


async def test_tool_set_as_mapping_instances_and_catalog() -> None:
    args = json.dumps(BASE)
    assert json.loads(await execute_tool_call("o2", args, {"o2": Order}))["ok"] is True
    assert json.loads(await execute_tool_call("order", args, [Order()]))["ok"] is True
    assert json.loads(await execute_tool_call("order", args, Catalog([Order])))["ok"] is True


async def test_tool_call_passes_context() -> None:
    class WhoAmI(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"agent": ctx.agent_id}

    out = await execute_tool_call("who_am_i", "{}", [WhoAmI], ActionContext(agent_id="a-7"))
    assert json.loads(out) == {"agent": "a-7"}


def test_parse_tool_arguments_errors_are_typed() -> None:
    with pytest.raises(JidoValidationError, match="not valid JSON"):
        parse_tool_arguments("{")
    assert parse_tool_arguments('"{\\"a\\": 1}"') == {"a": 1}


def test_strict_checker_flags_raw_pydantic_schemas() -> None:
    # guards the checker itself: pydantic's own schema breaks several strict-mode rules
    raw = Order.Params.model_json_schema()
    problems = strict_violations(raw)
    assert any("unsupported keywords" in p for p in problems)
    assert any("every property must be required" in p for p in problems)
    assert any("additionalProperties must be false" in p for p in problems)


async def test_tool_call_oversize_string_names_the_argument() -> None:
    class Short(Action):
        max_string_length = 5

        class Params(BaseModel):
            lines: list[Line]

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {}

    args = json.dumps({"lines": [{"sku": "toolong", "quantity": 1}]})
    err = json.loads(await execute_tool_call("short", args, [Short]))["error"]
    assert err["type"] == "validation_error"
    (problem,) = err["details"]["errors"]
    assert problem["argument"] == "lines.0.sku"
    assert "7 characters long; at most 5" in problem["problem"]


class Folder(BaseModel):
    name: str
    subfolders: list[Folder] = []


def test_self_recursive_params_model() -> None:
    class MakeTree(Action):
        Params = Folder

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"n": len(params.subfolders)}

    schema = MakeTree.to_tool()["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert strict_violations(schema) == []
    assert schema["type"] == "object" and "$defs" in schema
    data = {"name": "a", "subfolders": [{"name": "b", "subfolders": []}]}
    jsonschema.Draft202012Validator(schema).validate(data)
    # the model on its own: pydantic makes the root a $ref, which tools cannot use
    assert "$ref" in Folder.model_json_schema()
    direct = strict_schema(Folder)
    assert direct["type"] == "object" and strict_violations(direct) == []
    jsonschema.Draft202012Validator(direct).validate(data)
