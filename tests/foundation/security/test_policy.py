"""Action authorization: the declarative role policy, overrides and the typed refusals."""

from __future__ import annotations

import pytest

from foundation._errors import AuthenticationError, PermissionDeniedError
from foundation.security import AllowAll, Policy, Principal, RolePolicy, require
from jido import JidoError

ALICE = Principal("client", "alice")
BOB = Principal("client", "bob")
ADMIN = Principal("admin", "ops")

POLICY = RolePolicy(
    {
        "client": {"Account": ["account.get", "account.deposit"]},
        "client/bob": {"Account": ["account.*", "!account.close"]},
        "*": {"Clock": ["clock.now"]},
    },
    overrides={"vault-1": {"client": ["account.get"]}},
)


def test_grants_by_role_principal_and_anyone() -> None:
    assert POLICY.authorize(ALICE, "Account", "acc-1", "account.deposit").allow
    assert not POLICY.authorize(ALICE, "Account", "acc-1", "account.withdraw").allow
    assert POLICY.authorize(BOB, "Account", "acc-1", "account.withdraw").allow
    assert POLICY.authorize(ADMIN, "Clock", "c", "clock.now").allow
    assert not POLICY.authorize(ADMIN, "Account", "acc-1", "account.get").allow


def test_deny_patterns_win() -> None:
    decision = POLICY.authorize(BOB, "Account", "acc-1", "account.close")
    assert not decision.allow
    assert "account.close" in decision.reason


def test_per_agent_overrides_replace_type_grants() -> None:
    assert POLICY.authorize(ALICE, "Account", "vault-1", "account.get").allow
    assert not POLICY.authorize(ALICE, "Account", "vault-1", "account.deposit").allow


def test_action_patterns() -> None:
    policy = RolePolicy({"client": {"*": ["action:deposit"]}})
    assert policy.authorize(ALICE, "Account", "a", "anything", "deposit").allow
    assert not policy.authorize(ALICE, "Account", "a", "anything", "withdraw").allow
    assert not policy.authorize(ALICE, "Account", "a", "anything").allow


def test_admins_all_and_allow_all() -> None:
    assert RolePolicy(admins_all=True).authorize(ADMIN, "X", "x", "y").allow
    assert AllowAll().authorize(None, "X", "x", "y").allow
    assert isinstance(POLICY, Policy) and isinstance(AllowAll(), Policy)


def test_require_raises_typed_errors_that_round_trip() -> None:
    assert require(POLICY, ALICE, "Account", "acc-1", "account.get").allow
    with pytest.raises(PermissionDeniedError) as denied:
        require(POLICY, ALICE, "Account", "acc-1", "account.withdraw")
    back = JidoError.from_dict(denied.value.to_dict())
    assert isinstance(back, PermissionDeniedError)
    assert back.details["principal"] == "client/alice"
    with pytest.raises(AuthenticationError):
        require(POLICY, None, "Account", "acc-1", "account.get")
