"""The TLS transport on ``ssl.SSLSocket`` (``foundation.nats.tls``), against real TLS peers.

- a bare TLS server (asyncio's own SSL layer, certificates from a secure setup): bytes of
  every size both ways, a writer faster than its reader (the socket refuses writes, the
  reader stops at its high-water mark), lines across records, the end of the stream, a close
  while a read waits, a certificate the client does not trust;
- a real ``nats-server`` with TLS and creds: requests of every size up to the server's
  largest payload, and a reconnect over TLS after the server restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
from nats.aio.msg import Msg

from foundation.nats import tls
from foundation.nats.server import LOOPBACK
from foundation.nats.tls import SocketTLSTransport, uses_socket_tls
from foundation.security import (
    NatsAuth,
    Principal,
    SecureNatsServer,
    SecureSetup,
    principal_subject,
    secure_connect,
    write_secure_setup,
)
from tests.foundation.conftest import eventually

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SecureSetup:
    """A CA and a loopback server certificate (and the roles' creds)."""
    return write_secure_setup(tmp_path_factory.mktemp("tls") / "secure")


def _client_context(setup: SecureSetup) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(setup.ca))


@contextlib.asynccontextmanager
async def _tls_server(setup: SecureSetup, handler: Handler) -> AsyncIterator[int]:
    """A TCP server that upgrades each connection to TLS (as nats-server does after INFO),
    then hands it to ``handler``; yields its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(setup.server_cert), str(setup.server_key))
    handlers: list[asyncio.Task[None]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            try:
                await writer.start_tls(ctx)
                await handler(reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
        except (asyncio.CancelledError, OSError):
            # the test is over, or provoked a TLS error on purpose: asyncio would log either
            pass

    server = await asyncio.start_server(on_connect, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        if handlers:  # each ends once the client closed; a stuck one is cancelled
            _, stuck = await asyncio.wait(handlers, timeout=5)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _open(port: int, setup: SecureSetup) -> SocketTLSTransport:
    transport = SocketTLSTransport()
    uri = urlparse(f"tls://{LOOPBACK}:{port}")
    await transport.connect(uri, buffer_size=32768, connect_timeout=5)
    await transport.connect_tls("localhost", _client_context(setup), 32768, 5)
    return transport


async def _read_exactly(transport: SocketTLSTransport, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = await transport.read(32768)
        assert chunk, f"stream ended after {len(got)} of {n} bytes"
        assert len(chunk) <= 32768
        got += chunk
    return bytes(got)


def _pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


async def test_bytes_of_every_size_cross_both_ways(setup: SecureSetup) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async with _tls_server(setup, echo) as port:
        transport = await _open(port, setup)
        try:
            for size in (1, 100, 16383, 16384, 16385, 65536, 300_000):
                payload = _pattern(size)
                transport.write(payload)
                await transport.drain()
                assert await _read_exactly(transport, size) == payload
            transport.writelines([b"a" * 10, b"b" * 20000, b"c"])
            await transport.drain()
            assert await _read_exactly(transport, 20011) == b"a" * 10 + b"b" * 20000 + b"c"
        finally:
            transport.close()
            await transport.wait_closed()


async def test_a_writer_faster_than_its_reader_loses_nothing(setup: SecureSetup) -> None:
    """The peer reads nothing until 12 MB were written: the socket refuses writes (the rest
    waits for drain); then the client reads slowly, so its buffer reaches the high-water
    mark and reading pauses and resumes."""
    size = 12 * 1024 * 1024
    payload = _pattern(size)
    received = asyncio.Event()
    got = bytearray()

    async def slow_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(got) < size:
            chunk = await reader.read(1 << 20)
            if not chunk:
                return
            got.extend(chunk)
        received.set()
        writer.write(bytes(got))
        await writer.drain()

    async with _tls_server(setup, slow_echo) as port:
        transport = await _open(port, setup)
        try:
            half = size // 2  # the second write joins the bytes the socket refused
            transport.write(payload[:half])
            transport.write(payload[half:])
            await asyncio.wait_for(transport.drain(), 60)
            await asyncio.wait_for(received.wait(), 60)
            assert bytes(got) == payload

            # let the echo fill the client's buffer past its high-water mark before reading
            async def full() -> bool:
                return transport.buffered >= tls.READ_HIGH_WATER

            await eventually(full, timeout=60)
            assert await asyncio.wait_for(_read_exactly(transport, size), 60) == payload
        finally:
            transport.close()


async def test_lines_across_records_then_the_end_of_the_stream(setup: SecureSetup) -> None:
    async def lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO {}\r\n")
        await writer.drain()
        writer.write(b"PI")
        await writer.drain()
        await asyncio.sleep(0.05)  # two records for one line
        writer.write(b"NG\r\nrest")
        await writer.drain()

    async with _tls_server(setup, lines) as port:
        transport = await _open(port, setup)
        try:
            assert await transport.readline() == b"INFO {}\r\n"
            assert await transport.readline() == b"PING\r\n"
            assert await transport.readline() == b"rest"  # what is left when the peer closed
            assert await transport.read(100) == b""
            assert transport.at_eof()
        finally:
            transport.close()


async def test_close_wakes_a_waiting_read(setup: SecureSetup) -> None:
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()

    async with _tls_server(setup, silent) as port:
        transport = await _open(port, setup)
        reading = asyncio.ensure_future(transport.read(100))
        await asyncio.sleep(0.05)
        assert not reading.done()
        transport.close()
        assert await asyncio.wait_for(reading, 5) == b""
        assert transport.at_eof()
        hold.set()


async def test_a_reset_connection_fails_reads_and_drains(setup: SecureSetup) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # an RST, not an orderly end

    async with _tls_server(setup, reset) as port:
        transport = await _open(port, setup)
        try:
            # OpenSSL reports the reset as an unexpected end of the stream: reading ends
            assert await transport.read(100) == b""
            transport.write(b"x" * 100_000)
            with pytest.raises(OSError):
                await transport.drain()
            assert transport.at_eof()
        finally:
            transport.close()


async def test_bytes_that_are_no_tls_record_fail_the_read(setup: SecureSetup) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.transport.get_extra_info("socket")
        os.write(sock.fileno(), b"\x17\x03\x03\x00\x05hello")  # a record no key sealed
        await reader.read(1)

    async with _tls_server(setup, garbage) as port:
        transport = await _open(port, setup)
        try:
            with pytest.raises(ssl.SSLError):
                await transport.read(100)
            with pytest.raises(ssl.SSLError):  # the error stays until the client closes
                await transport.readline()
            transport.write(b"more")
            with pytest.raises(ssl.SSLError):
                await transport.drain()
        finally:
            transport.close()


async def test_an_untrusted_certificate_fails_the_handshake(
    setup: SecureSetup, tmp_path: Path
) -> None:
    other = write_secure_setup(tmp_path / "other")

    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    async with _tls_server(setup, nothing) as port:
        transport = SocketTLSTransport()
        await transport.connect(urlparse(f"tls://{LOOPBACK}:{port}"), 32768, 5)
        with pytest.raises(ssl.SSLCertVerificationError):
            await transport.connect_tls("localhost", _client_context(other), 32768, 5)
        transport.close()


@pytest.fixture
async def secure_nats(setup: SecureSetup, tmp_path: Path) -> AsyncIterator[SecureNatsServer]:
    """A TLS + operator-authenticated nats-server."""
    srv = SecureNatsServer(setup, store_dir=tmp_path / "js")
    await srv.astart()
    try:
        yield srv
    finally:
        await srv.astop()


async def test_requests_of_every_size_over_a_secure_nats_server(
    setup: SecureSetup, secure_nats: SecureNatsServer
) -> None:
    node = await secure_connect(
        secure_nats.url, NatsAuth.of(creds=setup.creds_for("node"), tls_ca=setup.ca)
    )
    client = await secure_connect(
        secure_nats.url, NatsAuth.of(creds=setup.creds_for("client"), tls_ca=setup.ca)
    )
    try:
        assert uses_socket_tls(node) and uses_socket_tls(client)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await node.subscribe("foundation.from.*.*.agent.>", cb=echo)
        await node.flush()
        subject = principal_subject(Principal("client", "client"), "agent.default.echo")
        largest = client.max_payload - 1024
        for size in (0, 1, 16384, 16385, 100_000, largest):
            payload = _pattern(size)
            reply = await client.request(subject, payload, timeout=10)
            assert reply.data == payload
        replies = await asyncio.gather(
            *(client.request(subject, _pattern(i * 997), timeout=10) for i in range(200))
        )
        assert [r.data for r in replies] == [_pattern(i * 997) for i in range(200)]
    finally:
        await client.close()
        await node.close()


async def test_secure_connections_reconnect_after_the_server_restarts(
    setup: SecureSetup, secure_nats: SecureNatsServer
) -> None:
    back = {"node": asyncio.Event(), "client": asyncio.Event()}

    def on_reconnect(role: str) -> Callable[[], Awaitable[None]]:
        async def cb() -> None:
            back[role].set()

        return cb

    node, client = [
        await secure_connect(
            secure_nats.url,
            NatsAuth.of(creds=setup.creds_for(role), tls_ca=setup.ca),  # type: ignore[arg-type]
            reconnected_cb=on_reconnect(role),
        )
        for role in ("node", "client")
    ]
    try:

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await node.subscribe("foundation.from.*.*.agent.>", cb=echo)
        await node.flush()
        subject = principal_subject(Principal("client", "client"), "agent.default.echo")
        assert (await client.request(subject, b"before", timeout=10)).data == b"before"
        await asyncio.to_thread(secure_nats.restart)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in back.values())), 30)
        await node.flush()  # the subscription is back on the server
        assert uses_socket_tls(node) and uses_socket_tls(client)
        assert (await client.request(subject, b"after", timeout=10)).data == b"after"
    finally:
        await client.close()
        await node.close()
