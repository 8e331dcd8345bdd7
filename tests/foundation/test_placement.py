"""Placement strategies and the director: unit tests and hypothesis properties."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation._errors import NoCapacityError, PlacementError
from foundation.membership.membership import NodeRecord
from foundation.placement.placement import (
    STRATEGIES,
    Affinity,
    AntiAffinity,
    Candidate,
    LeastLoadedStrategy,
    PlacementDirector,
    PlacementRequest,
    PlacementStrategy,
)


@dataclass
class _Rec:
    node: str
    type: str = "T"
    metadata: dict[str, Any] = field(default_factory=dict)


class FakeRegistry:
    """Just enough of the registry cache for placement."""

    def __init__(self, hosts: dict[str, str], types: dict[str, str] | None = None) -> None:
        self.hosts = hosts
        self.types = types or {}

    def counts_by_node(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for node in self.hosts.values():
            out[node] = out.get(node, 0) + 1
        return out

    def cached(self, agent_id: str) -> _Rec | None:
        node = self.hosts.get(agent_id)
        return _Rec(node, self.types.get(agent_id, "T")) if node else None

    def records(self) -> list[_Rec]:
        return [_Rec(n, self.types.get(a, "T")) for a, n in sorted(self.hosts.items())]


def node(
    id: str,
    caps: tuple[str, ...] = (),
    res: dict[str, float] | None = None,
    load: dict[str, float] | None = None,
    status: str = "up",
) -> NodeRecord:
    return NodeRecord(id=id, capabilities=caps, resources=res or {}, load=load or {}, status=status)


NODES = [
    node("n1", ("gpu", "type:T"), {"cpu": 4, "memory": 1000}, {"cpu": 3}),
    node("n2", ("type:T",), {"cpu": 8, "memory": 4000}, {"cpu": 1}),
    node("n3", ("type:T",), {"cpu": 2}, {}, status="draining"),
]


def director(
    hosts: dict[str, str] | None = None, nodes: list[NodeRecord] = NODES
) -> PlacementDirector:
    return PlacementDirector(lambda: nodes, FakeRegistry(hosts or {}))


async def test_least_loaded_counts_agents_from_the_registry() -> None:
    d = director({"x": "n1", "y": "n1"})
    assert await d.place("a", strategy="least_loaded") == "n2"
    d = director({"x": "n2"})
    assert await d.place("a") == "n1"


async def test_local_uses_origin_or_fails_clearly() -> None:
    d = director()
    assert await d.place("a", strategy="local", origin="n2") == "n2"
    with pytest.raises(NoCapacityError, match="local node 'n3'"):
        await d.place("a", strategy="local", origin="n3")  # draining


async def test_capabilities_and_resources_are_checked() -> None:
    d = director()
    assert await d.place("a", capabilities=["gpu"]) == "n1"
    with pytest.raises(NoCapacityError) as info:
        await d.place("a", capabilities=["gpu"], resources={"cpu": 2})
    rejected = info.value.details["rejected"]
    assert "not enough cpu" in rejected["n1"]
    assert "missing capabilities" in rejected["n2"]
    assert "draining" in rejected["n3"]
    assert info.value.retryable
    # A resource a node does not declare counts as zero capacity.
    with pytest.raises(NoCapacityError):
        await d.place("a", resources={"tpu": 1})
    assert await d.place("a", resources={"memory": 2000}) == "n2"


async def test_resource_aware_and_capability_fit() -> None:
    d = director()
    assert await d.place("a", strategy="resource_aware", resources={"cpu": 0.5}) == "n2"
    # n2 offers nothing beyond type:T; n1 also offers gpu: best fit keeps n1 free.
    assert await d.place("a", strategy="capability", capabilities=["type:T"]) == "n2"


async def test_spread_balances_a_group() -> None:
    hosts = {"o1": "n2", "o2": "n2", "other": "n1", "other2": "n1", "other3": "n1"}
    types = {"o1": "Order", "o2": "Order"}
    d = PlacementDirector(lambda: NODES, FakeRegistry(hosts, types))
    assert await d.place("o3", strategy="spread", group="Order") == "n1"
    assert await d.place("o3", strategy="least_loaded") == "n2"


async def test_affinity_and_anti_affinity() -> None:
    d = director({"buddy": "n1", "rival": "n2"})
    assert await d.place("a", affinity=["buddy"]) == "n1"
    assert await d.place("a", anti_affinity=["rival"]) == "n1"
    with pytest.raises(NoCapacityError):
        await d.place("a", affinity=["buddy"], anti_affinity=["buddy"])
    wrapped = AntiAffinity(Affinity(LeastLoadedStrategy(), ["buddy"]), ["rival"])
    assert await d.place("a", strategy=wrapped) == "n1"
    assert wrapped.name == "least_loaded+affinity+anti_affinity"


async def test_agent_limit_and_exclusion() -> None:
    nodes = [node("a", res={"agents": 1}), node("b", res={"agents": 5})]
    d = director({"x": "a"}, nodes)
    assert await d.place("new") == "b"
    with pytest.raises(NoCapacityError, match="no node"):
        await d.place("new", exclude=["b"])


async def test_unknown_strategy_and_custom_strategies() -> None:
    d = director()
    with pytest.raises(PlacementError, match="unknown placement strategy"):
        await d.place("a", strategy="nope")

    class Last(PlacementStrategy):
        name = "last"

        def choose(self, request: PlacementRequest, candidates: Sequence[Candidate]) -> Candidate:
            return candidates[-1]

    d.register(Last())
    assert await d.place("a", strategy="last") == "n2"
    assert await d.place("a", strategy={"strategy": "least_loaded"}) in {"n1", "n2"}


async def test_no_nodes_at_all() -> None:
    with pytest.raises(NoCapacityError):
        await PlacementDirector(lambda: []).place("a")


# -- properties ------------------------------------------------------------------------------

RESOURCES = ["cpu", "memory", "gpu"]
CAPS = ["a", "b", "c"]

node_st = st.builds(
    lambda i, caps, res, load, up: node(
        f"n{i}",
        tuple(sorted(caps)),
        res,
        {k: min(v, res.get(k, 0)) for k, v in load.items()},
        "up" if up else "draining",
    ),
    st.integers(0, 30),
    st.sets(st.sampled_from(CAPS)),
    st.dictionaries(st.sampled_from(RESOURCES), st.floats(0, 16, allow_nan=False)),
    st.dictionaries(st.sampled_from(RESOURCES), st.floats(0, 16, allow_nan=False)),
    st.booleans(),
)
nodes_st = st.lists(node_st, max_size=8, unique_by=lambda n: n.id)
request_st = st.builds(
    lambda aid, caps, res: (aid, sorted(caps), res),
    st.text("abcdef0123456789", min_size=1, max_size=8),
    st.sets(st.sampled_from(CAPS), max_size=2),
    st.dictionaries(st.sampled_from(RESOURCES), st.floats(0, 8, allow_nan=False), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(nodes=nodes_st, req=request_st, strategy=st.sampled_from(sorted(STRATEGIES)))
async def test_chosen_node_is_compatible_has_capacity_and_is_deterministic(
    nodes: list[NodeRecord], req: tuple[str, list[str], dict[str, float]], strategy: str
) -> None:
    agent_id, caps, res = req
    origin = nodes[0].id if nodes else None
    d = PlacementDirector(lambda: nodes)
    try:
        chosen = await d.place(
            agent_id, strategy=strategy, capabilities=caps, resources=res, origin=origin
        )
    except NoCapacityError as exc:
        # Then really no node qualifies (or, for local, not the origin).
        ok = [
            n
            for n in nodes
            if n.status == "up"
            and set(caps) <= set(n.capabilities)
            and all(v <= 0 or n.resources.get(k, 0) - n.load.get(k, 0) >= v for k, v in res.items())
        ]
        if strategy == "local":
            assert origin not in {n.id for n in ok}
        else:
            assert not ok, exc.details
        return
    rec = next(n for n in nodes if n.id == chosen)
    assert rec.status == "up"
    assert set(caps) <= set(rec.capabilities)
    for k, v in res.items():
        if v > 0:
            assert rec.resources.get(k, 0) - rec.load.get(k, 0) >= v
    # Deterministic, whatever order the members come in.
    shuffled = list(nodes)
    random.Random(agent_id).shuffle(shuffled)
    again = await PlacementDirector(lambda: shuffled).place(
        agent_id, strategy=strategy, capabilities=caps, resources=res, origin=origin
    )
    assert again == chosen
