"""Attachments of synced mail against a real Dovecot: kept by content hash, listed on the
message, auto-saved into the Documents of accounts with the option on (once per content),
over-size ones listed but not kept, damaged ones never stopping the sync. The parsing tests at
the end use no database and run in the SQLite pass only."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from models import Mailbox
from portico.settings import Settings
from schema import ids
from services.mail import sync_engine
from services.mail.attachments import filename_for
from services.mail.imap import ImapSession
from services.mail.parse import MAX_PARTS, parse_message
from services.shared.scope import FirmScope
from tests.support.api import Api, Firm
from tests.support.crm_ops import UPDATE_ACCOUNT, new_account, new_contact
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import FLAGS, STATUS, accept, deliver, login_on, token_in
from tests.support.mail import ANNA, add_mailbox, mail
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.sqlcount import count_sql

PDF = b"%PDF-1.4\n" + b"Steuerbescheid 2025\n" * 200
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } mailbox { lastError } } }"
INBOX = """{ inbox(first: 50) { edges { node { subject
  attachments { filename contentType size skippedReason document { id filename sha256 } } } } } }"""
DOCUMENTS = """query($id: ID!) { account(id: $id) { documents { totalCount edges { node {
  id filename contentType size sha256 downloadUrl } } } } }"""


@dataclass
class Client:
    """A contact with ANNA's address, EMAIL SYNC on in each of its accounts."""

    account_ids: list[str]
    account_email_ids: list[str]


async def client_in(api: Api, *accounts: tuple[str, bool]) -> Client:
    """Accounts (name, auto-save attachments) with one contact whose address has EMAIL SYNC
    on in each, as staff set it up through the API."""
    account_ids = []
    for name, auto_save in accounts:
        account = await new_account(api, name)
        if auto_save:
            update = {"id": account["id"], "input": {"autoSaveAttachments": True}}
            await api.ok(UPDATE_ACCOUNT, update)
        account_ids.append(account["id"])
    await new_contact(api, "Anna", "Miller", [(ANNA, "Email")], account_ids)
    account_email_ids = []
    for account_id in account_ids:
        [row] = (await api.data(STATUS, {"id": account_id}))["account"]["emails"]
        await api.ok(FLAGS, {"input": {"accountEmailId": row["id"], "emailSync": True}})
        account_email_ids.append(row["id"])
    return Client(account_ids, account_email_ids)


async def sync(api: Api, mailbox: Mailbox) -> None:
    synced = (await api.data(SYNC, {"id": ids.encode("Mailbox", mailbox.pk)}))["syncMailbox"]
    assert synced == {"errors": [], "mailbox": {"lastError": None}}


def papers(
    subject: str, files: Sequence[tuple[str, str, bytes]] = (), sent: datetime | None = None
) -> bytes:
    """A message from Anna with a text and an HTML body and `files` (name, type, bytes), sent
    now unless `sent` says otherwise (only mail sent since the mailbox was connected is
    "future synced mail", whose attachments are auto-saved)."""
    return mail(
        subject=subject,
        body="Please find the papers attached.",
        html="<p>Please find the papers <b>attached</b>.</p>",
        attachments=files,
        date=sent or datetime.now(UTC),
    )


async def inbox(api: Api) -> dict[str, list[dict]]:
    """Each message's attachments by subject."""
    edges = (await api.data(INBOX))["inbox"]["edges"]
    return {e["node"]["subject"]: e["node"]["attachments"] for e in edges}


async def documents_of(api: Api, account_id: str) -> list[dict]:
    found = (await api.data(DOCUMENTS, {"id": account_id}))["account"]["documents"]
    assert found["totalCount"] == len(found["edges"])
    return sorted((e["node"] for e in found["edges"]), key=lambda d: d["filename"])


def stored_files(settings: Settings) -> set[str]:
    """The content hashes on disk (the temporary folder left aside)."""
    folder = settings.resolved_files_dir
    return {p.name for p in folder.glob("??/*")} if folder.exists() else set()


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# Keeping and auto-saving ---------------------------------------------------------------------


async def test_attachments_are_listed_saved_once_and_downloadable(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    files = [("Bescheid 2025.pdf", "application/pdf", PDF), ("Beleg.png", "image/png", PNG)]
    imap.append(mailbox.username, papers("Papers", files))
    await sync(acme.api, mailbox)

    [pdf, png] = (await inbox(acme.api))["Papers"]  # the HTML and text bodies are no files
    assert (pdf["filename"], pdf["contentType"], pdf["size"]) == (
        "Bescheid 2025.pdf",
        "application/pdf",
        len(PDF),
    )
    assert (png["filename"], png["contentType"], png["size"]) == (
        "Beleg.png",
        "image/png",
        len(PNG),
    )
    assert pdf["skippedReason"] is None and png["skippedReason"] is None
    saved = await documents_of(acme.api, anna.account_ids[0])
    assert [(d["filename"], d["contentType"], d["size"]) for d in saved] == [
        ("Beleg.png", "image/png", len(PNG)),
        ("Bescheid 2025.pdf", "application/pdf", len(PDF)),
    ]
    assert {pdf["document"]["id"], png["document"]["id"]} == {d["id"] for d in saved}
    assert pdf["document"]["sha256"] == sha(PDF)
    assert stored_files(settings) == {sha(PDF), sha(PNG)}

    for document, content in zip(saved, (PNG, PDF), strict=True):
        path = "/documents/" + document["id"]
        assert document["downloadUrl"].endswith(path)
        got = await client.get(path, headers={"Authorization": f"Bearer {acme.api.token}"})
        assert got.status_code == 200 and got.content == content

    # The same PDF in a later message: listed there too, not saved into the account twice.
    imap.append(
        mailbox.username, papers("Again", [("copy of Bescheid.pdf", "application/pdf", PDF)])
    )
    await sync(acme.api, mailbox)
    [again] = (await inbox(acme.api))["Again"]
    assert again["filename"] == "copy of Bescheid.pdf" and again["size"] == len(PDF)
    assert again["document"]["id"] == pdf["document"]["id"]  # the account's copy of it
    assert len(await documents_of(acme.api, anna.account_ids[0])) == 2
    assert stored_files(settings) == {sha(PDF), sha(PNG)}  # one file per content


async def test_over_size_attachments_are_listed_and_not_kept(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    settings.max_upload_bytes = 1024 * 1024  # the app shares this settings object
    big = b"%PDF-1.4\n" + secrets.token_bytes(1024 * 1024 + 500)
    files = [("Scan.pdf", "application/pdf", big), ("Bescheid.pdf", "application/pdf", PDF)]
    imap.append(mailbox.username, papers("Scans", files))
    await sync(acme.api, mailbox)

    [scan, kept] = (await inbox(acme.api))["Scans"]
    assert (scan["filename"], scan["size"]) == ("Scan.pdf", len(big))
    assert scan["skippedReason"] == "larger than 1 MB: not kept"
    assert scan["document"] is None
    assert kept["skippedReason"] is None and kept["document"] is not None
    assert [d["filename"] for d in await documents_of(acme.api, anna.account_ids[0])] == [
        "Bescheid.pdf"
    ]
    assert stored_files(settings) == {sha(PDF)}  # no file of the big one


async def test_accounts_without_auto_save_get_no_documents(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    anna = await client_in(acme.api, ("Miller Family", False), ("Miller GmbH", True))
    family, company = anna.account_ids
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    imap.append(mailbox.username, papers("Invoice", [("Invoice.pdf", "application/pdf", PDF)]))
    await sync(acme.api, mailbox)

    [invoice] = (await inbox(acme.api))["Invoice"]
    assert invoice["filename"] == "Invoice.pdf" and invoice["size"] == len(PDF)
    assert await documents_of(acme.api, family) == []
    [saved] = await documents_of(acme.api, company)
    assert invoice["document"]["id"] == saved["id"]
    assert stored_files(settings) == {sha(PDF)}

    # No account saves: the attachment is still listed and kept, with no document.
    await acme.api.ok(UPDATE_ACCOUNT, {"id": company, "input": {"autoSaveAttachments": False}})
    imap.append(mailbox.username, papers("Receipt", [("Receipt.png", "image/png", PNG)]))
    await sync(acme.api, mailbox)
    [receipt] = (await inbox(acme.api))["Receipt"]
    assert receipt["filename"] == "Receipt.png" and receipt["document"] is None
    assert len(await documents_of(acme.api, company)) == 1
    assert await documents_of(acme.api, family) == []
    assert stored_files(settings) == {sha(PDF), sha(PNG)}


async def test_only_upload_types_are_saved(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    files = [
        ("page.html", "application/pdf", b"<script>alert(1)</script>"),  # the name decides
        ("tool.exe", "application/octet-stream", b"MZ\x90\x00"),
        ("Notes.txt", "text/plain", b"Figures for 2025"),
    ]
    imap.append(mailbox.username, papers("Mixed", files))
    await sync(acme.api, mailbox)

    listed = (await inbox(acme.api))["Mixed"]
    assert [(a["filename"], a["document"] is None) for a in listed] == [
        ("page.html", True),
        ("tool.exe", True),
        ("Notes.txt", False),
    ]
    [notes] = await documents_of(acme.api, anna.account_ids[0])
    assert (notes["filename"], notes["contentType"]) == ("Notes.txt", "text/plain")


async def test_damaged_attachments_never_stop_the_sync(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    damaged = (
        f"From: {ANNA}\r\nTo: office@acme.example\r\nSubject: Damaged\r\n"
        "Message-ID: <damaged@miller.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        "--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        # Base64 with characters outside the alphabet and a broken end: read as far as it goes.
        "--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="broken.pdf"\r\n\r\nJVBER!!!i0xLj*QK=x\r\n'
        # No file name at all: named after its position and declared type.
        "--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment\r\n\r\nJVBERi0xLjQK\r\n"
        # A header the parser cannot make sense of, and no closing boundary.
        "--XX\r\nContent-Type: ;;;\r\nContent-Disposition: attachment; filename*=bogus''%ZZ\r\n"
        "\r\nabc\r\n"
    ).encode()
    imap.append(mailbox.username, damaged)
    imap.append(mailbox.username, papers("After", [("Bescheid.pdf", "application/pdf", PDF)]))
    await sync(acme.api, mailbox)

    listed = await inbox(acme.api)
    assert [a["filename"] for a in listed["After"]] == ["Bescheid.pdf"]  # the sync went on
    broken, nameless, *rest = listed["Damaged"]
    assert broken["filename"] == "broken.pdf" and broken["size"] > 0
    assert (nameless["filename"], nameless["size"]) == ("attachment-2.pdf", 9)
    assert nameless["document"] is not None
    assert len(rest) == 1 and rest[0]["filename"]  # a name, whatever could be read of it
    names = {d["filename"] for d in await documents_of(acme.api, anna.account_ids[0])}
    assert {"broken.pdf", "attachment-2.pdf", "Bescheid.pdf"} <= names


async def test_earlier_mail_keeps_attachments_without_saving_them(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    """A history import (EMAIL SYNC turned on) brings earlier mail: not "future synced mail"."""
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    imap.append(mailbox.username, papers("Old papers", [("Old.pdf", "application/pdf", PDF)]))
    result = await sync_engine.import_history(
        FirmScope(acme.owner.firm_id), mailbox, settings, [ANNA]
    )
    assert (result.error, result.stored) == (None, 1)

    [old] = (await inbox(acme.api))["Old papers"]
    assert (old["filename"], old["size"], old["document"]) == ("Old.pdf", len(PDF), None)
    assert await documents_of(acme.api, anna.account_ids[0]) == []
    assert stored_files(settings) == {sha(PDF)}  # kept with the message all the same


async def test_mail_sent_before_the_mailbox_was_connected_is_not_auto_saved(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    """The first sync of a new mailbox reads its whole history: that mail keeps its
    attachments, but only mail sent since the mailbox was connected fills Documents."""
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    before = mailbox.created_at - timedelta(days=30)
    imap.append(
        mailbox.username, papers("Last year", [("Old.pdf", "application/pdf", PDF)], before)
    )
    imap.append(mailbox.username, papers("Today", [("New.png", "image/png", PNG)]))
    await sync(acme.api, mailbox)

    listed = await inbox(acme.api)
    assert listed["Last year"][0]["document"] is None
    assert listed["Today"][0]["document"] is not None
    assert [d["filename"] for d in await documents_of(acme.api, anna.account_ids[0])] == ["New.png"]
    assert stored_files(settings) == {sha(PDF), sha(PNG)}


async def test_an_account_linked_by_a_later_sync_saves_the_attachments(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    """The same message reaches a second mailbox after EMAIL SYNC went on in another
    account: that sync links it there, and that account saves its attachments."""
    anna = await client_in(acme.api, ("Miller Family", False))
    company = await new_account(acme.api, "Miller GmbH")
    update = {"id": company["id"], "input": {"autoSaveAttachments": True}}
    await acme.api.ok(UPDATE_ACCOUNT, update)
    first = await add_mailbox(acme.owner.firm_id, imap, settings)
    second = await add_mailbox(acme.owner.firm_id, imap, settings)
    raw = papers("Shared", [("Vertrag.pdf", "application/pdf", PDF)])
    imap.append(first.username, raw)
    await sync(acme.api, first)
    assert await documents_of(acme.api, anna.account_ids[0]) == []

    contact = (await acme.api.data(STATUS, {"id": anna.account_ids[0]}))["account"]["emails"]
    await _link_and_sync_on(acme.api, company["id"], contact[0]["emailAddress"]["address"])
    imap.append(second.username, raw)
    await sync(acme.api, second)

    [saved] = await documents_of(acme.api, company["id"])
    assert saved["filename"] == "Vertrag.pdf" and saved["sha256"] == sha(PDF)
    [shared] = (await inbox(acme.api))["Shared"]
    assert shared["document"]["id"] == saved["id"]
    assert await documents_of(acme.api, anna.account_ids[0]) == []


async def _link_and_sync_on(api: Api, account_id: str, address: str) -> None:
    """Links the contact with `address` to the account and turns EMAIL SYNC on there."""
    found = await api.data(
        "query($q: String) { contacts(search: $q) { edges { node { id } } } }", {"q": address}
    )
    [edge] = found["contacts"]["edges"]
    link = """mutation($a: ID!, $c: ID!) { linkContact(accountId: $a, contactId: $c) {
      errors { code } account { id } } }"""
    await api.ok(link, {"a": account_id, "c": edge["node"]["id"]})
    [row] = (await api.data(STATUS, {"id": account_id}))["account"]["emails"]
    await api.ok(FLAGS, {"input": {"accountEmailId": row["id"], "emailSync": True}})


# Who sees what ------------------------------------------------------------------------------


async def test_clients_see_saved_documents_never_the_mail(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer, smtp
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    imap.append(mailbox.username, papers("Papers", [("Bescheid.pdf", "application/pdf", PDF)]))
    await sync(acme.api, mailbox)
    [document] = await documents_of(acme.api, anna.account_ids[0])

    await login_on(acme.api, anna.account_email_ids[0])
    [invitation] = await deliver(settings, smtp)
    token = (await accept(Api(client), token_in(invitation)))["token"]
    anna_api = Api(client, token)
    listed = await anna_api.data(
        "{ currentAccount { documents { totalCount edges { node { id filename } } } } }"
    )
    assert listed["currentAccount"]["documents"] == {
        "totalCount": 1,
        "edges": [{"node": {"id": document["id"], "filename": "Bescheid.pdf"}}],
    }
    got = await client.get(
        "/documents/" + document["id"], headers={"Authorization": f"Bearer {token}"}
    )
    assert got.status_code == 200 and got.content == PDF

    refused = await anna_api.post(INBOX)
    assert refused["errors"][0]["extensions"]["code"] in ("FORBIDDEN", "UNAUTHENTICATED")
    assert not refused.get("data")
    message_id = (await acme.api.data("{ inbox { edges { node { id } } } }"))["inbox"]["edges"][0][
        "node"
    ]["id"]
    node = await anna_api.data(
        "query($id: ID!) { node(id: $id) { ... on Message { attachments { filename } } } }",
        {"id": message_id},
    )
    assert node == {"node": None}


async def test_globex_sees_nothing_of_acme_attachments(
    acme: Firm, globex: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    imap.append(mailbox.username, papers("Papers", [("Bescheid.pdf", "application/pdf", PDF)]))
    await sync(acme.api, mailbox)
    [document] = await documents_of(acme.api, anna.account_ids[0])
    assert (await globex.api.data("{ inbox { totalCount } }"))["inbox"]["totalCount"] == 0
    got = await client.get(
        "/documents/" + document["id"], headers={"Authorization": f"Bearer {globex.api.token}"}
    )
    assert got.status_code == 404


async def test_big_messages_are_downloaded_a_few_at_a_time(
    acme: Firm,
    client: httpx.AsyncClient,
    settings: Settings,
    imap: ImapServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    monkeypatch.setattr(sync_engine, "BODY_BATCH_BYTES", len(PDF) * 2)  # about one message a trip
    contents = [PDF + bytes([n]) for n in range(4)]
    for n, content in enumerate(contents):
        imap.append(
            mailbox.username, papers(f"Part {n}", [(f"part-{n}.pdf", "application/pdf", content)])
        )
    fetch = ImapSession.fetch
    trips: list[int] = []  # messages per download of whole messages

    async def counted(session: ImapSession, uids: Any, parts: str) -> Any:
        if parts == sync_engine.MESSAGE_FIELDS:
            trips.append(len(uids))
        return await fetch(session, uids, parts)

    monkeypatch.setattr(ImapSession, "fetch", counted)
    await sync(acme.api, mailbox)
    assert trips == [1, 1, 1, 1]
    saved = await documents_of(acme.api, anna.account_ids[0])
    assert [d["sha256"] for d in saved] == [sha(c) for c in contents]


def test_downloads_are_grouped_by_size() -> None:
    sizes = {1: 10, 2: 10, 3: 25, 4: 1, 5: 1}
    assert sync_engine._by_size([1, 2, 3, 4, 5, 6], sizes, 20) == [[1, 2], [3], [4, 5, 6]]
    assert sync_engine._by_size([], sizes, 20) == []


# No N+1 ------------------------------------------------------------------------------------


async def test_attachments_and_their_documents_cost_the_same_for_2_and_8_messages(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    query = "{ inbox(first: 20) { edges { node { attachments { filename document { id } } } } } }"

    async def add(count: int) -> None:
        for _ in range(count):
            content = PDF + secrets.token_bytes(16)
            files = [("a.pdf", "application/pdf", content), ("b.png", "image/png", PNG)]
            imap.append(mailbox.username, papers("Papers", files))
        await sync(acme.api, mailbox)

    async def statements() -> tuple[int, list]:
        with count_sql() as sql:
            data = await acme.api.data(query)
        return len(sql), data["inbox"]["edges"]

    await add(2)
    small, edges = await statements()
    assert len(edges) == 2
    await add(6)
    large, edges = await statements()
    assert len(edges) == 8
    assert all(a["document"] for e in edges for a in e["node"]["attachments"])
    assert small == large
    # session, count, page, attachments, the messages' accounts, their documents
    assert large == 6, large


# Parsing (no database) ----------------------------------------------------------------------


async def test_attachment_names_lose_bidirectional_and_control_characters(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    # RFC 2231 lets a sender put any character into a name: U+202E would show
    # "Invoice\u202efdp.exe" as "Invoiceexe.pdf"; a name of controls only keeps nothing.
    raw = (
        f"From: {ANNA}\r\nTo: office@acme.example\r\nSubject: Disguised\r\n"
        "Message-ID: <disguised@miller.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        "--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        "--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''Invoice%E2%80%AEfdp%07.pdf\r\n"
        "\r\nJVBERi0xLjQK\r\n"
        "--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''%E2%81%A6%E2%80%8F%01\r\n"
        "\r\nJVBERi0xLjQK\r\n--XX--\r\n"
    ).encode()
    imap.append(mailbox.username, raw)
    await sync(acme.api, mailbox)

    listed = (await inbox(acme.api))["Disguised"]
    assert [a["filename"] for a in listed] == ["Invoicefdp.pdf", "attachment-2.pdf"]
    saved = [d["filename"] for d in await documents_of(acme.api, anna.account_ids[0])]
    assert saved == ["Invoicefdp.pdf"]  # the same content twice is saved once


RAW_NAMES = (
    b"From: a@b.example\r\nTo: c@d.example\r\nSubject: names\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b'--B\r\nContent-Type: multipart/alternative; boundary="C"\r\n\r\n'
    b"--C\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--C\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--C--\r\n"
    b"--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*=UTF-8''Steuererkl%C3%A4rung%202025.pdf\r\n"
    b"\r\nJVBERi0xLjQK\r\n"
    b'--B\r\nContent-Type: image/png; name="=?UTF-8?B?QmlsZCDDpC5wbmc=?="\r\n'
    b'Content-Disposition: inline; filename="=?UTF-8?B?QmlsZCDDpC5wbmc=?="\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
    b"--B\r\nContent-Type: image/gif\r\nContent-ID: <logo@x>\r\nContent-Disposition: inline\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nR0lGODlh\r\n"
    b"--B\r\nContent-Type: application/pdf; name*0*=UTF-8''lange%20Na; name*1=\"me.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    b"--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
    b'filename="C:\\\\Users\\\\anna\\\\notes.txt"\r\n\r\nnotes\r\n'
    b"--B--\r\n"
)


def test_attachment_names_are_decoded_and_bodies_are_no_attachments() -> None:
    parsed = parse_message(RAW_NAMES)
    assert parsed.text_body and parsed.text_body.strip() == "hello"
    assert parsed.html_body and "<p>hello</p>" in parsed.html_body
    found = [(a.filename, a.content_type, a.size) for a in parsed.attachments]
    assert found == [
        ("Steuererklärung 2025.pdf", "application/pdf", 9),  # RFC 2231
        ("Bild ä.png", "image/png", 8),  # RFC 2047 inside quotes, an inline part with a name
        ("lange Name.pdf", "application/pdf", 9),  # RFC 2231 continuations
        ("", "application/pdf", 9),  # a bare PDF: an attachment without a name
        ("C:\\Users\\anna\\notes.txt", "text/plain", 5),
    ]  # the embedded logo (inline, Content-ID, no name) is part of the HTML, not a file
    assert parsed.attachments[0].content == b"%PDF-1.4\n"
    assert [filename_for(a, i) for i, a in enumerate(parsed.attachments)] == [
        "Steuererklärung 2025.pdf",
        "Bild ä.png",
        "lange Name.pdf",
        "attachment-4.pdf",
        "notes.txt",  # a sender's path is no part of the name
    ]


def test_a_long_name_is_cut_from_the_front_so_the_extension_stays() -> None:
    raw = papers("Long", [("Beleg " * 100 + "2025.pdf", "application/pdf", PDF)])
    [attachment] = parse_message(raw).attachments
    name = filename_for(attachment, 0)
    assert 250 <= len(name) <= 255 and name.endswith("Beleg 2025.pdf")


def test_attachments_over_the_limit_keep_their_size_and_drop_their_bytes() -> None:
    content = secrets.token_bytes(5000)
    raw = papers(
        "Big", [("big.pdf", "application/pdf", content), ("s.pdf", "application/pdf", PDF)]
    )
    big, small = parse_message(raw, max_attachment_bytes=len(PDF)).attachments
    assert (big.size, big.content, big.unreadable) == (5000, None, False)
    assert small.content == PDF
    assert parse_message(raw).attachments[0].content == content  # no limit: all kept


def test_a_forwarded_message_gives_its_files() -> None:
    inner = EmailMessage()
    inner["From"], inner["Subject"] = "bank@bank.example", "Statement"
    inner.set_content("Your statement.")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="Statement.pdf")
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = ANNA, "office@acme.example", "Fwd: Statement"
    outer.set_content("For you.")
    outer.add_attachment(inner)
    parsed = parse_message(outer.as_bytes())
    assert [(a.filename, a.content) for a in parsed.attachments] == [("Statement.pdf", PDF)]
    assert parsed.text_body and "For you." in parsed.text_body


def test_a_deeply_nested_message_is_read_without_failing() -> None:
    leaf = b"--Z\r\nContent-Type: application/pdf; name=deep.pdf\r\n\r\n%PDF\r\n--Z--\r\n"
    head = b'From: a@b.example\r\nContent-Type: multipart/mixed; boundary="Z"\r\n\r\n'
    level = b'--Z\r\nContent-Type: multipart/mixed; boundary="Z"\r\n\r\n'
    shallow = parse_message(head + level * 50 + leaf)
    assert [a.filename for a in shallow.attachments] == ["deep.pdf"]
    # Deeper than any stack: no recursion error, and past MAX_PARTS nothing more is looked at.
    assert parse_message(head + level * (MAX_PARTS + 50) + leaf).attachments == []
