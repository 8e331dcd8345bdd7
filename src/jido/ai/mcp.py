"""MCP both ways, with the official ``mcp`` SDK (install the ``mcp`` extra).

* :func:`mcp_server` serves a :class:`~jido.Runtime` as an MCP server: the given actions and
  the routes of its running agents become MCP tools. Serve it over stdio
  (:func:`serve_stdio`) or streamable HTTP (:class:`MCPHTTPServer`).
* :class:`MCPToolSource` makes an MCP server's tools usable by an :class:`~jido.ai.LLMAgent`
  (a :class:`~jido.ai.ToolSource`)::

      async with MCPToolSource("http://127.0.0.1:8000/mcp") as tools:
          rt.services.add(ToolSource, tools)

An agent route becomes the tool ``<agent_id>__<signal type with dots as _>`` when its pattern has
no wildcard; its input schema is the routed action's params schema, and a call sends the
signal to the agent (``ref.call``) with the arguments as data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import mcp_types as mt
import orjson
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

from jido._action import Action
from jido._errors import JidoError, ValidationError
from jido._runtime import Runtime
from jido._signal import Signal
from jido._tool import _dumps, execute_tool_call, tool_error_json
from jido.ai._routes import route_tools
from jido.ai._sources import SourceTool, ToolSource
from jido.ai._types import ToolSpec

__all__ = ["MCPHTTPServer", "MCPToolSource", "mcp_server", "serve_stdio"]


def _text(content: str, *, error: bool) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(text=content)], is_error=error)


def mcp_server(
    rt: Runtime,
    *,
    actions: Sequence[type[Action]] = (),
    agents: Sequence[str] | None = None,
    tools: Sequence[ToolSource] = (),
    name: str = "jido",
) -> Server[Any]:
    """An MCP server (official SDK, low-level ``Server``) exposing ``rt`` as tools.

    ``actions`` are served as tools run without an agent (``ctx.state`` is ``None``); the
    routes of the running agents ``agents`` (default: every agent running at listing time) are
    served as tools that send a signal to that agent. Tool results are the JSON results; errors
    are the structured JSON errors of :func:`jido.execute_tool_call` with ``isError`` set.
    The tools of the sources ``tools`` are served too (the cluster layer's catalog of the
    cluster's agents is one); a call passes the client's ``_meta["jido/idempotency_key"]``
    on (a fresh key when there is none). Pass ``agents=[]`` to serve only those.
    """
    by_name = {a.name: a for a in actions}

    async def source_tools() -> dict[str, tuple[ToolSource, SourceTool]]:
        found: dict[str, tuple[ToolSource, SourceTool]] = {}
        for source in tools:
            for tool in await source.list_tools(name):
                found.setdefault(tool.spec.name, (source, tool))
        return found

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mt.PaginatedRequestParams | None
    ) -> mt.ListToolsResult:
        out = [
            mt.Tool(name=a.name, description=a.description, input_schema=a.params_schema())
            for a in actions
        ]
        for tool_name, (agent_id, pattern, act) in route_tools(rt, agents).items():
            out.append(
                mt.Tool(
                    name=tool_name,
                    description=f"Send {pattern!r} to agent {agent_id!r}: {act.description}",
                    input_schema=act.params_schema(),
                )
            )
        for spec_name, (_, tool) in (await source_tools()).items():
            hints = mt.ToolAnnotations(idempotent_hint=True) if tool.idempotent else None
            out.append(
                mt.Tool(
                    name=spec_name,
                    description=tool.spec.description,
                    input_schema=tool.spec.parameters,
                    annotations=hints,
                )
            )
        return mt.ListToolsResult(tools=out)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mt.CallToolRequestParams
    ) -> mt.CallToolResult:
        args = params.arguments or {}
        if params.name in by_name:
            out = await execute_tool_call(params.name, args, actions)
            return _text(out, error=out.startswith('{"error"'))
        route = route_tools(rt, agents).get(params.name)
        if route is None and tools:
            found = (await source_tools()).get(params.name)
            if found is not None:
                meta: Mapping[str, Any] = params.meta or {}
                key = str(meta.get("jido/idempotency_key") or f"mcp:{uuid.uuid4().hex}")
                text = await found[0].call_tool(
                    params.name, args, idempotency_key=key, agent_id=name
                )
                return _text(text, error=text.startswith('{"error"'))
        if route is None:
            err = ValidationError(
                f"there is no tool named {params.name!r}", details={"tool": params.name}
            )
            return _text(tool_error_json(err), error=True)
        agent_id, pattern, _act = route
        try:
            result = await rt.call(agent_id, Signal(type=pattern, source="/mcp", data=args))
        except JidoError as err:
            err.details.setdefault("tool", params.name)
            return _text(tool_error_json(err), error=True)
        return _text(_dumps(result), error=False)

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(server: Server[Any]) -> None:
    """Serve ``server`` over this process's stdin/stdout until the client disconnects."""
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


class MCPHTTPServer:
    """Serve an MCP server over streamable HTTP on ``host`` and a free (or given) port.

    ``url`` is the endpoint to give a client (``http://host:port/mcp``). ``token``: every
    request must carry ``Authorization: Bearer <token>`` (compared in constant time); others
    get ``401`` and reach nothing. An async context manager; ``start()`` / ``close()`` also
    work.
    """

    def __init__(
        self,
        server: Server[Any],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
    ) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._token = token
        self._uvicorn: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The streamable-HTTP endpoint."""
        return f"http://{self.host}:{self.port}/mcp"

    async def start(self) -> None:
        """Bind the port and start serving (returns once the server accepts connections)."""
        app: Any = self.server.streamable_http_app(host=self.host)
        if self._token is not None:
            app = _bearer_only(app, self._token)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        self._uvicorn = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop serving."""
        server, task = self._uvicorn, self._task
        self._uvicorn = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        await task

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


def _bearer_only(app: Any, token: str) -> Any:
    """``app`` behind a bearer token: an HTTP request without it is answered ``401``."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(got, expected):
                body = b'{"error": "unauthorized: send the header Authorization: Bearer <token>"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="mcp"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


class MCPToolSource:
    """An MCP server's tools as a :class:`~jido.ai.ToolSource` for LLM agents.

    ``server`` is what the official ``mcp.Client`` connects to: a streamable-HTTP URL, a
    ``StdioServerParameters`` (a subprocess over stdio) or an in-process ``mcp`` server.
    ``prefix`` is prepended to the tool names (to keep several servers apart); ``idempotent``
    names tools that may safely run twice (a tool annotated ``idempotentHint`` counts too);
    ``requires_approval`` names tools that park the turn for a person's approval. The
    idempotency key of each call is sent in the request's ``_meta``
    (``"jido/idempotency_key"``). Use it as an async context manager (it holds one session).
    """

    def __init__(
        self,
        server: str | StdioServerParameters | Server[Any],
        *,
        prefix: str = "",
        idempotent: Sequence[str] = (),
        requires_approval: Sequence[str] = (),
    ) -> None:
        self.server = server
        self.prefix = prefix
        self.idempotent = frozenset(idempotent)
        self.requires_approval = frozenset(requires_approval)
        self._client: Client | None = None
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(Client(self.server))
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    def _session(self) -> Client:
        if self._client is None:
            raise ValidationError("use MCPToolSource as `async with MCPToolSource(...) as src:`")
        return self._client

    async def list_tools(self, agent_id: str) -> Sequence[SourceTool]:
        """The server's tools (names with ``prefix``)."""
        listed = await self._session().list_tools()
        out: list[SourceTool] = []
        for t in listed.tools:
            hint = bool(t.annotations and t.annotations.idempotent_hint)
            out.append(
                SourceTool(
                    ToolSpec(
                        self.prefix + t.name, t.description or "", dict(t.input_schema), False
                    ),
                    idempotent=hint or t.name in self.idempotent,
                    requires_approval=t.name in self.requires_approval,
                )
            )
        return out

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], *, idempotency_key: str, agent_id: str
    ) -> str:
        """Call the tool; its text content (JSON error text when the server reports an error)."""
        tool = name.removeprefix(self.prefix)
        meta: Any = {"jido/idempotency_key": idempotency_key}
        result = await self._session().call_tool(tool, dict(arguments), meta=meta)
        texts = [c.text for c in result.content if isinstance(c, mt.TextContent)]
        if result.structured_content is not None and not texts:
            texts = [_dumps(result.structured_content)]
        text = "\n".join(texts)
        if result.is_error and not text.startswith('{"error"'):
            return orjson.dumps(
                {"error": {"type": "tool_error", "message": text, "retryable": False}}
            ).decode()
        return text
