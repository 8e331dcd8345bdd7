"""Conventions of the ``foundation`` command: errors on standard error with a non-zero status
and no traceback, validated numbers, ``--version``, help naming env vars and defaults, no
wrapping when piped, ``python -m foundation``; and its log output (``--log-format json``)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from foundation import _tracing
from foundation.cli.main import main
from foundation.observability import logs


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "foundation", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("up", "--nodes", "0"), 2, "--nodes"),
        (("demo", "--duration", "-1"), 2, "--duration"),
        (("demo", "--nodes", "x"), 2, "--nodes"),
        (("demo", "--duration", "nan"), 2, "--duration"),
        (("drain", "n1", "--timeout", "0"), 2, "--timeout"),
        (("up", "--dashboard-port", "70000"), 2, "--dashboard-port"),
        (("node", "--nats", "nats://127.0.0.1:1", "--metrics-port", "-5"), 2, "--metrics-port"),
        (("node", "--nats", "nats://127.0.0.1:1", "--lease-ttl", "0"), 2, "--lease-ttl"),
        (("quota", "jetstream", "acme", "--dir", "/nonexistent", "--streams", "0"), 2, "--streams"),
        (("up", "--app", "builtins:int"), 1, "not an agent class"),
        (("up", "--app", "no_such_module_xyz:A"), 1, "cannot import"),
        (("--log-level", "loud", "status"), 2, "--log-level"),
    ],
)
def test_errors_go_to_stderr_without_traceback(args: tuple[str, ...], code: int, says: str) -> None:
    done = _run(*args)
    assert done.returncode == code
    assert says in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


def test_version_and_module_entry_point() -> None:
    done = _run("--version")
    assert done.returncode == 0 and done.stdout.startswith("foundation ")


def test_help_names_env_vars_and_defaults_and_does_not_wrap_when_piped() -> None:
    top = _run("--help").stdout
    assert "FOUNDATION_NATS_URL" in top and "OTEL_EXPORTER_OTLP_ENDPOINT" in top
    status = _run("status", "--help").stdout
    assert "$FOUNDATION_NATS_URL" in status and "(default: " in status
    line = next(ln for ln in status.splitlines() if "--nats" in ln and "FOUNDATION" in ln)
    assert len(line) > 80  # one line: not wrapped at 80 columns when not a terminal
    up = _run("up", "--help").stdout
    assert "(default: 3)" in up


def test_json_logs_carry_node_agent_and_trace_id() -> None:
    stream = io.StringIO()
    handler = logs.configure("info", "json", node="n7", tenant="acme", stream=stream)
    provider = TracerProvider()
    _tracing.configure(provider)
    try:
        log = logging.getLogger("foundation.test")
        log.info("plain %d", 1)
        log.debug("hidden")
        with _tracing.span("work") as span:
            assert span is not None
            log.warning("inside", extra={"agent_id": "acc-1"})
            trace_id = f"{span.get_span_context().trace_id:032x}"
    finally:
        _tracing.configure(None)
        provider.shutdown()
        logs.unconfigure(handler)
    lines = [orjson.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["message"] for x in lines] == ["plain 1", "inside"]
    assert lines[0]["node"] == "n7" and lines[0]["tenant"] == "acme" and "trace_id" not in lines[0]
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "foundation.test"
    assert lines[1]["agent"] == "acc-1" and lines[1]["trace_id"] == trace_id


def test_node_without_url_says_so_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FOUNDATION_NATS_URL", raising=False)
    assert main(["node", "--app", "foundation.demo_app:AGENTS"]) == 2
    captured = capsys.readouterr()
    assert "FOUNDATION_NATS_URL" in captured.err and captured.out == ""
