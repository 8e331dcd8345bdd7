"""The ``foundation`` command line: ``demo``, ``up``, ``node``, ``status``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

console = Console()


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundation",
        description="Foundation: stateful agents on one machine or across a NATS cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the main job: 3 local nodes, load, failover, summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``foundation`` console script; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        console.print("[yellow]foundation demo: not yet available[/yellow]")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
