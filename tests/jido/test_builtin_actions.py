"""Built-in actions: noop, sleep, log, confined file read/write, HTTP (real loopback server)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jido import (
    ActionContext,
    ExecutionError,
    TimeoutError,
    ValidationError,
    execute,
    execute_tool_call,
    run_action,
)
from jido.actions import (
    BUILTIN_ACTIONS,
    AccessDeniedError,
    HostNotAllowedError,
    HttpRequest,
    Log,
    Noop,
    ReadFile,
    Sleep,
    WriteFile,
)

from ._strict import strict_violations


def test_builtins_have_strict_tool_schemas() -> None:
    for act in BUILTIN_ACTIONS:
        assert strict_violations(act.to_tool()["function"]["parameters"]) == [], act.name
    # Noop accepts any keys: strict tools advertise none, loose ones say so
    assert Noop.to_tool()["function"]["parameters"]["properties"] == {}
    loose = Noop.to_tool(strict=False)["function"]
    assert loose["strict"] is False and loose["parameters"]["additionalProperties"] is True


async def test_noop_echoes_params() -> None:
    assert await run_action(Noop, {"a": 1, "b": [2]}) == {"a": 1, "b": [2]}
    assert await run_action(Noop) == {}


async def test_sleep() -> None:
    assert await run_action(Sleep, {"duration": 0}) == {"slept": 0}
    with pytest.raises(ValidationError):
        await run_action(Sleep, {"duration": 4000})
    with pytest.raises(ValidationError):
        await run_action(Sleep, {"duration": -1})
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await execute(Sleep, {"duration": 60}, ActionContext(deadline=loop.time() + 0.05))


async def test_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="jido.actions.log"):
        out = await run_action(
            Log, {"message": "hello", "level": "warning"}, ActionContext(agent_id="a-1")
        )
    assert out == {"logged": True, "level": "warning"}
    rec = caplog.records[-1]
    assert (rec.getMessage(), rec.levelno, rec.agent_id) == ("hello", logging.WARNING, "a-1")  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        await run_action(Log, {"message": "x", "level": "loud"})


# -- files ----------------------------------------------------------------------------------------


async def test_unbound_file_actions_refuse_everything(tmp_path: Path) -> None:
    with pytest.raises(AccessDeniedError, match="confined_to"):
        await run_action(ReadFile, {"path": str(tmp_path / "x")})
    with pytest.raises(AccessDeniedError):
        await run_action(WriteFile, {"path": str(tmp_path / "x"), "content": "y"})


async def test_write_then_read_within_root(tmp_path: Path) -> None:
    Write = WriteFile.confined_to(tmp_path, max_bytes=100)
    Read = ReadFile.confined_to(tmp_path, max_bytes=10)
    assert Write.name == "write_file" and Read.name == "read_file"
    out = await run_action(Write, {"path": "notes/a.txt", "content": "héllo", "make_dirs": True})
    assert out["bytes_written"] == len("héllo".encode())
    await run_action(Write, {"path": "notes/a.txt", "content": " world", "mode": "append"})
    got = await run_action(Read, {"path": "notes/a.txt"})
    assert got["content"] == "héllo wor"  # 10 bytes: "é" is two
    assert got["bytes"] == 10 and got["truncated"] is True and got["size"] == 12
    whole = await run_action(Read, {"path": "notes/a.txt", "offset": 7})
    assert whole == {
        "path": str((tmp_path / "notes/a.txt").resolve()),
        "content": "world",
        "bytes": 5,
        "size": 12,
        "truncated": False,
    }
    with pytest.raises(ValidationError, match="already exists"):
        await run_action(Write, {"path": "notes/a.txt", "content": "x", "mode": "create"})
    with pytest.raises(ValidationError, match="at most 100"):
        await run_action(Write, {"path": "b.txt", "content": "x" * 101})
    with pytest.raises(ValidationError, match="make_dirs"):
        await run_action(Write, {"path": "missing/dir/c.txt", "content": "x"})
    with pytest.raises(ValidationError, match="not an existing file"):
        await run_action(Read, {"path": "nope.txt"})


async def test_paths_cannot_escape_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "link").symlink_to(outside)
    Read = ReadFile.confined_to(root)
    for path in ("../secret.txt", str(outside), "link", "/etc/passwd"):
        with pytest.raises(AccessDeniedError) as info:
            await run_action(Read, {"path": path})
        assert info.value.details["roots"] == [str(root.resolve())]


async def test_file_tool_call_errors_are_readable(tmp_path: Path) -> None:
    Read = ReadFile.confined_to(tmp_path)
    out = json.loads(await execute_tool_call("read_file", '{"path": "../x"}', [Read]))
    assert out["error"]["type"] == "access_denied"
    assert "outside the allowed roots" in out["error"]["message"]


# -- http -----------------------------------------------------------------------------------------


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ")
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if path == "/hang":
            await asyncio.Event().wait()
        if path == "/big":
            payload, ctype = b"z" * 5000, "text/plain"
        else:
            payload = json.dumps(
                {
                    "method": method,
                    "path": path,
                    "body": body.decode(),
                    "x-test": headers.get("x-test"),
                    "content-type": headers.get("content-type"),
                }
            ).encode()
            ctype = "application/json"
        status = "404 Not Found" if path == "/missing" else "200 OK"
        writer.write(
            f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(payload)}\r\n"
            "connection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
    finally:
        writer.close()


@pytest.fixture
async def http_base() -> AsyncIterator[str]:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


#: The HTTP action bound to the loopback test server (its allow-list is empty by default).
LocalHttp = HttpRequest.for_hosts("127.0.0.1")


async def test_http_calls_no_host_unless_allowed(http_base: str) -> None:
    with pytest.raises(HostNotAllowedError) as info:
        await run_action(HttpRequest, {"url": f"{http_base}/hello"})
    assert isinstance(info.value, ValidationError)
    assert info.value.details["host"] == "127.0.0.1"
    assert info.value.details["allowed_hosts"] == []
    assert "for_hosts" in info.value.message
    with pytest.raises(HostNotAllowedError):
        await run_action(HttpRequest, {"url": "http://169.254.169.254/latest/meta-data"})
    anyhost = HttpRequest.for_hosts("*")
    assert (await run_action(anyhost, {"url": f"{http_base}/hello"}))["status"] == 200


async def test_http_get_and_post(http_base: str) -> None:
    out = await run_action(
        LocalHttp,
        {"url": f"{http_base}/hello", "headers": [{"name": "X-Test", "value": "1"}]},
    )
    assert out["status"] == 200
    assert out["json"]["method"] == "GET" and out["json"]["x-test"] == "1"
    assert out["truncated"] is False
    posted = await run_action(
        LocalHttp, {"url": f"{http_base}/p", "method": "POST", "json_body": '{"a": 1}'}
    )
    assert posted["json"]["body"] == '{"a": 1}'
    assert posted["json"]["content-type"] == "application/json"
    missing = await run_action(LocalHttp, {"url": f"{http_base}/missing"})
    assert missing["status"] == 404  # a status is a result, not an error


async def test_http_response_is_bounded(http_base: str) -> None:
    Small = type("Small", (LocalHttp,), {"name": "http_request", "max_response_bytes": 1000})
    out = await run_action(Small, {"url": f"{http_base}/big"})
    assert out["truncated"] is True and len(out["text"]) == 1000


async def test_http_timeout_and_transport_errors(http_base: str) -> None:
    with pytest.raises(TimeoutError) as info:
        await run_action(LocalHttp, {"url": f"{http_base}/hang", "timeout": 0.05})
    assert info.value.retryable
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(ExecutionError) as err:
        await run_action(LocalHttp, {"url": f"http://127.0.0.1:{closed_port}/"})
    assert err.value.retryable is True


async def test_http_input_checks(http_base: str) -> None:
    with pytest.raises(ValidationError):
        await run_action(HttpRequest, {"url": "ftp://example.com"})
    with pytest.raises(ValidationError, match="not valid JSON"):
        await run_action(LocalHttp, {"url": f"{http_base}/", "json_body": "{"})
    with pytest.raises(ValidationError, match="either body or json_body"):
        await run_action(LocalHttp, {"url": f"{http_base}/", "json_body": "1", "body": "x"})
    Local = HttpRequest.for_hosts("localhost")
    with pytest.raises(ValidationError, match="not allowed"):
        await run_action(Local, {"url": f"{http_base}/"})
    Ok = HttpRequest.for_hosts("127.0.0.1")
    assert (await run_action(Ok, {"url": f"{http_base}/"}))["status"] == 200


async def test_http_honours_the_context_deadline(http_base: str) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await execute(
            LocalHttp,
            {"url": f"{http_base}/hang", "timeout": 60},
            ActionContext(deadline=loop.time() + 0.05),
        )
