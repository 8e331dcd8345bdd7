"""foundation: the cluster layer for ``jido`` agents on NATS + JetStream.

Adds nodes, a distributed registry, location-transparent agent references,
cross-node signals, failover, placement and coordination without changing how
an agent is written: mix ``Clustered`` into a ``jido.Agent`` and run it on a ``Node``.
"""

# --- cluster (begin) ---
# --- cluster (end) ---

# --- coordination (begin) ---
# --- coordination (end) ---

__version__ = "0.1.0"

__all__: list[str] = [
    # --- cluster __all__ (begin) ---
    # --- cluster __all__ (end) ---
    # --- coordination __all__ (begin) ---
    # --- coordination __all__ (end) ---
]
