"""The typed error hierarchy."""

from __future__ import annotations

import builtins

import jido


def test_to_dict_and_back_preserves_subclass() -> None:
    err = jido.MailboxFullError("mailbox of acc-1 is full", details={"agent": "acc-1", "size": 10})
    data = err.to_dict()
    assert data == {
        "type": "mailbox_full",
        "message": "mailbox of acc-1 is full",
        "details": {"agent": "acc-1", "size": 10},
        "retryable": True,
    }
    back = jido.JidoError.from_dict(data)
    assert isinstance(back, jido.MailboxFullError)
    assert back.details == {"agent": "acc-1", "size": 10}


def test_unknown_type_becomes_base_error() -> None:
    back = jido.JidoError.from_dict({"type": "no_such", "message": "m"})
    assert type(back) is jido.JidoError
    assert back.message == "m"


def test_timeout_is_catchable_as_builtin() -> None:
    err = jido.TimeoutError("too slow")
    assert isinstance(err, builtins.TimeoutError)
    assert err.retryable is True


def test_retryable_override() -> None:
    assert jido.ExecutionError("x", retryable=True).retryable is True
    assert jido.ExecutionError("x").retryable is False
