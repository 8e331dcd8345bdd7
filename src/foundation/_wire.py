"""Wire details of the cluster layer, in one place.

Every NATS subject, JetStream bucket and stream name, header name and NATS server
error code used by ``foundation`` is defined here, together with the replication
factor rule. Other modules import these constants instead of spelling strings.

Layout (see ``docs/cluster.md``):

===========================  =========================================================
bucket / stream              content
===========================  =========================================================
``foundation_nodes``         one key per node (``<node_id>``): the node record, written
                             with a per-message TTL (the node's lease) and renewed by
                             heartbeats; the server writes a delete marker on expiry
``foundation_registry``      one key per agent (``<tenant>.<agent_id>``): owner node,
                             epoch, type, capabilities, status, metadata
``foundation_coord``         leases (``lease.<name>``), locks (``lock.<name>``) and
                             barriers (``barrier.<name>.<member>``) of the
                             coordination primitives
``foundation_config``        the cluster-wide configuration map (plain keys)
``foundation_state``         durable agent state (owned by the cluster core)
``foundation_reservations``  one key per node (``<tenant>.<node_id>``): the resources
                             reserved there, per agent (placement, by CAS)
===========================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from foundation._errors import InvalidKeyError

# --- JetStream KV buckets -------------------------------------------------------------------

#: Node records with a TTL lease each (membership and failure detection).
NODES_BUCKET: Final = "foundation_nodes"
#: One record per agent (the distributed registry).
REGISTRY_BUCKET: Final = "foundation_registry"
#: Leases, locks and barriers of the coordination primitives.
COORD_BUCKET: Final = "foundation_coord"
#: The cluster-wide configuration map.
CONFIG_BUCKET: Final = "foundation_config"
#: Durable agent state (checkpoints) of clustered agents.
STATE_BUCKET: Final = "foundation_state"
#: Per-node resource reservations (placement decides by CAS on them).
RESERVATIONS_BUCKET: Final = "foundation_reservations"
#: Tenant quotas and the usage they are decided on (admissions, token windows, state bytes).
QUOTA_BUCKET: Final = "foundation_quotas"
#: Due times of passivated virtual agents with pending schedules (``<tenant>.<agent_id>``).
WAKEUPS_BUCKET: Final = "foundation_wakeups"

#: Every JetStream KV bucket is backed by a stream named ``KV_<bucket>``.
KV_STREAM_PREFIX: Final = "KV_"
#: ... whose subjects are ``$KV.<bucket>.<key>``.
KV_SUBJECT_PREFIX: Final = "$KV."

# --- JetStream streams ----------------------------------------------------------------------

#: At-least-once signals to agents (cluster bus).
SIGNALS_STREAM: Final = "FOUNDATION_SIGNALS"
#: Signals that exhausted their redeliveries.
DEAD_LETTER_STREAM: Final = "FOUNDATION_DLQ"
#: Work-queue stream holding every agent inbox (messages leave it when the owner acks them).
INBOX_STREAM: Final = "FOUNDATION_INBOX"

# --- core NATS subjects ---------------------------------------------------------------------

#: Root of every subject the cluster layer publishes on.
SUBJECT_ROOT: Final = "foundation"
#: Direct subject of an agent: ``foundation.agent.<tenant>.<agent_id>``.
AGENT_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.agent"
#: Control subject of a node: ``foundation.node.<node_id>.<verb>``.
NODE_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.node"
#: Cluster bus signals: ``foundation.signal.<signal type>``.
SIGNAL_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.signal"
#: At-least-once signals (captured by :data:`SIGNALS_STREAM`).
DURABLE_SIGNAL_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.durable"
#: Inbox subject of an agent: ``<root>.inbox.<tenant>.<agent_id>`` (in :data:`INBOX_STREAM`).
INBOX_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.inbox"

#: Tenant used when none is given.
DEFAULT_TENANT: Final = "default"

# --- headers --------------------------------------------------------------------------------

#: Compare-and-set on the last revision of one subject (KV key).
HDR_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
#: Per-message TTL (whole seconds, at least one; needs ``allow_msg_ttl`` on the stream).
HDR_TTL: Final = "Nats-TTL"
#: Set by the server on the delete marker it writes when a message expires.
HDR_MARKER_REASON: Final = "Nats-Marker-Reason"
#: KV operation of a tombstone (``DEL`` or ``PURGE``).
HDR_KV_OPERATION: Final = "KV-Operation"
#: Roll-up (``sub``) used by purge tombstones.
HDR_ROLLUP: Final = "Nats-Rollup"
#: JetStream de-duplication id.
HDR_MSG_ID: Final = "Nats-Msg-Id"
#: W3C trace context carried across nodes.
HDR_TRACEPARENT: Final = "traceparent"
#: Optional header on public requests: seconds the caller will wait (a float).
HDR_TIMEOUT: Final = "fdn-timeout"
#: Optional header on public requests: JSON object merged into the command's checkpoint meta.
HDR_META: Final = "fdn-meta"
#: Header of a public request that is a cast to acknowledge (not a call): the reply says the
#: cast was accepted (for an ``at_least_once`` agent: stored in its inbox), or why not.
HDR_CAST: Final = "fdn-cast"

KV_OP_DEL: Final = "DEL"
KV_OP_PURGE: Final = "PURGE"
ROLLUP_SUBJECT: Final = "sub"
#: ``Nats-Marker-Reason`` values written by the server.
MARKER_MAX_AGE: Final = "MaxAge"
MARKER_PURGE: Final = "Purge"
MARKER_REMOVE: Final = "Remove"

# --- checkpoint meta written by nodes only ---------------------------------------------------

#: Meta keys a node writes into an agent's checkpoint (the inbox position). A request from
#: another process that sets one is refused: it would move what the node believes.
RESERVED_META_KEYS: Final = frozenset({"stream_seq"})
#: Prefix of every other node-only key (activation marks, leader terms, hand-over stamps).
RESERVED_META_PREFIX: Final = "fdn."

#: Largest ``fdn-timeout`` / request timeout accepted from another process, in seconds.
MAX_REQUEST_TIMEOUT: Final = 3600.0

# --- NATS server error codes (``err_code`` of a JetStream API error) ------------------------

#: Wrong last sequence (the current sequence is in the description): a lost compare-and-set.
ERR_WRONG_LAST_SEQUENCE: Final = 10071
#: Wrong last sequence, no sequence known (replicated streams): a lost compare-and-set.
ERR_WRONG_LAST_SEQUENCE_CONSTANT: Final = 10164
#: Expected-last-sequence check temporarily unavailable: retry.
ERR_EXPECTED_LAST_SEQ_NOT_READY: Final = 10163
#: Both "wrong last sequence" codes.
CAS_ERROR_CODES: Final = frozenset({ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_CONSTANT})
#: Stream name already in use with a different configuration.
ERR_STREAM_NAME_IN_USE: Final = 10058
#: Stream not found.
ERR_STREAM_NOT_FOUND: Final = 10059
#: No message found (KV get of an absent key).
ERR_NO_MESSAGE_FOUND: Final = 10037
#: Replicas > 1 are not supported on a non-clustered server.
ERR_REPLICAS_NOT_SUPPORTED: Final = 10074
#: Not enough peers in the cluster for the requested replicas.
ERR_CLUSTER_NO_PEERS: Final = 10005
#: Insufficient resources (e.g. too few servers for the replicas).
ERR_INSUFFICIENT_RESOURCES: Final = 10023
#: JetStream temporarily unavailable (no meta leader, no quorum).
ERR_CLUSTER_NOT_AVAILABLE: Final = 10008
#: JetStream not enabled on the server / for the account.
ERR_JETSTREAM_NOT_ENABLED: Final = 10076
ERR_JETSTREAM_NOT_ENABLED_FOR_ACCOUNT: Final = 10039
#: Codes that mean "JetStream is (temporarily) not able to serve": retryable.
UNAVAILABLE_ERROR_CODES: Final = frozenset(
    {ERR_EXPECTED_LAST_SEQ_NOT_READY, ERR_CLUSTER_NOT_AVAILABLE, ERR_INSUFFICIENT_RESOURCES}
)

# --- replication ----------------------------------------------------------------------------

#: Largest replication factor used for buckets and streams.
MAX_REPLICAS: Final = 3


def replicas_for(cluster_size: int) -> int:
    """Return the replication factor for buckets and streams on a cluster of ``cluster_size``.

    One server (a dev cluster) gets R1; three or more servers get R3, which survives the loss
    of one server with no loss of acknowledged writes. Two servers get R1 as well: R2 would
    stop accepting writes when either server is down, which is worse than R1.
    """
    if cluster_size < 1:
        raise ValueError(f"cluster_size must be >= 1, got {cluster_size}")
    return MAX_REPLICAS if cluster_size >= MAX_REPLICAS else 1


# --- names and keys -------------------------------------------------------------------------


def kv_stream(bucket: str) -> str:
    """Name of the stream backing KV ``bucket``."""
    return f"{KV_STREAM_PREFIX}{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """Subject of ``key`` in KV ``bucket``."""
    return f"{KV_SUBJECT_PREFIX}{bucket}.{key}"


def agent_key(tenant: str, agent_id: str) -> str:
    """Registry key of an agent: ``<tenant>.<agent_id>``."""
    return f"{tenant}.{agent_id}"


def lease_key(name: str) -> str:
    """Key of leader-election lease ``name`` in :data:`COORD_BUCKET`."""
    return f"lease.{name}"


def lock_key(name: str) -> str:
    """Key of lock ``name`` in :data:`COORD_BUCKET`."""
    return f"lock.{name}"


def barrier_prefix(name: str) -> str:
    """Key prefix of barrier ``name`` in :data:`COORD_BUCKET` (one key per arrived member)."""
    return f"barrier.{name}"


#: Name of the cluster lease held by the failover leader (a :func:`lease_key` in the coord bucket).
LEADER_LEASE = "foundation-leader"


def leader_lease(tenant: str = DEFAULT_TENANT) -> str:
    """The leader lease of ``tenant``'s nodes: :data:`LEADER_LEASE` for the default tenant,
    ``foundation-leader-<tenant>`` for another (soft tenants sharing one account each elect
    their own leader)."""
    return LEADER_LEASE if tenant == DEFAULT_TENANT else f"{LEADER_LEASE}-{tenant}"


#: Registry metadata key: the term of the leader that made the write.
TERM_KEY = "fdn.term"
#: Registry metadata key: the node id of the leader that made the write.
LEADER_KEY = "fdn.leader"

#: Dead letters: ``<root>.dead.<kind>.<consumer>`` (captured by :data:`DEAD_LETTER_STREAM`).
DEAD_LETTER_SUBJECT_PREFIX = f"{SUBJECT_ROOT}.dead"
#: Redriven signals for one consumer: ``<root>.redrive.<consumer>`` (in :data:`SIGNALS_STREAM`).
REDRIVE_SUBJECT_PREFIX = f"{SUBJECT_ROOT}.redrive"
#: Dead-letter headers: original subject, consumer, reason, attempts, original stream sequence.
HDR_DEAD_SUBJECT = "Fdn-Dead-Subject"
HDR_DEAD_CONSUMER = "Fdn-Dead-Consumer"
HDR_DEAD_REASON = "Fdn-Dead-Reason"
HDR_DEAD_ATTEMPTS = "Fdn-Dead-Attempts"
HDR_DEAD_SEQ = "Fdn-Dead-Stream-Seq"
HDR_DEAD_STREAM = "Fdn-Dead-Stream"


@dataclass(frozen=True, slots=True)
class Subjects:
    """Subject names for one cluster prefix (one place for every agent-traffic subject)."""

    prefix: str = SUBJECT_ROOT

    def node(self, node_id: str, op: str) -> str:
        """The private subject of ``node_id`` for ``op``."""
        return f"{self.prefix}.node.{node_id}.{op}"

    def node_wildcard(self, node_id: str) -> str:
        """The one subscription a node holds for its private traffic."""
        return f"{self.prefix}.node.{node_id}.>"

    def agent(self, agent_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """The public subject of an agent."""
        return f"{self.prefix}.agent.{tenant}.{agent_id}"

    @property
    def agent_wildcard(self) -> str:
        """What every node serves (in :attr:`agent_queue`) for public agent subjects."""
        return f"{self.prefix}.agent.>"

    @property
    def agent_queue(self) -> str:
        """Queue group of the public agent subjects (of the default tenant)."""
        return f"{self.prefix}-agents"

    def tenant_wildcard(self, tenant: str = DEFAULT_TENANT) -> str:
        """What the nodes of ``tenant`` serve: the public subjects of its agents only; the
        default tenant's nodes serve :attr:`agent_wildcard` (they answer for a tenant that no
        node serves, and leave a served one's requests to its nodes)."""
        if tenant == DEFAULT_TENANT:
            return self.agent_wildcard
        return f"{self.prefix}.agent.{tenant}.>"

    def tenant_of_subject(self, subject: str) -> str | None:
        """The tenant token of a public agent subject, also under an attested prefix (``None``
        when ``subject`` is no agent subject)."""
        head = f"{self.prefix}.agent."
        at = subject.find(head)
        if at < 0:
            return None
        return subject[at + len(head) :].partition(".")[0] or None

    def tenant_queue(self, tenant: str = DEFAULT_TENANT) -> str:
        """Queue group of ``tenant``'s nodes (:attr:`agent_queue` for the default tenant)."""
        return self.agent_queue if tenant == DEFAULT_TENANT else f"{self.agent_queue}-{tenant}"

    def parse_agent(self, subject: str) -> tuple[str, str]:
        """``(tenant, agent_id)`` from a public agent subject; raises on a foreign subject."""
        head = f"{self.prefix}.agent."
        if not subject.startswith(head):
            raise InvalidKeyError(f"{subject!r} is not an agent subject under {head}*")
        rest = subject[len(head) :]
        tenant, _, agent_id = rest.partition(".")
        if not tenant or not agent_id:
            raise InvalidKeyError(
                f"{subject!r} is not an agent subject: use {head}<tenant>.<agent_id>"
            )
        return tenant, agent_id

    def parse_node_op(self, subject: str) -> str:
        """The op (last token) of a private node subject."""
        return subject.rsplit(".", 1)[-1]
