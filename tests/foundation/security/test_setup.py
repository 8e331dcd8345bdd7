"""The secure setup: PKI, operator/accounts/users, creds per role, connections and refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg

from foundation._errors import AuthenticationError, PermissionDeniedError
from foundation.security import (
    NatsAuth,
    Principal,
    SecureNatsServer,
    SecureSetup,
    checked_publish,
    checked_request,
    checked_subscribe,
    inbox_prefix,
    load_secure_setup,
    parse_principal_subject,
    permission_monitor,
    principal_subject,
    redact_url,
    secure_connect,
    write_secure_setup,
)
from foundation.security._jwt import creds_jwt, decode
from foundation.security._keys import KeyPair, verify
from tests.foundation.security.conftest import ConnectAs

pytestmark = pytest.mark.nats


def test_setup_writes_every_file_with_private_secrets(secure_setup: SecureSetup) -> None:
    root = secure_setup.dir
    for name in ("ca.pem", "server-cert.pem", "server-key.pem", "server.conf", "operator.jwt"):
        assert (root / name).is_file()
    for role in ("admin", "node", "client", "observer"):
        assert secure_setup.creds_for(role) == root / f"{role}.creds"
    for role in ("node", "client", "admin"):
        assert (root / "acme" / f"{role}.creds").is_file()
    secrets = [root / "server-key.pem", *root.glob("keys/*.nk"), *root.rglob("*.creds")]
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert load_secure_setup(root) == secure_setup


def test_server_certificate_covers_loopback_and_is_signed_by_the_ca(
    secure_setup: SecureSetup,
) -> None:
    ca = x509.load_pem_x509_certificate(secure_setup.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(secure_setup.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.issuer == ca.subject
    pub = ca.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca)


def test_user_jwts_are_signed_by_their_account_with_role_tags(secure_setup: SecureSetup) -> None:
    app = secure_setup.account_of(None)
    acme = secure_setup.account_of("acme")
    for role in ("admin", "node", "client", "observer"):
        text = secure_setup.creds_for(role).read_text()
        claims = decode(creds_jwt(text))
        assert claims["iss"] == app
        assert f"role:{role}" in claims["nats"]["tags"]
    claims = decode(creds_jwt(secure_setup.creds_for("client", "acme").read_text()))
    assert claims["iss"] == acme
    assert NatsAuth.of(creds=secure_setup.creds_for("client", "acme")).principal == Principal(
        "client", "client", "acme"
    )


def test_a_tampered_jwt_fails_its_signature_check(secure_setup: SecureSetup) -> None:
    token = creds_jwt(secure_setup.creds_for("client").read_text())
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload[:-2]}AA.{sig}"
    with pytest.raises(ValueError):
        decode(forged)


def test_keys_sign_and_verify() -> None:
    kp = KeyPair.create("user")
    assert kp.public_key.startswith("U")
    sig = kp.sign(b"data")
    assert verify(kp.public_key, b"data", sig)
    assert not verify(kp.public_key, b"datA", sig)
    assert kp.seed.decode() not in repr(kp)


def test_principal_subjects_round_trip() -> None:
    alice = Principal("client", "alice")
    subject = principal_subject(alice, "agent.default.acc-1")
    assert subject == "foundation.from.client.alice.agent.default.acc-1"
    assert parse_principal_subject(subject, tenant="acme") == (
        Principal("client", "alice", "acme"),
        "agent.default.acc-1",
    )
    for bad in ("foundation.agent.x", "foundation.from.client.alice", "foundation.from.root.a.x"):
        with pytest.raises(ValueError):
            parse_principal_subject(bad)
    with pytest.raises(ValueError):
        Principal("client", "a.b")
    assert inbox_prefix(alice) == "_INBOX.client.alice"


def test_redaction_never_shows_credentials(tmp_path: Path) -> None:
    assert redact_url("nats://alice:s3cret@127.0.0.1:4222") == "nats://<redacted>@127.0.0.1:4222"
    assert redact_url("tls://tok@h:1,nats://h2:2") == "tls://<redacted>@h:1,nats://h2:2"
    assert redact_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    auth = NatsAuth.of(user="alice", password="s3cret")
    assert "s3cret" not in repr(auth) and "s3cret" not in str(auth)
    token = NatsAuth.of(token="t0ken-value")
    assert "t0ken-value" not in repr(token)
    assert "t0ken-value" not in str(token.describe())
    with pytest.raises(ValueError):
        NatsAuth.of(token="t", user="u")


def test_auth_from_env_and_connect_options(secure_setup: SecureSetup) -> None:
    env = {
        "FOUNDATION_CREDS": os.fspath(secure_setup.creds_for("client")),
        "FOUNDATION_TLS_CA": os.fspath(secure_setup.ca),
    }
    auth = NatsAuth.from_env(env)
    assert auth.creds == secure_setup.creds_for("client")
    opts = auth.connect_options()
    assert opts["user_credentials"] == env["FOUNDATION_CREDS"]
    assert opts["inbox_prefix"] == "_INBOX.client.client"
    assert opts["tls"] is not None
    assert NatsAuth.from_env({}).connect_options() == {}


async def test_every_role_connects_over_tls(connect_as: ConnectAs) -> None:
    for role in ("admin", "node", "client", "observer"):
        nc = await connect_as(role)
        assert nc.is_connected
        assert nc.connected_url is not None and nc.connected_url.scheme == "tls"


async def test_refused_logins_say_why(
    secure_server: SecureNatsServer, secure_setup: SecureSetup, tmp_path: Path
) -> None:
    url = secure_server.url
    with pytest.raises(AuthenticationError, match="no credentials were given"):
        await secure_connect(url, NatsAuth.of(tls_ca=secure_setup.ca))
    other = write_secure_setup(tmp_path / "other")
    with pytest.raises(AuthenticationError, match="does not trust the account"):
        await secure_connect(
            url, NatsAuth.of(creds=other.creds_for("node"), tls_ca=secure_setup.ca)
        )
    # a client's JWT with another user's seed: the nonce signature does not match
    client = secure_setup.creds_for("client").read_text()
    node = secure_setup.creds_for("node").read_text()
    marker = "-----BEGIN USER NKEY SEED-----"
    forged = tmp_path / "forged.creds"
    forged.write_text(client.split(marker)[0] + marker + node.split(marker)[1])
    with pytest.raises(AuthenticationError, match="refused the login"):
        await secure_connect(url, NatsAuth.of(creds=forged, tls_ca=secure_setup.ca))
    with pytest.raises(AuthenticationError, match="tls_ca"):
        await secure_connect(url, NatsAuth.of(creds=secure_setup.creds_for("client")))
    with pytest.raises(AuthenticationError, match="not signed by the given CA"):
        await secure_connect(
            url, NatsAuth.of(creds=secure_setup.creds_for("client"), tls_ca=other.ca)
        )


async def test_the_server_attests_the_sender(
    connect_as: ConnectAs, secure_setup: SecureSetup, secure_server: SecureNatsServer
) -> None:
    node = await connect_as("node")
    seen: list[Principal] = []

    async def respond(msg: Msg) -> None:
        principal, inner = parse_principal_subject(msg.subject)
        seen.append(principal)
        await msg.respond(f"{principal} -> {inner}".encode())

    await node.subscribe("foundation.from.*.*.agent.>", cb=respond)
    await node.flush()
    alice_creds = secure_setup.issue_user("client", "alice")
    alice = await secure_connect(
        secure_server.url, NatsAuth.of(creds=alice_creds, tls_ca=secure_setup.ca)
    )
    try:
        me = Principal("client", "alice")
        reply = await checked_request(alice, principal_subject(me, "agent.default.a1"), b"hi")
        assert reply.data == b"client/alice -> agent.default.a1"
        # alice cannot speak as another principal, nor read anybody else's replies
        with pytest.raises(PermissionDeniedError):
            await checked_publish(alice, "foundation.from.client.bob.agent.default.a1", b"x")
        with pytest.raises(PermissionDeniedError):
            await checked_publish(alice, "foundation.from.node.node.agent.default.a1", b"x")
        with pytest.raises(PermissionDeniedError):
            await checked_subscribe(alice, "_INBOX.>")
        with pytest.raises(PermissionDeniedError):
            await checked_subscribe(alice, "_INBOX.client.client.>")
        assert permission_monitor(alice).find("_INBOX.>") is not None
    finally:
        await alice.close()
    assert seen == [Principal("client", "alice")]


async def test_tenants_are_isolated_accounts(connect_as: ConnectAs) -> None:
    app_node = await connect_as("node")
    acme_client = await connect_as("client", tenant="acme")
    sub = await app_node.subscribe("foundation.agent.>")
    await app_node.flush()
    await checked_publish(acme_client, "foundation.agent.acme.a1", b"cross-tenant")
    await checked_publish(app_node, "foundation.agent.default.a1", b"own")
    # the first message the main account's node sees is its own: the tenant's never arrives
    assert (await sub.next_msg(timeout=5)).data == b"own"
