"""A history of a chaos run and the checker of the four failover invariants.

A run records, as plain data:

* :class:`Ack` — a signal whose publish (or call) was acknowledged to its sender, and
  :class:`Unsure` — one whose outcome the sender does not know (error or timeout: it may or
  may not have been applied);
* :class:`StateWrite` — every committed write of an agent's state key (KV revision, epoch,
  checkpoint seq, the writer node and the signal ids applied so far, as the state holds them);
* :class:`Assignment` — every revision of an agent's registry record (owner node, epoch and the
  leadership term the writer acted in);
* :class:`Term` — every leadership term (the lease's fencing token) and its holder, and
  :class:`Act` — every decision a leader took in a term;
* :class:`Kill` — a node killed (or paused), with the critical agents it owned then, and
  :class:`Serving` — the first time such an agent answered again, with the state it answered.

:func:`check` returns every :class:`Violation` of:

1. **no acknowledged signal lost, none applied twice** — each agent's final applied list holds
   every acknowledged id exactly once, no id twice, nothing that was never sent, and its count
   equals the length of that list;
2. **no interleaving owners** — along the revisions of an agent's state key the epoch never goes
   down, and every write is by the node the registry assigned that epoch to;
3. **critical agents come back with their last committed state within the budget** — each
   critical agent of a killed node is served again by another node within ``budget`` seconds,
   and the new owner's first write (its activation) carries exactly the state and seq of the
   last write committed under the previous epoch;
4. **leader uniqueness** — at most one holder per term, and every act in a term is by its holder.

Pure data in, pure data out: no NATS, no clock. The chaos tests build a :class:`History` from
what they observed; the unit tests build synthetic ones.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Invariant = Literal["lost_or_duplicate", "interleaving", "recovery", "leader"]


@dataclass(frozen=True, slots=True)
class Ack:
    """Signal ``signal_id`` to ``agent`` was acknowledged to its sender at time ``t``."""

    agent: str
    signal_id: str
    t: float = 0.0


@dataclass(frozen=True, slots=True)
class Unsure:
    """The sender of ``signal_id`` got an error or no answer: applied at most once, maybe not."""

    agent: str
    signal_id: str


@dataclass(frozen=True, slots=True)
class StateWrite:
    """One committed revision of an agent's state key."""

    agent: str
    revision: int
    """KV revision (stream sequence of the state bucket)."""
    epoch: int
    """Fencing token carried by the checkpoint."""
    seq: int
    """Checkpoint sequence (commands applied); an activation keeps the previous one."""
    state: Mapping[str, Any]
    """The committed state."""
    writer: str | None = None
    """Node that wrote it, when known (``None`` for an activation marker or unknown)."""
    activation: bool = False
    """True for the write a new owner makes to claim the key (state unchanged)."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """One revision of an agent's registry record."""

    agent: str
    revision: int
    node: str
    epoch: int
    term: int | None = None
    """Leadership term the writer acted in (``None``: not written by a leader, e.g. a spawn)."""
    writer: str | None = None
    """Node that made the write, when known."""


@dataclass(frozen=True, slots=True)
class Term:
    """Node ``holder`` became leader with fencing token ``term``."""

    term: int
    holder: str


@dataclass(frozen=True, slots=True)
class Act:
    """Node ``node`` took a leader decision in ``term`` (e.g. moved ``subject``)."""

    term: int
    node: str
    subject: str = ""


@dataclass(frozen=True, slots=True)
class Kill:
    """Node ``node`` was killed (or paused past its lease) at time ``t``."""

    node: str
    t: float
    critical: tuple[str, ...] = ()
    """Critical agents it owned at that moment."""


@dataclass(frozen=True, slots=True)
class Serving:
    """Agent ``agent`` answered from node ``node`` at time ``t`` (after a kill)."""

    agent: str
    node: str
    t: float


@dataclass(frozen=True, slots=True)
class FinalState:
    """An agent's state read at the end of the run."""

    agent: str
    count: int
    applied: tuple[str, ...]
    """Ids of the signals it applied, in order."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant, with what shows it."""

    invariant: Invariant
    agent: str
    message: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.agent}: {self.message}"


@dataclass
class History:
    """Everything a chaos run observed (append as you go; order of appends does not matter)."""

    acks: list[Ack] = field(default_factory=list)
    unsure: list[Unsure] = field(default_factory=list)
    writes: list[StateWrite] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    terms: list[Term] = field(default_factory=list)
    acts: list[Act] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    serving: list[Serving] = field(default_factory=list)
    finals: list[FinalState] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)
    """Every ``(agent, signal_id)`` ever sent, whatever its outcome."""

    def send(self, agent: str, signal_id: str) -> None:
        """Record that ``signal_id`` was sent to ``agent`` (before knowing the outcome)."""
        self.sent.append((agent, signal_id))

    def ack(self, agent: str, signal_id: str, t: float = 0.0) -> None:
        """Record an acknowledged signal."""
        self.acks.append(Ack(agent, signal_id, t))

    def unsure_of(self, agent: str, signal_id: str) -> None:
        """Record a signal whose outcome the sender does not know."""
        self.unsure.append(Unsure(agent, signal_id))

    def merge(self, other: History) -> None:
        """Append everything ``other`` recorded."""
        for name in (
            "acks",
            "unsure",
            "writes",
            "assignments",
            "terms",
            "acts",
            "kills",
            "serving",
            "finals",
            "sent",
        ):
            getattr(self, name).extend(getattr(other, name))

    def check(self, *, budget: float | None = None) -> list[Violation]:
        """Every violation of the four invariants (empty when the run was correct)."""
        return check(self, budget=budget)

    def assert_ok(self, *, budget: float | None = None) -> None:
        """Raise ``AssertionError`` listing every violation, if any."""
        violations = self.check(budget=budget)
        if violations:
            shown = "\n".join(f"  {v}" for v in violations[:50])
            more = f"\n  ... and {len(violations) - 50} more" if len(violations) > 50 else ""
            raise AssertionError(f"{len(violations)} invariant violation(s):\n{shown}{more}")


# -- invariant 1 ---------------------------------------------------------------------------------


def check_delivery(history: History) -> list[Violation]:
    """No acknowledged signal lost; none applied twice; nothing applied that was never sent."""
    out: list[Violation] = []
    acked: dict[str, set[str]] = defaultdict(set)
    for a in history.acks:
        acked[a.agent].add(a.signal_id)
    sent: dict[str, set[str]] = defaultdict(set)
    for agent, sid in history.sent:
        sent[agent].add(sid)
    for u in history.unsure:
        sent[u.agent].add(u.signal_id)
    for a in history.acks:
        sent[a.agent].add(a.signal_id)
    finals = {f.agent: f for f in history.finals}
    for agent in sorted(set(acked) | set(finals)):
        final = finals.get(agent)
        if final is None:
            out.append(
                Violation(
                    "lost_or_duplicate",
                    agent,
                    f"{len(acked[agent])} acknowledged signal(s) but no final state was read",
                )
            )
            continue
        counts = Counter(final.applied)
        twice = sorted(sid for sid, n in counts.items() if n > 1)
        if twice:
            out.append(
                Violation(
                    "lost_or_duplicate",
                    agent,
                    f"applied more than once: {twice[:5]} ({len(twice)} id(s))",
                )
            )
        lost = sorted(acked[agent] - counts.keys())
        if lost:
            out.append(
                Violation(
                    "lost_or_duplicate",
                    agent,
                    f"acknowledged but never applied: {lost[:5]} ({len(lost)} id(s))",
                )
            )
        unknown = sorted(counts.keys() - sent[agent])
        if unknown:
            out.append(
                Violation(
                    "lost_or_duplicate",
                    agent,
                    f"applied but never sent: {unknown[:5]} ({len(unknown)} id(s))",
                )
            )
        if final.count != len(final.applied):
            out.append(
                Violation(
                    "lost_or_duplicate",
                    agent,
                    f"final count {final.count} != {len(final.applied)} applied signal(s)",
                )
            )
    return out


# -- invariant 2 ---------------------------------------------------------------------------------


def check_owners(history: History) -> list[Violation]:
    """No two owners' writes interleave; each write is by the node owning its epoch."""
    out: list[Violation] = []
    owner_of: dict[tuple[str, int], set[str]] = defaultdict(set)
    for a in history.assignments:
        owner_of[(a.agent, a.epoch)].add(a.node)
    for (agent, epoch), nodes in sorted(owner_of.items()):
        if len(nodes) > 1:
            out.append(
                Violation(
                    "interleaving",
                    agent,
                    f"epoch {epoch} was assigned to several nodes: {sorted(nodes)}",
                )
            )
    by_agent: dict[str, list[StateWrite]] = defaultdict(list)
    for w in history.writes:
        by_agent[w.agent].append(w)
    for agent, writes in sorted(by_agent.items()):
        writes.sort(key=lambda w: w.revision)
        highest = 0
        highest_rev = 0
        for w in writes:
            if w.epoch < highest:
                out.append(
                    Violation(
                        "interleaving",
                        agent,
                        f"write at revision {w.revision} carries epoch {w.epoch} after epoch "
                        f"{highest} wrote at revision {highest_rev} (a stale owner wrote)",
                    )
                )
            elif w.epoch > highest:
                highest, highest_rev = w.epoch, w.revision
            owners = owner_of.get((agent, w.epoch))
            if history.assignments and w.epoch > 0 and not owners:
                out.append(
                    Violation(
                        "interleaving",
                        agent,
                        f"write at revision {w.revision} carries epoch {w.epoch}, which the "
                        "registry never assigned",
                    )
                )
            elif owners and w.writer is not None and w.writer not in owners:
                out.append(
                    Violation(
                        "interleaving",
                        agent,
                        f"write at revision {w.revision} (epoch {w.epoch}) was made by "
                        f"{w.writer}, but epoch {w.epoch} belongs to {sorted(owners)}",
                    )
                )
    return out


# -- invariant 3 ---------------------------------------------------------------------------------


def check_recovery(history: History, *, budget: float | None) -> list[Violation]:
    """Each critical agent of a killed node serves again elsewhere, in budget, with its state."""
    out: list[Violation] = []
    by_agent: dict[str, list[StateWrite]] = defaultdict(list)
    for w in history.writes:
        by_agent[w.agent].append(w)
    for writes in by_agent.values():
        writes.sort(key=lambda w: w.revision)
    for kill in history.kills:
        for agent in kill.critical:
            served = [s for s in history.serving if s.agent == agent and s.t >= kill.t]
            served = [s for s in served if s.node != kill.node]
            if not served:
                out.append(
                    Violation(
                        "recovery",
                        agent,
                        f"critical agent of killed node {kill.node} never served again",
                    )
                )
            else:
                first = min(served, key=lambda s: s.t)
                took = first.t - kill.t
                if budget is not None and took > budget:
                    out.append(
                        Violation(
                            "recovery",
                            agent,
                            f"served again after {took:.2f}s, over the {budget:.2f}s budget",
                        )
                    )
        # State carried across every epoch change of these agents.
    for agent, writes in sorted(by_agent.items()):
        for prev, cur in itertools.pairwise(writes):
            if cur.epoch > prev.epoch and cur.activation and prev.seq > 0:
                if cur.seq != prev.seq or dict(cur.state) != dict(prev.state):
                    out.append(
                        Violation(
                            "recovery",
                            agent,
                            f"epoch {cur.epoch} started from seq {cur.seq} {dict(cur.state)!r}"
                            f", not the last committed seq {prev.seq} {dict(prev.state)!r}",
                        )
                    )
            elif cur.epoch > prev.epoch and not cur.activation:
                out.append(
                    Violation(
                        "recovery",
                        agent,
                        f"epoch {cur.epoch} wrote at revision {cur.revision} without first "
                        "claiming the state key (no activation write)",
                    )
                )
            if cur.epoch == prev.epoch and not cur.activation and cur.seq < prev.seq:
                out.append(
                    Violation(
                        "recovery",
                        agent,
                        f"seq went back from {prev.seq} to {cur.seq} within epoch {cur.epoch}",
                    )
                )
    return out


# -- invariant 4 ---------------------------------------------------------------------------------


def check_leaders(history: History) -> list[Violation]:
    """At most one holder per term; every act (and term-stamped write) by that term's holder."""
    out: list[Violation] = []
    holders: dict[int, set[str]] = defaultdict(set)
    for t in history.terms:
        holders[t.term].add(t.holder)
    for term, nodes in sorted(holders.items()):
        if len(nodes) > 1:
            out.append(Violation("leader", f"term {term}", f"several holders: {sorted(nodes)}"))
    acting: dict[int, set[str]] = defaultdict(set)
    for act in history.acts:
        acting[act.term].add(act.node)
    for a in history.assignments:
        if a.term is not None and a.writer is not None:
            acting[a.term].add(a.writer)
    for term, nodes in sorted(acting.items()):
        if len(nodes) > 1:
            out.append(Violation("leader", f"term {term}", f"several nodes acted: {sorted(nodes)}"))
        known = holders.get(term)
        if known and not nodes <= known:
            out.append(
                Violation(
                    "leader",
                    f"term {term}",
                    f"acted by {sorted(nodes - known)}, but the term belongs to {sorted(known)}",
                )
            )
    return out


def check(history: History, *, budget: float | None = None) -> list[Violation]:
    """Every violation of the four invariants, in invariant order."""
    return [
        *check_delivery(history),
        *check_owners(history),
        *check_recovery(history, budget=budget),
        *check_leaders(history),
    ]


def applied_ids(state: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``applied`` list of a chaos counter's state as a tuple."""
    ids: Iterable[Any] = state.get("applied") or ()
    return tuple(str(i) for i in ids)


__all__ = [
    "Ack",
    "Act",
    "Assignment",
    "FinalState",
    "History",
    "Kill",
    "Serving",
    "StateWrite",
    "Term",
    "Unsure",
    "Violation",
    "applied_ids",
    "check",
    "check_delivery",
    "check_leaders",
    "check_owners",
    "check_recovery",
]
