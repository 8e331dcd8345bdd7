"""The clustered agent of the seed-table benchmark, hosted by the benchmark's node processes.

Hosted by ``foundation node --app bench._seed_cluster_app:AGENTS``.
"""

from __future__ import annotations

from bench._seed_agents import SeedAgent
from foundation import Clustered


class SeedClustered(Clustered, SeedAgent, critical=True):
    """``SeedAgent`` made clustered: critical, so its state is committed to the cluster store."""


AGENTS = [SeedClustered]
