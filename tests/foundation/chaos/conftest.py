"""Chaos suite options: how many randomized rounds each scenario runs, and the seed.

``--chaos-rounds N`` (when this directory is on the command line) or the environment variable
``FOUNDATION_CHAOS_ROUNDS`` multiplies the default rounds; ``FOUNDATION_CHAOS_SEED`` fixes the
random fault timing (printed on failure so a run can be replayed).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-rounds",
        type=int,
        default=None,
        help="rounds per chaos scenario (default: the scenario's CI count)",
    )


@dataclass
class ChaosPlan:
    """Rounds and randomness of one scenario."""

    rounds_override: int | None
    seed: int
    rng: random.Random

    def rounds(self, default: int) -> int:
        """Rounds to run: the override if given, else ``default``."""
        return self.rounds_override if self.rounds_override is not None else default


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> Iterator[ChaosPlan]:
    """The round count and a seeded random generator for fault timing."""
    option = None
    try:
        option = request.config.getoption("--chaos-rounds")
    except ValueError:
        option = None
    env = os.environ.get("FOUNDATION_CHAOS_ROUNDS")
    rounds = option if option is not None else (int(env) if env else None)
    seed_env = os.environ.get("FOUNDATION_CHAOS_SEED")
    seed = int(seed_env) if seed_env else random.SystemRandom().randrange(1 << 30)
    plan = ChaosPlan(rounds, seed, random.Random(seed))
    yield plan
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(f"chaos seed: FOUNDATION_CHAOS_SEED={seed}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep
