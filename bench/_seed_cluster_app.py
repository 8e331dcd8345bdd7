"""The clustered agent of the seed-table benchmark, hosted by the benchmark's node processes.

Imported only when ``foundation.Clustered`` exists: ``foundation node --app
bench._seed_cluster_app:AGENTS``.
"""

from __future__ import annotations

from bench._seed_agents import SeedAgent

try:
    from foundation import Clustered  # type: ignore[attr-defined]
except ImportError:  # exported by the cluster part once it lands; the class exists before
    from foundation._clustered import Clustered


class SeedClustered(Clustered, SeedAgent, critical=True):  # type: ignore[misc]
    """``SeedAgent`` made clustered: critical, so its state is committed to the cluster store."""


AGENTS = [SeedClustered]
