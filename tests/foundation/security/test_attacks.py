"""The attacks of the security issue, at the NATS level, against a TLS + authenticated server.

A principal holding *client* credentials (and one holding none) tries what an outsider did
to an open cluster; the server refuses each with a permission error (or the login), and the
cluster's data is unchanged afterwards. Node-level wiring is tested where the node uses these
credentials.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from foundation._errors import AuthenticationError, PermissionDeniedError
from foundation.security import (
    NatsAuth,
    SecureNatsServer,
    SecureSetup,
    checked_publish,
    checked_request,
    checked_subscribe,
    secure_connect,
)
from tests.foundation.security.conftest import ConnectAs

pytestmark = pytest.mark.nats

STATE = "foundation_state"
REGISTRY = "foundation_registry"
NODES = "foundation_nodes"
COORD = "foundation_coord"


async def _cluster_data(node: NatsClient) -> dict[str, bytes]:
    """Create the cluster's buckets and streams as a node would, with one record each."""
    js = node.jetstream()
    values: dict[str, bytes] = {}
    for bucket, key, value in (
        (STATE, "default.acc-1", b'{"pin": "1234", "count": 1}'),
        (REGISTRY, "default.acc-1", b'{"owner": "n1"}'),
        (NODES, "n1", b'{"node": "n1"}'),
        (COORD, "lease.leader", b'{"holder": "n1"}'),
    ):
        kv = await js.create_key_value(bucket=bucket)
        await kv.put(key, value)
        values[f"{bucket}/{key}"] = value
    await js.add_stream(StreamConfig(name="FOUNDATION_INBOX", subjects=["foundation.inbox.>"]))
    return values


async def _unchanged(node: NatsClient, before: dict[str, bytes]) -> None:
    js = node.jetstream()
    for where, value in before.items():
        bucket, key = where.split("/", 1)
        kv = await js.key_value(bucket)
        assert (await kv.get(key)).value == value, where
    assert (await js.stream_info("FOUNDATION_INBOX")).config.name == "FOUNDATION_INBOX"


@pytest.fixture
async def attacked(connect_as: ConnectAs) -> tuple[NatsClient, NatsClient, dict[str, bytes]]:
    node = await connect_as("node")
    before = await _cluster_data(node)
    client = await connect_as("client")
    return node, client, before


async def test_reading_the_state_bucket_is_refused(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]],
) -> None:
    node, client, before = attacked
    for subject in (
        f"$JS.API.STREAM.INFO.KV_{STATE}",
        f"$JS.API.DIRECT.GET.KV_{STATE}.$KV.{STATE}.default.acc-1",
        f"$JS.API.STREAM.MSG.GET.KV_{STATE}",
        f"$JS.API.CONSUMER.CREATE.KV_{STATE}",
    ):
        with pytest.raises(PermissionDeniedError):
            await checked_request(client, subject, b'{"last_by_subj": "$KV.foundation_state.>"}')
    with pytest.raises(PermissionDeniedError):
        await checked_subscribe(client, f"$KV.{STATE}.>")
    await _unchanged(node, before)


async def test_forging_a_checkpoint_is_refused(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]],
) -> None:
    node, client, before = attacked
    with pytest.raises(PermissionDeniedError):
        await checked_publish(client, f"$KV.{STATE}.default.acc-1", b'{"count": 1000000}')
    await _unchanged(node, before)


async def test_writing_registry_and_node_records_is_refused(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]],
) -> None:
    node, client, before = attacked
    with pytest.raises(PermissionDeniedError):
        await checked_publish(client, f"$KV.{REGISTRY}.default.acc-1", b'{"owner": "evil"}')
    with pytest.raises(PermissionDeniedError):
        await checked_publish(client, f"$KV.{NODES}.evil", b'{"node": "evil"}')
    await _unchanged(node, before)


async def test_taking_the_leader_lease_is_refused(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]],
) -> None:
    node, client, before = attacked
    with pytest.raises(PermissionDeniedError):
        await checked_publish(client, f"$KV.{COORD}.lease.leader", b'{"holder": "evil"}')
    await _unchanged(node, before)


async def test_deleting_streams_is_refused(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]], connect_as: ConnectAs
) -> None:
    node, client, before = attacked
    for stream in (f"KV_{STATE}", "FOUNDATION_INBOX"):
        for verb in ("DELETE", "PURGE"):
            with pytest.raises(PermissionDeniedError):
                await checked_request(client, f"$JS.API.STREAM.{verb}.{stream}")
    # no role deletes a stream: not even a node's or an admin's credentials
    for role in ("node", "admin"):
        other = await connect_as(role)
        with pytest.raises(PermissionDeniedError):
            await checked_request(other, f"$JS.API.STREAM.DELETE.KV_{STATE}")
    await _unchanged(node, before)


async def test_node_ops_are_refused_to_clients(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]], connect_as: ConnectAs
) -> None:
    node, client, before = attacked
    for op in ("drain", "stop", "state", "start", "handoff", "call", "ping", "stats"):
        with pytest.raises(PermissionDeniedError):
            await checked_publish(client, f"foundation.node.n1.{op}", b"{}")
    observer = await connect_as("observer")
    for op in ("drain", "stop", "state"):
        with pytest.raises(PermissionDeniedError):
            await checked_publish(observer, f"foundation.node.n1.{op}", b"{}")
    await checked_publish(observer, "foundation.node.n1.stats", b"{}")
    admin = await connect_as("admin")
    await checked_publish(admin, "foundation.node.n1.drain", b"{}")
    with pytest.raises(PermissionDeniedError):  # an admin does not read agents' state
        await checked_publish(admin, "foundation.node.n1.state", b"{}")
    await _unchanged(node, before)


async def test_writing_the_audit_trail_is_refused_to_clients(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]],
) -> None:
    _, client, _ = attacked
    with pytest.raises(PermissionDeniedError):
        await checked_publish(client, "foundation.audit.default", b"{}")


async def test_what_a_client_may_do_still_works(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]],
) -> None:
    node, client, _ = attacked
    sub = await node.subscribe("foundation.agent.default.acc-1")
    await node.flush()
    await checked_publish(client, "foundation.agent.default.acc-1", b"cast")
    assert (await sub.next_msg(timeout=5)).data == b"cast"


async def test_injecting_into_an_inbox_is_refused(
    attacked: tuple[NatsClient, NatsClient, dict[str, bytes]],
) -> None:
    # a cast to an at-least-once agent reaches its inbox through a node, which authorizes it
    node, client, before = attacked
    with pytest.raises(PermissionDeniedError):
        await checked_publish(client, "foundation.inbox.default.acc-1", b"signal")
    await _unchanged(node, before)


async def test_no_credentials_no_connection(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    with pytest.raises(AuthenticationError):
        await secure_connect(secure_server.url, NatsAuth.of(tls_ca=secure_setup.ca))
