"""Dispatch adapters against a real HTTP server on loopback; isolation of failing adapters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat

from jido import (
    Bus,
    BusDispatch,
    CallableDispatch,
    Dispatch,
    DispatchError,
    HttpDispatch,
    LoggerDispatch,
    Signal,
    WebhookDispatch,
    dispatch_all,
    sign_webhook,
    verify_webhook,
)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """A minimal HTTP/1.1 server: records requests, answers ``status`` (keep-alive)."""

    status: int = 200
    requests: list[Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(method, path, headers, body))
                self.arrived.set()
                reason = b"OK" if self.status < 400 else b"ERR"
                writer.write(
                    b"HTTP/1.1 %d %s\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
                    % (self.status, reason)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    tcp = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    srv.url = f"http://127.0.0.1:{port}/events"
    try:
        yield srv
    finally:
        tcp.close()
        await tcp.wait_closed()


def sample() -> Signal:
    return Signal(
        type="order.created", source="/shop", subject="o 1", data={"total": 5}, tenant="t"
    )


async def test_http_binary_mode_is_cloudevents_http_binding(server: Server) -> None:
    sig = sample()
    async with HttpDispatch(server.url) as adapter:
        await adapter.dispatch(sig)
    req = server.requests[0]
    assert req.method == "POST" and req.path == "/events"
    assert req.headers["ce-id"] == sig.id
    assert req.headers["ce-type"] == "order.created"
    assert req.headers["ce-specversion"] == "1.0"
    assert req.headers["content-type"] == "application/json"
    assert Signal.from_binary(req.headers, req.body) == sig
    event = ce_http.from_http(ce_http.HTTPMessage(req.headers, req.body), JSONFormat())
    assert event.get_id() == sig.id and event.get_subject() == "o 1"
    assert event.get_data() == {"total": 5}


async def test_http_structured_mode(server: Server) -> None:
    sig = sample()
    async with HttpDispatch(server.url, mode="structured", headers={"x-extra": "1"}) as adapter:
        await adapter.dispatch(sig)
    req = server.requests[0]
    assert req.headers["content-type"].startswith("application/cloudevents+json")
    assert req.headers["x-extra"] == "1"
    assert Signal.from_json(req.body) == sig
    event = ce_http.from_http(ce_http.HTTPMessage(req.headers, req.body), JSONFormat())
    assert event.get_type() == "order.created"


async def test_http_errors_are_typed(server: Server) -> None:
    server.status = 503
    adapter = HttpDispatch(server.url)
    with pytest.raises(DispatchError) as exc:
        await adapter.dispatch(sample())
    assert exc.value.retryable and exc.value.details["status"] == 503
    server.status = 400
    with pytest.raises(DispatchError) as exc2:
        await adapter.dispatch(sample())
    assert not exc2.value.retryable
    await adapter.close()
    # nothing listens on this port any more
    tcp = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    tcp.close()
    await tcp.wait_closed()
    async with HttpDispatch(f"http://127.0.0.1:{port}/") as dead:
        with pytest.raises(DispatchError) as exc3:
            await dead.dispatch(sample())
    assert exc3.value.retryable
    with pytest.raises(DispatchError):
        HttpDispatch("ftp://x")
    with pytest.raises(DispatchError):
        HttpDispatch("http://x", mode="carrier-pigeon")  # type: ignore[arg-type]


async def test_shared_client_is_not_closed(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        adapter = HttpDispatch(server.url, client=client)
        await adapter.dispatch(sample())
        await adapter.close()
        assert not client.is_closed
        await adapter.dispatch(sample())
    assert len(server.requests) == 2


async def test_webhook_signature(server: Server) -> None:
    secret = "s3cret"
    async with WebhookDispatch(server.url, secret) as hook:
        await hook.dispatch(sample())
    req = server.requests[0]
    sig_header = req.headers["x-jido-signature"]
    ts = req.headers["x-jido-timestamp"]
    assert sig_header.startswith("sha256=")
    assert sig_header == sign_webhook(secret, req.body, int(ts))
    assert verify_webhook(secret, req.body, sig_header, ts)
    assert not verify_webhook("wrong", req.body, sig_header, ts)
    assert not verify_webhook(secret, req.body + b" ", sig_header, ts)
    assert not verify_webhook(secret, req.body, sig_header, int(ts) - 1000)
    assert not verify_webhook(secret, req.body, sig_header, "not-a-number")
    assert Signal.from_json(req.body).type == "order.created"
    with pytest.raises(DispatchError):
        WebhookDispatch(server.url, "")


async def test_bus_callable_logger_adapters(caplog: pytest.LogCaptureFixture) -> None:
    async with Bus() as bus:
        got: list[Signal] = []
        bus.subscribe("**", got.append)
        seen: list[str] = []

        async def async_fn(s: Signal) -> None:
            seen.append("async:" + s.type)

        adapters: list[Dispatch] = [
            BusDispatch(bus),
            CallableDispatch(lambda s: seen.append("sync:" + s.type)),
            CallableDispatch(async_fn),
            LoggerDispatch(level=logging.INFO),
            LoggerDispatch(format="json", level=logging.INFO, name="json"),
        ]
        sig = sample()
        with caplog.at_level(logging.INFO, logger="jido.dispatch"):
            results = await dispatch_all(sig, adapters)
        await bus.drain()
        assert all(r.ok for r in results)
        assert got == [sig]
        assert sorted(seen) == ["async:order.created", "sync:order.created"]
        assert f"signal order.created id={sig.id}" in caplog.text
        assert sig.to_json() in caplog.text
    with pytest.raises(DispatchError):
        CallableDispatch("nope")  # type: ignore[arg-type]
    with pytest.raises(DispatchError):
        LoggerDispatch(format="xml")  # type: ignore[arg-type]


async def test_failing_adapter_is_isolated_and_reported(server: Server) -> None:
    server.status = 500

    def boom(s: Signal) -> None:
        raise ValueError("broken adapter")

    async def never(s: Signal) -> None:
        await asyncio.Event().wait()

    ok_seen: list[Signal] = []
    async with HttpDispatch(server.url) as http:
        results = await dispatch_all(
            sample(),
            [
                CallableDispatch(boom, name="boom"),
                http,
                CallableDispatch(never, name="slow"),
                CallableDispatch(ok_seen.append, name="ok"),
            ],
            each_timeout=0.2,
        )
    by_name = {r.adapter.name: r for r in results}
    assert by_name["ok"].ok and len(ok_seen) == 1
    assert isinstance(by_name["boom"].error, DispatchError)
    assert "broken adapter" in by_name["boom"].error.message
    assert by_name[server.url].error is not None and by_name[server.url].error.retryable
    slow_error = by_name["slow"].error
    assert slow_error is not None and slow_error.retryable


async def test_adapter_as_bus_handler(server: Server) -> None:
    async with Bus() as bus, HttpDispatch(server.url) as http:
        bus.subscribe("order.*", http)
        sig = sample()
        await bus.publish(sig)
        await server.arrived.wait()
        await bus.drain()
    assert Signal.from_binary(server.requests[0].headers, server.requests[0].body) == sig
