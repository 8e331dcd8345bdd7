"""Subjects of the cluster bus: delivery modes and how a ``jido`` pattern maps to NATS subjects.

See ``docs/cluster-bus.md``: a signal of type ``t`` travels on ``<root>.signal.<t>`` (at most once)
or ``<root>.durable.<t>`` (at least once); :func:`plan_pattern` turns a route pattern into the NATS
subjects to subscribe to.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from foundation._wire import DURABLE_SIGNAL_SUBJECT_PREFIX, SIGNAL_SUBJECT_PREFIX
from jido._router import validate_pattern


class Delivery(StrEnum):
    """Delivery modes of the cluster bus (members compare equal to their string values)."""

    AT_MOST_ONCE = "at_most_once"
    """Core NATS: fast, nothing stored; lost if no subscriber is connected or a handler fails."""
    AT_LEAST_ONCE = "at_least_once"
    """JetStream: stored, de-duplicated by signal id, acked after the handler, redelivered."""


DeliveryLike = Delivery | Literal["at_most_once", "at_least_once"]


@dataclass(frozen=True, slots=True)
class SubjectPlan:
    """How a ``jido`` pattern is subscribed on NATS.

    ``tails`` are subject suffixes (to put after a prefix such as ``<root>.signal``); ``exact``
    says whether NATS matching alone gives the ``jido`` semantics, or a local
    :class:`jido.Router` filter must drop the extra subjects the wider subscription receives.
    """

    pattern: str
    tails: tuple[str, ...]
    exact: bool

    def subjects(self, prefix: str) -> list[str]:
        """Full subjects under ``prefix`` (``prefix`` alone stands for an empty tail)."""
        return [f"{prefix}.{tail}" if tail else prefix for tail in self.tails]


def plan_pattern(pattern: str) -> SubjectPlan:
    """Map a ``jido`` route pattern to NATS subject tails (see :class:`SubjectPlan`).

    ``a.*.c`` → ``a.*.c`` (exact); ``a.**`` → ``a`` and ``a.>`` (exact: ``**`` may match zero
    segments, NATS ``>`` needs one); ``**`` → ``>`` (exact: a type has at least one segment);
    ``a.**.c`` or ``**.c`` → ``a.>`` / ``>`` filtered locally. Raises :class:`jido.RoutingError`
    for an invalid pattern.
    """
    segments = validate_pattern(pattern)
    try:
        first = segments.index("**")
    except ValueError:
        return SubjectPlan(pattern, (".".join(segments),), True)
    head = ".".join(segments[:first])
    wide = f"{head}.>" if head else ">"
    if first == len(segments) - 1:
        # Trailing ** only: the head itself (zero segments) plus head.> (one or more).
        return SubjectPlan(pattern, (head, wide) if head else (wide,), True)
    return SubjectPlan(pattern, (wide,), False)


def signal_subject(signal_type: str, delivery: DeliveryLike = Delivery.AT_MOST_ONCE) -> str:
    """The subject a signal of ``signal_type`` is published on in ``delivery`` mode."""
    prefix = (
        SIGNAL_SUBJECT_PREFIX
        if delivery == Delivery.AT_MOST_ONCE
        else DURABLE_SIGNAL_SUBJECT_PREFIX
    )
    return f"{prefix}.{signal_type}"


def consumer_token(value: str) -> str:
    """A consumer name / subject token made from any string (readable part + hash)."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", value)[:48]
    if readable == value:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{readable}_{digest}"


__all__ = [
    "Delivery",
    "DeliveryLike",
    "SubjectPlan",
    "consumer_token",
    "plan_pattern",
    "signal_subject",
]
