"""Skills: actions, routes, a state slice under their own key, config, order, conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from jido import (
    Action,
    ActionContext,
    Agent,
    DefinitionError,
    MemoryStore,
    Runtime,
    Signal,
    Skill,
    StateError,
)


class Increment(Action):
    """Count up by the configured step."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        step = ctx.metadata["skill_config"].step
        return {"count": ctx.state.count + step, "total_seen": ctx.metadata["agent_state"].name}


class CounterState(BaseModel):
    count: int = Field(0, le=10)


class CounterConfig(BaseModel):
    step: int = Field(1, gt=0)


MOUNTED: list[str] = []


class Counting(Skill):
    """Counts things."""

    state_model = CounterState
    config_model = CounterConfig
    actions = [Increment]
    routes = [("counter.increment", Increment)]

    def mount(self, agent: Agent) -> None:
        MOUNTED.append(f"counting:{agent.id}")


class Note(Action):
    """Keep a note."""

    class Params(BaseModel):
        text: str

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        return {"notes": [*ctx.state.notes, params.text]}


class NotesState(BaseModel):
    notes: list[str] = Field(default_factory=list)


class Notes(Skill):
    """Keeps notes."""

    state_key = "memo"
    state_model = NotesState
    actions = [Note]
    routes = [("notes.add", Note), ("counter.*", Note, -5)]

    async def mount(self, agent: Agent) -> None:
        MOUNTED.append(f"notes:{agent.id}")


class WorkerState(BaseModel):
    name: str = "w"


class Worker(Agent):
    """Has two skills."""

    state_model = WorkerState
    skills = [Counting(step=2), Notes]


def sig(type: str, data: Any = None) -> Signal:
    return Signal(type=type, source="/t", data=data)


@pytest.fixture(autouse=True)
def _reset() -> None:
    MOUNTED.clear()


def test_skill_metadata() -> None:
    assert Counting.name == "counting" and Counting.state_key == "counting"
    assert Counting.description == "Counts things."
    assert Notes.state_key == "memo"
    assert Counting(step=3).config == CounterConfig(step=3)
    assert Counting().config == CounterConfig(step=1)


def test_state_model_gets_one_slice_per_skill() -> None:
    state = Worker.new().state
    assert isinstance(state, WorkerState)
    assert state.counting == CounterState()  # type: ignore[attr-defined]
    assert state.memo == NotesState()  # type: ignore[attr-defined]


async def test_skill_actions_see_and_update_their_slice() -> None:
    a = Worker.new(id="w1")
    b, _ = await a.handle(sig("counter.increment"))
    assert b.state.counting.count == 2  # type: ignore[attr-defined]
    assert b.result == {"count": 2, "total_seen": "w"}
    c, _ = await b.handle(sig("notes.add", {"text": "hello"}))
    assert c.state.memo.notes == ["hello"]  # type: ignore[attr-defined]
    assert c.state.counting.count == 2  # type: ignore[attr-defined]
    # skill routes apply by specificity: counter.other falls to the Notes wildcard
    d, _ = await c.handle(sig("counter.other", {"text": "x"}))
    assert d.state.memo.notes == ["hello", "x"]  # type: ignore[attr-defined]


async def test_invalid_slice_merge_is_state_error() -> None:
    a = Worker.new(state={"counting": {"count": 10}})
    with pytest.raises(StateError):
        await a.handle(sig("counter.increment"))
    assert a.state.counting.count == 10  # type: ignore[attr-defined]


async def test_skills_mount_in_declaration_order_and_persist() -> None:
    store = MemoryStore()
    async with Runtime(store=store) as rt:
        ref = await rt.start(Worker, id="w1")
        assert MOUNTED == ["counting:w1", "notes:w1"]
        await ref.call(sig("counter.increment"))
        await ref.call(sig("notes.add", {"text": "kept"}))
    cp = await store.load("w1")
    assert cp is not None
    assert cp.state["counting"] == {"count": 2} and cp.state["memo"] == {"notes": ["kept"]}
    async with Runtime(store=store) as rt:
        ref = await rt.start(Worker, id="w1")
        state = await ref.state()
        assert state.memo.notes == ["kept"]  # type: ignore[attr-defined]


def test_invalid_config_is_definition_error() -> None:
    with pytest.raises(DefinitionError, match="invalid config for skill 'counting'"):
        Counting(step=0)
    with pytest.raises(DefinitionError, match="takes no config"):
        Notes(x=1)


def test_slice_key_clashing_with_state_field() -> None:
    class Clash(BaseModel):
        memo: str = ""

    with pytest.raises(DefinitionError, match="already a field"):

        class Bad(Agent):
            state_model = Clash
            skills = [Notes]


def test_two_skills_with_the_same_key() -> None:
    class OtherNotes(Skill):
        state_key = "memo"
        state_model = NotesState

    with pytest.raises(DefinitionError, match="both keep state under 'memo'"):

        class Bad(Agent):
            skills = [Notes, OtherNotes]


def test_skill_mounted_twice() -> None:
    with pytest.raises(DefinitionError, match="mounted twice"):

        class Bad(Agent):
            skills = [Notes, Notes]


def test_action_in_agent_and_skill() -> None:
    with pytest.raises(DefinitionError, match="declared by both"):

        class Bad(Agent):
            actions = [Note]
            skills = [Notes]


def test_route_conflict_between_skills() -> None:
    class Other(Skill):
        state_model = CounterState
        actions = [Increment]
        routes = [("notes.add", Increment)]

    with pytest.raises(DefinitionError, match="leads to both"):

        class Bad(Agent):
            skills = [Notes, Other]


def test_skill_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="identifier"):

        class BadKey(Skill):
            state_key = "not a key"

    with pytest.raises(DefinitionError, match="BaseModel"):

        class BadModel(Skill):
            state_model = dict  # type: ignore[assignment]

    class NoState(Skill):
        actions = [Note]

    with pytest.raises(DefinitionError, match="no state_model"):

        class Bad(Agent):
            skills = [NoState]

    with pytest.raises(DefinitionError, match="Skill classes or instances"):

        class Bad2(Agent):
            skills = [object()]  # type: ignore[list-item]


def test_agent_route_may_target_a_skill_action() -> None:
    class Routed(Agent):
        skills = [Notes]
        routes = [("memo.write", "note")]

    assert Routed.handles("memo.write")
