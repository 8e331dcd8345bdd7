"""``Client``: calls and casts to the cluster's agents, hosting none and joining nothing.

```python
async with Client(nats=url, creds="dir/client.creds", tls_ca="dir/ca.pem") as c:
    out = await c.ref("acc-1").call(Signal(type="account.deposit", source="/web", data={...}))
```

What a web front end, a script or another service uses. It holds one NATS connection, never
writes a membership record, reads no bucket (the *client* role may not) and reaches every
agent through the public agent subjects, which any node serves: ``c.ref(id)`` is a
:class:`~foundation.messaging.ref.ClusterRef` with the same ``call`` / ``cast`` as
``node.ref(id)``. With a creds file of this project's setup the requests go out on the
principal's attested subject (``foundation.from.<role>.<name>.foundation.agent.<tenant>.<id>``),
so the node that serves them knows who sent them; a refusal is a typed
``PermissionDeniedError`` (or ``AuthenticationError``) reply.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from foundation._errors import InvalidRequestError, NodeUnavailableError, PermissionDeniedError
from foundation._ids import check_agent_id, check_token
from foundation._wire import DEFAULT_TENANT, HDR_CAST, HDR_META, HDR_TIMEOUT
from foundation.messaging.envelope import Subjects, check_size, decode_reply
from foundation.messaging.ref import ClusterRef, FailFast, UnreachablePolicy
from foundation.registry.registry import ClusterRegistry, RegistryRecord
from foundation.security._auth import NatsAuth, permission_monitor
from foundation.security._connect import is_secure, open_connection
from foundation.security._guard import auth_of
from foundation.security._roles import Principal, principal_subject
from jido import Signal, TimeoutError

PathLike = str | os.PathLike[str]


class _ClientLocator:
    """The :class:`~foundation.messaging.ref.Locator` of a client's refs: nothing is local,
    every agent is reached through its public subject."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.node_id = client.name
        self.call_timeout = client.call_timeout
        self.ref_policy: UnreachablePolicy = FailFast()
        self.registry: ClusterRegistry = None  # type: ignore[assignment]  # clients read none

    def local(self, agent_id: str) -> Any:
        return None

    def durable(self, agent_id: str) -> bool:
        return False

    async def wait_local(self, agent_id: str, deadline: float) -> Any:
        return None

    async def record(self, agent_id: str, *, consistent: bool) -> RegistryRecord | None:
        return None

    def is_live(self, node_id: str) -> bool:
        return True

    def agent_class(self, agent_id: str) -> type | None:
        return None

    def virtual_class(self, agent_id: str, cls: type | None) -> type | None:
        # A client hosts no agent type: a virtual agent is activated by the node its request
        # reaches (the public subject), never here.
        return None

    async def activate(self, agent_id: str, cls: type) -> RegistryRecord:
        raise NodeUnavailableError(
            f"a client does not activate agents; send to {agent_id!r} through a node",
            details={"agent_id": agent_id},
        )

    async def cast_remote(
        self, agent_id: str, signal: Signal, meta: Mapping[str, Any] | None
    ) -> None:
        await self.client._cast(agent_id, self.client.tenant, signal, meta)

    async def request(
        self,
        node_id: str,
        op: str,
        payload: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 - the Locator protocol
        agent_id: str,
    ) -> Any:
        raise InvalidRequestError(
            f"a Client sends no node op ({op!r}); it reaches agents on their public subjects",
            details={"op": op, "agent_id": agent_id},
        )


class ClientRef(ClusterRef):
    """A :class:`ClusterRef` of a :class:`Client` (``call`` and ``cast``; no ``state``)."""

    __slots__ = ()

    async def _remote(
        self,
        op: str,
        signal: Signal | None,
        deadline: float,
        meta: Mapping[str, Any] | None,
    ) -> Any:
        loc = self.locator
        assert isinstance(loc, _ClientLocator)
        if op != "call" or signal is None:
            raise InvalidRequestError(
                "a Client does not read agent state; call an action that returns what you need",
                details={"op": op, "agent_id": self.id},
            )
        return await loc.client._call(self.id, self.tenant, signal, deadline, meta)

    async def _cast(self, signal: Signal, meta: dict[str, Any] | None) -> None:
        loc = self.locator
        assert isinstance(loc, _ClientLocator)
        await loc.client._cast(self.id, self.tenant, signal, meta)


class Client:
    """Calls and casts to agents of a cluster; hosts none, never joins the membership.

    Args:
        nats: NATS URL(s) of the cluster (comma-separated, or a list).
        creds, tls_ca, nkey_seed, token, auth: credentials and TLS of the connection (see
            :class:`~foundation.security.NatsAuth`); a secure cluster gives clients
            ``DIR/client.creds`` and ``DIR/ca.pem``.
        tenant: the tenant whose agents ``ref`` reaches by default.
        call_timeout: default timeout of ``call``, in seconds.
        name: the connection's name (default ``client-<random>``).
    """

    def __init__(
        self,
        nats: str | Sequence[str],
        *,
        creds: PathLike | None = None,
        tls_ca: PathLike | None = None,
        nkey_seed: PathLike | None = None,
        token: str | None = None,
        auth: NatsAuth | None = None,
        tenant: str = DEFAULT_TENANT,
        call_timeout: float = 5.0,
        name: str | None = None,
    ) -> None:
        self.url = nats if isinstance(nats, str) else ",".join(nats)
        self.auth = auth_of(auth, creds=creds, tls_ca=tls_ca, nkey_seed=nkey_seed, token=token)
        self.tenant = check_token("tenant", tenant)
        self.call_timeout = float(call_timeout)
        self.name = check_token("client name", name or f"client-{uuid.uuid4().hex[:8]}")
        self.principal: Principal | None = self.auth.principal
        """Who this client is, as the server attests it (from the creds file), if known."""
        self.subjects = Subjects()
        self._locator = _ClientLocator(self)
        self.nc: NatsClient | None = None

    async def start(self) -> None:
        """Connect (a refused login raises ``AuthenticationError`` saying why)."""
        if self.nc is None:
            self.nc = await open_connection(
                self.url, self.auth, name=f"foundation-{self.name}", max_reconnect_attempts=-1
            )

    async def close(self) -> None:
        """Flush what was sent and disconnect."""
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            await nc.drain()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def ref(
        self, agent_id: str, *, tenant: str | None = None, agent_cls: type | None = None
    ) -> ClusterRef:
        """A reference to agent ``agent_id`` (nothing is looked up)."""
        check_agent_id(agent_id)
        return ClientRef(self._locator, agent_id, tenant=tenant or self.tenant, agent_cls=agent_cls)

    # -- the wire ------------------------------------------------------------------------------

    def _connection(self) -> NatsClient:
        if self.nc is None or self.nc.is_closed:
            raise NodeUnavailableError(
                "the client is not connected; use `async with Client(...)` or await start()",
                details={"client": self.name},
            )
        return self.nc

    def subject(self, agent_id: str, tenant: str) -> str:
        """The subject this client sends to ``agent_id`` on (attested when it has a
        principal)."""
        plain = self.subjects.agent(agent_id, tenant)
        if self.principal is not None and is_secure(self.auth):
            return principal_subject(self.principal, plain)
        return plain

    @staticmethod
    def _headers(meta: Mapping[str, Any] | None, timeout: float | None) -> dict[str, str] | None:
        headers: dict[str, str] = {}
        if timeout is not None:
            headers[HDR_TIMEOUT] = f"{timeout:.3f}"
        if meta:
            headers[HDR_META] = orjson.dumps(dict(meta)).decode()
        return headers or None

    async def _call(
        self,
        agent_id: str,
        tenant: str,
        signal: Signal,
        deadline: float,
        meta: Mapping[str, Any] | None,
    ) -> Any:
        return await self._request("call", agent_id, tenant, signal, deadline, meta)

    async def _cast(
        self, agent_id: str, tenant: str, signal: Signal, meta: Mapping[str, Any] | None
    ) -> None:
        deadline = asyncio.get_running_loop().time() + self.call_timeout
        await self._request("cast", agent_id, tenant, signal, deadline, meta)

    async def _request(
        self,
        what: str,
        agent_id: str,
        tenant: str,
        signal: Signal,
        deadline: float,
        meta: Mapping[str, Any] | None,
    ) -> Any:
        """A call, or a cast acknowledged by the node that took it (a client's cast is never
        silently lost: to an ``at_least_once`` agent it returns once JetStream stored it)."""
        nc = self._connection()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(
                f"{what} to agent {agent_id!r} got no reply in time; retry or raise the timeout",
                details={"agent_id": agent_id},
            )
        subject = self.subject(agent_id, tenant)
        data = signal.to_json().encode()
        check_size(data, nc.max_payload, f"{what} to agent {agent_id!r}")
        headers = self._headers(meta, remaining * 0.95 if what == "call" else None) or {}
        if what == "cast":
            headers[HDR_CAST] = "1"
        try:
            msg = await self._checked(nc, subject, data, remaining, headers)
        except NoRespondersError as exc:
            raise NodeUnavailableError(
                f"no node serves agent {agent_id!r} (no responders): is the cluster up?",
                details={"agent_id": agent_id},
                cause=exc,
            ) from exc
        except NatsTimeoutError as exc:
            raise TimeoutError(
                f"{what} to agent {agent_id!r} got no reply in time; retry or raise the timeout",
                details={"agent_id": agent_id},
            ) from exc
        except ConnectionClosedError as exc:
            raise NodeUnavailableError(
                "the client's NATS connection is closed", details={"client": self.name}
            ) from exc
        return decode_reply(msg.data)

    @staticmethod
    async def _checked(
        nc: NatsClient,
        subject: str,
        data: bytes,
        timeout: float,  # noqa: ASYNC109 - the request's own deadline, passed to nats
        headers: dict[str, str],
    ) -> Msg:
        """``nc.request``, failing at once with ``PermissionDeniedError`` when the server
        refuses the publish (instead of at the request's timeout).

        The request runs in the caller's task (no task of its own: a call is on every
        ``Client`` call's path); a refusal reported for ``subject`` while it waits cancels that
        task, and the cancellation becomes the refusal, unless someone else cancelled the
        task too (then it stays a cancellation).
        """
        task = asyncio.current_task()
        try:
            monitor = permission_monitor(nc)
        except ValueError:
            monitor = None
        if monitor is None or task is None:
            return await nc.request(subject, data, timeout=timeout, headers=headers or None)
        refused: list[PermissionDeniedError] = []
        waiting = True

        def on_denied(err: PermissionDeniedError) -> None:
            if waiting and not refused:
                refused.append(err)
                task.cancel()

        with monitor.watching(subject, on_denied):
            try:
                return await nc.request(subject, data, timeout=timeout, headers=headers or None)
            except asyncio.CancelledError:
                if refused and task.uncancel() == 0:
                    raise refused[0] from None
                raise
            finally:
                waiting = False


__all__ = ["Client", "ClientRef"]
