"""What the HTTP models share: one ``httpx.AsyncClient`` per event loop, retries, timeouts.

``httpx`` is already a dependency of ``jido`` (HTTP actions and dispatch use it); talking to
providers through it directly needs no SDK and no SDK version pins, and one client serves every
OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, ...) as well as Anthropic.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from jido.ai._errors import ModelError

__all__ = ["HTTPModel"]

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(parsed.timestamp() - time.time(), 0.0)


class HTTPModel:
    """Base of the HTTP models: POST JSON with retries on 429/5xx and connection errors.

    Args:
        base_url: the provider's API root.
        model: the model name sent with each request.
        api_key: the key (sent as the provider expects).
        timeout: seconds for one HTTP attempt.
        max_retries: retries after the first attempt (rate limits, server errors, timeouts,
            connection errors); the wait honours ``Retry-After`` and otherwise backs off
            exponentially from ``backoff_base`` up to ``backoff_max`` seconds.
        max_tokens: default limit on the output tokens of one call.
        headers: extra HTTP headers.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_tokens = max_tokens
        self.headers = dict(headers or {})
        self.calls = 0
        """HTTP attempts made (retries included)."""
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    def _client(self) -> httpx.AsyncClient:
        # a model is usually a class attribute shared by every agent: one client per loop
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(timeout=self.timeout)
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _error(self, message: str, **details: Any) -> ModelError:
        retryable = details.get("status") in _RETRY_STATUS or details.get("status") is None
        return ModelError(
            message, details={"model": self.model, **details}, retryable=bool(retryable)
        )

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the decoded JSON answer (retrying as configured)."""
        async with self._send(path, body, stream=False) as resp:
            data = await resp.aread()
        try:
            out = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise self._error(
                f"model {self.model!r} answered with unreadable JSON", body=data[:500].decode()
            ) from exc
        if not isinstance(out, dict):
            raise self._error(f"model {self.model!r} answered {type(out).__name__}, not an object")
        return out

    async def _stream_lines(self, path: str, body: dict[str, Any]) -> AsyncIterator[str]:
        """POST ``body`` and yield the ``data:`` payloads of a server-sent-events answer."""
        async with self._send(path, body, stream=True) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    yield line[5:].strip()

    def _send(self, path: str, body: dict[str, Any], *, stream: bool) -> _Attempts:
        return _Attempts(self, path, body, stream)


class _Attempts:
    """An async context manager yielding a successful response after retries."""

    def __init__(self, model: HTTPModel, path: str, body: dict[str, Any], stream: bool) -> None:
        self.m = model
        self.path = path
        self.body = orjson.dumps(body)
        self.stream = stream
        self.resp: httpx.Response | None = None

    async def __aenter__(self) -> httpx.Response:
        m = self.m
        url = f"{m.base_url}{self.path}"
        headers = {"content-type": "application/json", **m._auth_headers(), **m.headers}
        client = m._client()
        attempt = 0
        while True:
            attempt += 1
            m.calls += 1
            wait: float | None = None
            try:
                req = client.build_request("POST", url, content=self.body, headers=headers)
                resp = await client.send(req, stream=True)
            except httpx.TimeoutException as exc:
                err = m._error(
                    f"model {m.model!r} did not answer within {m.timeout}s", attempts=attempt
                )
                err.__cause__ = exc
            except httpx.HTTPError as exc:
                err = m._error(f"model {m.model!r} unreachable at {url}: {exc}", attempts=attempt)
                err.__cause__ = exc
            else:
                if resp.status_code < 400:
                    self.resp = resp
                    return resp
                text = (await resp.aread())[:2000].decode(errors="replace")
                await resp.aclose()
                err = m._error(
                    f"model {m.model!r} answered HTTP {resp.status_code}: {text[:300]}",
                    status=resp.status_code,
                    attempts=attempt,
                    body=text,
                )
                if resp.status_code in _RETRY_STATUS:
                    wait = _retry_after(resp.headers)
            if not err.retryable or attempt > m.max_retries:
                raise err
            if wait is None:
                wait = min(m.backoff_max, m.backoff_base * 2 ** (attempt - 1))
                wait *= 0.5 + random.random() / 2
            await asyncio.sleep(wait)

    async def __aexit__(self, *exc: object) -> None:
        if self.resp is not None:
            await self.resp.aclose()
