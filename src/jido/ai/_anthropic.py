"""``AnthropicModel``: Anthropic's Messages API."""

from __future__ import annotations

import inspect
from typing import Any

import orjson

from jido.ai._http import HTTPModel
from jido.ai._types import Message, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["AnthropicModel"]


def _args(text: str) -> Any:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def anthropic_messages(messages: list[Message] | Any) -> list[dict[str, Any]]:
    """Provider-neutral messages → Messages API turns (tool results become user turns;
    consecutive turns of one role are merged, as the API wants them alternating)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        blocks: list[dict[str, Any]]
        if role == "assistant":
            blocks = [{"type": "text", "text": m["content"]}] if m.get("content") else []
            blocks += [
                {
                    "type": "tool_use",
                    "id": c["id"],
                    "name": c["name"],
                    "input": _args(c["arguments"]),
                }
                for c in m.get("tool_calls") or ()
            ]
        elif role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": m["tool_call_id"],
                    "content": m["content"],
                    "is_error": bool(m.get("is_error")),
                }
            ]
        else:
            blocks = [{"type": "text", "text": m["content"]}]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


class AnthropicModel(HTTPModel):
    """A Claude model behind ``POST {base_url}/v1/messages``.

    ::

        AnthropicModel(model="claude-sonnet-4-5", api_key="...")

    ``api_key`` is sent as ``x-api-key`` with ``anthropic-version``. See :class:`HTTPModel` for
    retries and timeouts. ``max_tokens`` (required by the API) defaults to 4096. With
    ``request.on_text`` the answer is streamed and its text handed to the callback.
    """

    def __init__(
        self,
        *,
        base_url: str = "https://api.anthropic.com",
        model: str,
        api_key: str | None = None,
        version: str = "2023-06-01",
        **options: Any,
    ) -> None:
        options.setdefault("max_tokens", 4096)
        super().__init__(base_url=base_url, model=model, api_key=api_key, **options)
        self.version = version

    def _auth_headers(self) -> dict[str, str]:
        h = {"anthropic-version": self.version}
        if self.api_key:
            h["x-api-key"] = self.api_key
        return h

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens or self.max_tokens,
            "messages": anthropic_messages(request.messages),
        }
        if request.system:
            body["system"] = request.system
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        return body

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Call the Messages API once (with retries) and return its answer."""
        body = self._body(request)
        if request.on_text is not None:
            return await self._stream(body, request)
        data = await self._post("/v1/messages", body)
        try:
            text = [b["text"] for b in data["content"] if b.get("type") == "text"]
            calls = tuple(
                ToolCall(b["id"], b["name"], orjson.dumps(b.get("input") or {}).decode())
                for b in data["content"]
                if b.get("type") == "tool_use"
            )
            usage = data.get("usage") or {}
        except (KeyError, TypeError) as exc:
            raise self._error(
                f"model {self.model!r} answered without usable content: {exc!r}", status=200
            ) from exc
        return ModelResponse(
            text="".join(text) if text else None,
            tool_calls=calls,
            usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
            model=str(data.get("model") or self.model),
            stop_reason=data.get("stop_reason"),
        )

    async def _stream(self, body: dict[str, Any], request: ModelRequest) -> ModelResponse:
        on_text = request.on_text
        assert on_text is not None
        blocks: dict[int, dict[str, Any]] = {}
        inp = out = 0
        stop = None
        model = self.model
        async for payload in self._stream_lines("/v1/messages", {**body, "stream": True}):
            ev = orjson.loads(payload)
            kind = ev.get("type")
            if kind == "message_start":
                msg = ev.get("message") or {}
                model = msg.get("model") or model
                inp = int((msg.get("usage") or {}).get("input_tokens") or 0)
            elif kind == "content_block_start":
                blocks[int(ev["index"])] = {**ev["content_block"], "_json": ""}
            elif kind == "content_block_delta":
                b = blocks[int(ev["index"])]
                d = ev["delta"]
                if d.get("type") == "text_delta":
                    b["text"] = b.get("text", "") + d["text"]
                    r = on_text(d["text"])
                    if inspect.isawaitable(r):
                        await r
                elif d.get("type") == "input_json_delta":
                    b["_json"] += d.get("partial_json", "")
            elif kind == "message_delta":
                out = int((ev.get("usage") or {}).get("output_tokens") or out)
                stop = (ev.get("delta") or {}).get("stop_reason") or stop
        ordered = [blocks[i] for i in sorted(blocks)]
        text = "".join(b.get("text", "") for b in ordered if b.get("type") == "text")
        calls = tuple(
            ToolCall(b["id"], b["name"], b["_json"] or "{}")
            for b in ordered
            if b.get("type") == "tool_use"
        )
        return ModelResponse(
            text=text or None,
            tool_calls=calls,
            usage=Usage(inp, out),
            model=model,
            stop_reason=stop,
        )
