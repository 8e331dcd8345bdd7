"""The history checker flags each broken invariant and passes correct runs (synthetic histories)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.foundation.chaos.history import (
    Act,
    Assignment,
    FinalState,
    History,
    Kill,
    Serving,
    StateWrite,
    Term,
    check,
)


def simulate(agents: int, commands: list[tuple[int, bool]], failovers: list[int]) -> History:
    """A correct run: ``commands`` are (agent index, acked?) in order; ``failovers`` lists the
    command positions after which agent 0's node dies and a leader moves it to the next node."""
    h = History()
    nodes = ["n1", "n2", "n3"]
    rev = 0
    reg_rev = 0
    owner = {f"a{i}": 0 for i in range(agents)}
    epoch = dict.fromkeys(owner, 1)
    seq = dict.fromkeys(owner, 0)
    applied: dict[str, list[str]] = {a: [] for a in owner}
    h.terms.append(Term(100, "n3"))
    for a in owner:
        reg_rev += 1
        h.assignments.append(Assignment(a, reg_rev, nodes[0], 1, writer="n1"))
        rev += 1
        h.writes.append(StateWrite(a, rev, 1, 0, {}, activation=True))
    t = 0.0
    for pos, (idx, acked) in enumerate(commands):
        agent = f"a{idx % agents}"
        sid = f"s{pos}"
        h.send(agent, sid)
        seq[agent] += 1
        applied[agent].append(sid)
        rev += 1
        state = {"count": len(applied[agent]), "applied": list(applied[agent])}
        h.writes.append(
            StateWrite(agent, rev, epoch[agent], seq[agent], state, writer=nodes[owner[agent]])
        )
        if acked:
            h.ack(agent, sid, t)
        else:
            h.unsure_of(agent, sid)
        t += 0.01
        if pos in failovers:
            dead = nodes[owner["a0"]]
            h.kills.append(Kill(dead, t, critical=("a0",)))
            owner["a0"] = (owner["a0"] + 1) % 2  # n1 <-> n2; n3 is the leader
            epoch["a0"] += 1
            reg_rev += 1
            new = nodes[owner["a0"]]
            h.assignments.append(Assignment("a0", reg_rev, new, epoch["a0"], term=100, writer="n3"))
            h.acts.append(Act(100, "n3", "a0"))
            rev += 1
            last = {"count": len(applied["a0"]), "applied": list(applied["a0"])}
            h.writes.append(StateWrite("a0", rev, epoch["a0"], seq["a0"], last, activation=True))
            h.serving.append(Serving("a0", new, t + 1.0))
    for a in owner:
        h.finals.append(FinalState(a, len(applied[a]), tuple(applied[a])))
    return h


commands_st = st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(commands_st, st.lists(st.integers(0, 39), max_size=3, unique=True))
def test_a_correct_run_has_no_violation(commands: list[tuple[int, bool]], fo: list[int]) -> None:
    h = simulate(2, commands, fo)
    assert check(h, budget=2.0) == []


def base() -> History:
    return simulate(2, [(0, True), (1, True), (0, True), (0, False), (1, True)], [1])


def kinds(h: History, budget: float | None = 2.0) -> set[str]:
    return {v.invariant for v in check(h, budget=budget)}


def test_the_base_run_is_correct() -> None:
    assert check(base(), budget=2.0) == []


def test_flags_a_lost_acknowledged_signal() -> None:
    h = base()
    final = next(f for f in h.finals if f.agent == "a0")
    kept = tuple(s for s in final.applied if s != "s0")
    h.finals[h.finals.index(final)] = FinalState("a0", len(kept), kept)
    violations = check(h, budget=2.0)
    assert any("never applied" in v.message and v.agent == "a0" for v in violations)
    assert kinds(h) == {"lost_or_duplicate"}


def test_an_unacknowledged_signal_may_be_missing() -> None:
    h = base()
    final = next(f for f in h.finals if f.agent == "a0")
    unsure = {u.signal_id for u in h.unsure if u.agent == "a0"}
    assert unsure
    kept = tuple(s for s in final.applied if s not in unsure)
    h.finals[h.finals.index(final)] = FinalState("a0", len(kept), kept)
    assert check(h, budget=2.0) == []


def test_flags_a_double_apply() -> None:
    h = base()
    final = next(f for f in h.finals if f.agent == "a1")
    doubled = (*final.applied, final.applied[0])
    h.finals[h.finals.index(final)] = FinalState("a1", len(doubled), doubled)
    violations = check(h, budget=2.0)
    assert any("more than once" in v.message for v in violations)


def test_flags_a_count_that_disagrees_with_the_applied_list() -> None:
    h = base()
    final = h.finals[0]
    h.finals[0] = FinalState(final.agent, final.count + 1, final.applied)
    assert "lost_or_duplicate" in kinds(h)


def test_flags_a_signal_applied_that_was_never_sent() -> None:
    h = base()
    final = h.finals[0]
    extra = (*final.applied, "ghost")
    h.finals[0] = FinalState(final.agent, len(extra), extra)
    assert any("never sent" in v.message for v in check(h))


def test_flags_an_interleaving_write_from_a_stale_owner() -> None:
    h = base()
    last = max(h.writes, key=lambda w: w.revision)
    stale = StateWrite("a0", last.revision + 1, 1, 99, {"count": 0}, writer="n1")
    h.writes.append(stale)
    violations = check(h, budget=2.0)
    assert any(v.invariant == "interleaving" and "stale owner" in v.message for v in violations)


def test_flags_a_write_by_a_node_that_does_not_own_its_epoch() -> None:
    h = base()
    w = next(w for w in h.writes if w.agent == "a1" and not w.activation)
    h.writes[h.writes.index(w)] = dataclasses.replace(w, writer="n2")
    assert any("belongs to" in v.message for v in check(h))


def test_flags_an_epoch_given_to_two_nodes() -> None:
    h = base()
    h.assignments.append(Assignment("a1", 999, "n2", 1))
    assert any("several nodes" in v.message for v in check(h))


def test_flags_an_epoch_the_registry_never_assigned() -> None:
    h = base()
    last = max(h.writes, key=lambda w: w.revision)
    h.writes.append(StateWrite("a1", last.revision + 1, 7, 50, {}, activation=True))
    assert any("never assigned" in v.message for v in check(h))


def test_flags_a_new_owner_that_lost_the_last_committed_state() -> None:
    h = base()
    act = next(w for w in h.writes if w.agent == "a0" and w.activation and w.epoch == 2)
    state: dict[str, Any] = dict(act.state)
    state["count"] = 0
    h.writes[h.writes.index(act)] = dataclasses.replace(act, state=state)
    assert any(
        v.invariant == "recovery" and "not the last committed" in v.message for v in check(h)
    )


def test_flags_a_new_epoch_writing_without_claiming_the_key() -> None:
    h = base()
    act = next(w for w in h.writes if w.agent == "a0" and w.activation and w.epoch == 2)
    h.writes[h.writes.index(act)] = dataclasses.replace(act, activation=False)
    assert "recovery" in kinds(h)


def test_flags_a_critical_agent_that_never_came_back() -> None:
    h = base()
    h.serving.clear()
    assert any("never served again" in v.message for v in check(h))


def test_flags_a_recovery_over_budget_only_when_a_budget_is_given() -> None:
    h = base()
    assert any("budget" in v.message for v in check(h, budget=0.5))
    assert check(h, budget=None) == []


def test_serving_from_the_killed_node_does_not_count() -> None:
    h = base()
    kill = h.kills[0]
    h.serving[:] = [Serving("a0", kill.node, kill.t + 0.1)]
    assert "recovery" in kinds(h)


def test_flags_two_leaders_in_one_term() -> None:
    h = base()
    h.terms.append(Term(100, "n1"))
    violations = check(h)
    assert any(v.invariant == "leader" and "several holders" in v.message for v in violations)


def test_flags_two_nodes_acting_in_one_term() -> None:
    h = base()
    h.acts.append(Act(100, "n2", "a1"))
    violations = check(h)
    assert any(v.invariant == "leader" and "several nodes acted" in v.message for v in violations)


def test_flags_a_term_stamped_write_by_a_deposed_leader() -> None:
    h = base()
    h.terms.append(Term(200, "n1"))
    h.assignments.append(Assignment("a1", 500, "n1", 2, term=100, writer="n1"))
    violations = check(h)
    assert any(v.invariant == "leader" for v in violations)


def test_assert_ok_lists_the_violations() -> None:
    h = base()
    h.terms.append(Term(100, "n1"))
    try:
        h.assert_ok()
    except AssertionError as exc:
        assert "several holders" in str(exc)
    else:
        raise AssertionError("assert_ok accepted a history with two leaders in one term")


def test_merge_combines_histories() -> None:
    a, b = History(), History()
    a.ack("x", "1")
    b.ack("x", "2")
    b.finals.append(FinalState("x", 2, ("1", "2")))
    a.merge(b)
    assert len(a.acks) == 2
    assert check(a) == []
