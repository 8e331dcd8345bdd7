"""The few pieces of HTTP/1.1 the dashboard speaks: response heads and whole responses."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def head(
    code: int, content_type: str, length: int | None, extra: Mapping[str, str] | None = None
) -> bytes:
    """The status line and headers of a response (``Connection: close``)."""
    lines = [
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}",
        f"Content-Type: {content_type}",
        "Connection: close",
        "X-Content-Type-Options: nosniff",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if code == 200 and not content_type.startswith("text/html"):
        lines.append("Cache-Control: no-store")
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def respond(
    writer: asyncio.StreamWriter,
    code: int,
    body: bytes,
    content_type: str,
    *,
    head_only: bool = False,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write a whole response (``head_only``: the head of it, for ``HEAD``)."""
    writer.write(head(code, content_type, len(body), extra))
    if not head_only:
        writer.write(body)
    await writer.drain()


__all__ = ["head", "respond"]
