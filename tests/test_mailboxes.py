"""Connecting, listing and syncing the firm's mailboxes, through the API, against a real
Dovecot and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from models import AuditEntry, Mailbox, SyncStatus
from services.mail import logins, sync_engine
from services.mail.mailboxes import mailbox_password
from services.shared import sessions
from tests.support.api import Api, add_staff, api_for
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import portal_user
from tests.support.mail import Endpoint, mailbox_input
from tests.support.smtp import (  # noqa: F401  (the `smtp` and `smtp_auth` fixtures)
    AuthSmtpServer,
    SmtpServer,
    free_port,
    smtp_auth_fixture,
    smtp_fixture,
)

MAILBOX_FIELDS = "id address imapHost imapPort syncStatus lastSyncedAt lastError"
CONNECT = f"""
mutation ($input: ConnectMailboxInput!) {{
  connectMailbox(input: $input) {{ errors {{ code field message }} mailbox {{ {MAILBOX_FIELDS} }} }}
}}"""
LIST = f"{{ mailboxes {{ {MAILBOX_FIELDS} }} }}"
NODE = "query ($id: ID!) { node(id: $id) { __typename ... on Mailbox { id address } } }"
SYNC = f"""
mutation ($id: ID!) {{
  syncMailbox(id: $id) {{ errors {{ code field message }} mailbox {{ {MAILBOX_FIELDS} }} }}
}}"""


async def connect(api: Api, values: dict[str, object]) -> dict:
    body = await api.post(CONNECT, {"input": values})
    assert "errors" not in body, body["errors"]
    return body["data"]["connectMailbox"]


def codes(payload: dict) -> list[str]:
    return [e["code"] for e in payload["errors"]]


def refusal(body: dict) -> str | None:
    return next((e.get("extensions", {}).get("code") for e in body.get("errors", [])), None)


async def client_api(acme, client) -> Api:
    user = await portal_user(acme.owner.firm_id)
    token, _ = await sessions.start_client_session(user, timedelta(hours=1), None)
    return Api(client, token)


async def test_connect_checks_both_logins_then_stores_the_password_encrypted(
    acme, imap, smtp, settings
):
    body = await acme.api.post(CONNECT, {"input": mailbox_input(imap, smtp)})
    assert PASSWORD not in str(body)
    payload = body["data"]["connectMailbox"]
    assert payload["errors"] == []
    mailbox = payload["mailbox"]
    assert mailbox["address"] == "office@acme.example"
    assert (mailbox["imapHost"], mailbox["imapPort"]) == (imap.host, imap.port)
    assert mailbox["syncStatus"] == "IDLE"
    assert mailbox["lastSyncedAt"] is None and mailbox["lastError"] is None

    [row] = await Mailbox.all()
    assert row.firm_id == acme.owner.firm_id and row.created_by_id == acme.owner.pk
    assert (row.imap_tls, row.smtp_host, row.smtp_port, row.smtp_tls) == (
        False,
        smtp.host,
        smtp.port,
        False,
    )
    assert row.address_normalized == "office@acme.example"
    # Nowhere in the row in clear, but readable with the derived key.
    stored = await Mailbox.filter(pk=row.pk).values()
    assert all(PASSWORD not in str(value) for value in stored[0].values())
    assert mailbox_password(settings, row) == PASSWORD

    [entry] = await AuditEntry.filter(action="MAILBOX_CONNECTED")
    assert entry.email == "office@acme.example" and entry.staff_member_id == acme.owner.pk
    assert entry.after["imapHost"] == imap.host and "password" not in entry.after
    assert PASSWORD not in str(entry.after)

    listed = await acme.api.data(LIST)
    assert listed["mailboxes"] == [mailbox]
    assert PASSWORD not in str(listed)
    node = await acme.api.data(NODE, {"id": mailbox["id"]})
    assert node["node"] == {
        "__typename": "Mailbox",
        "id": mailbox["id"],
        "address": mailbox["address"],
    }


async def test_smtp_auth_is_used_when_the_server_offers_it(acme, imap, smtp_auth: AuthSmtpServer):
    smtp_auth.password = PASSWORD
    payload = await connect(acme.api, mailbox_input(imap, smtp_auth))
    assert payload["errors"] == []
    assert smtp_auth.logins == [("office@acme.example", True)]


async def test_wrong_smtp_password_is_smtp_auth_failed(acme, imap, smtp_auth: AuthSmtpServer):
    smtp_auth.password = "another-password"
    payload = await connect(acme.api, mailbox_input(imap, smtp_auth))
    assert codes(payload) == ["SMTP_AUTH_FAILED"]
    assert payload["errors"][0]["field"] == ["input", "password"]
    assert payload["mailbox"] is None
    assert smtp_auth.logins and not any(ok for _, ok in smtp_auth.logins)
    assert await Mailbox.all().count() == 0


async def test_wrong_imap_password_saves_nothing_and_logs_no_password(acme, imap, smtp, caplog):
    secret = 'wr0ng "zq9x\\word'  # quoted and escaped on the wire
    with caplog.at_level(logging.DEBUG):
        body = await acme.api.post(CONNECT, {"input": mailbox_input(imap, smtp, password=secret)})
    payload = body["data"]["connectMailbox"]
    assert codes(payload) == ["IMAP_AUTH_FAILED"]
    assert payload["errors"][0]["field"] == ["input", "password"]
    assert imap.host in payload["errors"][0]["message"]
    assert payload["mailbox"] is None
    assert secret not in str(body)
    for form in (secret, 'wr0ng \\"zq9x\\\\word', "zq9x"):
        assert form not in caplog.text
    assert await Mailbox.all().count() == 0
    assert await AuditEntry.filter(action="MAILBOX_CONNECTED").count() == 0


async def test_closed_imap_port_is_imap_connection_failed(acme, smtp):
    closed = Endpoint("127.0.0.1", free_port())  # nobody listens there
    payload = await connect(acme.api, mailbox_input(closed, smtp))
    assert codes(payload) == ["IMAP_CONNECTION_FAILED"]
    assert payload["errors"][0]["field"] == ["input", "imapHost"]
    assert await Mailbox.all().count() == 0


async def test_closed_smtp_port_is_smtp_connection_failed(acme, imap):
    closed = Endpoint("127.0.0.1", free_port())
    payload = await connect(acme.api, mailbox_input(imap, closed))
    assert codes(payload) == ["SMTP_CONNECTION_FAILED"]
    assert payload["errors"][0]["field"] == ["input", "smtpHost"]
    assert await Mailbox.all().count() == 0


async def test_both_failures_are_reported_at_once(acme, imap):
    closed = Endpoint("127.0.0.1", free_port())
    payload = await connect(acme.api, mailbox_input(imap, closed, password="nope"))
    assert codes(payload) == ["IMAP_AUTH_FAILED", "SMTP_CONNECTION_FAILED"]


async def test_tls_against_plain_servers_is_tls_failed(acme, imap, smtp):
    # IMAPS spoken to a plain IMAP port: the handshake fails.
    payload = await connect(acme.api, mailbox_input(imap, smtp, imapTls=True))
    assert codes(payload) == ["IMAP_TLS_FAILED"]
    assert payload["errors"][0]["field"] == ["input", "imapTls"]
    # smtpTls on a port other than 465 means STARTTLS, which this server does not offer.
    payload = await connect(acme.api, mailbox_input(imap, smtp, smtpTls=True))
    assert codes(payload) == ["SMTP_TLS_FAILED"]
    assert "STARTTLS" in payload["errors"][0]["message"]
    assert await Mailbox.all().count() == 0


async def test_smtps_port_465_means_implicit_tls(monkeypatch):
    seen: dict[str, object] = {}

    class Probe:
        def __init__(self, **kwargs: object) -> None:
            seen.update(kwargs)

        async def connect(self) -> None:
            raise OSError("stop here")

        def close(self) -> None:
            pass

    monkeypatch.setattr(logins.aiosmtplib, "SMTP", Probe)
    server = logins.MailServer("mail.example", 465, tls=True)
    with pytest.raises(logins.MailLoginError):
        await logins.check_smtp(server, "u", "p", allow_private=True)
    assert (seen["use_tls"], seen["start_tls"]) == (True, False)
    with pytest.raises(logins.MailLoginError):
        server = logins.MailServer("mail.example", 587, tls=True)
        await logins.check_smtp(server, "u", "p", allow_private=True)
    assert (seen["use_tls"], seen["start_tls"]) == (False, False)  # STARTTLS after EHLO


async def test_input_is_validated_before_any_connection(acme):
    values = {
        "address": "not an address",
        "imapHost": "  ",
        "imapPort": 0,
        "smtpHost": "smtp.example",
        "smtpPort": 70000,
        "username": "",
        "password": "",
    }
    payload = await connect(acme.api, values)
    assert {(e["code"], tuple(e["field"])) for e in payload["errors"]} == {
        ("INVALID_EMAIL", ("input", "address")),
        ("INVALID_HOST", ("input", "imapHost")),
        ("INVALID_PORT", ("input", "imapPort")),
        ("INVALID_PORT", ("input", "smtpPort")),
        ("INVALID_USERNAME", ("input", "username")),
        ("INVALID_PASSWORD", ("input", "password")),
    }
    payload = await connect(acme.api, {**values, "address": "a@acme.example", "imapPort": 65536})
    assert "INVALID_PORT" in codes(payload)
    assert await Mailbox.all().count() == 0


async def test_same_address_twice_in_a_firm_is_mailbox_exists(acme, globex, imap, smtp):
    assert (await connect(acme.api, mailbox_input(imap, smtp)))["errors"] == []
    again = mailbox_input(imap, smtp, address=" Office@ACME.example ")
    payload = await connect(acme.api, again)
    assert codes(payload) == ["MAILBOX_EXISTS"]
    assert payload["errors"][0]["field"] == ["input", "address"]
    # Another firm may connect the same address.
    assert (await connect(globex.api, mailbox_input(imap, smtp)))["errors"] == []
    assert await Mailbox.all().count() == 2


async def test_inbox_right_decides_who_connects_and_sees_mailboxes(acme, client, imap, smtp):
    plain = await api_for(client, await add_staff(acme, "erin@acme.example"))
    manager = await api_for(
        client, await add_staff(acme, "max@acme.example", can_manage_accounts=True)
    )
    inbox = await api_for(client, await add_staff(acme, "ina@acme.example", can_use_inbox=True))

    for api in (plain, manager):
        assert refusal(await api.post(CONNECT, {"input": mailbox_input(imap, smtp)})) == "FORBIDDEN"
        assert refusal(await api.post(LIST)) == "FORBIDDEN"
    assert await Mailbox.all().count() == 0

    payload = await connect(inbox, mailbox_input(imap, smtp, address="ina@acme.example"))
    assert payload["errors"] == []
    mailbox_id = payload["mailbox"]["id"]
    assert [m["id"] for m in (await inbox.data(LIST))["mailboxes"]] == [mailbox_id]
    assert [m["id"] for m in (await acme.api.data(LIST))["mailboxes"]] == [mailbox_id]
    assert (await inbox.data(NODE, {"id": mailbox_id}))["node"]["id"] == mailbox_id
    # Staff without the right: not by id either, and no syncing.
    assert (await plain.data(NODE, {"id": mailbox_id}))["node"] is None
    assert refusal(await plain.post(SYNC, {"id": mailbox_id})) == "FORBIDDEN"


async def test_clients_and_anonymous_are_refused(acme, client, anon, imap, smtp):
    payload = await connect(acme.api, mailbox_input(imap, smtp))
    mailbox_id = payload["mailbox"]["id"]
    portal = await client_api(acme, client)
    for api, expected in ((portal, "FORBIDDEN"), (anon, "UNAUTHENTICATED")):
        assert refusal(await api.post(LIST)) == expected
        assert refusal(await api.post(CONNECT, {"input": mailbox_input(imap, smtp)})) == expected
        assert refusal(await api.post(SYNC, {"id": mailbox_id})) == expected
        assert (await api.data(NODE, {"id": mailbox_id}))["node"] is None
    assert await Mailbox.all().count() == 1


async def test_another_firms_staff_cannot_see_or_sync_it(acme, globex, imap, smtp, monkeypatch):
    calls: list[object] = []

    async def sync_mailbox(scope, mailbox, settings):
        calls.append(mailbox)

    monkeypatch.setattr(sync_engine, "sync_mailbox", sync_mailbox)

    mailbox_id = (await connect(acme.api, mailbox_input(imap, smtp)))["mailbox"]["id"]
    assert (await globex.api.data(LIST))["mailboxes"] == []
    assert (await globex.api.data(NODE, {"id": mailbox_id}))["node"] is None
    payload = (await globex.api.data(SYNC, {"id": mailbox_id}))["syncMailbox"]
    assert codes(payload) == ["NOT_FOUND"] and payload["mailbox"] is None
    assert calls == []


async def test_sync_mailbox_runs_the_engine_and_returns_the_fresh_row(
    acme, imap, smtp, monkeypatch, settings
):
    calls: list[tuple[int, int, object]] = []

    async def sync_mailbox(scope, mailbox, settings_, bus=None):
        calls.append((scope.firm_id, mailbox.pk, settings_))
        await Mailbox.filter(pk=mailbox.pk).update(
            sync_status=SyncStatus.FAILED, last_error="server went away"
        )

    monkeypatch.setattr(sync_engine, "sync_mailbox", sync_mailbox)

    mailbox_id = (await connect(acme.api, mailbox_input(imap, smtp)))["mailbox"]["id"]
    payload = (await acme.api.data(SYNC, {"id": mailbox_id}))["syncMailbox"]
    assert payload["errors"] == []
    assert payload["mailbox"]["syncStatus"] == "FAILED"
    assert payload["mailbox"]["lastError"] == "server went away"
    [(firm_id, pk, passed)] = calls
    assert firm_id == acme.owner.firm_id and passed.database_url == settings.database_url
    assert (await Mailbox.get(pk=pk)).address == "office@acme.example"

    # A malformed id or another type's id reads as not found, without calling the engine.
    payload = (await acme.api.data(SYNC, {"id": "QWNjb3VudDox"}))["syncMailbox"]
    assert codes(payload) == ["NOT_FOUND"]
    assert len(calls) == 1


async def test_a_host_name_the_resolver_cannot_take_is_invalid_input(acme, smtp):
    """A label over 63 characters (or an empty one) has no IDNA form: INVALID_HOST before any
    connection, not a resolver crash (found by the fuzzer)."""
    for host in ("a" * 64 + ".example", "mail..example"):
        values = {**mailbox_input(Endpoint(host, 993), smtp), "address": "a@acme.example"}
        payload = await connect(acme.api, values)
        assert ("INVALID_HOST", ["input", "imapHost"]) in [
            (e["code"], e["field"]) for e in payload["errors"]
        ], host
    assert await Mailbox.all().count() == 0
