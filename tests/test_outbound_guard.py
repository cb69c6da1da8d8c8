"""Outbound connections only where they belong (issue 10, finding 7).

connectMailbox, the sync and replies reach a mailbox's servers only at public addresses unless
the operator allows private ones (HOST_NOT_ALLOWED before any connection); a failure before a
server greets reads the same whether the port is closed, silent or not a mail server; the
password scrubber replaces whole passwords, not letters inside words.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from models import Mailbox, SyncStatus
from portico.settings import Settings
from schema import ids
from services.mail import logins
from services.outbound import transport
from services.outbound.transport import MailboxSmtpTransport, TemporaryFailure
from services.shared import network
from tests.support.api import Firm
from tests.support.databases import Database
from tests.support.imap import PASSWORD, ImapServer, imap_fixture, tiny_imap  # noqa: F401
from tests.support.mail import Endpoint, add_mailbox, mailbox_input
from tests.support.smtp import (  # noqa: F401  (the `smtp` fixture)
    EchoingSmtpServer,
    SmtpServer,
    TlsSmtpServer,
    free_port,
    smtp_fixture,
)
from tests.support.tls import LocalhostTls, localhost_tls_fixture  # noqa: F401

CONNECT = """
mutation ($input: ConnectMailboxInput!) {
  connectMailbox(input: $input) { errors { code field message } mailbox { id } }
}"""
SYNC = """
mutation ($id: ID!) {
  syncMailbox(id: $id) { errors { code } mailbox { syncStatus lastError } }
}"""

# Each a literal, so the answer needs no DNS: loopback, private, link-local (cloud metadata),
# CGNAT, "this network", multicast, reserved, documentation, unspecified, IPv6 loopback,
# unique-local, link-local and site-local, IPv4-mapped loopback, 6to4 around a private address.
NOT_PUBLIC = [
    "127.0.0.1",
    "127.5.6.7",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "192.0.2.10",
    "::1",
    "::",
    "fd00::1",
    "fe80::1",
    "fec0::1",
    "ff0e::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "2002:c0a8:0101::1",
]


@pytest.fixture
def settings(clean_db: Database, tmp_path: Path) -> Settings:
    """Production as shipped: private mail hosts refused."""
    return Settings(
        env="production",
        secret_key="test-secret-key-for-production",
        database_url=clean_db.url,
        var_dir=tmp_path / "var",
        _env_file=None,
    )


class Listener:
    """A listening socket on 127.0.0.1 that never accepts: the kernel completes a client's
    handshake anyway, and `connections()` drains and counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.endpoint = Endpoint("127.0.0.1", self.sock.getsockname()[1])
        self.count = 0

    def connections(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.count
            conn.close()
            self.count += 1


@pytest.fixture
def listener() -> Iterator[Listener]:
    probe = Listener()
    try:
        yield probe
    finally:
        probe.sock.close()


async def connect(firm: Firm, values: dict[str, object]) -> dict:
    body = await firm.api.post(CONNECT, {"input": values})
    assert "errors" not in body, body
    return body["data"]["connectMailbox"]


def errors_of(payload: dict) -> list[tuple[str, str]]:
    return [(e["code"], e["field"][-1]) for e in payload["errors"]]


async def test_loopback_servers_are_refused_before_any_connection(acme: Firm, listener: Listener):
    assert not Settings(env="production", _env_file=None).private_mail_hosts_allowed
    payload = await connect(acme, mailbox_input(listener.endpoint, listener.endpoint))
    assert errors_of(payload) == [
        ("HOST_NOT_ALLOWED", "imapHost"),
        ("HOST_NOT_ALLOWED", "smtpHost"),
    ]
    assert "public internet" in payload["errors"][0]["message"]
    assert payload["mailbox"] is None
    assert listener.connections() == 0
    assert await Mailbox.all().count() == 0


async def test_a_name_is_judged_by_what_it_resolves_to(acme: Firm, listener: Listener):
    # localhost is a name (resolved by the system, /etc/hosts) for a loopback address.
    name = Endpoint("localhost", listener.endpoint.port)
    payload = await connect(acme, mailbox_input(name, name))
    assert errors_of(payload) == [
        ("HOST_NOT_ALLOWED", "imapHost"),
        ("HOST_NOT_ALLOWED", "smtpHost"),
    ]
    assert listener.connections() == 0


async def test_every_kind_of_non_public_address_is_refused(acme: Firm):
    for host in NOT_PUBLIC:
        here = Endpoint(host, 25)
        async with asyncio.timeout(5):  # refused at once: nothing waits for a connection
            payload = await connect(acme, mailbox_input(here, here))
        assert errors_of(payload) == [
            ("HOST_NOT_ALLOWED", "imapHost"),
            ("HOST_NOT_ALLOWED", "smtpHost"),
        ], host


async def test_public_addresses_pass_the_vetting():
    for host in ("8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        destination = await network.resolve(host, 993, allow_private=False)
        assert destination.host == host and destination.addresses


async def test_the_operator_may_allow_private_hosts_in_production(
    acme: Firm, settings: Settings, imap: ImapServer, smtp: SmtpServer
):
    settings.allow_private_mail_hosts = True  # PORTICO_ALLOW_PRIVATE_MAIL_HOSTS=1
    payload = await connect(acme, mailbox_input(imap, smtp))
    assert payload["errors"] == [] and payload["mailbox"]


async def test_a_sync_pass_against_a_refused_host_fails_without_connecting(
    acme: Firm,
    settings: Settings,
    listener: Listener,
):
    # A mailbox connected while private hosts were allowed (or whose name now resolves to a
    # private address).
    settings.allow_private_mail_hosts = False
    mailbox = await add_mailbox(acme.owner.firm_id, listener.endpoint, settings)  # type: ignore[arg-type]
    payload = (await acme.api.data(SYNC, {"id": ids.encode("Mailbox", mailbox.pk)}))["syncMailbox"]
    assert payload["mailbox"]["syncStatus"] == SyncStatus.FAILED.value
    assert "public internet" in payload["mailbox"]["lastError"]
    assert listener.connections() == 0


async def test_replies_are_not_sent_to_a_refused_host(settings: Settings, listener: Listener):
    host, port = listener.endpoint
    transport = MailboxSmtpTransport.for_server(host, port, False, "u", PASSWORD, settings)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@acme.example", "b@x.example", "Hi"
    message.set_content("Hello")
    with pytest.raises(TemporaryFailure, match="public internet"):
        await transport.send(message)
    assert listener.connections() == 0


# -- Where private hosts are allowed (development, on-premises): one answer for a closed port,
# a silent one and one that is no mail server


@pytest.fixture
def allowed(settings: Settings) -> Settings:
    settings.allow_private_mail_hosts = True  # the app reads its settings per request
    return settings


async def _serve(reply: bytes) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.fixture
async def not_mail_servers(listener: Listener) -> AsyncIterator[dict[str, Endpoint]]:
    """Ports where no mail server answers: closed, open and silent (as PostgreSQL is to a
    client that waits for a greeting), a banner of another protocol, an immediate hang-up."""
    banner = await _serve(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    hangup = await _serve(b"")
    try:
        yield {
            "closed": Endpoint("127.0.0.1", free_port()),
            "silent": listener.endpoint,
            "banner": Endpoint("127.0.0.1", banner.sockets[0].getsockname()[1]),
            "hangup": Endpoint("127.0.0.1", hangup.sockets[0].getsockname()[1]),
        }
    finally:
        for server in (banner, hangup):
            server.close()
            await server.wait_closed()


def _without_port(message: str, port: int) -> str:
    return re.sub(rf":{port}\b", ":PORT", message)


async def test_a_closed_port_and_an_open_one_answer_alike(
    acme: Firm,
    allowed: Settings,
    imap: ImapServer,
    smtp: SmtpServer,
    not_mail_servers: dict[str, Endpoint],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(logins, "CHECK_TIMEOUT_SECONDS", 1.0)  # the silent port: not 10 s
    answers: dict[tuple[str, str], tuple[str, str]] = {}
    for kind, there in not_mail_servers.items():
        for side, values in (
            ("imap", mailbox_input(there, smtp)),
            ("smtp", mailbox_input(imap, there)),
        ):
            payload = await connect(acme, values)
            [error] = payload["errors"]
            answers[kind, side] = (error["code"], _without_port(error["message"], there.port))
    for side, code in (("imap", "IMAP_CONNECTION_FAILED"), ("smtp", "SMTP_CONNECTION_FAILED")):
        seen = {answers[kind, side] for kind in not_mail_servers}
        assert len(seen) == 1, seen
        [(answered, message)] = seen
        assert answered == code
        assert message.startswith(f"Could not connect to the {side.upper()} server 127.0.0.1:PORT")


# -- TLS checks the name, though the connection goes to the vetted address


async def test_tls_checks_the_host_name_not_the_address(
    acme: Firm, allowed: Settings, localhost_tls: LocalhostTls
):
    smtp = TlsSmtpServer(PASSWORD, localhost_tls.context)
    smtp.start()
    try:
        async with tiny_imap(localhost_tls.context) as tiny:
            by_name = mailbox_input(
                Endpoint("localhost", tiny.port),
                Endpoint("localhost", smtp.port),
                imapTls=True,
                smtpTls=True,  # STARTTLS on a port other than 465
            )
            payload = await connect(acme, by_name)
            assert payload["errors"] == []
            assert smtp.logins == [("office@acme.example", True)]  # after STARTTLS
            assert localhost_tls.names == ["localhost", "localhost"]  # SNI, IMAP and SMTP
            # The certificate names localhost, not 127.0.0.1: by address it is refused.
            by_address = {**by_name, "address": "other@acme.example"}
            by_address.update(imapHost="127.0.0.1", smtpHost="127.0.0.1")
            payload = await connect(acme, by_address)
            assert errors_of(payload) == [
                ("IMAP_TLS_FAILED", "imapTls"),
                ("SMTP_TLS_FAILED", "smtpTls"),
            ]
    finally:
        smtp.stop()


# -- The scrubber: whole passwords only


async def test_a_short_password_leaves_words_alone(acme: Firm, allowed: Settings):
    closed = Endpoint("127.0.0.1", free_port())
    payload = await connect(acme, mailbox_input(closed, closed, password="p"))
    messages = " ".join(e["message"] for e in payload["errors"])
    assert "***" not in messages
    assert "port" in messages


@pytest.mark.parametrize(
    "password",
    ["hunter2!", "(p@ss w0rd)", "-dash-", "wörter", 'q"uo\\te', "p"],
)
async def test_a_password_a_server_echoes_is_replaced(acme: Firm, allowed: Settings, password: str):
    smtp = EchoingSmtpServer(password="the-right-one")
    smtp.start()
    try:
        closed = Endpoint("127.0.0.1", free_port())
        body = await acme.api.post(
            CONNECT, {"input": mailbox_input(closed, smtp, password=password)}
        )
    finally:
        smtp.stop()
    errors = body["data"]["connectMailbox"]["errors"]
    [smtp_error] = [e for e in errors if e["code"] == "SMTP_AUTH_FAILED"]
    assert 'password "***" rejected' in smtp_error["message"]
    assert not re.search(rf"(?<!\w){re.escape(password)}(?!\w)", smtp_error["message"])


def test_any_occurrence_keeps_a_traceback_out_of_the_log():
    """scrub replaces whole passwords only; whether a traceback may be logged is decided on any
    occurrence, glued to other characters or not (a wrong yes costs only the traceback)."""
    glued = RuntimeError("LOGIN userhunter2x refused")
    assert transport.mentions(ValueError("wrapped"), "hunter2") is False
    assert transport.mentions(glued, "hunter2")
    try:
        raise ValueError("wrapped") from glued
    except ValueError as wrapped:
        assert transport.mentions(wrapped, "hunter2")
    assert transport.scrub(str(glued), "hunter2") == str(glued)
