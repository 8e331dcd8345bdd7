"""``HttpRequest``: an HTTP call with a timeout and a bounded response, via httpx."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import BaseModel, Field

from jido._action import Action, ActionContext
from jido._errors import ExecutionError, TimeoutError, ValidationError

__all__ = ["HostNotAllowedError", "HttpHeader", "HttpRequest"]

_H = TypeVar("_H", bound="HttpRequest")


#: In ``allowed_hosts``, lets the action call any host (an explicit opt-in).
ANY_HOST = "*"


class HostNotAllowedError(ValidationError):
    """The URL's host is not on the action's allow-list (empty unless given).

    Bind the hosts it may call: ``HttpRequest.for_hosts("api.example.com")`` (or
    ``for_hosts("*")`` to allow any host, knowingly).
    """

    type = "host_not_allowed"


class HttpHeader(BaseModel):
    """One HTTP header."""

    name: str = Field(description="Header name")
    value: str = Field(description="Header value")


class HttpRequest(Action):
    """Make an HTTP request and return status, headers and (bounded) body text.

    Transport errors and timeouts are retryable; any HTTP status is a result, not an error.
    It calls only the hosts on its allow-list, which is empty: bind them with
    ``HttpRequest.for_hosts("api.example.com", ...)`` (``"*"`` allows any host). An agent
    that lets a model choose URLs would otherwise reach anything its machine can, internal
    services included. Redirects are not followed.
    """

    name = "http_request"
    category = "network"
    tags = ("network", "http")
    timeout = 330.0
    allowed_hosts: ClassVar[tuple[str, ...]] = ()
    max_response_bytes: ClassVar[int] = 1_048_576

    class Params(BaseModel):
        url: str = Field(pattern=r"^https?://", description="Absolute http(s) URL")
        method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = Field(
            default="GET", description="HTTP method"
        )
        headers: list[HttpHeader] = Field(default_factory=list, description="Request headers")
        body: str | None = Field(default=None, description="Raw request body text")
        json_body: str | None = Field(
            default=None, description="JSON text sent as the body (content-type application/json)"
        )
        timeout: float = Field(default=10.0, gt=0, le=300, description="Timeout in seconds")

    @classmethod
    def for_hosts(cls: type[_H], *hosts: str) -> type[_H]:
        """A subclass (same tool name) that may only call the given host names (``"*"``: any)."""
        namespace: dict[str, Any] = {
            "name": cls.name,
            "__doc__": cls.__doc__,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "allowed_hosts": tuple(h.lower() for h in hosts),
        }
        return type(cls.__name__, (cls,), namespace)

    async def run(self, params: Params, ctx: ActionContext) -> dict[str, Any]:
        """Send the request (allowed hosts only) and return status, headers and body."""
        host = (urlsplit(params.url).hostname or "").lower()
        if ANY_HOST not in self.allowed_hosts and host not in self.allowed_hosts:
            allowed = ", ".join(self.allowed_hosts) or "none"
            raise HostNotAllowedError(
                f"host {host!r} is not allowed (allowed hosts: {allowed}); bind the hosts this "
                f"action may call with {type(self).__name__}.for_hosts(...)",
                details={
                    "action": self.name,
                    "host": host,
                    "allowed_hosts": list(self.allowed_hosts),
                    "errors": [{"loc": ["url"], "msg": "host not allowed", "type": "host"}],
                },
            )
        if params.body is not None and params.json_body is not None:
            raise ValidationError(
                "give either body or json_body, not both",
                details={
                    "action": self.name,
                    "errors": [
                        {"loc": ["json_body"], "msg": "both bodies given", "type": "conflict"}
                    ],
                },
            )
        headers = [(h.name, h.value) for h in params.headers]
        content: bytes | None = None
        if params.body is not None:
            content = params.body.encode()
        elif params.json_body is not None:
            try:
                orjson.loads(params.json_body)
            except orjson.JSONDecodeError as exc:
                raise ValidationError(
                    f"json_body is not valid JSON: {exc}",
                    details={
                        "action": self.name,
                        "errors": [{"loc": ["json_body"], "msg": str(exc), "type": "json_invalid"}],
                    },
                ) from None
            content = params.json_body.encode()
            headers.append(("content-type", "application/json"))
        timeout = params.timeout
        if ctx.deadline is not None:
            timeout = max(0.001, min(timeout, ctx.deadline - asyncio.get_running_loop().time()))
        limit = self.max_response_bytes
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
                client.stream(params.method, params.url, headers=headers, content=content) as resp,
            ):
                chunks: list[bytes] = []
                got = 0
                truncated = False
                async for chunk in resp.aiter_bytes():
                    chunks.append(chunk)
                    got += len(chunk)
                    if got > limit:
                        truncated = True
                        break
                body = b"".join(chunks)[:limit]
        except httpx.TimeoutException as exc:
            raise TimeoutError(
                f"HTTP {params.method} {params.url} timed out after {timeout:.3g}s",
                details={"action": self.name, "url": params.url},
                cause=exc,
            ) from exc
        except httpx.InvalidURL as exc:
            raise ValidationError(
                f"invalid URL {params.url!r}: {exc}",
                details={
                    "action": self.name,
                    "errors": [{"loc": ["url"], "msg": str(exc), "type": "url"}],
                },
            ) from exc
        except httpx.TransportError as exc:
            raise ExecutionError(
                f"HTTP {params.method} {params.url} failed: {type(exc).__name__}: {exc}",
                details={"action": self.name, "url": params.url},
                retryable=True,
                cause=exc,
            ) from exc
        text = body.decode(resp.encoding or "utf-8", errors="replace")
        result: dict[str, Any] = {
            "status": resp.status_code,
            "headers": dict(resp.headers),
            "text": text,
            "truncated": truncated,
            "url": str(resp.url),
        }
        if not truncated and "json" in resp.headers.get("content-type", ""):
            with contextlib.suppress(orjson.JSONDecodeError):
                result["json"] = orjson.loads(body)
        return result
