"""TLS for NATS connections on the C-level ``ssl`` socket instead of asyncio's SSL layer.

nats-py upgrades a connection to TLS with ``loop.start_tls``, whose protocol
(``asyncio.sslproto``) is pure Python: every record read or written passes through memory
BIOs, buffer copies and a state machine in Python. On a cluster call that crosses three TLS
connections this was most of the cost of security (see BENCHMARKS.md, "Security").
:class:`SocketTLSTransport` does the same job on a non-blocking :class:`ssl.SSLSocket`
driven by the event loop's selector: OpenSSL reads and writes the socket itself, and the
Python left per read or write is a few calls. It halves the TLS overhead of a request.

It is a drop-in nats-py transport: the first bytes (the server's plain ``INFO``) go over a
normal asyncio connection, as nats-py expects; :meth:`SocketTLSTransport.connect_tls`
takes that connection's socket over. Reconnects reuse the transport; every connect starts
afresh. Event loops without ``add_reader`` (Windows' proactor) keep nats-py's own transport.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import ssl
import sys
from typing import Any
from urllib.parse import ParseResult

from nats.aio.client import Client as NatsClient
from nats.aio.transport import Transport

READ_CHUNK = 64 * 1024
"""Most bytes one ``recv`` asks OpenSSL for."""

READ_HIGH_WATER = 4 * 1024 * 1024
"""Buffered unread bytes at which the transport stops reading until the client catches up."""

_MAX_RECORD = 16384  # the most plaintext one TLS record carries

_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError)


class SocketTLSTransport(Transport):
    """A nats-py transport whose TLS runs on a non-blocking :class:`ssl.SSLSocket`.

    Before :meth:`connect_tls` (and on plain connections) it is a plain asyncio stream, as
    nats-py's own ``TcpTransport``. Reads are buffered by a reader callback that
    drains the socket (and OpenSSL's own buffer) each time the selector says it is readable;
    writes go straight to the socket and only what the socket refuses waits for
    writability. A socket or TLS error is kept and raised by the next read or drain, as
    asyncio's streams do, so nats-py's reconnect logic sees the usual ``OSError``.
    """

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        """The state of one connection, fresh (at creation and at every connect)."""
        self._tls: ssl.SSLSocket | None = None
        self._fd = -1
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._wbuf = bytearray()
        self._error: OSError | None = None
        self._eof = False
        self._closed = False
        self._reading = False
        self._writing = False
        self._read_wants_write = False

    @property
    def buffered(self) -> int:
        """Bytes read from the TLS connection and not yet taken by the client."""
        return self._buffered

    def __bool__(self) -> bool:
        # nats-py keeps a transport it finds truthy: this one is given before the first
        # connect and reused across reconnects.
        return True

    async def connect(self, uri: ParseResult, buffer_size: int, connect_timeout: int) -> None:
        """Open the plain TCP connection (any earlier TLS state is dropped)."""
        self._reset()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host=uri.hostname, port=uri.port, limit=buffer_size),
            connect_timeout,
        )

    async def connect_tls(
        self,
        uri: str | ParseResult,
        ssl_context: ssl.SSLContext,
        buffer_size: int,
        connect_timeout: int,
    ) -> None:
        """Take the plain connection's socket over and do the TLS handshake on it."""
        writer = self._writer
        assert writer is not None, "connect must be called first"
        loop = asyncio.get_running_loop()
        plain: Any = writer.transport.get_extra_info("socket")
        sock = socket.socket(plain.family, plain.type, plain.proto, fileno=os.dup(plain.fileno()))
        # The asyncio transport lets its file descriptor go (it only closes it, no shutdown):
        # the connection lives on in the duplicate.
        writer.transport.abort()
        sock.setblocking(False)
        host = uri if isinstance(uri, str) else uri.hostname
        tls = ssl_context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        try:
            await asyncio.wait_for(_handshake(loop, tls), connect_timeout)
        except BaseException:
            tls.close()
            raise
        self._loop = loop
        self._tls = tls
        self._fd = tls.fileno()
        self._start_reading()

    # -- reading ----------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._closed and not self._eof and self._loop is not None:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        tls = self._tls
        if tls is None:
            return
        try:
            while True:
                data = tls.read(READ_CHUNK)
                if not data:
                    self._eof = True
                    self._stop_reading()
                    break
                self._chunks.append(data)
                self._buffered += len(data)
                if self._buffered >= READ_HIGH_WATER:
                    self._stop_reading()
                    break
                if len(data) < _MAX_RECORD:
                    # A short record ends the sender's flush: if more arrived, the selector
                    # calls again, and no failing read (an exception) is paid here.
                    break
        except ssl.SSLWantWriteError:
            # OpenSSL must write (a TLS 1.3 key update) before it can read on.
            self._read_wants_write = True
            self._stop_reading()
            self._want_writable()
        except _WOULD_BLOCK:
            pass
        except OSError as exc:
            self._fail(exc)
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._read_waiter is not None:
            _resolve(self._read_waiter)

    def _wake_writer(self) -> None:
        if self._write_waiter is not None:
            _resolve(self._write_waiter)

    async def _wait_readable(self) -> None:
        if self._error is not None:
            raise self._error
        assert self._loop is not None
        self._read_waiter = self._loop.create_future()
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None

    def _take(self, n: int) -> bytes:
        chunks = self._chunks
        data = chunks.popleft()
        if len(data) > n:
            chunks.appendleft(data[n:])
            data = data[:n]
        self._buffered -= len(data)
        if not self._reading and self._buffered < READ_HIGH_WATER and not self._read_wants_write:
            self._start_reading()
        return data

    async def read(self, buffer_size: int) -> bytes:
        """Up to ``buffer_size`` bytes; ``b""`` at the end of the stream."""
        if self._tls is None:
            assert self._reader is not None, "connect must be called first"
            return await self._reader.read(buffer_size)
        while not self._chunks:
            if self._error is None and (self._eof or self._closed):
                return b""
            await self._wait_readable()
        return self._take(buffer_size)

    async def readline(self) -> bytes:
        """The bytes up to and including the next newline (or the rest, at the end)."""
        if self._tls is None:
            assert self._reader is not None, "connect must be called first"
            return await self._reader.readline()
        while True:
            if len(self._chunks) > 1:
                self._chunks = collections.deque([b"".join(self._chunks)])
            end = self._chunks[0].find(b"\n") if self._chunks else -1
            if end >= 0:
                return self._take(end + 1)
            if self._error is None and (self._eof or self._closed):
                return self._take(self._buffered) if self._chunks else b""
            await self._wait_readable()

    def at_eof(self) -> bool:
        """True once the stream ended (or was closed) and every byte was read."""
        if self._tls is None:
            return self._reader is None or self._reader.at_eof()
        return (self._eof or self._closed) and not self._chunks

    # -- writing ----------------------------------------------------------------------

    def write(self, payload: bytes) -> None:
        """Send ``payload`` now as far as the socket takes it; the rest waits for drain."""
        if self._tls is None:
            assert self._writer is not None, "connect must be called first"
            self._writer.write(payload)
            return
        if self._closed or self._error is not None:
            return
        if self._wbuf:
            self._wbuf += payload
            return
        try:
            sent = self._tls.write(payload)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        if sent < len(payload):
            # OpenSSL wants the same bytes again on retry: the buffer keeps them in front.
            self._wbuf += memoryview(payload)[sent:]
            self._want_writable()

    def writelines(self, payload: list[bytes]) -> None:
        """Send several buffers as one write."""
        if self._tls is None:
            assert self._writer is not None, "connect must be called first"
            self._writer.writelines(payload)
            return
        self.write(b"".join(payload))

    def _want_writable(self) -> None:
        if not self._writing and self._loop is not None and not self._closed:
            self._writing = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        tls = self._tls
        if tls is None:
            return
        if self._wbuf:
            try:
                sent = tls.write(self._wbuf)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                self._fail(exc)
                return
            del self._wbuf[:sent]
            if self._wbuf:
                return
        self._writing = False
        assert self._loop is not None
        self._loop.remove_writer(self._fd)
        self._wake_writer()
        if self._read_wants_write:
            self._read_wants_write = False
            self._start_reading()
            self._on_readable()

    async def drain(self) -> None:
        """Wait until every written byte is on the socket; raise a kept socket error."""
        if self._tls is None:
            assert self._writer is not None, "connect must be called first"
            await self._writer.drain()
            return
        while True:
            if self._error is not None:
                raise self._error
            if not self._wbuf or self._closed:
                return
            assert self._loop is not None
            self._write_waiter = self._loop.create_future()
            try:
                await self._write_waiter
            finally:
                self._write_waiter = None

    # -- closing ----------------------------------------------------------------------

    def _fail(self, exc: OSError) -> None:
        self._error = exc
        self._eof = True
        self._release()

    def _release(self) -> None:
        """Stop watching the socket and wake whoever waits on it."""
        self._stop_reading()
        if self._writing and self._loop is not None:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._wake_reader()
        self._wake_writer()

    def close(self) -> None:
        """Close the connection (without TLS close_notify: NATS does not need one)."""
        if self._tls is None:
            if self._writer is not None:
                self._writer.close()
            return
        if self._closed:
            return
        self._release()
        self._closed = True
        self._tls.close()

    async def wait_closed(self) -> None:
        """Closing is immediate once TLS is on; before, wait for the plain stream."""
        if self._tls is None and self._writer is not None:
            await self._writer.wait_closed()


async def _handshake(loop: asyncio.AbstractEventLoop, tls: ssl.SSLSocket) -> None:
    fd = tls.fileno()
    while True:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            add, remove = loop.add_reader, loop.remove_reader
        except ssl.SSLWantWriteError:
            add, remove = loop.add_writer, loop.remove_writer
        ready: asyncio.Future[None] = loop.create_future()
        add(fd, _resolve, ready)
        try:
            await ready
        finally:
            remove(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def supported() -> bool:
    """True where the event loop can watch a socket (every loop but Windows' proactor)."""
    return sys.platform != "win32"


def tls_client() -> NatsClient:
    """A nats-py client that will run its TLS on :class:`SocketTLSTransport`.

    Connect it with ``await nc.connect(...)`` as usual. nats-py has no option for a
    transport, but keeps one it already holds; this sets it before the first connect.
    """
    nc = NatsClient()
    if supported():
        nc._transport = SocketTLSTransport()
    return nc


def uses_socket_tls(nc: NatsClient) -> bool:
    """True when ``nc`` runs on :class:`SocketTLSTransport` (made by :func:`tls_client`)."""
    return isinstance(getattr(nc, "_transport", None), SocketTLSTransport)


__all__ = [
    "READ_CHUNK",
    "READ_HIGH_WATER",
    "SocketTLSTransport",
    "supported",
    "tls_client",
    "uses_socket_tls",
]
