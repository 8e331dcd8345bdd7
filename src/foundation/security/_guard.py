"""A node's security: its connections, the endpoint's authorization step and its audit trail.

:class:`NodeSecurity` is what ``Node(creds=..., tls_ca=..., policy=..., audit=...)`` holds:

- :meth:`NodeSecurity.connect` opens every connection of the node (data, control, the lease
  thread's) with the node's :class:`~foundation.security._auth.NatsAuth`;
- :meth:`NodeSecurity.wrap_op` is the one :meth:`Endpoint.wrap` step: an op that arrives on
  an attested subject (``foundation.from.<role>.<name>.foundation.node.<id>.<op>``) runs only
  when the principal's role may send it (the server already refuses the plain node subjects
  to every role but ``node``, and to ``admin``/``observer`` but their few ops);
- :meth:`NodeSecurity.public` guards the public agent subjects: the principal is read from
  the attested subject (a plain subject has none: ``AuthenticationError``), the
  :class:`~foundation.security._policy.Policy` decides before any action runs
  (``PermissionDeniedError``), and an action marked ``audit = True`` is recorded with a
  digest of its params;
- :class:`AuditWriter` appends the node's audit records (spawn, stop, move, failover, fence,
  drain, hand-over, denials) in order from one background task, in batches, so no request
  waits for the trail; :meth:`NodeSecurity.close` writes what is queued before the node disconnects;
- with the trail on, the node also records the server's refused logins it receives (one node
  of the ``APP`` account's queue group per refusal; see :mod:`._logins`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from foundation._errors import AuthenticationError, PermissionDeniedError
from foundation.messaging.endpoint import Endpoint, Handler
from foundation.messaging.envelope import Subjects, decode_public_signal
from foundation.security._audit import AuditLog, iso_time
from foundation.security._auth import NatsAuth
from foundation.security._connect import is_secure, open_connection
from foundation.security._keys import KeyPair
from foundation.security._logins import (
    LOGIN_REFUSED_EVENT,
    REFUSED_LOGINS,
    REFUSED_LOGINS_QUEUE,
    refused_login,
)
from foundation.security._policy import AllowAll, Policy, RolePolicy, require
from foundation.security._roles import (
    ADMIN_NODE_OPS,
    FROM_PREFIX,
    OBSERVER_NODE_OPS,
    Principal,
    parse_principal_subject,
)
from jido import Signal

log = logging.getLogger("foundation.security")

_FROM = f"{FROM_PREFIX}."
#: Node ops written to the audit trail when served (with the principal that sent them).
_AUDITED_OPS = {"drain": "node.drain", "handoff": "agent.hand_over"}
_AUDIT_QUEUE = 10_000
_AUDIT_BATCH = 1_000
#: Seconds a node's audit writer waits after a record for more to store in the same batch.
AUDIT_LINGER = 0.02
_SEED = re.compile(r"\bSU[A-Z2-7]{50,}\b")


def default_policy() -> Policy:
    """The policy of a secure node unless one is given: nodes and clients may send any signal
    to any agent, admins anything, everyone else (observers, the unauthenticated) nothing."""
    return RolePolicy({"node": {"*": ["*"]}, "client": {"*": ["*"]}}, admins_all=True)


def op_allowed(role: str, op: str) -> bool:
    """True when a principal of ``role`` may send node op ``op`` (as the server allows)."""
    if role == "node":
        return True
    if role == "admin":
        return op in ADMIN_NODE_OPS
    if role == "observer":
        return op in OBSERVER_NODE_OPS
    return False


def signing_key(auth: NatsAuth) -> KeyPair:
    """The key that signs this node's audit checkpoints: its creds' user key, else a new one."""
    if auth.creds is not None:
        with contextlib.suppress(OSError, ValueError):
            found = _SEED.search(auth.creds.read_text())
            if found is not None:
                return KeyPair.from_seed(found.group(0))
    return KeyPair.create("user")


def action_of(agent_cls: type | None, signal: Signal) -> type | None:
    """The action ``signal`` routes to on ``agent_cls`` (``None`` when unknown here)."""
    router = getattr(agent_cls, "_router", None)
    if router is None:
        return None
    try:
        routes = router.route(signal)
    except Exception:
        return None
    target = routes[0].target if routes else None
    return target if isinstance(target, type) else None


def params_digest(data: Any) -> str:
    """SHA-256 of the canonical JSON of an action's params (what the trail keeps of them)."""
    raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(raw).hexdigest()


class AuditWriter:
    """Appends a node's records to an :class:`AuditLog` in order, from one background task.

    Records are batched: after the first record of a batch the writer waits ``linger``
    seconds (or until :meth:`flush` or :meth:`close`) for more, then stores what came in as
    few stream messages as fit. A busy node thus pays one JetStream publish per batch, not per
    record; a record reaches the stream at most ``linger`` seconds (plus one append) after it
    was made. Each record keeps the time it was recorded, not the time it was written.
    """

    def __init__(
        self,
        log_: AuditLog,
        *,
        tenant: str,
        linger: float = AUDIT_LINGER,
        max_batch: int = _AUDIT_BATCH,
    ) -> None:
        self.log = log_
        self.tenant = tenant
        self.linger = linger
        self.max_batch = max_batch
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_AUDIT_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()
        self.written = 0
        self.dropped = 0

    async def start(self) -> None:
        """Create the stream if needed and start writing."""
        await self.log.ensure()
        self._task = asyncio.create_task(self._run(), name=f"audit-{self.log.node}")

    def record(
        self,
        event: str,
        *,
        principal: Principal | str | None = None,
        subject: str = "",
        details: Mapping[str, Any] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Queue one record (never waits; a full queue drops it with a warning). ``msg_id``:
        see :meth:`AuditLog.append` (a fact several nodes record, stored once)."""
        body = {
            "event": event,
            "tenant": self.tenant,
            "principal": principal,
            "subject": subject,
            "details": dict(details or {}),
            "time": time.time(),  # formatted by the writer, off the caller's path
            "msg_id": msg_id,
        }
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("audit queue full: %s on %s not recorded", event, subject)

    async def flush(self) -> None:
        """Return once every record queued so far is written (no lingering)."""
        self._now.set()
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            if first is not None and self.linger > 0 and not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), self.linger)
            while batch[-1] is not None and len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._write([b for b in batch if b is not None])
            finally:
                for _ in batch:
                    self._queue.task_done()
            if self._queue.empty():
                self._now.clear()
            if batch[-1] is None:
                return

    async def _write(self, bodies: list[dict[str, Any]]) -> None:
        """Store ``bodies`` in order: runs without a ``msg_id`` as batches, the others alone."""
        run: list[dict[str, Any]] = []
        for each in bodies:
            each["time"] = iso_time(each["time"])
        for body in [*bodies, None]:
            if body is not None and body["msg_id"] is None:
                run.append(body)
                continue
            if run:
                try:
                    self.written += len(await self.log.append_many(run))
                except Exception as exc:
                    log.warning("%d audit records not written: %s", len(run), exc)
                run = []
            if body is None:
                continue
            try:
                rec = await self.log.append(
                    body["event"],
                    tenant=body["tenant"],
                    principal=body["principal"],
                    subject=body["subject"],
                    details=body["details"],
                    msg_id=body["msg_id"],
                    time=body["time"],
                )
                if rec is not None:
                    self.written += 1
            except Exception as exc:
                log.warning("audit record %s not written: %s", body["event"], exc)

    async def close(self, limit: float = 5.0) -> None:
        """Write what is queued (within ``limit`` seconds), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        self._now.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), limit)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None


class NodeSecurity:
    """The security parts of one node (see the module docs).

    ``auth`` holds the node's credentials and TLS settings; security is on when it logs in or
    uses TLS. ``policy`` decides who may send what to which agent (default: see
    :func:`default_policy`; with security off everything is allowed). ``audit`` turns the
    node's audit trail on (default: on exactly when security is on).
    """

    def __init__(
        self,
        auth: NatsAuth | None = None,
        *,
        policy: Policy | None = None,
        audit: bool | None = None,
    ) -> None:
        self.auth = auth or NatsAuth()
        self.on = is_secure(self.auth)
        self.policy: Policy = policy or (default_policy() if self.on else AllowAll())
        self.audit_on = self.on if audit is None else bool(audit)
        self.audit: AuditWriter | None = None
        self.denied = 0
        self._node: Any = None
        self._logins: Any = None

    @property
    def authorizing(self) -> bool:
        """True when the endpoint checks callers (security on, or a policy given)."""
        return self.on or not isinstance(self.policy, AllowAll)

    async def connect(
        self,
        url: str,
        *,
        name: str,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> NatsClient:
        """Open one of the node's connections with its credentials."""
        return await open_connection(
            url, self.auth, name=name, on_disconnect=on_disconnect, on_reconnect=on_reconnect
        )

    # -- start and stop ------------------------------------------------------------------------

    async def start(self, node: Any, endpoint: Endpoint) -> None:
        """Install the endpoint step and, with the trail on, start the node's audit writer.

        ``node`` is the :class:`foundation.Node` (its connection, registry, host and
        id are read).
        """
        self._node = node
        if self.authorizing:
            endpoint.wrap(self.wrap_op)
        if not self.audit_on:
            return
        replicas = node._kv["state"].replicas
        writer = AuditWriter(
            AuditLog(
                node.nc.jetstream(), node=node.id, key=signing_key(self.auth), replicas=replicas
            ),
            tenant=node.tenant,
        )
        await writer.start()
        self.audit = writer
        self._logins = await node.nc.subscribe(
            f"{REFUSED_LOGINS}.*", queue=REFUSED_LOGINS_QUEUE, cb=self._on_refused_login
        )
        node.host.fence_listeners.append(lambda: self.record("node.fence", subject=node.id))
        node.registry.add_listener(self._on_registry)

    def watch_failover(self, failover: Any) -> None:
        """Record the leader's failover decisions (moves and removals of a dead node's agents)."""
        if self.audit is None or failover is None:
            return

        def on_event(event: Any) -> None:
            if event.kind in ("moved", "removed"):
                self.record(
                    f"failover.{event.kind}",
                    subject=event.agent_id,
                    details={"from": event.from_node, "to": event.to_node, "term": event.term},
                )

        failover.add_listener(on_event)

    async def close(self) -> None:
        """Write the queued audit records and stop the writer."""
        if self._logins is not None:
            with contextlib.suppress(Exception):
                await self._logins.unsubscribe()
            self._logins = None
        if self.audit is not None:
            await self.audit.close()
            self.audit = None

    # -- audit ---------------------------------------------------------------------------------

    def record(
        self,
        event: str,
        *,
        principal: Principal | str | None = None,
        subject: str = "",
        details: Mapping[str, Any] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Queue an audit record (a no-op with the trail off); ``principal`` defaults to this
        node; ``msg_id`` names a fact several nodes record (stored once)."""
        if self.audit is None:
            return
        who = principal if principal is not None else f"node/{self._node.id}"
        self.audit.record(
            event, principal=str(who), subject=subject, details=details, msg_id=msg_id
        )

    async def _on_refused_login(self, msg: Msg) -> None:
        details = refused_login(msg.data)
        if details is None:
            log.warning("ignored a malformed refused-login advisory on %s", msg.subject)
            return
        self.denied += 1
        host = details.get("host", "?")
        self.record(LOGIN_REFUSED_EVENT, principal="anonymous", subject=host, details=details)
        if self._node is not None:
            reason = details.get("reason", "refused")
            self._node.host.events.add("denied", detail=f"login from {host}: {reason}")

    def _on_registry(self, change: Any) -> None:
        # Each move is recorded once, by its new owner (every node sees every change).
        record, previous = change.record, change.previous
        if (
            change.kind == "put"
            and previous is not None
            and record is not None
            and record.node == self._node.id
            and previous.node != record.node
        ):
            self.record(
                "agent.move",
                subject=record.agent_id,
                details={"from": previous.node, "to": record.node, "epoch": record.epoch},
            )

    # -- authorization -------------------------------------------------------------------------

    def _deny(self, exc: PermissionDeniedError | AuthenticationError, subject: str) -> None:
        self.denied += 1
        event = "auth.denied" if isinstance(exc, PermissionDeniedError) else "auth.failed"
        principal = exc.details.get("principal") or "anonymous"
        self.record(event, principal=str(principal), subject=subject, details=exc.details)
        if self._node is not None:
            self._node.host.events.add(
                "denied", agent=exc.details.get("agent_id"), detail=f"{principal}: {exc}"
            )

    def wrap_op(self, name: str, handler: Handler) -> Handler:
        """The endpoint step: an attested op runs only for a role that may send it."""
        audited = _AUDITED_OPS.get(name)
        if audited is None:

            async def checked(msg: Msg) -> Any:
                if msg.subject.startswith(_FROM):
                    self._check_op(name, msg)
                return await handler(msg)

            return checked

        async def checked_audited(msg: Msg) -> Any:
            principal: Principal | str = "node-or-admin"  # the plain subject: server-checked
            if msg.subject.startswith(_FROM):
                principal = self._check_op(name, msg)
            self.record(audited, principal=principal, subject=self._node.id, details={"op": name})
            return await handler(msg)

        return checked_audited

    def _check_op(self, name: str, msg: Msg) -> Principal:
        try:
            principal, _ = parse_principal_subject(msg.subject)
        except ValueError as exc:
            err = AuthenticationError(str(exc), details={"subject": msg.subject})
            self._deny(err, msg.subject)
            raise err from exc
        if not op_allowed(principal.role, name):
            denied = PermissionDeniedError(
                f"{principal} may not send node op {name!r}: its role does not allow it",
                details={"principal": str(principal), "op": name},
            )
            self._deny(denied, msg.subject)
            raise denied
        return principal

    def public(self, handler: Handler, subjects: Subjects) -> Handler:
        """Guard the public agent subjects' handler (see the module docs)."""
        if not self.authorizing:
            return handler

        async def guarded(msg: Msg) -> Any:
            principal: Principal | None = None
            if msg.subject.startswith(_FROM):
                try:
                    principal, inner = parse_principal_subject(msg.subject)
                except ValueError as exc:
                    raise AuthenticationError(str(exc), details={"subject": msg.subject}) from exc
                msg.subject = inner  # this delivery's own message: no copy needed
            tenant, agent_id = subjects.parse_agent(msg.subject)
            signal = decode_public_signal(msg.headers, msg.data)
            self.authorize(principal, agent_id, signal, tenant=tenant)
            return await handler(msg)

        return guarded

    def authorize(
        self, principal: Principal | None, agent_id: str, signal: Signal, *, tenant: str
    ) -> None:
        """Raise the typed refusal unless the policy lets ``principal`` send ``signal``;
        record a call of an action marked ``audit = True``."""
        node = self._node
        record = node.registry.cached(agent_id, tenant=tenant) if node is not None else None
        agent_type = record.type if record is not None else ""
        action = action_of(node.host.types.get(agent_type) if node else None, signal)
        action_name = getattr(action, "name", None)
        try:
            require(self.policy, principal, agent_type, agent_id, signal.type, action_name)
        except (PermissionDeniedError, AuthenticationError) as exc:
            self._deny(exc, agent_id)
            raise
        if getattr(action, "audit", False) is True:
            self.record(
                "action.call",
                principal=principal or "anonymous",
                subject=agent_id,
                details={
                    "signal": signal.type,
                    "action": action_name,
                    "params_sha256": params_digest(signal.data),
                },
            )


def auth_of(
    auth: NatsAuth | None = None,
    *,
    creds: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    nkey_seed: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> NatsAuth:
    """A :class:`NatsAuth` from the keyword options of ``Node`` and ``Client``."""
    return NatsAuth.of(auth, creds=creds, tls_ca=tls_ca, nkey_seed=nkey_seed, token=token)


__all__ = [
    "AuditWriter",
    "NodeSecurity",
    "action_of",
    "auth_of",
    "default_policy",
    "op_allowed",
    "params_digest",
    "signing_key",
]
