"""Approvals: a tool marked ``requires_approval`` parks the turn until a bound decision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import BaseModel

from jido import Action, ActionContext, Runtime, Signal, SQLiteStore
from jido.ai import (
    ApprovalExpiredError,
    ApprovalMismatchError,
    ApprovalPendingError,
    ApprovalReplayedError,
    LLMAgent,
    OpenAIModel,
    arguments_sha256,
)
from jido.ai.testing import OpenAITestServer, call, text_reply, tool_reply


class Vault(BaseModel):
    opened: int = 0


class OpenVault(Action):
    """Open the vault."""

    name = "open_vault"
    requires_approval: ClassVar[bool] = True

    class Params(BaseModel):
        door: str

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"opened": ctx.state.opened + 1}


@pytest.fixture
async def server() -> AsyncIterator[OpenAITestServer]:
    async with OpenAITestServer() as s:
        yield s


def guard(server: OpenAITestServer, **attrs: Any) -> type[LLMAgent]:
    ns: dict[str, Any] = {
        "state_model": Vault,
        "actions": [OpenVault],
        "model": OpenAIModel(base_url=server.url, model="m", api_key="k"),
        **attrs,
    }
    return type("Guard", (LLMAgent,), ns)


def prompt(text: str) -> Signal:
    return Signal(type="ai.prompt", source="/u", data={"text": text})


def decide(call_id: str, sha: str, approved: bool = True) -> Signal:
    data = {"tool_call_id": call_id, "approved": approved, "args_sha256": sha}
    return Signal(type="ai.approval", source="/ops", data=data)


async def test_park_request_then_approve_runs_the_tool_once(server: OpenAITestServer) -> None:
    server.script(tool_reply(call("open_vault", {"door": "front"}, id="v1")), text_reply("open"))
    requests: list[Signal] = []
    async with Runtime() as rt:

        async def on_request(sig: Signal) -> None:
            requests.append(sig)

        rt.bus.subscribe("ai.approval.requested", on_request)
        ref = await rt.start(guard(server), id="g1")
        out = await ref.call(prompt("open the front door"))
        assert out["stop_reason"] == "awaiting_approval" and out["text"] is None
        (req,) = out["approvals"]
        sha = arguments_sha256({"door": "front"})
        assert req["id"] == "v1" and req["args_sha256"] == sha and req["tool"] == "open_vault"
        await rt.wait_idle()
        assert [s.data["tool_call_id"] for s in requests] == ["v1"]  # type: ignore[index]
        with pytest.raises(ApprovalPendingError):
            await ref.call(prompt("anything else?"))
        with pytest.raises(ApprovalMismatchError):
            await ref.call(decide("v1", arguments_sha256({"door": "back"})))
        done = await ref.call(decide("v1", sha))
        assert done["text"] == "open"
        st: Any = await ref.state()
        assert st.opened == 1
        with pytest.raises(ApprovalReplayedError):
            await ref.call(decide("v1", sha))
        with pytest.raises(ApprovalReplayedError):
            await ref.call(decide("nope", sha))
        assert (await ref.state()).opened == 1  # type: ignore[attr-defined]
    assert len(server.requests) == 2


async def test_denial_is_reported_to_the_model(server: OpenAITestServer) -> None:
    server.script(tool_reply(call("open_vault", {"door": "x"}, id="v1")), text_reply("denied"))
    async with Runtime() as rt:
        ref = await rt.start(guard(server), id="g1")
        await ref.call(prompt("open"))
        out = await ref.call(decide("v1", arguments_sha256({"door": "x"}), approved=False))
        assert out["text"] == "denied"
        assert (await ref.state()).opened == 0  # type: ignore[attr-defined]
    tool = server.requests[1].body["messages"][-1]
    assert orjson.loads(tool["content"])["error"]["type"] == "approval_denied"


async def test_expired_approval_is_refused_and_a_denial_still_accepted(
    server: OpenAITestServer,
) -> None:
    server.script(tool_reply(call("open_vault", {"door": "x"}, id="v1")), text_reply("ok"))
    async with Runtime() as rt:
        ref = await rt.start(guard(server, approval_timeout=0.0), id="g1")
        await ref.call(prompt("open"))
        sha = arguments_sha256({"door": "x"})
        with pytest.raises(ApprovalExpiredError):
            await ref.call(decide("v1", sha))
        out = await ref.call(decide("v1", sha, approved=False))
        assert out["text"] == "ok"
        assert (await ref.state()).opened == 0  # type: ignore[attr-defined]


async def test_a_parked_turn_survives_a_restart(server: OpenAITestServer, tmp_path: Any) -> None:
    server.script(tool_reply(call("open_vault", {"door": "x"}, id="v1")), text_reply("open"))
    agent = guard(server)
    async with Runtime(SQLiteStore(tmp_path / "g.db")) as rt:
        ref = await rt.start(agent, id="g1")
        assert (await ref.call(prompt("open")))["stop_reason"] == "awaiting_approval"
    async with Runtime(SQLiteStore(tmp_path / "g.db")) as rt:
        ref = await rt.start(agent, id="g1")
        await rt.wait_idle()
        assert len(server.requests) == 1  # parked: nothing resumed on its own
        out = await ref.call(decide("v1", arguments_sha256({"door": "x"})))
        assert out["text"] == "open"
    async with Runtime(SQLiteStore(tmp_path / "g.db")) as rt:
        ref = await rt.start(agent, id="g1")
        with pytest.raises(ApprovalReplayedError):  # single use, also after a restart
            await ref.call(decide("v1", arguments_sha256({"door": "x"})))
        assert (await ref.state()).opened == 1  # type: ignore[attr-defined]
