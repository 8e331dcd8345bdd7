"""Command-line conventions shared by every ``foundation`` subcommand.

Typed option checks (an argparse ``type=``: a bad value is a usage error on standard error with
exit status 2, never a traceback), the help formatter (defaults shown; no wrapping when the
output is not a terminal), the consoles (results on standard output, errors on standard error)
and the global ``--log-level`` / ``--log-format`` / ``--version`` options.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
from collections.abc import Callable
from importlib import metadata

from rich.console import Console

from foundation.observability.logs import FORMATS, LEVELS

ENV_NATS = "FOUNDATION_NATS_URL"
"""Environment variable naming the NATS URL(s) when ``--nats`` is not given."""


def _is_tty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def console() -> Console:
    """The console for results: standard output, soft-wrapped (never cut) unless a terminal."""
    return Console(soft_wrap=not _is_tty(sys.stdout))


def error_console() -> Console:
    """The console for errors: standard error."""
    return Console(stderr=True, soft_wrap=not _is_tty(sys.stderr))


def version() -> str:
    """The installed version of the package (``unknown`` when run from a plain checkout)."""
    try:
        return metadata.version("foundation-agents")
    except metadata.PackageNotFoundError:
        return "unknown"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default; wraps only for a terminal, at its width."""

    def __init__(self, prog: str) -> None:
        width = shutil.get_terminal_size().columns if _is_tty(sys.stdout) else 10_000
        super().__init__(prog, width=max(width, 40), max_help_position=32)


def _number(kind: type, check: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value  # type: ignore[no-any-return]

    parse.__name__ = what
    return parse


positive_int = _number(int, lambda v: v >= 1, "a whole number of at least 1")
"""``type=`` for counts that must be at least 1."""
non_negative_int = _number(int, lambda v: v >= 0, "a whole number of at least 0")
"""``type=`` for counts that may be 0."""
positive_float = _number(float, lambda v: v > 0, "a number of seconds above 0")
"""``type=`` for durations and timeouts."""
positive_rate = _number(float, lambda v: v > 0, "a number above 0")
"""``type=`` for rates (per second)."""
_UNITS = {
    "": 1,
    "k": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tib": 2**40,
}


def byte_size(text: str) -> int:
    """``type=`` for a size in bytes: ``500M``, ``20GiB``, ``1073741824`` or ``-1`` (no limit)."""
    match = re.fullmatch(r"\s*(-1|\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or (match.group(1) == "-1" and unit):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: a whole number of bytes with an optional K, M, G or T "
            "(powers of 1024), or -1 for no limit"
        )
    value = int(match.group(1)) * _UNITS[unit]
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be above 0 (or -1: no limit)")
    return value


count_or_unlimited = _number(int, lambda v: v >= 1 or v == -1, "a count of at least 1, or -1")
"""``type=`` for limits that are a count or -1 (no limit)."""
port = _number(int, lambda v: 0 <= v <= 65535, "a port number (0-65535; 0: a free port)")
"""``type=`` for TCP ports."""


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--version``, ``--log-level`` and ``--log-format`` (before the subcommand)."""
    parser.add_argument("--version", action="version", version=f"foundation {version()}")
    parser.add_argument(
        "--log-level", choices=LEVELS, default="warning", help="log records from this level"
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="log lines as text or one JSON object each (on standard error)",
    )


def nats_help() -> str:
    """Help text of a ``--nats`` option (names the environment variable and the default)."""
    return f"NATS URL(s), comma-separated; ${ENV_NATS} when set (default: %(default)s)"


__all__ = [
    "ENV_NATS",
    "HelpFormatter",
    "add_global_options",
    "console",
    "error_console",
    "nats_help",
    "non_negative_int",
    "port",
    "positive_float",
    "positive_int",
    "positive_rate",
    "version",
]
