"""Native checks for the signal decoder's fast path (optional; see ``jido._codec``)."""

def canonical_time(value: object, /) -> bool:
    """True iff ``value`` is a ``str`` ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` naming a real UTC time."""

def valid_traceparent(value: object, /) -> bool:
    """True iff ``value`` is a ``str`` W3C ``traceparent`` (lower-case hex, non-zero ids)."""
