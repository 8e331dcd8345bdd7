"""``OpenAIModel``: any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, llama.cpp,
Ollama, LiteLLM, ...)."""

from __future__ import annotations

import inspect
from typing import Any

import orjson

from jido.ai._http import HTTPModel
from jido.ai._types import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage

__all__ = ["OpenAIModel"]


def openai_messages(system: str | None, messages: list[Message] | Any) -> list[dict[str, Any]]:
    """Provider-neutral messages → Chat Completions messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for m in messages:
        role = m["role"]
        if role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": m.get("content")}
            calls = m.get("tool_calls")
            if calls:
                msg["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in calls
                ]
            out.append(msg)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]})
        else:
            out.append({"role": role, "content": m["content"]})
    return out


def openai_tool(spec: ToolSpec) -> dict[str, Any]:
    """A tool spec as a Chat Completions function tool."""
    fn: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "parameters": spec.parameters,
    }
    if spec.strict:
        fn["strict"] = True
    return {"type": "function", "function": fn}


class OpenAIModel(HTTPModel):
    """A model behind an OpenAI-compatible ``POST {base_url}/chat/completions``.

    ::

        OpenAIModel(base_url="http://127.0.0.1:8000/v1", model="m", api_key="k")

    ``api_key`` is sent as ``Authorization: Bearer``. See :class:`HTTPModel` for retries and
    timeouts. With ``request.on_text`` the answer is streamed (``stream: true``) and the text
    handed to the callback as it arrives; tool calls and usage are gathered from the stream.
    """

    def __init__(
        self,
        *,
        base_url: str = "https://api.openai.com/v1",
        model: str,
        api_key: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url=base_url, model=model, api_key=api_key, **options)

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(request.system, request.messages),
        }
        if request.tools:
            body["tools"] = [openai_tool(t) for t in request.tools]
        max_tokens = request.max_tokens or self.max_tokens
        if max_tokens:
            body["max_tokens"] = max_tokens
        return body

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Call the endpoint once (with retries) and return its answer."""
        body = self._body(request)
        if request.on_text is not None:
            return await self._stream(body, request)
        data = await self._post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            msg = choice["message"]
            calls = tuple(
                ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}")
                for c in msg.get("tool_calls") or ()
            )
            usage = data.get("usage") or {}
            return ModelResponse(
                text=msg.get("content"),
                tool_calls=calls,
                usage=Usage(
                    int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                ),
                model=str(data.get("model") or self.model),
                stop_reason=choice.get("finish_reason"),
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise self._error(
                f"model {self.model!r} answered without a usable choice: {exc!r}",
                status=200,
                body=orjson.dumps(data)[:500].decode(),
            ) from exc

    async def _stream(self, body: dict[str, Any], request: ModelRequest) -> ModelResponse:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        on_text = request.on_text
        assert on_text is not None
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        finish = None
        model = self.model
        async for payload in self._stream_lines("/chat/completions", body):
            if payload == "[DONE]":
                break
            chunk = orjson.loads(payload)
            model = chunk.get("model") or model
            if chunk.get("usage"):
                u = chunk["usage"]
                usage = Usage(
                    int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
                )
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if piece:
                    text.append(piece)
                    r = on_text(piece)
                    if inspect.isawaitable(r):
                        await r
                for c in delta.get("tool_calls") or ():
                    slot = calls.setdefault(
                        int(c.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                    )
                    slot["id"] = c.get("id") or slot["id"]
                    fn = c.get("function") or {}
                    slot["name"] = fn.get("name") or slot["name"]
                    slot["arguments"] += fn.get("arguments") or ""
                finish = choice.get("finish_reason") or finish
        return ModelResponse(
            text="".join(text) if text else None,
            tool_calls=tuple(
                ToolCall(c["id"], c["name"], c["arguments"] or "{}")
                for _, c in sorted(calls.items())
            ),
            usage=usage,
            model=model,
            stop_reason=finish,
        )
