"""The embedded nats-server launchers (single server and 3-server cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import nats.js.errors
import pytest

from foundation._errors import ClusterError, NatsServerError, NatsUnavailableError
from foundation._wire import ERR_CLUSTER_NO_PEERS
from foundation.nats.kv import KV, BucketSpec, translate, while_placing
from foundation.testing import NatsCluster, NatsServer, find_nats_server, free_port
from tests.foundation.conftest import Connect, eventually


def test_find_binary_from_the_pinned_wheel() -> None:
    path = find_nats_server()
    assert path.name.startswith("nats-server")
    assert os.access(path, os.X_OK)


def test_explicit_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NatsServerError, match="does not exist or is not executable"):
        find_nats_server(tmp_path / "no-such-nats-server")


def test_env_binary_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FOUNDATION_NATS_SERVER", str(tmp_path / "missing"))
    with pytest.raises(NatsServerError, match="FOUNDATION_NATS_SERVER"):
        find_nats_server()


def test_sync_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with NatsServer() as srv:
        assert srv.running
        assert srv.healthy()
        assert srv.url.startswith("nats://127.0.0.1:")
        pid = srv.pid
        assert pid is not None
        workdir = srv.log_path.parent
        assert workdir.exists()
    assert not srv.running
    assert srv.pid is None
    assert not workdir.exists()  # temporary data removed


async def test_async_server_serves_jetstream(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    nc = await nats_connect(nats_server)
    kv = await KV.open(nc, BucketSpec("t_server"))
    assert kv.replicas == 1
    rev = await kv.create("k", b"v")
    got = await kv.get("k")
    assert got is not None and got.revision == rev


async def test_restart_keeps_port_and_data(tmp_path: Path, nats_connect: Connect) -> None:
    srv = NatsServer(store_dir=tmp_path / "js")
    await srv.astart()
    try:
        port = srv.port
        nc = await nats_connect(srv)
        kv = await KV.open(nc, BucketSpec("t_restart"))
        await kv.create("k", b"before")
        srv.restart()
        assert srv.port == port
        assert srv.healthy()
        nc2 = await nats_connect(srv)
        kv2 = await KV.open(nc2, BucketSpec("t_restart"))
        got = await kv2.get("k")
        assert got is not None and got.value == b"before"
    finally:
        await srv.astop()
    assert (tmp_path / "js").exists()  # a given store dir is kept


def test_port_clash_is_reported_with_the_log(tmp_path: Path) -> None:
    with NatsServer() as first:
        clash = NatsServer(port=first.port, startup_timeout=5.0)
        with pytest.raises(NatsServerError, match="exited during start-up") as info:
            clash.start()
        assert "log" in info.value.details
        clash.stop()
        assert not clash.running


def test_kill_pause_resume(tmp_path: Path) -> None:
    with NatsServer() as srv:
        srv.pause()
        assert not srv.healthy()
        srv.resume()
        srv.wait_ready()
        assert srv.healthy()
        srv.kill()
        assert not srv.running
        srv.restart()
        assert srv.healthy()


async def test_external_url_wraps_a_running_server(
    nats_server: NatsServer, nats_connect: Connect
) -> None:
    ext = NatsServer.external(nats_server.url)
    async with ext:
        assert ext.is_external
        assert ext.url == nats_server.url
        nc = await nats_connect(ext)
        assert nc.is_connected
    assert nats_server.healthy()  # stopping the wrapper did not touch the real server


async def test_connect_to_nothing_is_a_typed_error(nats_connect: Connect) -> None:
    with pytest.raises(NatsUnavailableError, match="could not connect"):
        await nats_connect(f"nats://127.0.0.1:{free_port()}")


@pytest.mark.nats
async def test_three_server_cluster_survives_losing_the_stream_leader(
    nats_cluster: NatsCluster, nats_connect: Connect
) -> None:
    assert nats_cluster.meta_leader() is not None
    nc = await nats_connect(nats_cluster)
    kv = await KV.open(nc, BucketSpec("t_cluster"), timeout=1.0)
    assert kv.replicas == 3
    rev = await kv.create("k", b"1")
    leader = nats_cluster.stream_leader("KV_t_cluster")
    nats_cluster.kill_server(leader)
    # The remaining two servers elect a new stream leader; writes resume.
    new_rev = await eventually(lambda: kv.put("k", b"2"), retry_on=(NatsUnavailableError,))
    assert new_rev > rev
    nats_cluster.restart_server(leader)
    assert nats_cluster.servers[leader].healthy()
    got = await kv.get("k")
    assert got is not None and got.value == b"2"


def _no_peers() -> nats.js.errors.APIError:
    return nats.js.errors.APIError(
        code=500, err_code=ERR_CLUSTER_NO_PEERS, description="no suitable peers for placement"
    )


async def test_stream_creation_is_retried_while_the_cluster_cannot_place_it() -> None:
    # JetStream answers "no suitable peers" while a server that just (re)joined has not yet sent
    # its first stats to the meta leader; creation must wait that out, not fail the start-up.
    attempts: list[int] = []

    async def create() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise _no_peers()
        return "created"

    assert await while_placing(create, wait=5.0) == "created"
    assert len(attempts) == 3


async def test_stream_creation_gives_up_after_the_placement_wait() -> None:
    attempts: list[int] = []

    async def create() -> str:
        attempts.append(1)
        raise _no_peers()

    with pytest.raises(nats.js.errors.APIError):
        await while_placing(create, wait=0.2)
    assert 1 < len(attempts) < 10


async def test_other_stream_creation_errors_are_not_retried() -> None:
    attempts: list[int] = []

    async def create() -> str:
        attempts.append(1)
        raise nats.js.errors.APIError(code=400, err_code=10058, description="name in use")

    with pytest.raises(nats.js.errors.APIError):
        await while_placing(create, wait=5.0)
    assert attempts == [1]


def test_placement_error_says_what_to_do() -> None:
    err = translate(_no_peers(), op="create bucket", bucket="b")
    assert isinstance(err, ClusterError)
    assert "start the missing JetStream servers" in str(err)
