"""foundation: the cluster layer for ``jido`` agents on NATS + JetStream.

Adds nodes, a distributed registry, location-transparent agent references,
cross-node signals, failover, placement and coordination without changing how
an agent is written: mix ``Clustered`` into a ``jido.Agent`` and run it on a ``Node``.
"""

# --- cluster (begin) ---
from foundation._cluster_bus import (
    BusBridge,
    BusStatistics,
    ClusterBus,
    ClusterBusError,
    ClusterSubscription,
    DeadLetter,
    Delivery,
    current_signal,
)
from foundation._clustered import Clustered, ClusterSpec
from foundation._inbox import AgentInbox, InboxStatistics, send_to_inbox
from foundation._node import Node, NodeDrainingError, NodeStatistics, Stage
from foundation._ref import ClusterRef, FailFast, RemoteState, UnreachablePolicy
from foundation._state import KVStateStore

# --- cluster (end) ---

# --- coordination (begin) ---
# --- coordination (end) ---

__version__ = "0.1.0"

__all__: list[str] = [
    # --- cluster __all__ (begin) ---
    "AgentInbox",
    "BusBridge",
    "BusStatistics",
    "ClusterBus",
    "ClusterBusError",
    "ClusterRef",
    "ClusterSpec",
    "ClusterSubscription",
    "Clustered",
    "DeadLetter",
    "Delivery",
    "FailFast",
    "InboxStatistics",
    "KVStateStore",
    "Node",
    "NodeDrainingError",
    "NodeStatistics",
    "RemoteState",
    "Stage",
    "UnreachablePolicy",
    "current_signal",
    "send_to_inbox",
    # --- cluster __all__ (end) ---
    # --- coordination __all__ (begin) ---
    # --- coordination __all__ (end) ---
]
