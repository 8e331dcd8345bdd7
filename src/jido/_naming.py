"""Default names and descriptions of actions, agents and skills (one rule for all three)."""

from __future__ import annotations

import inspect
import re

__all__ = ["own_description", "snake_case"]

_CAMEL_1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """``HTTPRequestSent`` → ``http_request_sent``: the default name of a class."""
    return _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", name)).lower()


def own_description(obj: object) -> str:
    """The cleaned docstring ``obj`` itself declares (not an inherited one), or ``""``."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc else ""
