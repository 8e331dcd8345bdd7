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
from foundation._dashboard import Dashboard, DashboardError
from foundation._inbox import AgentInbox, InboxStatistics, send_to_inbox
from foundation._node import Node, NodeDrainingError, NodeStatistics, Stage
from foundation._ref import ClusterRef, FailFast, RemoteState, UnreachablePolicy
from foundation._state import KVStateStore

# --- cluster (end) ---

# --- coordination (begin) ---
from foundation._coordination import (
    ClusterConfig,
    ConfigChange,
    Coordination,
    Leadership,
    Lock,
)
from foundation._errors import (
    AlreadyRegisteredError,
    BarrierError,
    CASConflictError,
    ClusterError,
    CorruptRecordError,
    InvalidKeyError,
    InvalidRequestError,
    KeyExistsError,
    LeaseLostError,
    NatsServerError,
    NatsUnavailableError,
    NoCapacityError,
    NodeUnavailableError,
    NotOwnerError,
    PlacementError,
    RecordNotFoundError,
)
from foundation._membership import (
    Membership,
    MembershipDiff,
    MembershipEvent,
    MembershipSnapshot,
    NodeRecord,
)
from foundation._placement import (
    Affinity,
    AntiAffinity,
    Candidate,
    CapabilityStrategy,
    LeastLoadedStrategy,
    LoadBalancedStrategy,
    LocalStrategy,
    PlacementDirector,
    PlacementRequest,
    PlacementStrategy,
    ResourceAwareStrategy,
    SpreadStrategy,
)
from foundation._registry import ClusterRegistry, RegistryChange, RegistryRecord
from foundation._server import NatsCluster, NatsServer, find_nats_server

# --- coordination (end) ---

# --- failover (begin) ---
from foundation._failover import (
    AwaitFailover,
    DeposedError,
    Failover,
    FailoverEvent,
    FailoverOptions,
    FailoverStatistics,
)
from foundation._rebalance import Rebalancer

# --- failover (end) ---

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
    "Dashboard",
    "DashboardError",
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
    "Affinity",
    "AlreadyRegisteredError",
    "AntiAffinity",
    "BarrierError",
    "CASConflictError",
    "Candidate",
    "CapabilityStrategy",
    "ClusterConfig",
    "ClusterError",
    "CorruptRecordError",
    "ClusterRegistry",
    "ConfigChange",
    "Coordination",
    "InvalidKeyError",
    "InvalidRequestError",
    "KeyExistsError",
    "Leadership",
    "LeaseLostError",
    "LeastLoadedStrategy",
    "LoadBalancedStrategy",
    "LocalStrategy",
    "Lock",
    "Membership",
    "MembershipDiff",
    "MembershipEvent",
    "MembershipSnapshot",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "NatsUnavailableError",
    "NoCapacityError",
    "NodeRecord",
    "NodeUnavailableError",
    "NotOwnerError",
    "PlacementDirector",
    "PlacementError",
    "PlacementRequest",
    "PlacementStrategy",
    "RecordNotFoundError",
    "RegistryChange",
    "RegistryRecord",
    "ResourceAwareStrategy",
    "SpreadStrategy",
    "find_nats_server",
    # --- coordination __all__ (end) ---
    # --- failover __all__ (begin) ---
    "AwaitFailover",
    "DeposedError",
    "Failover",
    "FailoverEvent",
    "FailoverOptions",
    "FailoverStatistics",
    "Rebalancer",
    # --- failover __all__ (end) ---
]
