"""Fixtures for the security tests: a secure setup and a TLS + authenticated nats-server.

- ``secure_setup``: a fresh :func:`write_secure_setup` directory (tenant ``acme`` too).
- ``secure_server``: one real ``nats-server`` with TLS, the setup's operator and JetStream.
- ``connect_as``: ``await connect_as(role)`` returns a client logged in with that role's
  creds (closed at teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from foundation.security import (
    NatsAuth,
    SecureNatsServer,
    SecureSetup,
    secure_connect,
    write_secure_setup,
)

ConnectAs = Callable[..., Awaitable[NatsClient]]


@pytest.fixture
def secure_setup(tmp_path: Path) -> SecureSetup:
    """A secure setup directory with the four roles and a tenant ``acme``."""
    return write_secure_setup(tmp_path / "secure", tenants=["acme"])


@pytest.fixture
async def secure_server(
    secure_setup: SecureSetup, tmp_path: Path
) -> AsyncIterator[SecureNatsServer]:
    """A TLS + operator-authenticated nats-server (JetStream) on a free loopback port."""
    srv = SecureNatsServer(secure_setup, store_dir=tmp_path / "jetstream")
    await srv.astart()
    try:
        yield srv
    finally:
        await srv.astop()


@pytest.fixture
async def connect_as(
    secure_server: SecureNatsServer, secure_setup: SecureSetup
) -> AsyncIterator[ConnectAs]:
    """Connect with a role's creds (``tenant=`` for a tenant's); closed at teardown."""
    clients: list[NatsClient] = []

    async def _connect(role: str, *, tenant: str | None = None) -> NatsClient:
        auth = NatsAuth.of(
            creds=secure_setup.creds_for(role, tenant),  # type: ignore[arg-type]
            tls_ca=secure_setup.ca,
        )
        nc = await secure_connect(secure_server.url, auth, name=f"test-{role}")
        clients.append(nc)
        return nc

    try:
        yield _connect
    finally:
        for nc in clients:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await nc.close()
