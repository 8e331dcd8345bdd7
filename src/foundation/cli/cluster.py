"""What ``foundation demo`` and ``foundation up`` share: the app they run, :class:`DemoOptions`,
:class:`DemoContext`, the :class:`Act` protocol. The node processes themselves are started by
the test kit's :class:`~foundation.testing.LocalCluster` (one launcher for the demo, ``up``, the
tests and the bench).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console

from foundation.testing import LocalCluster

DEFAULT_APP = "foundation.demo_app:AGENTS"
"""The sample app the demo and ``foundation up`` run."""


# -- acts ----------------------------------------------------------------------------------------


@dataclass
class DemoOptions:
    """Knobs of the demo (the CLI's options)."""

    nodes: int = 3
    duration: float = 8.0
    orders: int = 24
    concurrency: int = 32
    notifiers: int = 3


@dataclass
class DemoContext:
    """What acts share: the options, the console, the cluster, a driver node, the results."""

    options: DemoOptions
    console: Console
    cluster: LocalCluster | None = None
    node: Any = None
    desks: list[str] = field(default_factory=list)
    notifiers: list[str] = field(default_factory=list)
    inventory: str = "inventory"
    latencies: list[float] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    casts: int = 0
    load_seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    dashboard: Any = None


class Act(Protocol):
    """One step of the demo."""

    name: str
    title: str

    async def run(self, ctx: DemoContext) -> None:
        """Do the act's work; raise to abort the demo."""
        ...


__all__ = ["DEFAULT_APP", "Act", "DemoContext", "DemoOptions", "LocalCluster"]
