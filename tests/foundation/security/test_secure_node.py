"""Nodes and clients on a secure cluster: TLS, node and client credentials, the endpoint's
authorization step, the public subjects' policy, the audit trail, nothing secret in output."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from foundation import AuthenticationError, Client, Node, PermissionDeniedError, RolePolicy
from foundation.hosting.clustered import Clustered
from foundation.messaging.envelope import decode_reply
from foundation.security import (
    AuditLog,
    NatsAuth,
    SecureNatsServer,
    SecureSetup,
    checked_request,
    run_audit_async,
    secure_connect,
    write_secure_setup,
)
from foundation.security._jwt import creds_text, user_jwt
from foundation.security._keys import KeyPair
from jido import Action, ActionContext, Signal
from tests.foundation.apps import ClusteredCounter, Counter
from tests.foundation.conftest import eventually

pytestmark = pytest.mark.nats


class Withdraw(Action):
    """Take ``amount`` from the counter (audited: each call is in the trail)."""

    name = "withdraw"
    audit = True

    class Params(BaseModel):
        amount: int = 0

    async def run(self, params: Any, ctx: ActionContext) -> dict[str, Any]:
        return {"count": ctx.state.count - params.amount}


class Vault(Counter):
    """A counter with an audited action."""

    actions = [*Counter.actions, Withdraw]
    routes = [*Counter.routes, ("vault.withdraw", Withdraw)]


class ClusteredVault(Clustered, Vault, critical=True, placement="local"):
    """A vault placed where it is spawned."""


AGENTS = [ClusteredCounter, ClusteredVault]


def _add(n: int = 1) -> Signal:
    return Signal(type="counter.add", source="/test", data={"n": n})


@pytest.fixture
async def nodes(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> AsyncIterator[tuple[Node, Node]]:
    """Two nodes with the node role's creds; ``counter.add`` is denied to clients."""
    policy = RolePolicy(
        {"node": {"*": ["*"]}, "client": {"*": ["counter.echo", "vault.*"]}}, admins_all=True
    )
    common: dict[str, Any] = {
        "nats": secure_server.url,
        "creds": secure_setup.creds_for("node"),
        "tls_ca": secure_setup.ca,
        "agents": AGENTS,
        "policy": policy,
        "failover": False,
    }
    a = Node(name="na", **common)
    b = Node(name="nb", **common)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


@pytest.fixture
async def client(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> AsyncIterator[Client]:
    async with Client(
        nats=secure_server.url, creds=secure_setup.creds_for("client"), tls_ca=secure_setup.ca
    ) as c:
        yield c


async def test_nodes_call_across_the_secure_cluster(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    ref = await a.spawn(ClusteredCounter, id="c-1", node="nb")
    assert (await a.ref("c-1").call(_add(2)))["count"] == 2
    assert (await b.ref("c-1").call(_add(3)))["count"] == 5
    assert (await ref.state()).count == 5  # type: ignore[attr-defined]


async def test_client_calls_what_the_policy_allows_and_is_refused_the_rest(
    nodes: tuple[Node, Node], client: Client
) -> None:
    a, _ = nodes
    await a.spawn(ClusteredCounter, id="c-2", node="nb")
    echo = Signal(type="counter.echo", source="/web", data={"x": 1})
    assert (await client.ref("c-2").call(echo))["data"] == {"x": 1}
    with pytest.raises(PermissionDeniedError) as info:
        await client.ref("c-2").call(_add())
    assert info.value.details["principal"] == "client/client"
    await a.ref("c-2").call(_add(0))
    assert (await a.ref("c-2").state()).count == 0  # type: ignore[attr-defined]
    # a denied cast is refused (a client's casts are acknowledged) and never reaches the agent
    with pytest.raises(PermissionDeniedError):
        await client.ref("c-2").cast(_add(7))
    await client.ref("c-2").call(echo)
    assert (await a.ref("c-2").state()).count == 0  # type: ignore[attr-defined]
    # an allowed cast returns once a node accepted it
    await client.ref("c-2").cast(Signal(type="vault.withdraw", source="/web", data={}))


def _untagged_creds(setup: SecureSetup, path: Path) -> Path:
    """Creds of a user made outside our setup (no role tags, so a Client sends on the plain
    agent subjects) that may only use its inbox: the server refuses its sends to agents."""
    account = KeyPair.from_seed((setup.dir / "keys" / "APP.nk").read_bytes())
    user = KeyPair.create("user")
    token = user_jwt(
        account, user.public_key, "outsider", pub_allow=["_INBOX.>"], sub_allow=["_INBOX.>"]
    )
    path.write_text(creds_text(token, user))
    return path


async def test_a_publish_the_server_refuses_fails_at_once_not_at_the_timeout(
    nodes: tuple[Node, Node],
    secure_server: SecureNatsServer,
    secure_setup: SecureSetup,
    tmp_path: Path,
) -> None:
    a, _ = nodes
    await a.spawn(ClusteredCounter, id="c-out", node="nb")
    async with Client(
        nats=secure_server.url,
        creds=_untagged_creds(secure_setup, tmp_path / "outsider.creds"),
        tls_ca=secure_setup.ca,
        call_timeout=60,
    ) as outsider:
        assert outsider.principal is None
        loop = asyncio.get_running_loop()
        for send in (
            lambda: outsider.ref("c-out").call(_add(), timeout=60),
            lambda: outsider.ref("c-out").cast(_add()),
        ):
            t0 = loop.time()
            with pytest.raises(PermissionDeniedError) as info:
                await send()
            assert loop.time() - t0 < 30  # the server's refusal, not the 60 s timeout
            assert info.value.details["operation"] == "publish"
            assert info.value.details["subject"] == "foundation.agent.default.c-out"
    assert (await a.ref("c-out").state()).count == 0  # type: ignore[attr-defined]


async def test_an_unattested_caller_is_not_authenticated(
    nodes: tuple[Node, Node], secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    a, _ = nodes
    await a.spawn(ClusteredCounter, id="c-3")
    auth = NatsAuth.of(creds=secure_setup.creds_for("client"), tls_ca=secure_setup.ca)
    nc = await secure_connect(secure_server.url, auth)
    try:
        echo = Signal(type="counter.echo", source="/raw", data={})
        msg = await checked_request(nc, "foundation.agent.default.c-3", echo.to_json().encode())
        with pytest.raises(AuthenticationError):
            decode_reply(msg.data)
        # a principal subject of its own does not reach node ops either (role client)
        reply = await checked_request(
            nc, "foundation.from.client.client.foundation.node.na.drain", b"{}"
        )
        with pytest.raises(PermissionDeniedError):
            decode_reply(reply.data)
        assert a.stage.name == "RUNNING"
    finally:
        await nc.close()


async def test_audit_trail_records_spawns_stops_denials_and_audited_actions(
    nodes: tuple[Node, Node],
    client: Client,
    secure_server: SecureNatsServer,
    secure_setup: SecureSetup,
    tmp_path: Path,
) -> None:
    a, b = nodes
    await a.spawn(ClusteredVault, id="v-1")
    withdraw = Signal(type="vault.withdraw", source="/web", data={"amount": 3})
    assert (await client.ref("v-1").call(withdraw))["count"] == -3
    with pytest.raises(PermissionDeniedError):
        await client.ref("v-1").call(_add())
    await a.stop_agent("v-1")
    for node in (a, b):
        assert node.security.audit is not None
        await node.security.audit.flush()
    admin = await secure_connect(
        secure_server.url,
        NatsAuth.of(creds=secure_setup.creds_for("admin"), tls_ca=secure_setup.ca),
    )
    try:
        records = await AuditLog(admin.jetstream()).tail(100)
    finally:
        await admin.close()
    events = {r["event"]: r for r in records}
    assert events["agent.spawn"]["subject"] == "v-1"
    assert events["agent.stop"]["subject"] == "v-1"
    call = events["action.call"]
    assert call["principal"] == "client/client"
    assert call["details"]["action"] == "withdraw"
    assert len(call["details"]["params_sha256"]) == 64
    assert "amount" not in json.dumps(call)
    assert events["auth.denied"]["principal"] == "client/client"
    args = ["--nats", secure_server.url, "--creds", str(secure_setup.creds_for("admin"))]
    args += ["--tls-ca", str(secure_setup.ca)]
    out = io.StringIO()
    assert await run_audit_async(["verify", *args], out=out) == 0, out.getvalue()


async def test_credentials_never_appear_in_output(
    nodes: tuple[Node, Node], secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    a, b = nodes
    stats = json.dumps(await b.client.request("na", "stats", b"{}"))
    seed = next(
        line
        for line in secure_setup.creds_for("node").read_text().splitlines()
        if line.startswith("SU")
    )
    assert seed not in stats and seed not in repr(a.security.auth)
    # credentials in a URL are redacted wherever the URL is shown
    node = Node(nats="nats://alice:s3cret@127.0.0.1:1", name="leaky", failover=False)
    with pytest.raises(Exception) as info:
        await node.start()
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.args)
    assert "s3cret" not in json.dumps(node.statistics().to_dict())


async def test_a_refused_login_says_why(
    secure_server: SecureNatsServer, secure_setup: SecureSetup, tmp_path: Path
) -> None:
    with pytest.raises(AuthenticationError, match="refused the login"):
        await Node(nats=secure_server.url, tls_ca=secure_setup.ca, failover=False).start()
    other = write_secure_setup(tmp_path / "other").creds_for("client")
    with pytest.raises(AuthenticationError, match="does not trust"):
        async with Client(nats=secure_server.url, creds=other, tls_ca=secure_setup.ca):
            pass


async def test_refused_logins_are_in_the_audit_trail_once_each(
    nodes: tuple[Node, Node],
    secure_server: SecureNatsServer,
    secure_setup: SecureSetup,
    tmp_path: Path,
) -> None:
    """The server's refused-login advisories reach the APP nodes (one of the two records
    each), with the host and the presented keys, never the presented JWT."""
    a, b = nodes
    other = write_secure_setup(tmp_path / "other").creds_for("client")
    intruder_jwt = other.read_text().split("-----BEGIN NATS USER JWT-----")[1].split("---")[0]
    for creds in (other, None):
        with pytest.raises(AuthenticationError):
            async with Client(nats=secure_server.url, creds=creds, tls_ca=secure_setup.ca):
                pass
    admin = await secure_connect(
        secure_server.url,
        NatsAuth.of(creds=secure_setup.creds_for("admin"), tls_ca=secure_setup.ca),
    )
    try:

        async def refusals() -> list[dict[str, Any]]:
            for node in (a, b):
                assert node.security.audit is not None
                await node.security.audit.flush()
            records = await AuditLog(admin.jetstream()).tail(100)
            return [r for r in records if r["event"] == "auth.login_refused"]

        async def both() -> bool:
            return len(await refusals()) >= 2

        await eventually(both)
        found = await refusals()
    finally:
        await admin.close()
    assert len(found) == 2  # one node of the queue group records each refusal
    assert {r["principal"] for r in found} == {"anonymous"}
    assert all(r["details"]["host"] == "127.0.0.1" == r["subject"] for r in found)
    assert all(r["details"]["reason"] == "Authentication Failure" for r in found)
    untrusted = [r for r in found if "user" in r["details"]]
    assert len(untrusted) == 1 and untrusted[0]["details"]["account"].startswith("A")
    assert intruder_jwt.strip() not in json.dumps(found)
    events = [e for node in (a, b) for e in node.host.events.recent() if e["kind"] == "denied"]
    assert sum("login from 127.0.0.1" in e["detail"] for e in events) == 2


async def test_client_never_joins_the_membership(nodes: tuple[Node, Node], client: Client) -> None:
    a, _ = nodes
    await a.spawn(ClusteredCounter, id="c-4")
    await client.ref("c-4").call(Signal(type="counter.echo", source="/web", data={}))

    async def members() -> bool:
        return set(a.membership.snapshot.ids()) == {"na", "nb"}

    await eventually(members)
    assert client.name not in a.membership.snapshot


async def test_a_client_the_server_refuses_fails_fast_and_keeps_its_task(
    nodes: tuple[Node, Node], secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    """A request the server refuses (an observer on the plain agent subject, which no
    principal but a node's own traffic may use) ends with the server's
    ``PermissionDeniedError`` well before its timeout, and the calling task is not left
    cancelled; a cancellation from outside stays a cancellation."""
    a, _ = nodes
    await a.spawn(ClusteredCounter, id="c-obs", node="nb")
    echo = Signal(type="counter.echo", source="/web", data={})
    async with Client(
        nats=secure_server.url,
        creds=secure_setup.creds_for("observer"),
        tls_ca=secure_setup.ca,
        call_timeout=60,
    ) as watcher:
        watcher.principal = None  # sends on the plain subject, which the server refuses it
        for _ in range(3):
            with pytest.raises(PermissionDeniedError) as info:
                await asyncio.wait_for(watcher.ref("c-obs").call(echo), 30)
            assert info.value.details["subject"] == "foundation.agent.default.c-obs"
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            await asyncio.sleep(0)  # a pending cancellation would land here
        call = asyncio.create_task(watcher.ref("c-obs").call(echo))
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
