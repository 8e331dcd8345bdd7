"""Typed errors of ``jido.ai`` (each a :class:`~jido.JidoError` with a stable ``type``)."""

from __future__ import annotations

from jido._errors import JidoError

__all__ = [
    "ApprovalDeniedError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalMismatchError",
    "ApprovalPendingError",
    "ApprovalReplayedError",
    "BudgetExceededError",
    "ModelError",
    "OutcomeUnknownError",
]


class ModelError(JidoError):
    """A model call failed (HTTP error, timeout, unreadable answer) after its retries.

    ``details``: ``status`` (HTTP status, when there was one), ``model``, ``attempts``, ``body``
    (the start of the provider's answer). ``retryable`` is true for rate limits and server
    errors.
    """

    type = "model_error"


class OutcomeUnknownError(JidoError):
    """A tool call started but its outcome was never recorded (its node stopped mid-call).

    The tool may or may not have had its effect. It is not run again unless the action is
    declared ``idempotent`` or its ``reconcile`` hook finds the outcome; the model is told this
    error instead. ``details``: ``tool``, ``tool_call_id``, ``idempotency_key``.
    """

    type = "outcome_unknown"


class ApprovalError(JidoError):
    """A decision on a tool call that needs approval was refused (base of the approval errors).

    ``details``: ``tool_call_id`` and what was wrong.
    """

    type = "approval_error"


class ApprovalDeniedError(ApprovalError):
    """A person denied the tool call (what the model reads as the call's result)."""

    type = "approval_denied"


class ApprovalMismatchError(ApprovalError):
    """The decision names other arguments (SHA-256) than the tool call waiting for approval."""

    type = "approval_mismatch"


class ApprovalReplayedError(ApprovalError):
    """The tool call was already decided (approvals are single-use) or is not waiting."""

    type = "approval_replayed"


class ApprovalExpiredError(ApprovalError):
    """The approval request expired; only a denial is still accepted for it."""

    type = "approval_expired"


class ApprovalPendingError(ApprovalError):
    """A new prompt arrived while the turn waits for approvals; decide them first."""

    type = "approval_pending"


class BudgetExceededError(JidoError):
    """A token budget (the turn's ``max_turn_tokens`` or a tenant's budget) is spent.

    ``details``: ``budget`` (``"turn"`` or ``"tenant"``), ``used``, ``limit`` where known.
    """

    type = "budget_exceeded"
