"""foundation: the cluster layer for ``jido`` agents on NATS + JetStream.

Adds nodes, a distributed registry, location-transparent agent references,
cross-node signals, failover, placement and coordination without changing how
an agent is written: mix ``Clustered`` into a ``jido.Agent`` and run it on a ``Node``.

The public names are grouped by subsystem, as the package is (see ``docs/architecture.md``):
errors, nats, membership, registry, placement, coordination, hosting, messaging, failover,
security, node, observability.
"""

# --- errors (begin) ---
from foundation._errors import (
    AlreadyRegisteredError,
    BarrierError,
    CASConflictError,
    ClusterBusError,
    ClusterError,
    CorruptRecordError,
    InvalidKeyError,
    InvalidRequestError,
    KeyExistsError,
    LeaseLostError,
    NatsServerError,
    NatsUnavailableError,
    NoCapacityError,
    NodeDrainingError,
    NodeUnavailableError,
    NotOwnerError,
    PlacementError,
    RecordNotFoundError,
    WrongTenantError,
)
# --- errors (end) ---

# --- nats (begin) ---
from foundation.nats.server import NatsCluster, NatsServer, find_nats_server
# --- nats (end) ---

# --- membership (begin) ---
from foundation.membership.membership import Membership
from foundation.membership.view import (
    MembershipDiff,
    MembershipEvent,
    MembershipSnapshot,
    NodeRecord,
)
# --- membership (end) ---

# --- registry (begin) ---
from foundation.registry.registry import ClusterRegistry, RegistryChange, RegistryRecord
# --- registry (end) ---

# --- placement (begin) ---
from foundation.placement.placement import (
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
# --- placement (end) ---

# --- coordination (begin) ---
from foundation.coordination.coordination import (
    ClusterConfig,
    ConfigChange,
    Coordination,
    Leadership,
    Lock,
)
# --- coordination (end) ---

# --- hosting (begin) ---
from foundation.hosting.clustered import ClusterSpec, Clustered
from foundation.hosting.state import KVStateStore
# --- hosting (end) ---

# --- messaging (begin) ---
from foundation.messaging.ref import ClusterRef, FailFast, RemoteState, UnreachablePolicy
from foundation.messaging.policies import AwaitFailover
from foundation.messaging.cluster_bus import (
    BusBridge,
    BusStatistics,
    ClusterBus,
    ClusterSubscription,
    DeadLetter,
    Delivery,
    current_signal,
)
from foundation.messaging.inbox import AgentInbox, InboxStatistics, send_to_inbox
# --- messaging (end) ---

# --- failover (begin) ---
from foundation.failover.failover import (
    DeposedError,
    Failover,
    FailoverEvent,
    FailoverOptions,
    FailoverStatistics,
)
from foundation.failover.rebalance import Rebalancer
# --- failover (end) ---

# --- security (begin) ---
from foundation._errors import AuthenticationError, PermissionDeniedError
from foundation.security import (
    AuditLog,
    NatsAuth,
    Policy,
    RolePolicy,
    SecureNatsCluster,
    SecureNatsServer,
    write_secure_setup,
)
from foundation.security._client import Client
# --- security (end) ---

# --- tenancy (begin) ---
from foundation._errors import LimitsNotAppliedError, QuotaExceededError
from foundation.tenancy import Quota
# --- tenancy (end) ---

# --- node (begin) ---
from foundation._node import Node, NodeStatistics, Stage
# --- node (end) ---

# --- observability (begin) ---
from foundation.observability.dashboard import Dashboard, DashboardError
# --- observability (end) ---

__version__ = "0.1.0"

__all__: list[str] = [
    # --- errors __all__ (begin) ---
    "AlreadyRegisteredError",
    "BarrierError",
    "CASConflictError",
    "ClusterBusError",
    "ClusterError",
    "CorruptRecordError",
    "InvalidKeyError",
    "InvalidRequestError",
    "KeyExistsError",
    "LeaseLostError",
    "NatsServerError",
    "NatsUnavailableError",
    "NoCapacityError",
    "NodeDrainingError",
    "NodeUnavailableError",
    "NotOwnerError",
    "PlacementError",
    "RecordNotFoundError",
    "WrongTenantError",
    # --- errors __all__ (end) ---
    # --- nats __all__ (begin) ---
    "NatsCluster",
    "NatsServer",
    "find_nats_server",
    # --- nats __all__ (end) ---
    # --- membership __all__ (begin) ---
    "Membership",
    "MembershipDiff",
    "MembershipEvent",
    "MembershipSnapshot",
    "NodeRecord",
    # --- membership __all__ (end) ---
    # --- registry __all__ (begin) ---
    "ClusterRegistry",
    "RegistryChange",
    "RegistryRecord",
    # --- registry __all__ (end) ---
    # --- placement __all__ (begin) ---
    "Affinity",
    "AntiAffinity",
    "Candidate",
    "CapabilityStrategy",
    "LeastLoadedStrategy",
    "LoadBalancedStrategy",
    "LocalStrategy",
    "PlacementDirector",
    "PlacementRequest",
    "PlacementStrategy",
    "ResourceAwareStrategy",
    "SpreadStrategy",
    # --- placement __all__ (end) ---
    # --- coordination __all__ (begin) ---
    "ClusterConfig",
    "ConfigChange",
    "Coordination",
    "Leadership",
    "Lock",
    # --- coordination __all__ (end) ---
    # --- hosting __all__ (begin) ---
    "ClusterSpec",
    "Clustered",
    "KVStateStore",
    # --- hosting __all__ (end) ---
    # --- messaging __all__ (begin) ---
    "AgentInbox",
    "AwaitFailover",
    "BusBridge",
    "BusStatistics",
    "ClusterBus",
    "ClusterRef",
    "ClusterSubscription",
    "DeadLetter",
    "Delivery",
    "FailFast",
    "InboxStatistics",
    "RemoteState",
    "UnreachablePolicy",
    "current_signal",
    "send_to_inbox",
    # --- messaging __all__ (end) ---
    # --- failover __all__ (begin) ---
    "DeposedError",
    "Failover",
    "FailoverEvent",
    "FailoverOptions",
    "FailoverStatistics",
    "Rebalancer",
    # --- failover __all__ (end) ---
    # --- security __all__ (begin) ---
    "AuditLog",
    "AuthenticationError",
    "Client",
    "NatsAuth",
    "PermissionDeniedError",
    "Policy",
    "RolePolicy",
    "SecureNatsCluster",
    "SecureNatsServer",
    "write_secure_setup",
    # --- security __all__ (end) ---
    # --- tenancy __all__ (begin) ---
    "Quota",
    "QuotaExceededError",
    "LimitsNotAppliedError",
    # --- tenancy __all__ (end) ---
    # --- node __all__ (begin) ---
    "Node",
    "NodeStatistics",
    "Stage",
    # --- node __all__ (end) ---
    # --- observability __all__ (begin) ---
    "Dashboard",
    "DashboardError",
    # --- observability __all__ (end) ---
]
