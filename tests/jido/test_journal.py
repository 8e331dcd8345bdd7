"""Journal of causality: cause, effects, chain, descendants, trace, bound."""

from __future__ import annotations

import pytest

from jido import Journal, Signal, ValidationError


def test_chain_cause_effects_and_descendants() -> None:
    j = Journal()
    root = Signal(type="order.placed", source="/shop")
    pay = root.caused(type="payment.requested")
    ship = root.caused(type="shipping.requested")
    paid = pay.caused(type="payment.captured")
    unrelated = Signal(type="other", source="/x")
    for s in (root, pay, ship, paid, unrelated):
        j.record(s)
    assert len(j) == 5 and pay.id in j
    assert j.get(paid.id) is paid
    assert j.cause(paid.id) is pay
    assert j.cause(root.id) is None
    assert j.cause("missing") is None
    assert j.effects(root.id) == [pay, ship]
    assert j.effects(paid.id) == []
    assert j.chain(paid.id) == [root, pay, paid]
    assert j.chain("missing") == []
    assert j.descendants(root.id) == [pay, ship, paid]
    assert j.trace(root.trace_id) == [root, pay, ship, paid]
    j.record(pay)  # recording again does not duplicate the link
    assert j.effects(root.id) == [pay, ship]
    j.clear()
    assert len(j) == 0


def test_bounded_forgets_oldest() -> None:
    j = Journal(max_entries=3)
    root = Signal(type="a", source="/s")
    kids = [root.caused(type="b") for _ in range(3)]
    j.record(root)
    for k in kids:
        j.record(k)
    assert root.id not in j
    assert j.cause(kids[0].id) is None  # the cause is gone
    assert j.chain(kids[2].id) == [kids[2]]
    assert j.effects(root.id) == kids  # links to kept effects stay
    j.record(Signal(type="c", source="/s"))
    assert j.effects(root.id) == kids[1:]
    with pytest.raises(ValidationError):
        Journal(max_entries=0)
