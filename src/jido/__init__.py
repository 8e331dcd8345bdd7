"""jido: single-node agents — actions that double as LLM tools, CloudEvents signals,
routing, a bus, stateful agents, skills, sensors and state stores.

``jido`` never imports ``foundation``; the cluster layer builds on it, not the reverse.
"""

from jido._errors import (
    AgentNotFoundError,
    AgentStoppedError,
    CancelledError,
    CompensationError,
    DefinitionError,
    ExecutionError,
    FencedError,
    JidoError,
    MailboxFullError,
    PayloadTooLargeError,
    RoutingError,
    SignalError,
    StateError,
    StoreError,
    TimeoutError,
    ValidationError,
)

# --- actions (begin) ---
from jido._action import Action, ActionContext, action
from jido._catalog import Catalog
from jido._exec import Outcome, Plan, PlanStep, chain, check_cancelled, execute, run_action
from jido._schema import strict_schema
from jido._tool import execute_tool_call, parse_tool_arguments

# --- actions (end) ---

# --- signals (begin) ---
from jido._bus import Bus, Subscription
from jido._bus_durable import PersistentSubscription
from jido._bus_types import (
    BusClosedError,
    BusError,
    BusStats,
    DeadLetter,
    Decision,
    LogEntry,
    LoggingMiddleware,
    Middleware,
    Overflow,
    PublishHaltedError,
    SubscriberOverflowError,
    SubscriptionStats,
)
from jido._dispatch import (
    BusDispatch,
    CallableDispatch,
    Dispatch,
    DispatchError,
    DispatchResult,
    HttpDispatch,
    LoggerDispatch,
    WebhookDispatch,
    dispatch_all,
    sign_webhook,
    verify_webhook,
)
from jido._journal import Journal
from jido._router import Route, Router, pattern_matches, validate_pattern
from jido._signal import Signal, TypedSignal, is_valid_type, uuid7, validate_type

# --- signals (end) ---

# --- agents (begin) ---
from jido._agent import Agent, Instruction
from jido._directive import (
    Cancel,
    DeleteKeys,
    Directive,
    Emit,
    Replace,
    Schedule,
    SetPath,
    Spawn,
    StartSensor,
    StateOp,
    Stop,
    StopChild,
    StopSensor,
)
from jido._info import AgentInfo, FailedCommand
from jido._runtime import (
    AgentDeadLetter,
    AgentDispatch,
    AgentEvent,
    AgentExistsError,
    AgentRef,
    BatchOutcome,
    Runtime,
)
from jido._services import Services
from jido._skill import Skill
from jido._virtual import VirtualRef
from jido._sensor import (
    BusSensor,
    CronSensor,
    HeartbeatSensor,
    Sensor,
    SensorClock,
    SensorError,
)
from jido._store import Checkpoint, CorruptCheckpointError, MemoryStore, SQLiteStore, StateStore
# --- agents (end) ---

__version__ = "0.1.0"

__all__ = [
    # errors
    "AgentNotFoundError",
    "AgentStoppedError",
    "CancelledError",
    "CompensationError",
    "DefinitionError",
    "ExecutionError",
    "FencedError",
    "JidoError",
    "MailboxFullError",
    "PayloadTooLargeError",
    "RoutingError",
    "SignalError",
    "StateError",
    "StoreError",
    "TimeoutError",
    "ValidationError",
    # --- actions __all__ (begin) ---
    "Action",
    "ActionContext",
    "Catalog",
    "Outcome",
    "Plan",
    "PlanStep",
    "action",
    "chain",
    "check_cancelled",
    "execute",
    "execute_tool_call",
    "parse_tool_arguments",
    "run_action",
    "strict_schema",
    # --- actions __all__ (end) ---
    # --- signals __all__ (begin) ---
    "Bus",
    "BusClosedError",
    "BusDispatch",
    "BusError",
    "BusStats",
    "CallableDispatch",
    "DeadLetter",
    "Decision",
    "Dispatch",
    "DispatchError",
    "DispatchResult",
    "HttpDispatch",
    "Journal",
    "LogEntry",
    "LoggerDispatch",
    "LoggingMiddleware",
    "Middleware",
    "Overflow",
    "PersistentSubscription",
    "PublishHaltedError",
    "Route",
    "Router",
    "Signal",
    "SubscriberOverflowError",
    "Subscription",
    "SubscriptionStats",
    "TypedSignal",
    "WebhookDispatch",
    "dispatch_all",
    "is_valid_type",
    "pattern_matches",
    "sign_webhook",
    "uuid7",
    "validate_pattern",
    "validate_type",
    "verify_webhook",
    # --- signals __all__ (end) ---
    # --- agents __all__ (begin) ---
    "Agent",
    "AgentDeadLetter",
    "AgentDispatch",
    "AgentEvent",
    "AgentExistsError",
    "AgentInfo",
    "AgentRef",
    "BatchOutcome",
    "Cancel",
    "DeleteKeys",
    "Directive",
    "Emit",
    "FailedCommand",
    "Instruction",
    "Replace",
    "Runtime",
    "Schedule",
    "Services",
    "SetPath",
    "Skill",
    "Spawn",
    "StartSensor",
    "StateOp",
    "Stop",
    "StopChild",
    "StopSensor",
    "VirtualRef",
    "Checkpoint",
    "CorruptCheckpointError",
    "MemoryStore",
    "SQLiteStore",
    "StateStore",
    "BusSensor",
    "CronSensor",
    "HeartbeatSensor",
    "Sensor",
    "SensorClock",
    "SensorError",
    # --- agents __all__ (end) ---
]
