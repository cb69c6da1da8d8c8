"""Seeded data and viewers for the compiled path's differential test
(tests/test_compiled_execution.py): two firms made through the API, with accounts, contacts,
several addresses each, LOGIN/NOTIFY/EMAIL SYNC toggled on some, invitations, a copy
address, an archived account; documents and synced mail as rows. The viewers: an owner, a
staff member with no rights, one with the inbox right only, a signed-in client, anonymous,
and the second firm's owner."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from models import (
    Attachment,
    Document,
    Mailbox,
    Message,
    MessageAccount,
    PortalAccess,
    PortalUser,
)
from services.shared import sessions
from tests.support.api import Api, Firm, add_staff, api_for, make_firm
from tests.support.crm_ops import new_account, new_contact

FLAGS = """mutation($input: SetEmailFlagsInput!) { setEmailFlags(input: $input) {
  errors { code field message } accountEmail { id } } }"""
FIRM_SETTINGS = """mutation($copy: String) { updateFirmSettings(input: {copyAddress: $copy}) {
  errors { code field message } firm { id } } }"""
ARCHIVE = "mutation($id: ID!) { archiveAccount(id: $id) { errors { code } account { id } } }"
TOGGLES = """query($id: ID!) { account(id: $id) { emails { id emailAddress { address } } } }"""
CURSORS = "{ accounts(first: 3, includeArchived: true) { edges { cursor } } contacts(first: 2) { edges { cursor } } }"


@dataclass
class World:
    owner: Api
    limited: Api  # staff with no rights: no inbox, no managing accounts
    inbox_user: Api  # staff with the inbox right only
    client: Api  # a portal user signed in to one of her accounts
    anonymous: Api
    other_owner: Api  # the second firm's owner
    ids: list[str] = field(default_factory=list)  # global ids of both firms' objects
    cursors: list[str] = field(default_factory=list)  # real cursors of the owner's pages
    named: dict[str, str] = field(default_factory=dict)  # a few ids by role

    def viewers(self) -> dict[str, Api]:
        return {
            "owner": self.owner,
            "limited": self.limited,
            "inbox": self.inbox_user,
            "client": self.client,
            "anonymous": self.anonymous,
            "other": self.other_owner,
        }


def gid(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


def pk_of(global_id: str) -> int:
    return int(base64.b64decode(global_id).decode().split(":")[1])


async def seed_firm(firm: Firm, slug: str) -> dict[str, Any]:
    """Accounts, contacts, addresses and toggles through the API; documents as rows."""
    api = firm.api
    alpha = await new_account(api, "Alpha Family")
    bakery = await new_account(api, "Bakery Ltd", "COMPANY")
    solo = await new_account(api, "Solo", "INDIVIDUAL")  # nobody linked
    gone = await new_account(api, "Gone Family")
    ann = await new_contact(
        api,
        "Ann",
        "Lee",
        [(f"ann-{slug}@lee.example", "Email"), (f"work-{slug}@lee.example", "Work")],
        [alpha["id"], bakery["id"], gone["id"]],
    )
    bob = await new_contact(
        api, "Bob", "Lee", [(f"bob-{slug}@lee.example", "Email")], [alpha["id"]]
    )
    cy = await new_contact(api, "Cy", "Adams", [], [bakery["id"]])  # no address
    await new_contact(api, "Dee", "Unlinked", [(f"dee-{slug}@x.example", "Home")])
    toggles = {
        (t["emailAddress"]["address"], account["id"]): t["id"]
        for account in (alpha, bakery, gone)
        for t in (await api.data(TOGGLES, {"id": account["id"]}))["account"]["emails"]
    }
    settings = [
        ((f"ann-{slug}@lee.example", alpha["id"]), {"login": True, "notify": True}),
        ((f"work-{slug}@lee.example", alpha["id"]), {"emailSync": True}),
        ((f"bob-{slug}@lee.example", alpha["id"]), {"login": True, "sendInvitation": False}),
        ((f"ann-{slug}@lee.example", bakery["id"]), {"login": True, "emailSync": True}),
        ((f"ann-{slug}@lee.example", gone["id"]), {"login": True}),
    ]
    for key, flags in settings:
        await api.ok(FLAGS, {"input": {"accountEmailId": toggles[key], **flags}})
    for n, account in enumerate((alpha, alpha, alpha, bakery, gone)):
        await Document.create(
            firm_id=firm.owner.firm_id,
            account_id=pk_of(account["id"]),
            filename=f"{slug}-{n}.pdf",
            content_type="application/pdf",
            size=1000 + n,
            sha256=f"{n:064x}",
        )
    await seed_mail(firm.owner.firm_id, slug, [pk_of(alpha["id"]), pk_of(bakery["id"])])
    await api.ok(ARCHIVE, {"id": gone["id"]})
    await api.ok(FIRM_SETTINGS, {"copy": f"copies@{slug}.example"})
    return {
        "accounts": [alpha, bakery, solo, gone],
        "contacts": [ann, bob, cy],
        "toggles": toggles,
    }


async def seed_mail(firm_id: int, slug: str, accounts: list[int]) -> None:
    """Synced mail as rows (syncing has its own tests): a mailbox, messages in and out linked
    to one account or two, attachments kept and skipped, an HTML-only body, a tie in time."""
    mailbox = await Mailbox.create(
        firm_id=firm_id,
        address=f"office@{slug}.example",
        address_normalized=f"office@{slug}.example",
        imap_host="imap.invalid",
        imap_port=993,
        smtp_host="smtp.invalid",
        smtp_port=465,
        username=f"office@{slug}.example",
        password_encrypted="not-used",
        last_error="login refused" if slug == "acme" else None,
    )
    when = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    for n in range(5):
        message_id = f"<{slug}-{n}@client.example>"
        key = hashlib.sha256(message_id.encode()).hexdigest()
        message = await Message.create(
            firm_id=firm_id,
            message_id=message_id,
            message_key=key,
            thread_key=key if n != 3 else hashlib.sha256(b"<thread>").hexdigest(),
            subject=f"Message {n}",
            from_address=f"ann-{slug}@lee.example" if n % 2 == 0 else f"office@{slug}.example",
            to_addresses=[f"office@{slug}.example"],
            cc_addresses=[f"bob-{slug}@lee.example"] if n == 1 else [],
            sent_at=when + timedelta(minutes=min(n, 3)),  # messages 3 and 4 at one moment
            text_body=None if n == 2 else f"Hello {n}",
            html_body="<p>Hi <b>there</b><script>x()</script></p>" if n == 2 else None,
            direction="INBOUND" if n % 2 == 0 else "OUTBOUND",
            mailbox=mailbox,
        )
        for account in accounts[: 1 + n % 2]:
            await MessageAccount.create(
                firm_id=firm_id, message=message, account_id=account, sent_at=message.sent_at
            )
        for position in range(n % 3):
            await Attachment.create(
                firm_id=firm_id,
                message=message,
                position=position,
                filename=f"scan-{n}-{position}.pdf",
                content_type="application/pdf",
                size=100 * (n + 1),
                sha256=None if position else f"{n:064x}",
                skipped_reason="too large" if position else None,
            )


async def all_ids(firm_id: int) -> list[str]:
    """Every object's global id of one firm (the generated queries ask `node`, `account`
    and `contact` for them)."""
    from tortoise import Tortoise

    conn = Tortoise.get_connection("default")
    found: list[str] = []
    tables = {
        "Account": "account",
        "Contact": "contact",
        "EmailAddress": "email_address",
        "AccountEmail": "account_email",
        "Invitation": "invitation",
        "Document": "document",
        "StaffMember": "staff_member",
        "Message": "message",
        "Mailbox": "mailbox",
    }
    for type_name, table in tables.items():
        rows = await conn.execute_query_dict(
            f'SELECT id FROM "{table}" WHERE firm_id = {int(firm_id)} ORDER BY id'
        )
        found.extend(gid(type_name, row["id"]) for row in rows)
    return found


async def build_world(http: httpx.AsyncClient) -> World:
    acme = await make_firm(http, "acme")
    globex = await make_firm(http, "globex")
    mine = await seed_firm(acme, "acme")
    await seed_firm(globex, "globex")
    limited = await add_staff(acme, "limited@acme.example")
    assert not limited.uses_inbox and not limited.manages_accounts
    reader = await add_staff(acme, "reader@acme.example", can_use_inbox=True)
    alpha, bakery, _, gone = (pk_of(a["id"]) for a in mine["accounts"])
    user = await PortalUser.create(
        firm_id=acme.owner.firm_id,
        email="ann-acme@lee.example",
        email_normalized="ann-acme@lee.example",
        password_hash="unused",
        activated_at=datetime.now(UTC),
    )
    for account in (alpha, bakery, gone):
        await PortalAccess.create(firm_id=acme.owner.firm_id, account_id=account, portal_user=user)
    token, _ = await sessions.start_client_session(user, timedelta(hours=1), alpha)
    world = World(
        owner=acme.api,
        limited=await api_for(http, limited),
        inbox_user=await api_for(http, reader),
        client=Api(http, token),
        anonymous=Api(http),
        other_owner=globex.api,
    )
    world.ids = await all_ids(acme.owner.firm_id) + (await all_ids(globex.owner.firm_id))[:6]
    pages = await acme.api.data(CURSORS)
    world.cursors = [e["cursor"] for e in pages["accounts"]["edges"]] + [
        e["cursor"] for e in pages["contacts"]["edges"]
    ]
    world.named = {
        "alpha": gid("Account", alpha),
        "bakery": gid("Account", bakery),
        "gone": gid("Account", gone),
        "ann": mine["contacts"][0]["id"],
        "cy": mine["contacts"][2]["id"],
    }
    return world
