"""Sender authentication against a real Dovecot: the Authentication-Results header the firm's
receiving server added (settings.mail_auth_serv_id) decides whether a synced message's
attachments may be auto-saved into Documents (services/mail/store). Mail that fails is still
synced and shown, marked FAIL; headers a sender added below the receiving server's are never
read; strict mode saves only what passed."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from models import Mailbox
from portico.settings import Settings
from services.mail.parse import parse_message
from tests.support.api import Api, Firm
from tests.support.crm_ops import UPDATE_ACCOUNT, new_account
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.mail import add_mailbox
from tests.test_attachments import (
    PDF,
    PNG,
    STATUS,
    _link_and_sync_on,
    client_in,
    documents_of,
    papers,
    sync,
)

OURS = "mx.acme.example"  # the firm's receiving server
SHOWN = """{ inbox(first: 50) { edges { node { subject senderAuthentication
  attachments { filename document { id } } } } } }"""


def received(raw: bytes, *results: str) -> bytes:
    """`raw` with Authentication-Results headers on top, the first one topmost (as the last
    server to receive it prepends its own)."""
    head = b"".join(f"Authentication-Results: {r}\r\n".encode() for r in results)
    return head + raw


def signed_by_sender(raw: bytes, result: str) -> bytes:
    """`raw` with a header the sender wrote itself: below the Received-side ones."""
    return raw.replace(b"\nSubject:", f"\nAuthentication-Results: {result}\r\nSubject:".encode(), 1)


async def shown(api: Api) -> dict[str, tuple[str, list[bool]]]:
    """By subject: senderAuthentication, and whether each attachment has a document."""
    edges = (await api.data(SHOWN))["inbox"]["edges"]
    return {
        e["node"]["subject"]: (
            e["node"]["senderAuthentication"],
            [a["document"] is not None for a in e["node"]["attachments"]],
        )
        for e in edges
    }


async def synced(
    api: Api, imap: ImapServer, mailbox: Mailbox, messages: Sequence[bytes]
) -> dict[str, tuple[str, list[bool]]]:
    for raw in messages:
        imap.append(mailbox.username, raw)
    await sync(api, mailbox)
    return await shown(api)


def pdf(subject: str) -> bytes:
    """A message with a PDF of its own (a document of the same content would be shown as
    each attachment's document)."""
    content = PDF + subject.encode()
    return papers(subject, [(f"{subject}.pdf", "application/pdf", content)])


async def test_spoofed_mail_is_synced_but_not_saved(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    settings.mail_auth_serv_id = OURS  # the app shares this settings object
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    spoofed = received(pdf("Spoofed"), f"{OURS}; spf=fail; dmarc=fail (p=reject) header.from=x")
    honest = received(pdf("Honest"), f"{OURS}; spf=pass; dkim=pass; dmarc=pass header.from=x")
    unchecked = pdf("Unchecked")  # no header at all: nothing failed
    listed = await synced(acme.api, imap, mailbox, [spoofed, honest, unchecked])

    assert listed == {
        "Spoofed": ("FAIL", [False]),
        "Honest": ("PASS", [True]),
        "Unchecked": ("NONE", [True]),
    }
    names = [d["filename"] for d in await documents_of(acme.api, anna.account_ids[0])]
    assert names == ["Honest.pdf", "Unchecked.pdf"]


async def test_a_header_the_sender_added_is_ignored(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    settings.mail_auth_serv_id = OURS
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    # The sender claims a pass from another server, and one from ours, below our own header.
    forged = received(
        signed_by_sender(pdf("Forged"), f"{OURS}; dmarc=pass"),
        f"{OURS.upper()}; dmarc=fail header.from=miller.example",
        "relay.example; dmarc=pass",
    )
    # A header above ours from another server (a forwarder) does not count either.
    relayed = received(pdf("Relayed"), "relay.example; dmarc=fail", f"{OURS} 1; dmarc=pass")
    # Only a header of another authserv-id: nothing from ours, so nothing failed.
    elsewhere = received(pdf("Elsewhere"), "other.example; dmarc=fail")
    listed = await synced(acme.api, imap, mailbox, [forged, relayed, elsewhere])

    assert listed == {
        "Forged": ("FAIL", [False]),
        "Relayed": ("PASS", [True]),
        "Elsewhere": ("NONE", [True]),
    }
    names = [d["filename"] for d in await documents_of(acme.api, anna.account_ids[0])]
    assert names == ["Elsewhere.pdf", "Relayed.pdf"]


async def test_without_an_authserv_id_the_topmost_header_counts(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    assert settings.mail_auth_serv_id is None
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    top_fails = received(pdf("Top fails"), "mx.any.example; dmarc=fail", "b.example; dmarc=pass")
    top_passes = received(
        signed_by_sender(pdf("Top passes"), "mx.any.example; dmarc=fail"),
        "mx.any.example; dmarc=pass",
    )
    listed = await synced(acme.api, imap, mailbox, [top_fails, top_passes])

    assert listed == {"Top fails": ("FAIL", [False]), "Top passes": ("PASS", [True])}
    [saved] = await documents_of(acme.api, anna.account_ids[0])
    assert saved["filename"] == "Top passes.pdf"


async def test_strict_mode_saves_only_what_passed(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    settings.mail_auth_serv_id = OURS
    settings.mail_auth_strict = True
    anna = await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    passed = received(pdf("Passed"), f"{OURS}; dmarc=pass")
    unknown = received(pdf("Unknown"), f"{OURS}; dmarc=none; spf=pass")
    bare = pdf("Bare")
    listed = await synced(acme.api, imap, mailbox, [passed, unknown, bare])

    assert listed == {
        "Passed": ("PASS", [True]),
        "Unknown": ("NONE", [False]),
        "Bare": ("NONE", [False]),
    }
    [saved] = await documents_of(acme.api, anna.account_ids[0])
    assert saved["filename"] == "Passed.pdf"


async def test_a_failing_message_linked_later_saves_nothing(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, imap: ImapServer
) -> None:
    """Another copy (another mailbox) links the stored message to an account with auto-save
    on: the stored message's verdict decides, whatever that copy says."""
    settings.mail_auth_serv_id = OURS
    anna = await client_in(acme.api, ("Miller Family", False))
    company = await new_account(acme.api, "Miller GmbH")
    await acme.api.ok(UPDATE_ACCOUNT, {"id": company["id"], "input": {"autoSaveAttachments": True}})
    first = await add_mailbox(acme.owner.firm_id, imap, settings)
    second = await add_mailbox(acme.owner.firm_id, imap, settings)
    raw = papers("Shared", [("Vertrag.png", "image/png", PNG)])
    await synced(acme.api, imap, first, [received(raw, f"{OURS}; dmarc=fail")])

    contact = (await acme.api.data(STATUS, {"id": anna.account_ids[0]}))["account"]["emails"]
    await _link_and_sync_on(acme.api, company["id"], contact[0]["emailAddress"]["address"])
    listed = await synced(acme.api, imap, second, [received(raw, f"{OURS}; dmarc=pass")])

    assert listed == {"Shared": ("FAIL", [False])}
    assert await documents_of(acme.api, company["id"]) == []


# Reading the headers (no database: SQLite pass only would do, but it is cheap) ------------


def test_authentication_results_are_read_as_rfc_8601_writes_them() -> None:
    def verdict(*results: str, serv_id: str | None = OURS) -> str | None:
        return parse_message(received(pdf("x"), *results)).sender_auth(serv_id)

    google = (
        f"{OURS};\r\n       dkim=pass header.i=@miller.example header.s=s1 header.b=Ab;\r\n"
        "       spf=pass (mx: domain of a@miller.example designates 1.2.3.4; dmarc=fail) "
        "smtp.mailfrom=a@miller.example;\r\n       dmarc=pass (p=NONE sp=NONE dis=NONE) "
        "header.from=miller.example"
    )
    assert verdict(google) == "PASS"  # folded, a comment holding "; dmarc=fail"
    assert verdict(f'"{OURS}" 1; dmarc = FAIL') == "FAIL"  # quoted id, version, spaces, case
    assert verdict(f"(comment) {OURS}; none") is None
    assert verdict(f'{OURS}; auth=pass smtp.auth="x; dmarc=fail"') is None  # inside a quote
    assert verdict(f"{OURS}; dmarc=pass; dmarc=fail") == "FAIL"  # two results: the failure
    assert verdict(f"{OURS}; dmarc=temperror") is None
    assert verdict(f"{OURS}; dmarc/1=fail") == "FAIL"
    assert verdict("; dmarc=fail", f"{OURS}; dmarc=pass") == "PASS"  # no id: not read
    assert verdict(f"{OURS}(; dmarc=pass") is None  # a comment never closed: nothing read
