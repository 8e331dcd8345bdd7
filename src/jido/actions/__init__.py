"""Built-in actions useful in agents: ``Noop``, ``Sleep``, ``Log``, confined file access
(``ReadFile``, ``WriteFile``) and ``HttpRequest``.

Actions that reach outside refuse everything until bound: file actions to roots, HTTP to
hosts::

    Fetch = HttpRequest.for_hosts("api.example.com")    # empty allow-list by default

File actions refuse every path until bound to allowed roots::

    Read = ReadFile.confined_to("/srv/data")            # a subclass, same tool name
    Write = WriteFile.confined_to("/srv/data", max_bytes=64_000)
"""

from __future__ import annotations

from jido.actions._basic import Log, Noop, Sleep
from jido.actions._files import AccessDeniedError, ReadFile, WriteFile
from jido.actions._http import HostNotAllowedError, HttpHeader, HttpRequest

__all__ = [
    "BUILTIN_ACTIONS",
    "AccessDeniedError",
    "HostNotAllowedError",
    "HttpHeader",
    "HttpRequest",
    "Log",
    "Noop",
    "ReadFile",
    "Sleep",
    "WriteFile",
]

#: Every built-in action class (unbound: file actions refuse all paths until confined,
#: ``HttpRequest`` every host until given an allow-list).
BUILTIN_ACTIONS = (Noop, Sleep, Log, ReadFile, WriteFile, HttpRequest)
