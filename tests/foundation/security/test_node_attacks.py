"""The attacks of the security issue, against running nodes of a secure cluster.

Two nodes (node creds, TLS) host a critical counter and an at-least-once counter; an attacker
holding *client* credentials (and one holding none) tries every row of the issue's list. Each
is refused with a typed error, and the cluster is unchanged afterwards: the agents answer
from the same owners with the same state, both nodes still run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from foundation import AuthenticationError, Client, Node, PermissionDeniedError, RolePolicy
from foundation.messaging.envelope import decode_reply, encode_request
from foundation.security import (
    NatsAuth,
    SecureNatsServer,
    SecureSetup,
    checked_publish,
    checked_request,
    secure_connect,
)
from jido import Signal
from tests.foundation.apps import ClusteredCounter, DurableCounter

pytestmark = pytest.mark.nats

STATE = "foundation_state"


@pytest.fixture
async def cluster(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> AsyncIterator[tuple[Node, Node]]:
    """Two secure nodes with ``acc-1`` (on na, count 5) and ``dur-1`` (at-least-once, on nb);
    clients may only send ``counter.echo``."""
    common: dict[str, Any] = {
        "nats": secure_server.url,
        "creds": secure_setup.creds_for("node"),
        "tls_ca": secure_setup.ca,
        "agents": [ClusteredCounter, DurableCounter],
        "policy": RolePolicy({"node": {"*": ["*"]}, "client": {"*": ["counter.echo"]}}),
    }
    a, b = Node(name="na", **common), Node(name="nb", **common)
    await a.start()
    await b.start()
    try:
        await a.spawn(ClusteredCounter, id="acc-1", node="na", state={"count": 5})
        await a.spawn(DurableCounter, id="dur-1", node="nb")
        yield a, b
    finally:
        await b.stop()
        await a.stop()


@pytest.fixture
async def attacker(
    cluster: tuple[Node, Node], secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> AsyncIterator[NatsClient]:
    """A raw NATS connection with the *client* role's credentials."""
    auth = NatsAuth.of(creds=secure_setup.creds_for("client"), tls_ca=secure_setup.ca)
    nc = await secure_connect(secure_server.url, auth, name="attacker")
    try:
        yield nc
    finally:
        await nc.close()


async def _unchanged(a: Node, b: Node) -> None:
    assert a.stage.name == "RUNNING" and b.stage.name == "RUNNING"
    assert (await a.registry.lookup("acc-1", consistent=True)).node == "na"  # type: ignore[union-attr]
    assert (await a.registry.lookup("dur-1", consistent=True)).node == "nb"  # type: ignore[union-attr]
    assert (await b.ref("acc-1").state()).count == 5  # type: ignore[attr-defined]
    assert (await a.ref("dur-1").state()).count == 0  # type: ignore[attr-defined]
    assert set(a.membership.snapshot.ids()) == {"na", "nb"}


def _add(n: int) -> Signal:
    return Signal(type="counter.add", source="/evil", data={"n": n})


async def test_calling_an_action_without_the_grant_is_refused(
    cluster: tuple[Node, Node], secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    async with Client(
        nats=secure_server.url, creds=secure_setup.creds_for("client"), tls_ca=secure_setup.ca
    ) as c:
        with pytest.raises(PermissionDeniedError):
            await c.ref("acc-1").call(_add(1_000_000))
    await _unchanged(*cluster)


async def test_calling_on_the_plain_public_subject_is_unauthenticated(
    cluster: tuple[Node, Node], attacker: NatsClient
) -> None:
    msg = await checked_request(
        attacker, "foundation.agent.default.acc-1", _add(1).to_json().encode()
    )
    with pytest.raises(AuthenticationError):
        decode_reply(msg.data)
    await _unchanged(*cluster)


async def test_reading_state_through_the_owner_or_the_bucket_is_refused(
    cluster: tuple[Node, Node], attacker: NatsClient
) -> None:
    with pytest.raises(PermissionDeniedError):
        await checked_request(attacker, "foundation.node.na.state", encode_request("acc-1"))
    for subject in (
        f"$JS.API.DIRECT.GET.KV_{STATE}.$KV.{STATE}.default.acc-1",
        f"$JS.API.STREAM.MSG.GET.KV_{STATE}",
        f"$JS.API.CONSUMER.CREATE.KV_{STATE}",
    ):
        with pytest.raises(PermissionDeniedError):
            await checked_request(attacker, subject, b'{"last_by_subj": "$KV.foundation_state.>"}')
    await _unchanged(*cluster)


async def test_injecting_into_an_inbox_is_refused(
    cluster: tuple[Node, Node], attacker: NatsClient
) -> None:
    with pytest.raises(PermissionDeniedError):
        await checked_publish(
            attacker, "foundation.inbox.default.dur-1", _add(9).to_json().encode()
        )
    await _unchanged(*cluster)


async def test_forging_a_checkpoint_is_refused(
    cluster: tuple[Node, Node], attacker: NatsClient
) -> None:
    with pytest.raises(PermissionDeniedError):
        await checked_publish(
            attacker, f"$KV.{STATE}.default.acc-1", b'{"count": 1000000, "secret": "pwned"}'
        )
    await _unchanged(*cluster)


async def test_forging_registry_membership_and_leader_records_is_refused(
    cluster: tuple[Node, Node], attacker: NatsClient
) -> None:
    for subject, body in (
        ("$KV.foundation_registry.default.acc-1", b'{"node": "evil"}'),
        ("$KV.foundation_nodes.evil", b'{"node_id": "evil"}'),
        ("$KV.foundation_coord.lease.leader", b'{"holder": "evil"}'),
    ):
        with pytest.raises(PermissionDeniedError):
            await checked_publish(attacker, subject, body)
    await _unchanged(*cluster)


async def test_draining_a_node_is_refused(cluster: tuple[Node, Node], attacker: NatsClient) -> None:
    with pytest.raises(PermissionDeniedError):
        await checked_request(attacker, "foundation.node.na.drain", b"{}")
    # its own attested subject reaches the node, whose endpoint refuses the client role
    reply = await checked_request(
        attacker, "foundation.from.client.client.foundation.node.na.drain", b"{}"
    )
    with pytest.raises(PermissionDeniedError):
        decode_reply(reply.data)
    await _unchanged(*cluster)


async def test_deleting_the_state_bucket_and_the_inbox_stream_is_refused(
    cluster: tuple[Node, Node], attacker: NatsClient
) -> None:
    for stream in (f"KV_{STATE}", "FOUNDATION_INBOX"):
        for verb in ("DELETE", "PURGE"):
            with pytest.raises(PermissionDeniedError):
                await checked_request(attacker, f"$JS.API.STREAM.{verb}.{stream}")
    await _unchanged(*cluster)


async def test_stats_are_refused_and_show_no_secret_to_those_allowed(
    cluster: tuple[Node, Node],
    attacker: NatsClient,
    secure_server: SecureNatsServer,
    secure_setup: SecureSetup,
) -> None:
    with pytest.raises(PermissionDeniedError):
        await checked_request(attacker, "foundation.node.na.stats", b"{}")
    observer = await secure_connect(
        secure_server.url,
        NatsAuth.of(creds=secure_setup.creds_for("observer"), tls_ca=secure_setup.ca),
    )
    try:
        stats = decode_reply((await checked_request(observer, "foundation.node.na.stats")).data)
    finally:
        await observer.close()
    seed = next(
        line
        for line in secure_setup.creds_for("node").read_text().splitlines()
        if line.startswith("SU")
    )
    assert stats["node_id"] == "na" and seed not in str(stats)
    await _unchanged(*cluster)


async def test_without_credentials_there_is_no_connection(
    cluster: tuple[Node, Node], secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    with pytest.raises(AuthenticationError):
        await secure_connect(secure_server.url, NatsAuth.of(tls_ca=secure_setup.ca))
    with pytest.raises(AuthenticationError):
        async with Client(nats=secure_server.url, tls_ca=secure_setup.ca):
            pass
    await _unchanged(*cluster)
