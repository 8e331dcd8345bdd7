"""Action authorization: who may send which signal to which agent, decided before it runs.

A :class:`Policy` answers ``authorize(principal, agent_type, agent_id, signal_type, action)``
with a :class:`Decision` (allow or deny, and why). :class:`RolePolicy` is the declarative
default: for each role (``"client"``), principal (``"client/alice"``) or anyone
authenticated (``"*"``), the signal-type patterns allowed per agent type, with per-agent
overrides. Patterns are globs (``"account.*"``); ``"!pattern"`` denies and wins over any
allow; ``"action:<name>"`` matches the action the signal routes to. :func:`require` raises
:class:`PermissionDeniedError` on a denial and :class:`AuthenticationError` when the caller
is unknown.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from foundation._errors import AuthenticationError, PermissionDeniedError
from foundation.security._roles import Principal

#: Agent type, or principal key, that matches any.
ANY = "*"

Grants = Mapping[str, Mapping[str, Sequence[str]]]
"""``{who: {agent_type: [pattern, ...]}}`` where ``who`` is a role, ``role/name`` or ``*``."""


@dataclass(frozen=True)
class Decision:
    """The answer of a policy: allowed or not, and the reason (for replies and the audit)."""

    allow: bool
    """True when the action may run."""
    reason: str
    """Which rule decided (or that none matched)."""

    def __bool__(self) -> bool:
        return self.allow


@runtime_checkable
class Policy(Protocol):
    """Decides whether ``principal`` may send ``signal_type`` to an agent (before any action)."""

    def authorize(
        self,
        principal: Principal | None,
        agent_type: str,
        agent_id: str,
        signal_type: str,
        action: str | None = None,
    ) -> Decision:
        """Allow or deny; ``principal`` is ``None`` when the caller is not authenticated."""
        ...


class AllowAll:
    """The policy of a cluster with authorization off: everything, even unauthenticated."""

    def authorize(
        self,
        principal: Principal | None,
        agent_type: str,
        agent_id: str,
        signal_type: str,
        action: str | None = None,
    ) -> Decision:
        """Always allow."""
        return Decision(True, "authorization is off")


def _keys_for(principal: Principal) -> list[str]:
    return [f"{principal.role}/{principal.name}", principal.role, ANY]


def _matches(pattern: str, signal_type: str, action: str | None) -> bool:
    if pattern.startswith("action:"):
        return action is not None and fnmatch.fnmatchcase(action, pattern[len("action:") :])
    return fnmatch.fnmatchcase(signal_type, pattern)


class RolePolicy:
    """Declarative grants by role or principal and agent type, with per-agent overrides.

    ``grants`` is ``{who: {agent_type: patterns}}``; ``overrides`` is
    ``{agent_id: {who: patterns}}`` and, for a listed agent, replaces the type-level grants
    of every ``who`` it names. Nothing matching means deny. ``admins_all`` lets the admin
    role send anything (operations need it); off by default.
    """

    def __init__(
        self,
        grants: Grants | None = None,
        *,
        overrides: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        admins_all: bool = False,
    ) -> None:
        self.grants = {w: {t: tuple(p) for t, p in g.items()} for w, g in (grants or {}).items()}
        self.overrides = {
            a: {w: tuple(p) for w, p in o.items()} for a, o in (overrides or {}).items()
        }
        self.admins_all = admins_all

    def _patterns(self, who: str, agent_type: str, agent_id: str) -> tuple[str, tuple[str, ...]]:
        per_agent = self.overrides.get(agent_id, {})
        if who in per_agent:
            return f"override of {agent_id!r} for {who!r}", per_agent[who]
        by_type = self.grants.get(who, {})
        patterns = by_type.get(agent_type, ()) + by_type.get(ANY, ())
        return f"grant of {who!r} on {agent_type!r}", patterns

    def authorize(
        self,
        principal: Principal | None,
        agent_type: str,
        agent_id: str,
        signal_type: str,
        action: str | None = None,
    ) -> Decision:
        """Deny on any matching ``!pattern``, allow on a matching pattern, else deny."""
        if principal is None:
            return Decision(False, "the caller is not authenticated")
        if self.admins_all and principal.role == "admin":
            return Decision(True, "admins may send anything")
        allowed: str | None = None
        for who in _keys_for(principal):
            source, patterns = self._patterns(who, agent_type, agent_id)
            for pattern in patterns:
                if pattern.startswith("!") and _matches(pattern[1:], signal_type, action):
                    return Decision(False, f"{source} denies {pattern[1:]!r}")
            if allowed is None:
                for pattern in patterns:
                    if not pattern.startswith("!") and _matches(pattern, signal_type, action):
                        allowed = f"{source} allows {pattern!r}"
                        break
        if allowed is not None:
            return Decision(True, allowed)
        return Decision(
            False, f"no grant lets {principal} send {signal_type!r} to {agent_type} {agent_id!r}"
        )


def require(
    policy: Policy,
    principal: Principal | None,
    agent_type: str,
    agent_id: str,
    signal_type: str,
    action: str | None = None,
) -> Decision:
    """The policy's decision if it allows; else raise the typed error of the refusal."""
    decision = policy.authorize(principal, agent_type, agent_id, signal_type, action)
    if decision.allow:
        return decision
    details = {
        "principal": str(principal) if principal else None,
        "agent_type": agent_type,
        "agent_id": agent_id,
        "signal_type": signal_type,
        "action": action,
        "reason": decision.reason,
    }
    if principal is None:
        raise AuthenticationError(
            f"{signal_type!r} to {agent_id!r} needs an authenticated caller; connect with "
            "credentials (creds=...)",
            details=details,
        )
    raise PermissionDeniedError(
        f"{principal} may not send {signal_type!r} to {agent_type} {agent_id!r}: "
        f"{decision.reason}; ask an admin to grant it",
        details=details,
    )


__all__ = ["ANY", "AllowAll", "Decision", "Grants", "Policy", "RolePolicy", "require"]
