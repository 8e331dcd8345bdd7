"""Action class form, @action decorator and ActionContext."""

from __future__ import annotations

import dataclasses
import threading
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from jido import (
    Action,
    ActionContext,
    DefinitionError,
    ValidationError,
    action,
    execute,
    run_action,
)


class Deposit(Action):
    """Deposit money into the account."""

    name = "deposit"

    class Params(BaseModel):
        amount: int = Field(gt=0, description="Amount in cents")

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"balance": ctx.state.balance + params.amount}


class AccountState(BaseModel):
    balance: int = 0


class MakeHTTPRequest(Action):
    """First line.

    More detail.
    """

    category = "net"
    tags = ("a", "b")
    vsn = "2.1.0"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return None


def test_metadata_defaults() -> None:
    assert MakeHTTPRequest.name == "make_http_request"
    assert MakeHTTPRequest.description == "First line.\n\nMore detail."
    assert MakeHTTPRequest.category == "net"
    assert MakeHTTPRequest.tags == ("a", "b")
    assert MakeHTTPRequest.vsn == "2.1.0"
    assert MakeHTTPRequest.Params.model_fields == {}
    assert MakeHTTPRequest.Result is None
    assert Deposit.name == "deposit"
    assert Deposit.description == "Deposit money into the account."


def test_explicit_description_wins_over_docstring() -> None:
    class A(Action):
        """Doc."""

        description = "Explicit."

    assert A.description == "Explicit."


def test_context_is_a_slots_dataclass() -> None:
    ctx = ActionContext()
    assert dataclasses.is_dataclass(ctx)
    assert not hasattr(ctx, "__dict__")
    assert (ctx.state, ctx.agent_id, ctx.signal, ctx.deadline, ctx.metadata) == (
        None,
        None,
        None,
        None,
        {},
    )
    assert ActionContext().metadata is not ActionContext().metadata


async def test_readme_deposit_uses_ctx_state() -> None:
    ctx = ActionContext(state=AccountState(balance=10), agent_id="acc-1")
    assert await run_action(Deposit, {"amount": 5}, ctx) == {"balance": 15}
    # an instance and a Params instance work too
    out = await execute(Deposit(), Deposit.Params(amount=1), ctx)
    assert out.result == {"balance": 11}
    assert out.directives == []


@pytest.mark.parametrize("bad_name", ["has space", "", "x" * 65, "dots.not.allowed", "ümlaut"])
def test_invalid_names_rejected_at_definition(bad_name: str) -> None:
    with pytest.raises(DefinitionError, match="name"):
        type("Bad", (Action,), {"name": bad_name})


def test_bad_definitions() -> None:
    with pytest.raises(DefinitionError, match="Params"):
        type("P", (Action,), {"Params": dict})
    with pytest.raises(DefinitionError, match="Result"):
        type("R", (Action,), {"Result": 3})
    with pytest.raises(DefinitionError, match="tags"):
        type("T", (Action,), {"tags": "single"})
    with pytest.raises(DefinitionError, match="extra"):
        type("E", (Action,), {"extra": "maybe"})
    with pytest.raises(DefinitionError, match="max_retries"):
        type("M", (Action,), {"max_retries": -1})


async def test_unknown_keys_rejected_by_default() -> None:
    with pytest.raises(ValidationError) as info:
        await execute(Deposit, {"amount": 1, "amonut": 2}, ActionContext(state=AccountState()))
    errors = info.value.details["errors"]
    assert [e["loc"] for e in errors] == [["amonut"]]
    assert errors[0]["type"] == "extra_forbidden"


async def test_unknown_keys_policy_configurable() -> None:
    class Lenient(Action):
        extra = "ignore"

        class Params(BaseModel):
            a: int

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return params.model_dump()

    class OwnConfig(Action):
        class Params(BaseModel):
            model_config = ConfigDict(extra="allow")
            a: int

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return params.model_dump()

    assert await run_action(Lenient, {"a": 1, "zzz": 2}) == {"a": 1}
    assert await run_action(OwnConfig, {"a": 1, "zzz": 2}) == {"a": 1, "zzz": 2}


async def test_oversize_strings_rejected_anywhere() -> None:
    class Small(Action):
        max_string_length = 10

        class Inner(BaseModel):
            text: str

        class Params(BaseModel):
            title: str = ""
            items: list[Small.Inner] = []  # type: ignore[name-defined]

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return None

    Small.Params.model_rebuild(_types_namespace={"Small": Small})
    await run_action(Small, {"title": "x" * 10})
    with pytest.raises(ValidationError) as info:
        await run_action(Small, {"title": "ok", "items": [{"text": "y" * 11}]})
    err = info.value
    assert err.details["errors"][0]["loc"] == ["items", 0, "text"]
    assert err.details["errors"][0]["type"] == "string_too_long"
    assert "max_string_length" in err.message


async def test_default_string_limit_is_generous_but_finite() -> None:
    class Echo(Action):
        class Params(BaseModel):
            text: str

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"n": len(params.text)}

    assert await run_action(Echo, {"text": "a" * 100_000}) == {"n": 100_000}
    with pytest.raises(ValidationError, match="100001 characters"):
        await run_action(Echo, {"text": "a" * 100_001})


async def test_sync_run_executes_off_the_loop_thread() -> None:
    class Blocking(Action):
        def run(self, params: Any, ctx: ActionContext) -> Any:
            if ctx.metadata.get("stop"):
                raise StopIteration("odd but possible")
            current = threading.current_thread()
            return {"thread": current.ident, "daemon": current.daemon}

    out = await run_action(Blocking)
    assert out["thread"] != threading.get_ident()
    assert out["daemon"] is True  # a stuck sync action cannot keep the process alive
    from jido import ExecutionError

    with pytest.raises(ExecutionError, match="StopIteration"):
        await run_action(Blocking, {}, ActionContext(metadata={"stop": True}))


async def test_result_model_validated_and_dumped() -> None:
    class Out(BaseModel):
        total: int

    class WithResult(Action):
        Result = Out

        class Params(BaseModel):
            value: Any

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return params.value

    assert await run_action(WithResult, {"value": {"total": "3"}}) == {"total": 3}
    assert await run_action(WithResult, {"value": Out(total=4)}) == {"total": 4}
    from jido import ExecutionError

    with pytest.raises(ExecutionError, match="Result model") as info:
        await run_action(WithResult, {"value": {"total": "many"}})
    assert info.value.details["errors"][0]["loc"] == ["total"]


async def test_return_shapes() -> None:
    class Shapes(Action):
        class Params(BaseModel):
            kind: str

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            if params.kind == "none":
                return None
            if params.kind == "model":
                return AccountState(balance=2)
            if params.kind == "one":
                return {"a": 1}, "directive-1"
            if params.kind == "many":
                return {"a": 1}, ["d1", "d2"]
            if params.kind == "no-directives":
                return {"a": 1}, None
            if params.kind == "triple":
                return 1, 2, 3
            return 42

    async def ex(kind: str) -> Any:
        return await execute(Shapes, {"kind": kind})

    assert (await ex("none")).result == {}
    assert (await ex("model")).result == {"balance": 2}
    one = await ex("one")
    assert (one.result, one.directives) == ({"a": 1}, ["directive-1"])
    assert (await ex("many")).directives == ["d1", "d2"]
    assert (await ex("no-directives")).directives == []
    from jido import ExecutionError

    with pytest.raises(ExecutionError, match="tuple of 3"):
        await ex("triple")
    with pytest.raises(ExecutionError, match="returned int"):
        await ex("scalar")


async def test_action_without_run_is_a_clear_error() -> None:
    class Empty(Action):
        pass

    with pytest.raises(DefinitionError, match="does not implement run"):
        await run_action(Empty)


# -- @action ----------------------------------------------------------------------------------


@action
async def add(a: int, b: int = Field(0, ge=0, description="second")) -> dict[str, int]:
    """Add two numbers."""
    return {"sum": a + b}


@action(name="greet", category="text", tags=["hello"], max_retries=2)
def greet_fn(who: Annotated[str, Field(min_length=1)], ctx: ActionContext) -> str:
    """Greet someone."""
    return f"hello {who} from {ctx.agent_id}"


class Point(BaseModel):
    x: int
    y: int


@action
async def make_point(x: int, y: int) -> Point:
    """Make a point."""
    return Point(x=x, y=y)


async def test_decorator_builds_an_equivalent_action() -> None:
    assert issubclass(add, Action)
    assert add.name == "add"
    assert add.description == "Add two numbers."
    assert set(add.Params.model_fields) == {"a", "b"}
    assert add.Params.model_fields["b"].description == "second"
    assert await run_action(add, {"a": 2, "b": 3}) == {"sum": 5}
    assert await run_action(add, {"a": 2}) == {"sum": 2}
    with pytest.raises(ValidationError) as info:
        await run_action(add, {"a": 1, "b": -1})
    assert info.value.details["errors"][0]["loc"] == ["b"]
    with pytest.raises(ValidationError):
        await run_action(add, {"a": 1, "c": 1})  # unknown key, like the class form
    assert await add.fn(1, 2) == {"sum": 3}


async def test_decorator_options_ctx_and_scalar_result() -> None:
    assert (greet_fn.name, greet_fn.category, greet_fn.tags) == ("greet", "text", ("hello",))
    assert greet_fn.max_retries == 2
    assert "ctx" not in greet_fn.Params.model_fields
    out = await run_action(greet_fn, {"who": "ann"}, ActionContext(agent_id="a1"))
    assert out == {"result": "hello ann from a1"}
    with pytest.raises(ValidationError):
        await run_action(greet_fn, {"who": ""})


async def test_decorator_model_return_becomes_result() -> None:
    assert make_point.Result is Point
    assert await run_action(make_point, {"x": "1", "y": 2}) == {"x": 1, "y": 2}


def test_decorator_rejects_var_args() -> None:
    with pytest.raises(DefinitionError, match=r"\*args"):

        @action
        def bad(*items: int) -> None:
            """Bad."""


def test_to_tool_same_for_class_and_function_forms() -> None:
    class AddCls(Action):
        """Add two numbers."""

        name = "add"

        class Params(BaseModel):
            a: int
            b: int = Field(0, ge=0, description="second")

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"sum": params.a + params.b}

    assert AddCls.to_tool() == add.to_tool()


async def test_params_from_another_model_are_revalidated() -> None:
    class Source(BaseModel):
        amount: int

    ctx = ActionContext(state=AccountState(balance=1))
    assert await run_action(Deposit, Source(amount=2), ctx) == {"balance": 3}
    with pytest.raises(ValidationError):
        await run_action(Deposit, Source(amount=0), ctx)


def test_annotated_descriptions_and_params_schema() -> None:
    @action
    def scale(
        value: Annotated[float, Field(description="The value", gt=0)],
        factor: Annotated[int, Field(ge=1, le=10)] = 2,
    ) -> dict[str, float]:
        """Scale a value."""
        return {"value": value * factor}

    schema = scale.params_schema()
    assert schema["properties"]["value"] == {
        "description": "The value",
        "type": "number",
        "exclusiveMinimum": 0,
    }
    assert schema["properties"]["factor"] == {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 10,
    }
    assert schema["required"] == ["value", "factor"]


async def test_inherited_action_keeps_params_and_can_change_policy() -> None:
    class Base(Action):
        class Params(BaseModel):
            a: int

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"a": params.a, "extra": sorted((params.model_extra or {}).keys())}

    class Child(Base):
        extra = "allow"

    assert Child.name == "child"
    assert await run_action(Child, {"a": 1, "z": 2}) == {"a": 1, "extra": ["z"]}
    with pytest.raises(ValidationError):
        await run_action(Base, {"a": 1, "z": 2})


def _code_blocks(doc: str) -> list[str]:
    """The ``::`` literal blocks of a docstring, dedented."""
    import textwrap

    blocks: list[str] = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            body: list[str] = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and not nxt.startswith(" " * 8):
                    break
                body.append(nxt)
            blocks.append(textwrap.dedent("\n".join(body)))
    return blocks


@pytest.mark.parametrize("obj", [Action, action])
async def test_docstring_examples_run(obj: Any) -> None:
    blocks = _code_blocks(obj.__doc__ or "")
    assert blocks, "the docstring should carry an example"
    for code in blocks:
        namespace: dict[str, Any] = {
            "Action": Action,
            "action": action,
            "BaseModel": BaseModel,
            "Field": Field,
        }
        exec(compile(code, f"<{obj.__name__} docstring>", "exec"), namespace)
        made = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, Action)]
        made = [m for m in made if m is not Action]
        assert made
        for act in made:
            assert act.to_tool()["function"]["name"] == act.name
    if obj is Action:
        deposit = namespace["Deposit"]
        ctx = ActionContext(state=AccountState(balance=1))
        assert await run_action(deposit, {"amount": 2}, ctx) == {"balance": 3}
    else:
        assert await run_action(namespace["add"], {"a": 1, "b": 2}) == {"sum": 3}
