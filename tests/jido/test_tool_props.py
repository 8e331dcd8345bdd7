"""Property tests: any generated pydantic model gives a strict, valid tool schema that accepts
the model's own valid instances, and execute_tool_call accepts those instances as arguments."""

from __future__ import annotations

import itertools
import json
from enum import Enum
from typing import Annotated, Any, Literal

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, create_model

from jido import Action, ActionContext, execute_tool_call, strict_schema

from ._strict import strict_violations

_counter = itertools.count()

# A generated field type: (annotation, strategy of valid python values for it).
FieldType = tuple[Any, st.SearchStrategy[Any]]

_finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)
_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=0, max_size=8)


@st.composite
def _bounded_int(draw: st.DrawFn) -> FieldType:
    lo = draw(st.integers(-100, 100))
    hi = lo + draw(st.integers(0, 100))
    return Annotated[int, Field(ge=lo, le=hi)], st.integers(lo, hi)


@st.composite
def _bounded_float(draw: st.DrawFn) -> FieldType:
    lo = draw(st.integers(-100, 100))
    ann = Annotated[float, Field(gt=lo, lt=lo + 10)]
    values = st.floats(min_value=lo, max_value=lo + 10, exclude_min=True, exclude_max=True)
    return ann, values


@st.composite
def _bounded_str(draw: st.DrawFn) -> FieldType:
    lo = draw(st.integers(0, 3))
    hi = lo + draw(st.integers(0, 5))
    ann = Annotated[str, Field(min_length=lo, max_length=hi, description="bounded text")]
    return ann, st.text(alphabet="abcxyz", min_size=lo, max_size=hi)


@st.composite
def _pattern_str(draw: st.DrawFn) -> FieldType:
    pattern = draw(st.sampled_from([r"^[a-z]{1,4}$", r"^[0-9]{3}$", r"^x-[A-Z]+$"]))
    return Annotated[str, Field(pattern=pattern)], st.from_regex(pattern, fullmatch=True)


@st.composite
def _enum(draw: st.DrawFn) -> FieldType:
    values = draw(
        st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=4, unique=True)
    )
    enum_cls = Enum(f"E{next(_counter)}", {f"M{i}": v for i, v in enumerate(values)}, type=str)  # type: ignore[misc]
    return enum_cls, st.sampled_from(list(enum_cls))


@st.composite
def _literal(draw: st.DrawFn) -> FieldType:
    values = draw(
        st.one_of(
            st.lists(st.text("pqrs", min_size=1, max_size=3), min_size=1, max_size=3, unique=True),
            st.lists(st.integers(-5, 5), min_size=1, max_size=3, unique=True),
        )
    )
    return Literal[tuple(values)], st.sampled_from(values)  # type: ignore[valid-type]


_leaves: st.SearchStrategy[FieldType] = st.one_of(
    st.just((int, st.integers(-(10**6), 10**6))),
    st.just((float, _finite)),
    st.just((str, _text)),
    st.just((bool, st.booleans())),
    _bounded_int(),
    _bounded_float(),
    _bounded_str(),
    _pattern_str(),
    _enum(),
    _literal(),
)


def _model_type(fields: st.SearchStrategy[FieldType]) -> st.SearchStrategy[FieldType]:
    @st.composite
    def build(draw: st.DrawFn) -> FieldType:
        specs = draw(st.lists(fields, min_size=0, max_size=4))
        definitions: dict[str, Any] = {}
        value_strategies: dict[str, st.SearchStrategy[Any]] = {}
        for i, (ann, values) in enumerate(specs):
            name = f"f{i}"
            optional = draw(st.booleans())
            described = draw(st.booleans())
            info = Field(description=f"field {i}") if described else Field()
            if optional:
                definitions[name] = (ann | None, Field(default=None, description=info.description))
                value_strategies[name] = st.none() | values
            else:
                definitions[name] = (ann, info)
                value_strategies[name] = values
        model = create_model(f"M{next(_counter)}", **definitions)
        return model, st.fixed_dictionaries(value_strategies).map(lambda d: model(**d))

    return build()


def _extend(children: st.SearchStrategy[FieldType]) -> st.SearchStrategy[FieldType]:
    lists = children.map(lambda t: (list[t[0]], st.lists(t[1], max_size=3)))  # type: ignore[name-defined]
    optionals = children.map(lambda t: (t[0] | None, st.none() | t[1]))
    return st.one_of(lists, optionals, _model_type(children))


field_types: st.SearchStrategy[FieldType] = st.recursive(_leaves, _extend, max_leaves=6)
models: st.SearchStrategy[FieldType] = _model_type(field_types)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models, st.data())
def test_generated_models_give_strict_valid_schemas(spec: FieldType, data: st.DataObject) -> None:
    model, instances = spec
    schema = strict_schema(model)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert strict_violations(schema) == [], json.dumps(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for _ in range(3):
        instance = data.draw(instances)
        dumped = instance.model_dump(mode="json")
        errors = [e.message for e in validator.iter_errors(dumped)]
        assert errors == [], (json.dumps(schema), dumped)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models, st.data())
async def test_generated_models_round_trip_through_tool_calls(
    spec: FieldType, data: st.DataObject
) -> None:
    model, instances = spec

    class Echo(Action):
        Params = model

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return params.model_dump(mode="json")

    schema = Echo.to_tool()["function"]["parameters"]
    instance = data.draw(instances)
    dumped = instance.model_dump(mode="json")
    out = json.loads(await execute_tool_call("echo", json.dumps(dumped), [Echo]))
    assert out == dumped
    # the same arguments as an LLM might send them: numbers as strings, double-encoded
    quirky = json.dumps(json.dumps(_numbers_as_strings(schema, dumped)))
    assert json.loads(await execute_tool_call("echo", quirky, [Echo])) == dumped


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    return set([t] if isinstance(t, str) else (t or []))


def _numbers_as_strings(node: dict[str, Any], value: Any) -> Any:
    """``value`` with every plain number (not an enum member) turned into its string form,
    walking the strict schema alongside the data (nested objects and arrays included)."""
    if value is None or isinstance(value, bool):
        return value
    options = [o for o in node.get("anyOf", [node]) if _types(o) != {"null"}]
    for opt in options:
        kinds = _types(opt)
        if isinstance(value, dict) and "object" in kinds:
            props = opt["properties"]
            return {k: _numbers_as_strings(props[k], v) for k, v in value.items()}
        if isinstance(value, list) and "array" in kinds:
            return [_numbers_as_strings(opt["items"], v) for v in value]
    numeric = isinstance(value, int | float)
    plain = all("enum" not in o and _types(o) & {"integer", "number"} for o in options)
    return str(value) if numeric and options and plain else value
