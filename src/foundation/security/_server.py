"""Secure embedded ``nats-server`` launchers: TLS plus operator (JWT) authentication.

:class:`SecureNatsServer` is a :class:`foundation.nats.server.NatsServer` whose config adds the
``server.conf`` of a :class:`SecureSetup` (operator, preloaded accounts, TLS); its URL is
``tls://127.0.0.1:<port>``. :class:`SecureNatsCluster` does the same for a 3-server
JetStream cluster (routes stay on loopback). Both write a fresh setup to a temporary
directory unless one is given.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from foundation.nats.server import LOOPBACK, NatsCluster, NatsServer
from foundation.security._setup import SecureSetup, write_secure_setup


def _setup_or_new(
    setup: SecureSetup | None, tenants: tuple[str, ...]
) -> tuple[SecureSetup, tempfile.TemporaryDirectory[str] | None]:
    if setup is not None:
        return setup, None
    tmp = tempfile.TemporaryDirectory(prefix="foundation-secure-")
    return write_secure_setup(tmp.name, tenants), tmp


def _reserve(server: NatsServer, setup: SecureSetup) -> None:
    """Size ``server``'s JetStream for every tenant's limits (unless sizes were given)."""
    reserved = setup.jetstream_reserved()
    if reserved is None:
        return
    memory, disk = reserved
    if server.max_memory_store is None:
        server.max_memory_store = memory
    if server.max_file_store is None:
        server.max_file_store = disk


class SecureNatsServer(NatsServer):
    """One TLS + authenticated ``nats-server`` with JetStream on a free loopback port.

    ``setup`` is the directory written by :func:`write_secure_setup`; without one, a new
    setup (with ``tenants``) is written to a temporary directory removed on :meth:`stop`.
    Connect with the setup's creds and CA (``NatsAuth.of(creds=..., tls_ca=setup.ca)``).
    """

    def __init__(
        self,
        setup: SecureSetup | None = None,
        *,
        tenants: tuple[str, ...] = (),
        **options: Any,
    ) -> None:
        self.setup, self._setup_tmp = _setup_or_new(setup, tenants)
        self._extra = str(options.pop("extra_config", ""))
        super().__init__(extra_config=self._secure_config(), **options)
        _reserve(self, self.setup)

    def _secure_config(self) -> str:
        conf = self.setup.server_config.read_text()
        return f"{conf}\n{self._extra}".strip()

    def _config_text(self) -> str:
        # read at every (re)start: account JWTs changed since (new JetStream limits) hold
        self.extra_config = self._secure_config()
        return super()._config_text()

    @property
    def url(self) -> str:
        """Client URL, ``tls://127.0.0.1:<port>``."""
        if self.is_external:
            return super().url
        return f"tls://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        """Stop the server; remove its data and any setup it wrote itself."""
        super().stop()
        if self._setup_tmp is not None:
            self._setup_tmp.cleanup()
            self._setup_tmp = None

    def __repr__(self) -> str:
        return f"Secure{super().__repr__()}"


class SecureNatsCluster(NatsCluster):
    """N TLS + authenticated ``nats-server`` processes forming one JetStream cluster."""

    def __init__(
        self,
        size: int = 3,
        *,
        setup: SecureSetup | None = None,
        tenants: tuple[str, ...] = (),
        **options: Any,
    ) -> None:
        self.setup, self._setup_tmp = _setup_or_new(setup, tenants)
        super().__init__(size, **options)
        conf = self.setup.server_config.read_text()
        for srv in self.servers:
            srv.extra_config = conf
            _reserve(srv, self.setup)

    @property
    def urls(self) -> list[str]:
        """Client URLs (``tls://``) of every server."""
        return [f"tls://{LOOPBACK}:{s.port}" for s in self.servers]

    def stop(self) -> None:
        """Stop every server; remove temporary data and any setup written here."""
        super().stop()
        if self._setup_tmp is not None:
            self._setup_tmp.cleanup()
            self._setup_tmp = None


def setup_dir_env(setup: SecureSetup, role: str = "node") -> dict[str, str]:
    """Environment variables that point :meth:`NatsAuth.from_env` at ``setup``'s ``role``."""
    return {
        "FOUNDATION_CREDS": os.fspath(setup.dir / f"{role}.creds"),
        "FOUNDATION_TLS_CA": os.fspath(setup.ca),
    }


__all__ = ["SecureNatsCluster", "SecureNatsServer", "setup_dir_env"]
