"""``LLMAgent``: an agent driven by a tool-calling model, durable at every step.

A turn starts with an ``ai.prompt`` signal. The loop calls the model with the conversation and
the tools, runs the tool calls it asks for (the agent's own actions run *with the agent's
state*, one after another; tools of other sources run concurrently), feeds results or
structured errors back, and ends with a final answer or at ``max_steps``.

Durability. Every step is appended to the agent's **journal** (kept by the state store next to
the checkpoint, see :meth:`jido.StateStore.append`) together with the agent's state, in one
write: the model's response before any tool runs, each tool call's start, each tool call's
result. The journal holds each message once, so it grows linearly with the conversation.
When the agent starts again (after a crash, a restart, a move), the open turn resumes from
the journal: a recorded model response is never requested again, a recorded tool result is
never run again, and a tool call that started without a recorded result is settled by the
action's ``reconcile`` hook, re-run only when the action is ``idempotent``, and otherwise
reported to the model as an :class:`~jido.ai.OutcomeUnknownError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from jido._action import Action, ActionContext
from jido._agent import Agent, Instruction, _merge
from jido._directive import Directive, Emit, Replace
from jido._errors import DefinitionError, ExecutionError, JidoError, ValidationError
from jido._runtime import _Server, current_server
from jido._signal import Signal
from jido._skill import Skill
from jido._store import Checkpoint
from jido._tool import (
    _accepted_args,
    _dumps,
    _normalize_args,
    parse_tool_arguments,
    tool_error_json,
)
from jido.ai._errors import (
    ApprovalDeniedError,
    ApprovalExpiredError,
    ApprovalMismatchError,
    ApprovalPendingError,
    ApprovalReplayedError,
    OutcomeUnknownError,
)
from jido.ai._sources import SourceTool, TokenBudget, ToolSource
from jido.ai._tracing import chat_span, invoke_agent_span, record_usage, tool_span
from jido.ai._types import Message, Model, ModelRequest, ModelResponse, ToolSpec, Usage

__all__ = ["AIState", "LLMAgent", "arguments_sha256"]

#: Signal types of the loop.
PROMPT = "ai.prompt"
APPROVAL = "ai.approval"
RESUME = "ai.resume"
APPROVAL_REQUESTED = "ai.approval.requested"
TEXT_DELTA = "ai.text.delta"


def arguments_sha256(arguments: str | Mapping[str, Any]) -> str:
    """SHA-256 (hex) of tool-call arguments in canonical JSON (sorted keys, no spaces).

    An approval names the arguments it approves by this hash.
    """
    data = parse_tool_arguments(arguments) if isinstance(arguments, str) else dict(arguments)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


class AIState(BaseModel):
    """The loop's slice of an LLM agent's state (``state.ai``).

    The conversation itself lives in the agent's journal, not here, so that checkpoints stay
    small however long the conversation gets.
    """

    turn: int = 0
    """Number of the last turn started."""
    usage: dict[str, int] = Field(default_factory=dict)
    """Tokens used by all turns: ``input_tokens``, ``output_tokens``, ``total_tokens``."""
    approvals: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Approval records of tool calls by id: ``tool``, ``args_sha256``, ``status``
    (``pending``, ``approved``, ``denied``, ``used``, ``expired``), ``expires_at``, ``turn``."""
    last: dict[str, Any] | None = None
    """The reply of the last finished (or parked) turn."""
    trace: str | None = None
    """Trace context (``traceparent``) of the running turn's span, so a turn resumed after a
    crash continues its trace (only set while tracing is on)."""


class _AISkill(Skill):
    """The loop's state slice and its resume-on-start hook."""

    name = "ai"
    state_model = AIState

    def mount(self, agent: Agent) -> Any:
        """Resume an open turn when the agent starts again."""
        return _resume_on_mount(agent)


class _PromptParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str


class _Prompt(Action):
    """Start a turn: the user's text goes to the model, which may call tools."""

    name = "ai_prompt"
    Params = _PromptParams
    timeout = None
    max_string_length = None
    extra = "ignore"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        turn = await _Turn.open(ctx)
        return await turn.start(params.text)


class _DecideParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tool_call_id: str
    approved: bool
    args_sha256: str
    reason: str | None = None


class _Decide(Action):
    """Approve or deny a tool call that waits for approval, then continue the turn."""

    name = "ai_approval"
    Params = _DecideParams
    timeout = None
    extra = "ignore"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        turn = await _Turn.open(ctx)
        return await turn.decide(params)


class _Resume(Action):
    """Continue the open turn (sent by the agent to itself when it starts again)."""

    name = "ai_resume"
    timeout = None
    extra = "ignore"

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        turn = await _Turn.open(ctx)
        return await turn.resume()


_INTERNAL = (_Prompt, _Decide, _Resume)
_ROUTES = ((PROMPT, _Prompt), (APPROVAL, _Decide), (RESUME, _Resume))


class LLMAgent(Agent):
    """An agent whose ``ai.prompt`` signal runs a tool-calling model loop.

    ::

        class Teller(LLMAgent):
            state_model = AccountState
            actions = [Deposit]          # its own actions are its tools
            model = OpenAIModel(base_url="http://127.0.0.1:8000/v1", model="m", api_key="k")
            instructions = "You run a bank account."

        out = await ref.call(Signal(type="ai.prompt", source="/u", data={"text": "deposit 5"}))
        out["text"], out["steps"], out["usage"]

    The reply of a turn: ``text`` (the final answer, ``None`` when the turn stopped early),
    ``steps`` (model calls in the turn), ``usage`` (tokens of the turn), ``turn``,
    ``stop_reason`` (``answer``, ``max_steps``, ``token_limit``, ``awaiting_approval``),
    ``tool_calls`` (tool calls run) and, while parked, ``approvals`` (the requests).

    Class attributes (besides :class:`~jido.Agent`'s):

    * ``model`` — a :class:`~jido.ai.Model`; ``instructions`` — the system prompt;
    * ``tools`` — the actions offered as tools (default: the agent's own ``actions``); they
      must be among the agent's actions and run with its state; ``tool_sources`` — extra
      :class:`~jido.ai.ToolSource` objects (also looked up in ``runtime.services``);
    * ``max_steps`` (model calls per turn, default 10), ``max_turn_tokens`` (tokens per turn,
      ``None``: no limit), ``max_tokens`` (output tokens per model call);
    * ``approval_timeout`` — seconds an approval request stays valid (``None``: forever);
    * ``stream_text`` — stream the model's text as ``ai.text.delta`` signals on the bus.

    An action used as a tool may declare ``idempotent = True`` (safe to run again when its
    outcome was lost), ``requires_approval = True`` (the turn parks and an
    ``ai.approval.requested`` signal is emitted until an ``ai.approval`` signal decides) and
    ``async def reconcile(self, key, params, ctx)`` (find out, by idempotency key, whether a
    call whose outcome was lost took effect: return its result dict, or ``None`` to run it).
    Every tool call sees its idempotency key (``"<agent>:<turn>:<tool_call_id>"``) as
    ``ctx.metadata["idempotency_key"]``.

    The agent's state gains an ``ai`` slice (:class:`AIState`); durability needs a runtime
    with a store that keeps journals (``MemoryStore``, ``SQLiteStore``). Without one, the
    conversation is kept in memory for the runtime's lifetime.
    """

    model: ClassVar[Model | None] = None
    instructions: ClassVar[str] = ""  # type: ignore[assignment]
    tools: ClassVar[Sequence[type[Action]] | None] = None
    tool_sources: ClassVar[Sequence[ToolSource]] = ()
    max_steps: ClassVar[int] = 10
    max_turn_tokens: ClassVar[int | None] = None
    max_tokens: ClassVar[int | None] = None
    approval_timeout: ClassVar[float | None] = 3600.0
    stream_text: ClassVar[bool] = False

    _ai_tools: ClassVar[dict[str, type[Action]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        own = [a for a in cls.actions if a not in _INTERNAL]
        cls.actions = [*own, *_INTERNAL]
        routes = list(cls.routes)
        for item in _ROUTES:
            if item not in routes:
                routes.append(item)
        cls.routes = routes
        skills = list(cls.skills)
        if _AISkill not in skills:
            skills.insert(0, _AISkill)
        cls.skills = skills
        super().__init_subclass__(**kwargs)
        chosen = own if cls.tools is None else list(cls.tools)
        tools: dict[str, type[Action]] = {}
        for act in chosen:
            if act not in cls._bindings:
                raise DefinitionError(
                    f"LLM agent {cls.__qualname__}: tool {act!r} is not one of its actions; add "
                    "it to `actions` (tools run as the agent's commands, with its state)",
                    details={"agent": cls.__qualname__},
                )
            tools[act.name] = act
        cls._ai_tools = tools


# ----------------------------------------------------------------------------------------------
# the journal


def _encode(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry)


@dataclass(slots=True)
class _Log:
    """The decoded journal of one agent and the conversation it spells."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        k = entry["k"]
        if k == "user":
            self.messages.append({"role": "user", "content": entry["content"]})
        elif k == "model":
            self.messages.append(entry["msg"])
        elif k == "result":
            self.messages.append(
                {
                    "role": "tool",
                    "tool_call_id": entry["id"],
                    "name": entry["name"],
                    "content": entry["content"],
                    "is_error": entry.get("error", False),
                }
            )

    def current(self) -> tuple[int, list[dict[str, Any]]]:
        """The last turn's number and its entries (``(0, [])`` before any turn)."""
        for i in range(len(self.entries) - 1, -1, -1):
            e = self.entries[i]
            if e["k"] == "user":
                return e["turn"], self.entries[i:]
        return 0, []

    def open_turn(self) -> bool:
        entries = self.current()[1]
        return bool(entries) and entries[-1]["k"] != "end"


class _Logs:
    """The journals of the LLM agents of one runtime (kept in ``runtime.services``)."""

    def __init__(self) -> None:
        self.by_agent: dict[str, _Log] = {}


async def _log_of(srv: _Server, agent_id: str, *, reload: bool = False) -> _Log:
    logs: _Logs | None = srv.rt.services.get(_Logs)
    if logs is None:
        logs = _Logs()
        srv.rt.services.add(_Logs, logs)
    log = logs.by_agent.get(agent_id)
    store = srv.rt.store
    if reload and store is not None and store.supports_journal:
        log = (
            None  # the store is the truth when an agent (re)starts: another owner may have moved it
        )
    if log is None:
        log = _Log()
        if store is not None and store.supports_journal:
            for raw in await store.journal(agent_id):
                log.add(orjson.loads(raw))
        logs.by_agent[agent_id] = log
    return log


async def _resume_on_mount(agent: Agent) -> None:
    srv = current_server()
    if srv is None:
        return
    log = await _log_of(srv, agent.id, reload=True)
    if not log.open_turn():
        return
    _, entries = log.current()
    if entries[-1]["k"] == "park":
        return  # waits for a decision
    srv.enqueue(Signal(type=RESUME, source=f"/agents/{agent.id}"), None, None)


# ----------------------------------------------------------------------------------------------
# one turn


@dataclass(slots=True)
class _Pending:
    """A tool call of the last model response that has no recorded result yet."""

    id: str
    name: str
    arguments: str
    started: bool


class _Turn:
    """The loop's work inside one command of an LLM agent."""

    def __init__(self, agent: LLMAgent, srv: _Server, log: _Log, ctx: ActionContext) -> None:
        self.agent = agent
        self.cls = type(agent)
        self.srv = srv
        self.log = log
        self.signal = ctx.signal
        self.state: BaseModel = ctx.state
        self.effects: list[Directive] = []
        self.sources: dict[str, tuple[ToolSource, SourceTool]] = {}

    @classmethod
    async def open(cls, ctx: ActionContext) -> _Turn:
        srv = current_server()
        agent = srv.agent if srv is not None and srv.id == ctx.agent_id else None
        if srv is None or not isinstance(agent, LLMAgent):
            raise ValidationError(
                "an LLM agent's turn runs inside a jido Runtime: start the agent with "
                "rt.start(...) and send it an ai.prompt signal",
                details={"agent_id": ctx.agent_id},
            )
        log = await _log_of(srv, agent.id)
        return cls(agent, srv, log, ctx)

    # -- state and commits ---------------------------------------------------------------------

    @property
    def ai(self) -> AIState:
        value: AIState = self.state.ai  # type: ignore[attr-defined]
        return value

    def set_ai(self, **changes: Any) -> None:
        data = self.state.model_dump()
        data["ai"] = {**data["ai"], **changes}
        self.state = self.cls.validate_state(data)

    async def commit(self, *entries: dict[str, Any], state: bool = True) -> None:
        """Append ``entries`` to the journal with the current state, in one write."""
        srv = self.srv
        store = srv.rt.store
        if store is not None and store.supports_journal:
            cp = None
            if state:
                cp = Checkpoint(
                    state=self.state.model_dump(),
                    agent_type=self.cls._type_name,
                    seq=srv.seq,
                    meta=srv.meta if srv.meta is not None else {},
                    epoch=srv.epoch,
                    timers=srv.timers.snapshot() if srv.timers is not None else {},
                    sensors=dict(srv.sensor_table or {}),
                )
            await store.append(
                self.agent.id, [_encode(e) for e in entries], checkpoint=cp, epoch=srv.epoch
            )
            if state:
                srv.saved_seq = srv.seq
        if state and srv.agent is not None:
            srv.agent.state = self.state  # what is committed is the agent's state
        for e in entries:
            self.log.add(e)

    def key(self, turn: int, call_id: str) -> str:
        return f"{self.agent.id}:{turn}:{call_id}"

    # -- entry points ---------------------------------------------------------------------------

    async def start(self, text: str) -> Any:
        if self.log.open_turn():
            if self.log.current()[1][-1]["k"] != "park":
                await self.resume()  # finish the interrupted turn first
            if self.log.open_turn():  # it waits for approvals
                raise ApprovalPendingError(
                    f"agent {self.agent.id!r} waits for approvals; decide them (ai.approval) "
                    "before sending a new prompt",
                    details={"pending": self._waiting_ids()},
                )
        turn = max(self.ai.turn, self.log.current()[0]) + 1
        parent = getattr(self.signal, "traceparent", None)
        with invoke_agent_span(self.cls.name, self.agent.id, turn, parent=parent) as trace:
            # the last reply leaves the state: the turn's checkpoints stay small
            self.set_ai(turn=turn, last=None, trace=trace)
            await self.commit({"k": "user", "turn": turn, "content": text})
            return await self._advance()

    async def resume(self) -> Any:
        if not self.log.open_turn():
            return self._finish(self.ai.last or {})
        turn = self.log.current()[0]
        ai = self.ai
        with invoke_agent_span(
            self.cls.name, self.agent.id, turn, parent=None, resumed_from=ai.trace
        ):
            return await self._advance()

    async def decide(self, p: _DecideParams) -> Any:
        rec = self.ai.approvals.get(p.tool_call_id)
        details = {"tool_call_id": p.tool_call_id, "agent_id": self.agent.id}
        if rec is None or rec["status"] not in ("pending", "expired"):
            raise ApprovalReplayedError(
                f"tool call {p.tool_call_id!r} is not waiting for approval (already decided, "
                "or unknown); approvals are single-use",
                details={**details, "status": None if rec is None else rec["status"]},
            )
        if p.args_sha256 != rec["args_sha256"]:
            raise ApprovalMismatchError(
                f"the decision is for other arguments than tool call {p.tool_call_id!r} has; "
                "approve the arguments shown in the approval request",
                details={**details, "expected": rec["args_sha256"], "got": p.args_sha256},
            )
        expired = rec["status"] == "expired" or (
            rec.get("expires_at") is not None and time.time() > rec["expires_at"]
        )
        if expired and p.approved:
            self._set_approval(p.tool_call_id, status="expired")
            await self.commit({"k": "decision", "id": p.tool_call_id, "status": "expired"})
            raise ApprovalExpiredError(
                f"the approval request for tool call {p.tool_call_id!r} expired; deny it to "
                "let the turn go on",
                details={**details, "expires_at": rec.get("expires_at")},
            )
        status = "approved" if p.approved else "denied"
        self._set_approval(p.tool_call_id, status=status, reason=p.reason)
        await self.commit({"k": "decision", "id": p.tool_call_id, "status": status})
        return await self._advance()

    def _set_approval(self, call_id: str, **changes: Any) -> None:
        approvals = dict(self.ai.approvals)
        approvals[call_id] = {**approvals.get(call_id, {}), **changes}
        self.set_ai(approvals=approvals)

    def _waiting_ids(self) -> list[str]:
        return [k for k, r in self.ai.approvals.items() if r["status"] in ("pending", "expired")]

    # -- the loop ---------------------------------------------------------------------------------

    async def _advance(self) -> Any:
        cls = self.cls
        turn, entries = self.log.current()
        steps = sum(1 for e in entries if e["k"] == "model")
        usage = Usage()
        for e in entries:
            if e["k"] == "model":
                usage = usage + Usage(*e["usage"])
        while True:
            last = next((e for e in reversed(entries) if e["k"] == "model"), None)
            if last is not None and last["msg"].get("tool_calls"):
                parked = await self._run_tools(turn, last, entries)
                _, entries = self.log.current()
                if parked is not None:
                    reply = self._reply(turn, entries, usage, "awaiting_approval", parked)
                    self.set_ai(last=reply)
                    return self._finish(reply)
            elif last is not None:
                return await self._end(turn, usage, "answer", last["msg"].get("content"))
            if steps >= cls.max_steps:
                return await self._end(turn, usage, "max_steps", None)
            if cls.max_turn_tokens is not None and usage.total_tokens >= cls.max_turn_tokens:
                return await self._end(turn, usage, "token_limit", None)
            try:
                resp = await self._call_model()
            except JidoError as err:
                await self._end(turn, usage, "error", None, error=err)
                raise
            steps += 1
            usage = usage + resp.usage
            u = resp.usage
            await self.commit(
                {
                    "k": "model",
                    "turn": turn,
                    "msg": resp.message(),
                    "usage": [u.input_tokens, u.output_tokens],
                },
                state=False,
            )
            _, entries = self.log.current()

    async def _tool_specs(self) -> list[ToolSpec]:
        specs = list(_own_specs(self.cls))
        sources = list(self.cls.tool_sources)
        sources += self.srv.rt.services.all(ToolSource)
        self.sources = {}
        for src in sources:
            for tool in await src.list_tools(self.agent.id):
                name = tool.spec.name
                if name in self.cls._ai_tools or name in self.sources:
                    continue  # the agent's own action (or the first source) wins
                self.sources[name] = (src, tool)
                specs.append(tool.spec)
        return specs

    async def _call_model(self) -> ModelResponse:
        cls = self.cls
        model = cls.model
        if model is None:
            raise ValidationError(
                f"LLM agent {cls.name!r} has no model; set `model = OpenAIModel(...)`",
                details={"agent": cls.name},
            )
        tools = await self._tool_specs()
        on_text = None
        if cls.stream_text:
            bus = self.srv.rt.bus
            agent_id = self.agent.id

            async def on_text_fn(piece: str) -> None:
                await bus.publish(
                    Signal(type=TEXT_DELTA, source=f"/agents/{agent_id}", data={"text": piece})
                )

            on_text = on_text_fn
        request = ModelRequest(
            messages=list(self.log.messages),
            system=cls.instructions or None,
            tools=tools,
            max_tokens=cls.max_tokens,
            on_text=on_text,
        )
        budget: TokenBudget | None = self.srv.rt.services.get(TokenBudget)
        if budget is None:
            return await _traced_complete(model, request)
        size = sum(len(str(m.get("content") or "")) for m in request.messages)
        estimate = size // 4 + (cls.max_tokens or 1024)
        reservation = await budget.reserve(self.agent.id, estimate)
        used = 0
        try:
            resp = await _traced_complete(model, request)
            used = resp.usage.total_tokens
            return resp
        finally:
            await budget.reconcile(reservation, used)

    async def _end(
        self,
        turn: int,
        usage: Usage,
        reason: str,
        text: str | None,
        *,
        error: JidoError | None = None,
    ) -> Any:
        _, entries = self.log.current()
        totals = dict(self.ai.usage)
        for k, v in usage.to_dict().items():
            totals[k] = totals.get(k, 0) + v
        reply = self._reply(turn, entries, usage, reason, None, text=text)
        if error is not None:
            reply["error"] = error.to_dict()
        approvals = {k: v for k, v in self.ai.approvals.items() if v.get("turn") != turn}
        self.set_ai(usage=totals, last=reply, approvals=approvals)
        end: dict[str, Any] = {"k": "end", "turn": turn, "reason": reason}
        await self.commit(end)
        return self._finish(reply)

    def _reply(
        self,
        turn: int,
        entries: list[dict[str, Any]],
        usage: Usage,
        reason: str,
        approvals: list[dict[str, Any]] | None,
        *,
        text: str | None = None,
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "text": text,
            "steps": sum(1 for e in entries if e["k"] == "model"),
            "usage": usage.to_dict(),
            "turn": turn,
            "stop_reason": reason,
            "tool_calls": sum(1 for e in entries if e["k"] == "result"),
        }
        if approvals is not None:
            reply["approvals"] = approvals
        return reply

    def _finish(self, reply: dict[str, Any]) -> Any:
        # the reply is the result; the state (tools may have changed it) is replaced as a whole
        return reply, [Replace(self.state), *self.effects]

    # -- tools ------------------------------------------------------------------------------------

    def _needs_approval(self, name: str) -> bool:
        act = self.cls._ai_tools.get(name)
        if act is not None:
            return bool(getattr(act, "requires_approval", False))
        found = self.sources.get(name)
        return found is not None and found[1].requires_approval

    async def _run_tools(
        self, turn: int, model_entry: dict[str, Any], entries: list[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        """Settle every tool call of ``model_entry``; the approval requests if the turn parks."""
        if not self.sources and any(
            c["name"] not in self.cls._ai_tools for c in model_entry["msg"]["tool_calls"]
        ):
            await self._tool_specs()
        done = {e["id"] for e in entries if e["k"] == "result"}
        started = {i for e in entries if e["k"] == "start" for i in e["ids"]}
        pending = [
            _Pending(c["id"], c["name"], c["arguments"], c["id"] in started)
            for c in model_entry["msg"]["tool_calls"]
            if c["id"] not in done
        ]
        # calls whose outcome was lost: reconcile, re-run or report
        rerun: list[_Pending] = []
        for p in pending:
            if p.started and not await self._settle_unknown(turn, p):
                rerun.append(p)
        # approvals
        runnable: list[_Pending] = list(rerun)
        waiting: list[dict[str, Any]] = []
        new_requests: list[dict[str, Any]] = []
        for p in pending:
            if p.started:
                continue
            if self._needs_approval(p.name):
                rec = self.ai.approvals.get(p.id)
                if rec is None:
                    rec = self._request_approval(turn, p)
                    new_requests.append(rec)
                status = rec["status"]
                if status == "denied":
                    await self._result(turn, p, _denied(p, rec), error=True)
                    continue
                if status != "approved":
                    waiting.append(rec)
                    continue
            runnable.append(p)
        if runnable:
            own = [p for p in runnable if p.name in self.cls._ai_tools]
            other = [p for p in runnable if p.name not in self.cls._ai_tools]

            async def run_own() -> None:
                for p in own:  # they share the agent's state: one after another
                    await self._start(turn, [p])  # each marked started only when it starts
                    await self._run_own(turn, p)

            async def run_other() -> None:
                await self._start(turn, other)  # they start together
                await _all(*(self._run_other(turn, p) for p in other))

            await _all(run_own(), run_other())
        if waiting:
            await self.commit({"k": "park", "turn": turn, "ids": [r["id"] for r in waiting]})
            for rec in new_requests:
                self.effects.append(
                    Emit(
                        Signal(
                            type=APPROVAL_REQUESTED,
                            source=f"/agents/{self.agent.id}",
                            data={"agent_id": self.agent.id, "tool_call_id": rec["id"], **rec},
                        )
                    )
                )
            return waiting
        return None

    async def _start(self, turn: int, calls: list[_Pending]) -> None:
        """Record that ``calls`` start (an approval they carry is used up in the same write)."""
        fresh = [p for p in calls if not p.started]
        if not fresh:
            return
        for p in fresh:
            if p.id in self.ai.approvals:
                self._set_approval(p.id, status="used")
        await self.commit({"k": "start", "turn": turn, "ids": [p.id for p in fresh]})

    def _request_approval(self, turn: int, p: _Pending) -> dict[str, Any]:
        timeout = self.cls.approval_timeout
        rec = {
            "id": p.id,
            "tool": p.name,
            "arguments": p.arguments,
            "args_sha256": _safe_sha(p.arguments),
            "status": "pending",
            "turn": turn,
            "expires_at": None if timeout is None else time.time() + timeout,
        }
        self._set_approval(p.id, **rec)
        return rec

    async def _result(self, turn: int, p: _Pending, content: str, *, error: bool) -> None:
        await self.commit(
            {
                "k": "result",
                "turn": turn,
                "id": p.id,
                "name": p.name,
                "content": content,
                "error": error,
            }
        )

    async def _settle_unknown(self, turn: int, p: _Pending) -> bool:
        """Settle a call that started without a recorded result; False: run it again."""
        key = self.key(turn, p.id)
        act = self.cls._ai_tools.get(p.name)
        if act is not None:
            reconcile = getattr(act, "reconcile", None)
            if reconcile is not None:
                binding = self.cls._binding(act)
                try:
                    params = act.Params.model_validate(
                        _normalize_args(act.Params, parse_tool_arguments(p.arguments))
                    )
                    ctx = self._ctx(turn, p, binding.key)
                    found = await binding.instance.reconcile(key, params, ctx)  # type: ignore[attr-defined]
                except JidoError as err:
                    await self._result(turn, p, tool_error_json(err), error=True)
                    return True
                if found is None:
                    return False
                result = found.model_dump() if isinstance(found, BaseModel) else dict(found)
                self.state = _merge(self.cls, binding, self.state, result)
                await self._result(turn, p, _dumps(result), error=False)
                return True
            if getattr(act, "idempotent", False):
                return False
        else:
            found_src = self.sources.get(p.name)
            if found_src is not None and found_src[1].idempotent:
                return False
        unknown = OutcomeUnknownError(
            f"tool call {p.id!r} ({p.name}) was interrupted and its outcome is unknown: it may "
            "or may not have taken effect. Check before retrying it.",
            details={"tool": p.name, "tool_call_id": p.id, "idempotency_key": key},
        )
        await self._result(turn, p, tool_error_json(unknown), error=True)
        return True

    def _ctx(self, turn: int, p: _Pending, slice_key: str | None) -> ActionContext:
        view = self.state if slice_key is None else getattr(self.state, slice_key)
        meta = {"idempotency_key": self.key(turn, p.id), "tool_call_id": p.id, "turn": turn}
        return ActionContext(view, self.agent.id, self.signal, None, meta)

    async def _run_own(self, turn: int, p: _Pending) -> None:
        with tool_span(p.name, p.id, own=True):
            await self._run_own_traced(turn, p)

    async def _run_own_traced(self, turn: int, p: _Pending) -> None:
        act = self.cls._ai_tools[p.name]
        meta = {"idempotency_key": self.key(turn, p.id), "tool_call_id": p.id, "turn": turn}
        try:
            args = _normalize_args(act.Params, parse_tool_arguments(p.arguments))
            new_state, result, effects = await self.agent._step(
                Instruction(act, args, meta), self.state, self.signal
            )
        except JidoError as err:
            err.details.setdefault("tool", p.name)
            await self._result(turn, p, tool_error_json(err, _accepted_args(act)), error=True)
            return
        self.state = new_state
        self.effects.extend(effects)
        await self._result(turn, p, _dumps(result), error=False)

    async def _run_other(self, turn: int, p: _Pending) -> None:
        with tool_span(p.name, p.id, own=False):
            await self._run_other_traced(turn, p)

    async def _run_other_traced(self, turn: int, p: _Pending) -> None:
        found = self.sources.get(p.name)
        if found is None:
            err = ValidationError(
                f"there is no tool named {p.name!r}; available tools: "
                + ", ".join(sorted([*self.cls._ai_tools, *self.sources])),
                details={"tool": p.name},
            )
            await self._result(turn, p, tool_error_json(err), error=True)
            return
        src, _tool = found
        try:
            args = parse_tool_arguments(p.arguments)
            content = await src.call_tool(
                p.name, args, idempotency_key=self.key(turn, p.id), agent_id=self.agent.id
            )
        except JidoError as err:
            err.details.setdefault("tool", p.name)
            await self._result(turn, p, tool_error_json(err), error=True)
            return
        except Exception as exc:  # a source's own failure is the model's to read, not a crash
            failed = ExecutionError(
                f"tool {p.name!r} failed: {exc!r}", details={"tool": p.name}, retryable=True
            )
            await self._result(turn, p, tool_error_json(failed), error=True)
            return
        await self._result(turn, p, content, error=_is_error(content))


async def _traced_complete(model: Any, request: ModelRequest) -> ModelResponse:
    """``model.complete(request)`` inside its GenAI ``chat`` span."""
    provider = str(getattr(model, "provider", "") or type(model).__name__)
    name = str(getattr(model, "model", "") or "model")
    with chat_span(provider, name, request.max_tokens) as span:
        resp: ModelResponse = await model.complete(request)
        record_usage(span, model=resp.model or name, stop_reason=resp.stop_reason, usage=resp.usage)
        return resp


_SPECS: dict[type[Any], tuple[ToolSpec, ...]] = {}


def _own_specs(cls: type[LLMAgent]) -> tuple[ToolSpec, ...]:
    specs = _SPECS.get(cls)
    if specs is None:
        specs = tuple(
            ToolSpec(a.name, a.description, a.to_tool()["function"]["parameters"], True)
            for a in cls._ai_tools.values()
        )
        _SPECS[cls] = specs
    return specs


async def _all(*aws: Coroutine[Any, Any, None]) -> None:
    """Run ``aws`` concurrently; once all are done, raise the first failure (if any).

    Every tool that started finishes (and records its result) even when another one fails.
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


def _is_error(content: str) -> bool:
    return content.startswith('{"error"')


def _safe_sha(arguments: str) -> str:
    try:
        return arguments_sha256(arguments)
    except JidoError:
        return hashlib.sha256(arguments.encode()).hexdigest()


def _denied(p: _Pending, rec: dict[str, Any]) -> str:
    err = ApprovalDeniedError(
        f"a person denied tool call {p.id!r} ({p.name})"
        + (f": {rec['reason']}" if rec.get("reason") else ""),
        details={"tool": p.name, "tool_call_id": p.id, "reason": rec.get("reason")},
    )
    return tool_error_json(err)
