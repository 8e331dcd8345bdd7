"""What one running agent looks like from outside: :class:`AgentInfo` (``AgentRef.info()``).

Metadata only, never the state's content: an operator's dashboard may show it to anyone who may
see that the agent exists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AgentInfo", "FailedCommand"]


@dataclass(frozen=True, slots=True)
class FailedCommand:
    """The last command of an agent that failed: when, with which error type and message."""

    time: float
    """Unix time of the failure."""
    type: str
    """The error's ``type`` (a :class:`jido.JidoError`'s wire name) or exception class."""
    message: str
    """What the caller was told (truncated to 500 characters)."""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """A snapshot of one agent's runtime bookkeeping (see :meth:`jido.AgentRef.info`)."""

    id: str
    agent_class: str
    """``module:QualifiedName`` of the agent's class."""
    status: str
    """``running``, ``hibernated`` (state saved, released from memory), ``stopping``."""
    mailbox: int
    """Signals waiting in its mailbox now."""
    mailbox_size: int
    """The mailbox's capacity (a send beyond it gets ``MailboxFullError``)."""
    busy: bool
    """True while a command runs or signals wait."""
    commands: int
    """Commands applied since the agent was created (its sequence number)."""
    checkpointed: int
    """The sequence number of its last checkpoint."""
    epoch: int
    """Its ownership epoch (0 outside a cluster)."""
    restarts: int
    """Crash restarts within its restart window."""
    idle_seconds: float
    """Seconds since it last finished work (0 while busy)."""
    schedules: int
    """Schedules and cron entries armed or firing."""
    state_bytes: int | None
    """Size of its state as JSON (``None`` while hibernated)."""
    last_error: FailedCommand | None
    """Its last failed command, if any since it started here."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentInfo:
        """Read back :meth:`to_dict` (from another process: every field is checked)."""
        try:
            err = data.get("last_error")
            last = (
                FailedCommand(float(err["time"]), str(err["type"]), str(err["message"])[:500])
                if isinstance(err, dict)
                else None
            )
            size = data.get("state_bytes")
            return cls(
                id=str(data["id"]),
                agent_class=str(data["agent_class"]),
                status=str(data["status"]),
                mailbox=int(data["mailbox"]),
                mailbox_size=int(data["mailbox_size"]),
                busy=bool(data["busy"]),
                commands=int(data["commands"]),
                checkpointed=int(data["checkpointed"]),
                epoch=int(data["epoch"]),
                restarts=int(data["restarts"]),
                idle_seconds=float(data["idle_seconds"]),
                schedules=int(data["schedules"]),
                state_bytes=int(size) if size is not None else None,
                last_error=last,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an agent info: {exc!r}") from exc
