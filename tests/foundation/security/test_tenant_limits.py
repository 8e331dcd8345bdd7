"""A tenant account's JetStream limits change on the running server, without a restart: the
server enforces the new ones at once, keeps them across a restart, and a change it cannot take
is refused with nothing changed."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from foundation import LimitsNotAppliedError
from foundation.security import (
    NatsAuth,
    SecureNatsServer,
    SecureSetup,
    TenantLimits,
    change_tenant_limits,
    load_secure_setup,
    secure_connect,
    tenant_jetstream,
)
from foundation.security._roles import NODE_STREAMS
from tests.foundation.conftest import run_cli

pytestmark = pytest.mark.nats


async def _cli(*args: str) -> tuple[int, str, str]:
    return await run_cli(*args, merge=False)


async def _create_streams(server: SecureNatsServer, setup: SecureSetup, n: int) -> list[str]:
    """Try to create ``n`` streams as the tenant's node; the server's answers (ok or error)."""
    auth = NatsAuth.of(creds=setup.creds_for("node", "acme"), tls_ca=setup.ca)
    nc = await secure_connect(server.url, auth, name="test-streams")
    answers: list[str] = []
    try:
        for i, name in enumerate(NODE_STREAMS[:n]):  # streams a node may create
            config = {"name": name, "subjects": [f"limits.test.{i}"]}
            msg = await nc.request(f"$JS.API.STREAM.CREATE.{name}", orjson.dumps(config), timeout=5)
            reply = orjson.loads(msg.data)
            answers.append("ok" if "error" not in reply else reply["error"]["description"])
    finally:
        await nc.close()
    return answers


async def test_new_limits_hold_at_once_and_across_a_restart(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    before = await tenant_jetstream(secure_server.url, secure_setup, "acme")
    assert before["limits"]["streams"] == TenantLimits().streams

    new = TenantLimits(streams=2, consumers=50, mem_storage=2**29, disk_storage=2**30)
    changed = await change_tenant_limits(secure_server.url, secure_setup, "acme", new)
    assert changed.limits["acme"] == new

    report = await tenant_jetstream(secure_server.url, secure_setup, "acme")
    assert report["limits"] == {
        "disk_storage": 2**30,
        "mem_storage": 2**29,
        "streams": 2,
        "consumers": 50,
    }
    # enforced by the server from now on: the third stream is refused
    answers = await _create_streams(secure_server, secure_setup, 3)
    assert answers[:2] == ["ok", "ok"], answers
    assert "maximum number of streams reached" in answers[2], answers
    # the directory has them too: a reload of it, and the server restarted from it
    assert load_secure_setup(secure_setup.dir).limits["acme"] == new
    await asyncio.to_thread(secure_server.restart)
    report = await tenant_jetstream(secure_server.url, secure_setup, "acme")
    assert report["limits"]["streams"] == 2 and report["used"]["streams"] == 2


async def test_limits_the_server_has_no_room_for_change_nothing(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    conf_before = secure_setup.server_config.read_text()
    too_big = TenantLimits(disk_storage=2**50)  # a pebibyte: far past the server's store
    with pytest.raises(LimitsNotAppliedError) as err:
        await change_tenant_limits(secure_server.url, secure_setup, "acme", too_big)
    assert "max_file_store" in err.value.message
    report = await tenant_jetstream(secure_server.url, secure_setup, "acme")
    assert report["limits"]["disk_storage"] == TenantLimits().disk_storage
    assert secure_setup.server_config.read_text() == conf_before
    assert load_secure_setup(secure_setup.dir).limits["acme"] == TenantLimits()
    # the old account JWT was sent back: a later change still works
    smaller = TenantLimits(streams=10)
    await change_tenant_limits(secure_server.url, secure_setup, "acme", smaller)
    report = await tenant_jetstream(secure_server.url, secure_setup, "acme")
    assert report["limits"]["streams"] == 10


async def test_the_cli_shows_and_changes_a_tenants_jetstream_limits(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> None:
    where = ["--dir", str(secure_setup.dir), "--nats", secure_server.url]
    code, out, err = await _cli("quota", "jetstream", "acme", *where, "--streams", "7", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["limits"]["streams"] == 7
    assert report["limits"]["disk_storage"] == TenantLimits().disk_storage  # the others kept

    code, out, err = await _cli("quota", "jetstream", "acme", *where, "--mem-storage", "256M")
    assert code == 0, err
    assert "256 MiB" in out and "JetStream of acme" in out

    code, out, err = await _cli("quota", "jetstream", "acme", *where, "--disk-storage", "0")
    assert code == 2 and "must be above 0" in err and "Traceback" not in err
    code, out, err = await _cli("quota", "jetstream", "nobody", *where)
    assert code == 1 and "no tenant 'nobody'" in err and "Traceback" not in err
    # the keys and the creds never show
    assert "SUA" not in out + err and "eyJ" not in out + err
