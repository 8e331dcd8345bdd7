"""Dispatch adapters: deliver a signal somewhere (a bus, a callable, a logger, HTTP, a webhook).

Each adapter is a small :class:`Dispatch` with an async lifecycle (``open``/``close``, or
``async with``) and one method, ``await adapter.dispatch(signal)``. An adapter is also a valid
bus handler (``bus.subscribe("order.*", HttpDispatch(url))``). :func:`dispatch_all` sends one
signal through several adapters at once and isolates failures: each adapter's outcome is
reported in a :class:`DispatchResult`, one failing adapter never stops the others.

HTTP adapters follow the CloudEvents HTTP binding: binary mode (``ce-*`` headers, ``data`` as
the body) or structured mode (``application/cloudevents+json`` body). The webhook adapter adds
an HMAC-SHA256 signature over ``"<timestamp>." + body`` in ``X-Jido-Signature``
(``sha256=<hex>``) with the Unix timestamp in ``X-Jido-Timestamp``; receivers check it with
:func:`verify_webhook`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import httpx

from jido._codec import STRUCTURED_CONTENT_TYPE, encode_json
from jido._errors import JidoError
from jido._signal import Signal

if TYPE_CHECKING:
    from jido._bus import Bus

__all__ = [
    "BusDispatch",
    "CallableDispatch",
    "Dispatch",
    "DispatchError",
    "DispatchResult",
    "HttpDispatch",
    "LoggerDispatch",
    "WebhookDispatch",
    "dispatch_all",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "X-Jido-Signature"
TIMESTAMP_HEADER = "X-Jido-Timestamp"

_logger = logging.getLogger("jido.dispatch")


class DispatchError(JidoError):
    """A dispatch adapter could not deliver a signal. ``retryable`` says if a retry may help."""

    type = "dispatch_error"


class Dispatch(ABC):
    """Base of dispatch adapters: ``open``/``close`` lifecycle and ``dispatch(signal)``."""

    name: str = "dispatch"
    """A name for logs and results."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (called by ``async with``; optional for most adapters)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @abstractmethod
    async def dispatch(self, signal: Signal) -> None:
        """Deliver ``signal``; raise :class:`DispatchError` (or any error) on failure."""

    async def __call__(self, signal: Signal) -> None:
        """Same as :meth:`dispatch`, so an adapter can be a bus handler."""
        await self.dispatch(signal)

    async def __aenter__(self) -> Dispatch:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class BusDispatch(Dispatch):
    """Publishes the signal on a :class:`jido.Bus`."""

    def __init__(self, bus: Bus, *, name: str = "bus") -> None:
        """Dispatch to ``bus``."""
        self.bus = bus
        self.name = name

    async def dispatch(self, signal: Signal) -> None:
        """Publish ``signal`` on the bus."""
        await self.bus.publish(signal)


class CallableDispatch(Dispatch):
    """Calls a function (sync or async) with the signal."""

    def __init__(
        self, fn: Callable[[Signal], Awaitable[Any]] | Callable[[Signal], Any], *, name: str = ""
    ) -> None:
        """Dispatch to ``fn``."""
        if not callable(fn):
            raise DispatchError(f"CallableDispatch needs a callable, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", "callable")

    async def dispatch(self, signal: Signal) -> None:
        """Call the function (awaiting it when it returns an awaitable)."""
        result = self.fn(signal)
        if inspect.isawaitable(result):
            await result


class LoggerDispatch(Dispatch):
    """Writes the signal to a :mod:`logging` logger, as a short line or as CloudEvents JSON."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        level: int = logging.INFO,
        format: Literal["text", "json"] = "text",
        name: str = "logger",
    ) -> None:
        """Log to ``logger`` (default ``jido.dispatch``) at ``level`` in ``format``."""
        if format not in ("text", "json"):
            raise DispatchError(f"format must be 'text' or 'json', got {format!r}")
        self.logger = logger or _logger
        self.level = level
        self.format = format
        self.name = name

    async def dispatch(self, signal: Signal) -> None:
        """Log the signal."""
        if self.format == "json":
            self.logger.log(self.level, "%s", signal.to_json())
        else:
            self.logger.log(
                self.level,
                "signal %s id=%s source=%s data=%r",
                signal.type,
                signal.id,
                signal.source,
                signal.data,
            )


class HttpDispatch(Dispatch):
    """POSTs the signal to a URL following the CloudEvents HTTP binding.

    ``mode="binary"`` (default) sends ``ce-*`` headers and ``data`` as the body;
    ``mode="structured"`` sends the whole event as ``application/cloudevents+json``.
    A non-2xx answer or a transport error raises :class:`DispatchError` (retryable for
    transport errors, timeouts, 408, 429 and 5xx). Pass ``client`` to share an
    ``httpx.AsyncClient``; otherwise the adapter makes one and closes it in :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        mode: Literal["binary", "structured"] = "binary",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        name: str = "",
    ) -> None:
        """Dispatch to ``url``."""
        if mode not in ("binary", "structured"):
            raise DispatchError(f"mode must be 'binary' or 'structured', got {mode!r}")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DispatchError(f"url must be an http(s) URL, got {url!r}")
        self.url = url
        self.mode = mode
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.name = name or url
        self._client = client
        self._owns_client = client is None

    async def open(self) -> None:
        """Make the HTTP client if none was given."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
            self._owns_client = True

    async def close(self) -> None:
        """Close the HTTP client if this adapter made it."""
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()
        elif client is not None:
            self._client = client  # a shared client stays with its owner

    def encode(self, signal: Signal) -> tuple[dict[str, str], bytes]:
        """The request headers and body for ``signal``."""
        if self.mode == "binary":
            headers, body = signal.to_binary()
        else:
            headers, body = {"content-type": STRUCTURED_CONTENT_TYPE}, encode_json(signal)
        headers.update(self.headers)
        return headers, body

    async def dispatch(self, signal: Signal) -> None:
        """POST the signal; raise :class:`DispatchError` unless the answer is 2xx."""
        headers, body = self.encode(signal)
        await self._post(signal, headers, body)

    async def _post(self, signal: Signal, headers: dict[str, str], body: bytes) -> None:
        if self._client is None:
            await self.open()
        client = self._client
        assert client is not None
        try:
            response = await client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DispatchError(
                f"POST {self.url} timed out after {self.timeout}s",
                details={"url": self.url, "signal_id": signal.id},
                retryable=True,
                cause=exc,
            ) from exc
        except httpx.HTTPError as exc:
            raise DispatchError(
                f"POST {self.url} failed: {exc!r}",
                details={"url": self.url, "signal_id": signal.id},
                retryable=True,
                cause=exc,
            ) from exc
        status = response.status_code
        if not 200 <= status < 300:
            raise DispatchError(
                f"POST {self.url} answered {status}",
                details={
                    "url": self.url,
                    "status": status,
                    "signal_id": signal.id,
                    "body": response.text[:500],
                },
                retryable=status in (408, 429) or status >= 500,
            )


def sign_webhook(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """Return the signature header value ``sha256=<hex>`` for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(
    secret: str | bytes,
    body: bytes,
    signature: str,
    timestamp: str | int,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Check a webhook signature (constant-time) and that its timestamp is within ``tolerance``."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        return False
    return hmac.compare_digest(sign_webhook(secret, body, ts), signature)


class WebhookDispatch(HttpDispatch):
    """An :class:`HttpDispatch` (structured mode by default) that signs each request.

    Headers: ``X-Jido-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>`` and
    ``X-Jido-Timestamp: <unix seconds>`` (names configurable).
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        mode: Literal["binary", "structured"] = "structured",
        signature_header: str = SIGNATURE_HEADER,
        timestamp_header: str = TIMESTAMP_HEADER,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        name: str = "",
    ) -> None:
        """Dispatch to ``url`` signing with ``secret``."""
        if not secret:
            raise DispatchError("a webhook needs a non-empty secret")
        super().__init__(url, mode=mode, headers=headers, timeout=timeout, client=client, name=name)
        self.secret = secret
        self.signature_header = signature_header
        self.timestamp_header = timestamp_header

    async def dispatch(self, signal: Signal) -> None:
        """Sign and POST the signal."""
        headers, body = self.encode(signal)
        ts = int(time.time())
        headers[self.timestamp_header] = str(ts)
        headers[self.signature_header] = sign_webhook(self.secret, body, ts)
        await self._post(signal, headers, body)


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """Outcome of one adapter in :func:`dispatch_all`."""

    adapter: Dispatch
    """The adapter."""
    error: JidoError | None
    """``None`` on success, else the failure as a typed error."""

    @property
    def ok(self) -> bool:
        """Whether the adapter delivered the signal."""
        return self.error is None


async def dispatch_all(
    signal: Signal, adapters: Iterable[Dispatch], *, each_timeout: float | None = None
) -> list[DispatchResult]:
    """Send ``signal`` through every adapter concurrently; failures are isolated and reported.

    A failing (or, with ``each_timeout``, too slow) adapter yields a result with ``error`` set and
    a warning in the ``jido.dispatch`` log; it never affects the others.
    """
    items = list(adapters)

    async def one(adapter: Dispatch) -> DispatchResult:
        try:
            if each_timeout is None:
                await adapter.dispatch(signal)
            else:
                await asyncio.wait_for(adapter.dispatch(signal), each_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _as_jido_error(exc, adapter, signal, each_timeout)
            _logger.warning("dispatch of %s via %s failed: %s", signal.id, adapter.name, error)
            return DispatchResult(adapter, error)
        return DispatchResult(adapter, None)

    return list(await asyncio.gather(*(one(a) for a in items)))


def _as_jido_error(
    exc: Exception, adapter: Dispatch, signal: Signal, timeout: float | None
) -> JidoError:
    if isinstance(exc, JidoError):
        return exc
    if isinstance(exc, TimeoutError):
        return DispatchError(
            f"adapter {adapter.name!r} did not finish within {timeout}s",
            details={"adapter": adapter.name, "signal_id": signal.id},
            retryable=True,
            cause=exc,
        )
    return DispatchError(
        f"adapter {adapter.name!r} raised {type(exc).__name__}: {exc}",
        details={"adapter": adapter.name, "signal_id": signal.id},
        cause=exc,
    )
