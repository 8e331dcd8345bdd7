"""Test an LLM agent without a provider: a scripted model and a local OpenAI-compatible server.

``ScriptedModel`` answers in process. ``OpenAITestServer`` is a real HTTP server on a free
loopback port that speaks the Chat Completions API (and Anthropic's Messages API on
``/v1/messages``), answers each request with the next scripted reply and records every request
it received, so a test can check the messages, tool-call ids and tools the agent sent::

    async with OpenAITestServer() as server:
        server.script(tool_reply(call("deposit", {"amount": 5})), text_reply("done"))
        model = OpenAIModel(base_url=server.url, model="test", api_key="k")
        ...
        assert server.requests[1].body["messages"][-1]["role"] == "tool"
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson

from jido.ai._errors import ModelError
from jido.ai._types import ModelRequest, ModelResponse, ToolCall, Usage

__all__ = [
    "HTTPFailure",
    "OpenAITestServer",
    "RecordedRequest",
    "ScriptedModel",
    "call",
    "text_reply",
    "tool_reply",
]

_ids = itertools.count(1)

Reply = ModelResponse | Callable[[Any], ModelResponse | Awaitable[ModelResponse]]


def call(
    name: str, arguments: Mapping[str, Any] | str | None = None, *, id: str | None = None
) -> ToolCall:
    """A tool call for a scripted reply (``id`` defaults to a fresh ``call_<n>``)."""
    args = arguments if isinstance(arguments, str) else orjson.dumps(dict(arguments or {})).decode()
    return ToolCall(id or f"call_{next(_ids)}", name, args)


def text_reply(
    text: str, *, input_tokens: int = 10, output_tokens: int | None = None
) -> ModelResponse:
    """A scripted final answer."""
    out = output_tokens if output_tokens is not None else max(1, len(text) // 4)
    return ModelResponse(
        text=text, usage=Usage(input_tokens, out), model="test", stop_reason="stop"
    )


def tool_reply(
    *calls: ToolCall, text: str | None = None, input_tokens: int = 10, output_tokens: int = 5
) -> ModelResponse:
    """A scripted reply asking for ``calls``."""
    return ModelResponse(
        text=text,
        tool_calls=tuple(calls),
        usage=Usage(input_tokens, output_tokens),
        model="test",
        stop_reason="tool_calls",
    )


@dataclass(frozen=True, slots=True)
class HTTPFailure:
    """A scripted HTTP error answer (``status``, optional ``Retry-After`` seconds)."""

    status: int = 500
    retry_after: float | None = None
    body: str = '{"error": {"message": "scripted failure"}}'


async def _resolve(reply: Any, arg: Any) -> Any:
    if callable(reply) and not isinstance(reply, ModelResponse | HTTPFailure):
        reply = reply(arg)
        if inspect.isawaitable(reply):
            reply = await reply
    return reply


class ScriptedModel:
    """A :class:`~jido.ai.Model` answering from a script, in process (no HTTP).

    Each reply is a ``ModelResponse`` (see :func:`text_reply`, :func:`tool_reply`) or a
    function of the :class:`~jido.ai.ModelRequest` returning one. ``requests`` records every
    request. When the script is used up, calls raise :class:`~jido.ai.ModelError`.
    """

    def __init__(self, *replies: Reply) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.requests: list[ModelRequest] = []

    def script(self, *replies: Reply) -> None:
        """Add replies at the end of the script."""
        self.replies.extend(replies)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer with the next scripted reply."""
        self.requests.append(request)
        if not self.replies:
            raise ModelError("the scripted model has no reply left", details={"model": "scripted"})
        out: ModelResponse = await _resolve(self.replies.popleft(), request)
        if request.on_text is not None and out.text:
            r = request.on_text(out.text)
            if inspect.isawaitable(r):
                await r
        return out


@dataclass(slots=True)
class RecordedRequest:
    """One request the test server received: path, headers (lower-case names), JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


def _openai_json(r: ModelResponse) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": r.text}
    if r.tool_calls:
        msg["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in r.tool_calls
        ]
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "model": r.model or "test",
        "choices": [
            {
                "index": 0,
                "message": msg,
                "finish_reason": r.stop_reason or ("tool_calls" if r.tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": r.usage.input_tokens,
            "completion_tokens": r.usage.output_tokens,
            "total_tokens": r.usage.total_tokens,
        },
    }


def _openai_sse(r: ModelResponse) -> bytes:
    chunks: list[dict[str, Any]] = []
    base = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion.chunk", "model": r.model}
    text = r.text or ""
    for i in range(0, len(text), 8):
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": text[i : i + 8]}}]})
    for n, c in enumerate(r.tool_calls):
        delta = {
            "tool_calls": [
                {
                    "index": n,
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
            ]
        }
        chunks.append({**base, "choices": [{"index": 0, "delta": delta}]})
    finish = r.stop_reason or ("tool_calls" if r.tool_calls else "stop")
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append(
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": r.usage.input_tokens,
                "completion_tokens": r.usage.output_tokens,
            },
        }
    )
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _anthropic_json(r: ModelResponse) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": r.text}] if r.text else []
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": orjson.loads(c.arguments or "{}")}
        for c in r.tool_calls
    ]
    return {
        "id": f"msg_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": r.model or "test",
        "content": content,
        "stop_reason": "tool_use" if r.tool_calls else "end_turn",
        "usage": {"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens},
    }


def _anthropic_sse(r: ModelResponse) -> bytes:
    data = _anthropic_json(r)
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {**data, "content": [], "usage": {"input_tokens": r.usage.input_tokens}},
        }
    ]
    for i, block in enumerate(data["content"]):
        if block["type"] == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "text_delta", "text": block["text"]},
                }
            )
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append({"type": "content_block_start", "index": i, "content_block": start})
            partial = orjson.dumps(block["input"]).decode()
            events.append(
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": partial},
                }
            )
        events.append({"type": "content_block_stop", "index": i})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": data["stop_reason"]},
            "usage": {"output_tokens": r.usage.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


class OpenAITestServer:
    """A scripted OpenAI-compatible HTTP server on ``127.0.0.1`` and a free port.

    ``url`` is the base URL to give a model (``http://127.0.0.1:<port>/v1``). Each
    ``POST /v1/chat/completions`` (or ``/v1/messages``, Anthropic format) is answered with the
    next scripted reply: a ``ModelResponse``, an :class:`HTTPFailure`, or a function of the
    request's JSON body returning either. With the script used up it answers HTTP 400. Every
    request is recorded in ``requests``. ``stream: true`` requests get server-sent events.
    Use it as ``async with OpenAITestServer() as server:`` (or ``start()`` / ``close()``).
    """

    def __init__(self, *replies: Reply | HTTPFailure) -> None:
        self.replies: deque[Any] = deque(replies)
        self.requests: list[RecordedRequest] = []
        self.default: Reply | None = None
        """Answer used when the script is empty (``None``: HTTP 400)."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        """The base URL (``.../v1``) to give an ``OpenAIModel``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        """The server root (give it to an ``AnthropicModel`` as ``base_url``)."""
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply | HTTPFailure) -> None:
        """Add replies at the end of the script."""
        self.replies.extend(replies)

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for w in list(self._conns):
            w.close()
        if self._tasks:  # let the handlers see their closed connections and return
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in stuck:  # a scripted reply that never answers
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(n) if n else b""
                status, ctype, payload, extra = await self._answer(method, path, headers, raw)
                head = [
                    f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}",
                    f"content-type: {ctype}",
                    f"content-length: {len(payload)}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:
            # only at teardown; asyncio's stream server would log a cancelled handler as an error
            return
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return 400, "application/json", b'{"error": {"message": "bad json"}}', {}
        self.requests.append(RecordedRequest(path, headers, body if isinstance(body, dict) else {}))
        anthropic = path.endswith("/messages")
        if method != "POST" or not (anthropic or path.endswith("/chat/completions")):
            return 404, "application/json", b'{"error": {"message": "not found"}}', {}
        reply = self.replies.popleft() if self.replies else self.default
        if reply is None:
            return 400, "application/json", b'{"error": {"message": "script exhausted"}}', {}
        reply = await _resolve(reply, body)
        if isinstance(reply, HTTPFailure):
            extra = {} if reply.retry_after is None else {"retry-after": f"{reply.retry_after:g}"}
            return reply.status, "application/json", reply.body.encode(), extra
        stream = bool(body.get("stream"))
        if anthropic:
            if stream:
                return 200, "text/event-stream", _anthropic_sse(reply), {}
            return 200, "application/json", orjson.dumps(_anthropic_json(reply)), {}
        if stream:
            return 200, "text/event-stream", _openai_sse(reply), {}
        return 200, "application/json", orjson.dumps(_openai_json(reply)), {}
