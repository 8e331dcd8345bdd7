"""Typed errors shared by every part of ``jido``.

Every error carries a stable machine-readable ``type``, a human ``message``
that says what to do, structured ``details`` and a ``retryable`` flag. The
engine retries only errors whose ``retryable`` is true. ``to_dict()`` gives the
JSON-safe form sent to callers, remote nodes and LLMs.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, ClassVar


class JidoError(Exception):
    """Base class of every error raised by ``jido``.

    Subclasses set ``type`` (a stable snake_case name) and ``default_retryable``.
    """

    type: ClassVar[str] = "error"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retryable = self.default_retryable if retryable is None else retryable
        if cause is not None:
            self.__cause__ = cause

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe form: ``{"type", "message", "details", "retryable"}``."""
        return {
            "type": self.type,
            "message": self.message,
            "details": self.details,
            "retryable": self.retryable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JidoError:
        """Rebuild an error from ``to_dict()`` output, choosing the subclass by ``type``."""
        err_type = str(data.get("type", "error"))
        target = _REGISTRY.get(err_type, JidoError)
        err = target.__new__(target)
        JidoError.__init__(
            err,
            str(data.get("message", "")),
            details=data.get("details") or {},
            retryable=bool(data.get("retryable", False)),
        )
        return err

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The first class to claim a type name owns it; subclasses may share it.
        _REGISTRY.setdefault(cls.type, cls)


_REGISTRY: dict[str, type[JidoError]] = {}
_REGISTRY["error"] = JidoError


class ValidationError(JidoError):
    """Input (params, state, signal attributes) failed validation. Fix the input and retry."""

    type = "validation_error"


class DefinitionError(JidoError):
    """An action, agent, skill or route is defined wrongly (raised at definition time)."""

    type = "definition_error"


class ExecutionError(JidoError):
    """An action raised while running. ``retryable`` says whether a retry may succeed."""

    type = "execution_error"


class TimeoutError(JidoError, builtins.TimeoutError):
    """Work did not finish within its deadline. Also catchable as the builtin ``TimeoutError``."""

    type = "timeout"
    default_retryable = True


class CancelledError(JidoError):
    """Work was cancelled before it finished."""

    type = "cancelled"


class CompensationError(JidoError):
    """An action failed and so did its compensation.

    ``details['original']`` holds the first error.
    """

    type = "compensation_error"


class SignalError(ValidationError):
    """A signal is malformed (bad JSON, missing or invalid attribute).

    ``details['attribute']`` names the attribute.
    """

    type = "signal_error"


class PayloadTooLargeError(SignalError):
    """A payload exceeds the configured size limit. Send less data or raise the limit."""

    type = "payload_too_large"


class RoutingError(JidoError):
    """No route matches a signal's type (or a route pattern is invalid)."""

    type = "routing_error"


class MailboxFullError(JidoError):
    """An agent's bounded mailbox is full. Back off and retry, or raise ``mailbox_size``."""

    type = "mailbox_full"
    default_retryable = True


class AgentNotFoundError(JidoError):
    """No agent with that id is running here."""

    type = "agent_not_found"


class AgentStoppedError(JidoError):
    """The agent stopped before it could handle the request."""

    type = "agent_stopped"
    default_retryable = True


class StateError(ValidationError):
    """A state change does not validate against ``state_model``; the old state is kept."""

    type = "state_error"


class FencedError(JidoError):
    """A state write was refused because another owner holds a newer epoch. The writer must stop."""

    type = "fenced"


class StoreError(JidoError):
    """The state store failed to load or save."""

    type = "store_error"
    default_retryable = True


__all__ = [
    "AgentNotFoundError",
    "AgentStoppedError",
    "CancelledError",
    "CompensationError",
    "DefinitionError",
    "ExecutionError",
    "FencedError",
    "JidoError",
    "MailboxFullError",
    "PayloadTooLargeError",
    "RoutingError",
    "SignalError",
    "StateError",
    "StoreError",
    "TimeoutError",
    "ValidationError",
]
