"""Dashboard access: foreign ``Host`` headers refused (DNS rebinding), a bearer token required
beyond loopback, ``/healthz`` open; no credential of the NATS URL in what it serves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from foundation._errors import ClusterError
from foundation._node import Node
from foundation.observability.access import AccessGuard, is_loopback
from foundation.observability.dashboard import Dashboard
from foundation.testing import NatsServer

pytestmark = pytest.mark.nats


@pytest.fixture
async def node(nats_server: NatsServer) -> AsyncIterator[Node]:
    async with Node(nats=nats_server.url, name="dash-acc", failover=False) as n:
        yield n


async def test_foreign_host_headers_are_refused_and_healthz_stays_open(node: Node) -> None:
    async with Dashboard(node) as dash, httpx.AsyncClient(timeout=10.0) as http:
        assert (await http.get(dash.url + "api/status")).status_code == 200
        for path in ("", "api/status", "metrics", "api/events"):
            res = await http.get(dash.url + path, headers={"Host": "evil.example:80"})
            assert res.status_code == 421, path
        res = await http.get(dash.url + "healthz", headers={"Host": "evil.example"})
        assert res.status_code == 200
        res = await http.get(dash.url + "api/status", headers={"Host": f"localhost:{dash.port}"})
        assert res.status_code == 200


async def test_beyond_loopback_a_bearer_token_is_required(node: Node) -> None:
    with pytest.raises(ClusterError, match="token"):
        Dashboard(node, host="0.0.0.0")
    async with (
        Dashboard(node, host="0.0.0.0", token="t0ken") as dash,
        httpx.AsyncClient(timeout=10.0) as http,
    ):
        url = f"http://127.0.0.1:{dash.port}/"
        assert (await http.get(url + "api/status")).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await http.get(url + "api/status", headers=bad)).status_code == 401
        good = {"Authorization": "Bearer t0ken"}
        res = await http.get(url + "api/status", headers=good)
        assert res.status_code == 200
        assert (await http.get(url + "healthz")).status_code == 200


async def test_no_credentials_in_the_status(nats_server: NatsServer) -> None:
    url = nats_server.url.replace("nats://", "nats://alice:s3cret@")
    async with Node(nats=nats_server.url, name="dash-url", failover=False) as n:
        n.url = url  # as if it had been given with credentials inside
        async with Dashboard(n) as dash, httpx.AsyncClient(timeout=10.0) as http:
            body = (await http.get(dash.url + "api/status")).text
            assert "s3cret" not in body
            assert "s3cret" not in str(n.statistics().to_dict())


def test_guard_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    guard = AccessGuard("10.0.0.5", token="x", allowed_hosts=["dash.example"])
    head = b"GET / HTTP/1.1\r\nHost: dash.example\r\nAuthorization: Bearer x\r\n\r\n"
    assert guard.refusal(head, "/") is None
    assert guard.refusal(head.replace(b"dash.example", b"evil"), "/") is not None
