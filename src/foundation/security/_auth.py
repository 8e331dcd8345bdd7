"""How a connection proves who it is, and how refusals surface as typed errors.

:class:`NatsAuth` gathers the connection's credentials (a ``.creds`` file, an NKey seed
file, a token or user/password) and TLS settings (CA, client certificate) and turns them
into ``nats.connect`` options; its ``str``/``repr`` never show a secret.
:func:`secure_connect` connects with them: a refused login is an :class:`AuthenticationError`
that says it was refused and why (at once, not after a reconnect loop), an untrusted server
certificate too; permission violations the server reports later are collected as
:class:`PermissionDeniedError` (see :func:`permission_monitor`, :func:`checked_request`,
:func:`checked_publish`). :func:`redact_url` strips user, password and token from URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from foundation._errors import AuthenticationError, NatsUnavailableError, PermissionDeniedError
from foundation.nats.redact import REDACTED as _REDACTED
from foundation.nats.redact import redact_text, redact_url
from foundation.nats.tls import tls_client
from foundation.security._jwt import creds_jwt, decode
from foundation.security._roles import ROLES, Principal, inbox_prefix

#: Environment variables read by :meth:`NatsAuth.from_env`.
ENV_CREDS = "FOUNDATION_CREDS"
ENV_NKEY = "FOUNDATION_NKEY"
ENV_TOKEN = "FOUNDATION_TOKEN"
ENV_USER = "FOUNDATION_USER"
ENV_PASSWORD = "FOUNDATION_PASSWORD"
ENV_TLS_CA = "FOUNDATION_TLS_CA"
ENV_TLS_CERT = "FOUNDATION_TLS_CERT"
ENV_TLS_KEY = "FOUNDATION_TLS_KEY"

_SECRET_FIELDS = frozenset({"token", "password"})

PathLike = str | os.PathLike[str]


def _path(value: PathLike | None) -> Path | None:
    return Path(value).expanduser() if value is not None and str(value) != "" else None


@dataclass(frozen=True, repr=False)
class NatsAuth:
    """Credentials and TLS settings of one NATS connection (never printed in full).

    Give at most one way to log in: ``creds`` (a NATS ``.creds`` file: user JWT + seed),
    ``nkey_seed`` (a file holding an NKey seed), ``token``, or ``user``/``password``.
    ``tls_ca`` verifies the server's certificate; ``tls_cert``/``tls_key`` present a client
    certificate. With a creds file of this project's roles, replies are received under the
    principal's own inbox prefix (``_INBOX.<role>.<name>``), the only one it may read.
    """

    creds: Path | None = None
    """A ``.creds`` file (decentralised JWT authentication)."""
    nkey_seed: Path | None = None
    """A file holding an NKey user seed (``SU…``)."""
    token: str | None = None
    """A bearer token (secret)."""
    user: str | None = None
    """A user name (with ``password``)."""
    password: str | None = None
    """The password of ``user`` (secret)."""
    tls_ca: Path | None = None
    """CA certificate file that signed the server's certificate (turns TLS on)."""
    tls_cert: Path | None = None
    """Client certificate file (mutual TLS)."""
    tls_key: Path | None = None
    """Private key file of ``tls_cert``."""
    tls_hostname: str | None = None
    """Name to check the server certificate against, when not the URL's host."""

    def __post_init__(self) -> None:
        ways = [
            n
            for n, v in (
                ("creds", self.creds),
                ("nkey_seed", self.nkey_seed),
                ("token", self.token),
                ("user/password", self.user or self.password),
            )
            if v
        ]
        if len(ways) > 1:
            raise ValueError(f"give one way to log in, not {' and '.join(ways)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give tls_cert and tls_key together (a client certificate)")

    @classmethod
    def of(
        cls,
        auth: NatsAuth | None = None,
        *,
        creds: PathLike | None = None,
        nkey_seed: PathLike | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
        tls_hostname: str | None = None,
    ) -> NatsAuth:
        """Build from keyword options (strings or paths), over ``auth`` when given."""
        base = auth or cls()
        changes: dict[str, Any] = {
            "creds": _path(creds),
            "nkey_seed": _path(nkey_seed),
            "token": token or None,
            "user": user or None,
            "password": password or None,
            "tls_ca": _path(tls_ca),
            "tls_cert": _path(tls_cert),
            "tls_key": _path(tls_key),
            "tls_hostname": tls_hostname or None,
        }
        return replace(base, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NatsAuth:
        """Build from ``FOUNDATION_CREDS``, ``FOUNDATION_NKEY``, ``FOUNDATION_TOKEN``,
        ``FOUNDATION_USER``/``FOUNDATION_PASSWORD`` and ``FOUNDATION_TLS_CA``/``_CERT``/``_KEY``.
        """
        e = os.environ if env is None else env
        return cls.of(
            creds=e.get(ENV_CREDS),
            nkey_seed=e.get(ENV_NKEY),
            token=e.get(ENV_TOKEN),
            user=e.get(ENV_USER),
            password=e.get(ENV_PASSWORD),
            tls_ca=e.get(ENV_TLS_CA),
            tls_cert=e.get(ENV_TLS_CERT),
            tls_key=e.get(ENV_TLS_KEY),
        )

    @property
    def has_credentials(self) -> bool:
        """True when some way to log in is set."""
        return bool(self.creds or self.nkey_seed or self.token or self.user)

    @property
    def uses_tls(self) -> bool:
        """True when TLS settings are given."""
        return self.tls_ca is not None or self.tls_cert is not None

    @property
    def principal(self) -> Principal | None:
        """The principal named in the creds file's user JWT (role and name tags), if any."""
        if self.creds is None:
            return None
        try:
            claims = decode(creds_jwt(self.creds.read_text()), check_signature=False)
        except (OSError, ValueError):
            return None
        tags = {
            str(t).split(":", 1)[0]: str(t).split(":", 1)[1]
            for t in (claims.get("nats") or {}).get("tags") or []
            if ":" in str(t)
        }
        role, name = tags.get("role"), tags.get("principal")
        if role not in ROLES or not name:
            return None
        try:
            return Principal(role, name, tags.get("tenant"))
        except ValueError:
            return None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for these settings (``None`` without TLS settings)."""
        if not self.uses_tls:
            return None
        ctx = ssl.create_default_context(
            cafile=os.fspath(self.tls_ca) if self.tls_ca is not None else None
        )
        if self.tls_cert is not None and self.tls_key is not None:
            ctx.load_cert_chain(os.fspath(self.tls_cert), os.fspath(self.tls_key))
        return ctx

    def connect_options(self) -> dict[str, Any]:
        """Keyword options for ``nats.connect`` (credentials, TLS, the principal's inbox)."""
        opts: dict[str, Any] = {}
        if self.creds is not None:
            opts["user_credentials"] = os.fspath(self.creds)
        if self.nkey_seed is not None:
            opts["nkeys_seed"] = os.fspath(self.nkey_seed)
        if self.token is not None:
            opts["token"] = self.token
        if self.user is not None:
            opts["user"] = self.user
        if self.password is not None:
            opts["password"] = self.password
        ctx = self.ssl_context()
        if ctx is not None:
            opts["tls"] = ctx
        if self.tls_hostname is not None:
            opts["tls_hostname"] = self.tls_hostname
        principal = self.principal
        if principal is not None:
            opts["inbox_prefix"] = inbox_prefix(principal)
        return opts

    def describe(self) -> dict[str, Any]:
        """A JSON-safe summary for status output: what is set, secrets replaced."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = _REDACTED if f.name in _SECRET_FIELDS else str(value)
        principal = self.principal
        if principal is not None:
            out["principal"] = str(principal)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"NatsAuth({inner})"

    __str__ = __repr__


# --- URLs: see foundation.nats.redact ----------------------------------------------------

# --- permission violations ------------------------------------------------------------------

_VIOLATION = re.compile(r"permissions violation for (publish|subscription) to \"?([^\"]+)\"?")


class PermissionMonitor:
    """The permission violations the server reported on one connection, as typed errors."""

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal
        self.denied: list[PermissionDeniedError] = []
        self._changed = asyncio.Event()
        self._watchers: dict[str, list[Callable[[PermissionDeniedError], None]]] = {}

    def record(self, message: str) -> PermissionDeniedError | None:
        """Turn a server error text into a :class:`PermissionDeniedError` and keep it."""
        m = _VIOLATION.search(message.lower())
        if m is None:
            return None
        op, subject = m.group(1), m.group(2)
        who = str(self.principal) if self.principal else "this connection"
        err = PermissionDeniedError(
            f"the NATS server refused {who} to {op} on {subject!r}: its role does not allow "
            "it; use credentials of a role that may, or ask an admin",
            details={"operation": op, "subject": subject, "principal": who},
        )
        self.denied.append(err)
        for watcher in list(self._watchers.get(subject, ())):
            watcher(err)
        self._changed.set()
        self._changed = asyncio.Event()
        return err

    @contextlib.contextmanager
    def watching(
        self, subject: str, on_denied: Callable[[PermissionDeniedError], None]
    ) -> Iterator[None]:
        """Call ``on_denied`` (synchronously) for each violation on ``subject`` while inside."""
        key = subject.lower()
        watchers = self._watchers.setdefault(key, [])
        watchers.append(on_denied)
        try:
            yield
        finally:
            watchers.remove(on_denied)
            if not watchers:
                del self._watchers[key]

    def find(self, subject: str, *, since: int = 0) -> PermissionDeniedError | None:
        """A violation reported for ``subject`` (case-insensitive) after index ``since``."""
        wanted = subject.lower()
        for err in self.denied[since:]:
            if str(err.details.get("subject", "")) == wanted:
                return err
        return None

    async def wait_for(self, subject: str, *, since: int = 0) -> PermissionDeniedError:
        """Wait until a violation is reported for ``subject``."""
        while True:
            found = self.find(subject, since=since)
            if found is not None:
                return found
            await self._changed.wait()


_MONITORS: weakref.WeakKeyDictionary[NatsClient, PermissionMonitor] = weakref.WeakKeyDictionary()


def permission_monitor(nc: NatsClient) -> PermissionMonitor:
    """The :class:`PermissionMonitor` of a connection made by :func:`secure_connect`."""
    try:
        return _MONITORS[nc]
    except KeyError:
        raise ValueError("this connection was not made by secure_connect()") from None


async def checked_publish(
    nc: NatsClient, subject: str, payload: bytes = b"", *, headers: dict[str, str] | None = None
) -> None:
    """Publish and flush; raise :class:`PermissionDeniedError` if the server refused it."""
    monitor = permission_monitor(nc)
    mark = len(monitor.denied)
    await nc.publish(subject, payload, headers=headers)
    # nats-py writes a flush's PING straight to the socket, ahead of buffered commands: the
    # first round trip sends the PUB, the second PONG comes after the server processed it
    # (and after its refusal, if any)
    await nc.flush()
    await nc.flush()
    err = monitor.find(subject, since=mark)
    if err is not None:
        raise err


async def checked_subscribe(nc: NatsClient, subject: str, **options: Any) -> Subscription:
    """Subscribe; raise :class:`PermissionDeniedError` (and unsubscribe) if refused."""
    monitor = permission_monitor(nc)
    mark = len(monitor.denied)
    sub = await nc.subscribe(subject, **options)
    await nc.flush()  # see checked_publish: two round trips
    await nc.flush()
    err = monitor.find(subject, since=mark)
    if err is not None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        raise err
    return sub


async def checked_request(
    nc: NatsClient,
    subject: str,
    payload: bytes = b"",
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the request's own deadline, passed to nats
    headers: dict[str, str] | None = None,
) -> Msg:
    """A request that fails fast with :class:`PermissionDeniedError` when it is refused."""
    monitor = permission_monitor(nc)
    mark = len(monitor.denied)
    reply = asyncio.ensure_future(nc.request(subject, payload, timeout=timeout, headers=headers))
    denied = asyncio.ensure_future(monitor.wait_for(subject, since=mark))
    try:
        done, _ = await asyncio.wait({reply, denied}, return_when=asyncio.FIRST_COMPLETED)
        if denied in done:
            raise denied.result()
        return reply.result()
    finally:
        for fut in (reply, denied):
            if not fut.done():
                fut.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fut


# --- connecting -----------------------------------------------------------------------------


def _is_auth_refusal(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, nats.errors.AuthorizationError) or any(
        s in text
        for s in (
            "authorization violation",
            "authentication timeout",
            "authentication expired",
            "user authentication revoked",
            "account authentication expired",
        )
    )


def _refusal_reason(auth: NatsAuth, exc: BaseException) -> str:
    if not auth.has_credentials:
        return (
            "no credentials were given; pass creds= (a .creds file), nkey_seed=, token= or "
            "user/password"
        )
    if auth.creds is not None:
        if not auth.creds.is_file():
            return f"the creds file {os.fspath(auth.creds)!r} does not exist"
        try:
            claims = decode(creds_jwt(auth.creds.read_text()))
        except (OSError, ValueError) as err:
            return f"the creds file {os.fspath(auth.creds)!r} is not valid ({err})"
        exp = claims.get("exp")
        if isinstance(exp, int) and exp < time.time():
            return f"the user JWT in {os.fspath(auth.creds)!r} has expired"
        return (
            f"the server does not trust the account that issued {os.fspath(auth.creds)!r} "
            "(another operator or setup directory), or its user was revoked, or its seed "
            "does not match its JWT"
        )
    return f"the server rejected the given {'token' if auth.token else 'credentials'} ({exc})"


def _translate_connect_error(exc: BaseException, auth: NatsAuth, url: str) -> Exception | None:
    if _is_auth_refusal(exc):
        reason = _refusal_reason(auth, exc)
        return AuthenticationError(
            f"the NATS server at {redact_url(url)} refused the login: {reason}",
            details={"server": redact_url(url), "reason": reason, "auth": auth.describe()},
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = (
            "its TLS certificate is not signed by the given CA; pass tls_ca= the CA of this "
            "cluster (DIR/ca.pem)"
            if auth.tls_ca is not None
            else "its TLS certificate is not trusted; pass tls_ca= the CA of this cluster "
            "(DIR/ca.pem)"
        )
        return AuthenticationError(
            f"the NATS server at {redact_url(url)} could not be verified: {reason}",
            details={"server": redact_url(url), "reason": reason},
        )
    text = str(exc).lower()
    if "tls" in text and ("required" in text or "secure connection" in text):
        reason = "the server requires TLS; pass tls_ca= the CA of this cluster (DIR/ca.pem)"
        return AuthenticationError(
            f"the NATS server at {redact_url(url)} refused the connection: {reason}",
            details={"server": redact_url(url), "reason": reason},
        )
    return None


async def secure_connect(
    url: str | list[str],
    auth: NatsAuth | None = None,
    *,
    name: str | None = None,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    connect_timeout: float = 2.0,
    reconnect_time_wait: float = 0.1,
    **options: Any,
) -> NatsClient:
    """Connect to NATS with ``auth``; typed errors for refusals, reconnects once connected.

    The first connection tries each server once without a reconnect loop: a refused login
    raises :class:`AuthenticationError` at once, saying why; an untrusted certificate too;
    no reachable server raises :class:`NatsUnavailableError`. Once connected, the client
    reconnects forever. Permission violations go to :func:`permission_monitor` (and to
    ``error_cb`` as :class:`PermissionDeniedError`).
    """
    auth = auth or NatsAuth()
    urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
    monitor = PermissionMonitor(auth.principal)

    async def on_error(exc: Exception) -> None:
        denied = monitor.record(str(exc))
        if error_cb is not None:
            await error_cb(denied or exc)

    async def noop() -> None:
        return None

    options.setdefault("disconnected_cb", noop)
    options.setdefault("reconnected_cb", noop)
    options.setdefault("closed_cb", noop)
    last: BaseException | None = None
    for i in range(len(urls)):
        pool = urls[i:] + urls[:i]
        try:
            nc = tls_client()
            settings: dict[str, Any] = {
                "connect_timeout": connect_timeout,
                "reconnect_time_wait": reconnect_time_wait,
            }
            await nc.connect(
                servers=pool,
                name=name,
                allow_reconnect=False,
                dont_randomize=True,
                error_cb=on_error,
                **settings,
                **auth.connect_options(),
                **options,
            )
        except Exception as exc:
            translated = _translate_connect_error(exc, auth, pool[0])
            if translated is not None:
                raise translated from exc
            last = exc
            continue
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        _MONITORS[nc] = monitor
        return nc
    servers = [redact_url(u) for u in urls]
    raise NatsUnavailableError(
        f"could not connect to NATS at {', '.join(servers)}: {redact_text(repr(last))}; check "
        "the server is running and reachable",
        details={"servers": servers},
        cause=last,
    )


__all__ = [
    "ENV_CREDS",
    "ENV_NKEY",
    "ENV_PASSWORD",
    "ENV_TLS_CA",
    "ENV_TLS_CERT",
    "ENV_TLS_KEY",
    "ENV_TOKEN",
    "ENV_USER",
    "NatsAuth",
    "PermissionMonitor",
    "checked_publish",
    "checked_request",
    "checked_subscribe",
    "permission_monitor",
    "redact_text",
    "redact_url",
    "secure_connect",
]
