"""The read path answers exactly what the data says: nested queries over accounts, contacts,
addresses, toggles, invitations, documents and deliveries, as staff and as a client, and
the inbox's messages with their accounts and attachments, compared
with answers built here from plain SQL and the product rules, on data with ties, nulls, an
archived account and another firm's look-alike rows. The loaders read rows rather than
model instances for speed (issue 13); this is the proof that nothing else changed."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import Tortoise

from models import (
    Account,
    AccountEmail,
    Attachment,
    Document,
    Invitation,
    Message,
    MessageAccount,
    OutboundEmail,
    PortalAccess,
    PortalUser,
)
from services.crm import records
from services.shared import sessions
from services.shared.scope import FirmScope
from tests.support.api import Api, add_staff, api_for

STAFF_KINDS = ("STAFF_INBOX_ALERT", "STAFF_INBOX_DIGEST")
NOW = datetime.now(UTC).replace(microsecond=0)

ACCOUNTS = """
query($archived: Boolean) { accounts(first: 50, includeArchived: $archived) {
  totalCount
  edges { node {
    id name type autoSaveAttachments archivedAt
    contacts { id firstName lastName emailAddresses { id address label } }
    emails {
      id login notify emailSync
      emailAddress { id address label }
      notificationPreferences { all enabled }
      portalStatus
      latestInvitation { id email status sentAt expiresAt acceptedAt }
    }
    invitations { id email status }
    documents(first: 2) {
      totalCount pageInfo { hasNextPage }
      edges { node { id filename contentType size sha256 createdAt } }
    }
    deliveries(first: 3) {
      totalCount pageInfo { hasNextPage }
      edges { node { id to subject category kind status attempts lastError createdAt sentAt } }
    }
  } }
} }
"""

CONTACTS = """
{ contacts(first: 50) { edges { node {
  id firstName lastName
  emailAddresses { address label contact { id lastName } }
  accounts { id name }
} } } }
"""

CLIENT_ACCOUNT = """
query($id: ID!) { account(id: $id) {
  id name type archivedAt
  documents(first: 10) { totalCount edges { node { id filename size createdAt } } }
} }
"""


def gid(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


def iso(value: Any) -> str | None:
    """A stored time as the API writes it: ISO 8601 in UTC (SQLite hands back text)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def as_list(value: Any) -> list:
    return json.loads(value) if isinstance(value, str) else list(value)


async def rows(sql: str) -> list[dict[str, Any]]:
    """Plain SQL (ids are our own integers, inlined), the same on both backends."""
    return await Tortoise.get_connection("default").execute_query_dict(sql)


def ids_in(values: list[int]) -> str:
    return ",".join(str(v) for v in values) or "0"


# The product rules, restated from domain.md rather than imported from the code under test.


def invitation_status(row: dict[str, Any]) -> str:
    if row["accepted_at"] is not None:
        return "ACCEPTED"
    if row["revoked_at"] is not None:
        return "REVOKED"
    expires = datetime.fromisoformat(iso(row["expires_at"]))  # type: ignore[arg-type]
    return "EXPIRED" if expires <= datetime.now(UTC) else "PENDING"


def invitation(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": gid("Invitation", row["id"]),
        "email": row["email"],
        "status": invitation_status(row),
        "sentAt": iso(row["sent_at"]),
        "expiresAt": iso(row["expires_at"]),
        "acceptedAt": iso(row["accepted_at"]),
    }


def newest_page(items: list[dict[str, Any]], size: int, node: Any) -> dict[str, Any]:
    ordered = sorted(items, key=lambda r: (iso(r["created_at"]), r["id"]), reverse=True)
    return {
        "totalCount": len(items),
        "pageInfo": {"hasNextPage": len(items) > size},
        "edges": [{"node": node(r)} for r in ordered[:size]],
    }


def document(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": gid("Document", row["id"]),
        "filename": row["filename"],
        "contentType": row["content_type"],
        "size": row["size"],
        "sha256": row["sha256"],
        "createdAt": iso(row["created_at"]),
    }


def delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": gid("Delivery", row["id"]),
        "to": row["to_address"],
        "subject": row["subject"],
        "category": row["category"],
        "kind": row["kind"],
        "status": row["status"],
        "attempts": row["attempts"],
        "lastError": row["last_error"],
        "createdAt": iso(row["created_at"]),
        "sentAt": iso(row["sent_at"]),
    }


async def expected_accounts(firm_id: int, archived: bool, with_replies: bool) -> dict:
    accounts = await rows(f"SELECT * FROM account WHERE firm_id = {firm_id}")
    if not archived:
        accounts = [a for a in accounts if a["archived_at"] is None]
    accounts.sort(key=lambda a: (a["name"].lower(), a["id"]))
    account_ids = ids_in([a["id"] for a in accounts])
    links = await rows(
        "SELECT l.account_id, c.id, c.first_name, c.last_name FROM account_contact l "
        f"JOIN contact c ON c.id = l.contact_id WHERE l.account_id IN ({account_ids}) "
        f"AND c.firm_id = {firm_id}"
    )
    addresses = await rows(f"SELECT * FROM email_address WHERE firm_id = {firm_id}")
    by_contact: dict[int, list[dict]] = {}
    for a in sorted(addresses, key=lambda a: (a["label"] != "Email", a["id"])):
        by_contact.setdefault(a["contact_id"], []).append(a)
    toggles = await rows(
        f"SELECT * FROM account_email WHERE firm_id = {firm_id} AND account_id IN ({account_ids})"
    )
    address_of = {a["id"]: a for a in addresses}
    active = {
        (r["account_id"], r["email_normalized"])
        for r in await rows(
            "SELECT pa.account_id, pu.email_normalized FROM portal_access pa "
            f"JOIN portal_user pu ON pu.id = pa.portal_user_id WHERE pa.firm_id = {firm_id}"
        )
    }
    invitations = await rows(f"SELECT * FROM invitation WHERE firm_id = {firm_id}")
    documents = await rows(f"SELECT * FROM document WHERE firm_id = {firm_id}")
    mail = [
        m
        for m in await rows(f"SELECT * FROM outbound_email WHERE firm_id = {firm_id}")
        if m["kind"] not in STAFF_KINDS
        and (with_replies or (m["kind"] != "REPLY" and m["mailbox_id"] is None))
    ]

    def address(a: dict[str, Any]) -> dict[str, Any]:
        return {"id": gid("EmailAddress", a["id"]), "address": a["address"], "label": a["label"]}

    def toggle(t: dict[str, Any]) -> dict[str, Any]:
        a = address_of[t["email_address_id"]]
        login = bool(t["login"])
        status = "NO_ACCESS"
        if login:
            found = (t["account_id"], a["address_normalized"]) in active
            status = "ACTIVE" if found else "PENDING_ACTIVATION"
        mine = [i for i in invitations if i["account_email_id"] == t["id"]]
        latest = max(mine, key=lambda i: i["id"]) if mine else None
        return {
            "id": gid("AccountEmail", t["id"]),
            "login": login,
            "notify": bool(t["notify"]),
            "emailSync": bool(t["email_sync"]),
            "emailAddress": address(a),
            "notificationPreferences": {
                "all": bool(t["notify_all"]),
                "enabled": as_list(t["notify_categories"]),
            },
            "portalStatus": status,
            "latestInvitation": invitation(latest) if latest else None,
        }

    def node(acct: dict[str, Any]) -> dict[str, Any]:
        pk = acct["id"]
        people = sorted(
            (link for link in links if link["account_id"] == pk),
            key=lambda c: (c["last_name"].lower(), c["first_name"].lower(), c["id"]),
        )
        mine = sorted(
            (t for t in toggles if t["account_id"] == pk),
            key=lambda t: (address_of[t["email_address_id"]]["contact_id"], t["email_address_id"]),
        )
        return {
            "id": gid("Account", pk),
            "name": acct["name"],
            "type": acct["type"],
            "autoSaveAttachments": bool(acct["auto_save_attachments"]),
            "archivedAt": iso(acct["archived_at"]),
            "contacts": [
                {
                    "id": gid("Contact", c["id"]),
                    "firstName": c["first_name"],
                    "lastName": c["last_name"],
                    "emailAddresses": [address(a) for a in by_contact.get(c["id"], [])],
                }
                for c in people
            ],
            "emails": [toggle(t) for t in mine],
            "invitations": [
                {"id": gid("Invitation", i["id"]), "email": i["email"], "status": s["status"]}
                for i in sorted(invitations, key=lambda i: -i["id"])
                if i["account_id"] == pk
                for s in [invitation(i)]
            ],
            "documents": newest_page([d for d in documents if d["account_id"] == pk], 2, document),
            "deliveries": newest_page([m for m in mail if m["account_id"] == pk], 3, delivery),
        }

    return {
        "accounts": {
            "totalCount": len(accounts),
            "edges": [{"node": node(a)} for a in accounts],
        }
    }


async def expected_contacts(firm_id: int) -> dict:
    contacts = await rows(f"SELECT * FROM contact WHERE firm_id = {firm_id}")
    contacts.sort(key=lambda c: (c["last_name"].lower(), c["first_name"].lower(), c["id"]))
    addresses = await rows(f"SELECT * FROM email_address WHERE firm_id = {firm_id}")
    addresses.sort(key=lambda a: (a["label"] != "Email", a["id"]))
    links = await rows(
        "SELECT l.contact_id, a.id, a.name FROM account_contact l "
        f"JOIN account a ON a.id = l.account_id WHERE a.firm_id = {firm_id}"
    )
    links.sort(key=lambda a: (a["name"].lower(), a["id"]))
    last_names = {c["id"]: c["last_name"] for c in contacts}
    return {
        "contacts": {
            "edges": [
                {
                    "node": {
                        "id": gid("Contact", c["id"]),
                        "firstName": c["first_name"],
                        "lastName": c["last_name"],
                        "emailAddresses": [
                            {
                                "address": a["address"],
                                "label": a["label"],
                                "contact": {
                                    "id": gid("Contact", c["id"]),
                                    "lastName": last_names[c["id"]],
                                },
                            }
                            for a in addresses
                            if a["contact_id"] == c["id"]
                        ],
                        "accounts": [
                            {"id": gid("Account", link["id"]), "name": link["name"]}
                            for link in links
                            if link["contact_id"] == c["id"]
                        ],
                    }
                }
                for c in contacts[:50]
            ]
        }
    }


async def expected_client_account(user_id: int, account_pk: int) -> dict:
    allowed = await rows(
        "SELECT pa.account_id FROM portal_access pa JOIN account a ON a.id = pa.account_id "
        f"WHERE pa.portal_user_id = {user_id} AND a.archived_at IS NULL"
    )
    if account_pk not in {r["account_id"] for r in allowed}:
        return {"account": None}
    [acct] = await rows(f"SELECT * FROM account WHERE id = {account_pk}")
    documents = await rows(f"SELECT * FROM document WHERE account_id = {account_pk}")
    page = newest_page(documents, 10, document)
    del page["pageInfo"]
    for edge in page["edges"]:
        node = edge["node"]
        edge["node"] = {k: node[k] for k in ("id", "filename", "size", "createdAt")}
    return {
        "account": {
            "id": gid("Account", account_pk),
            "name": acct["name"],
            "type": acct["type"],
            "archivedAt": iso(acct["archived_at"]),
            "documents": page,
        }
    }


# The data: ties in every order, nulls, an archived account, and a second firm alike.


async def seed(firm_id: int, slug: str) -> dict[str, Any]:
    scope = FirmScope(firm_id)
    alpha = await records.create_account(scope, "alpha", "FAMILY")
    alpha_twin = await records.create_account(scope, "Alpha", "COMPANY")  # same name, case aside
    await records.create_account(scope, "Zed", "INDIVIDUAL")  # no contacts at all
    gone = await records.create_account(scope, "Beta", "FAMILY")
    address = records.NewAddress
    twin_a = await records.create_contact(
        scope,
        "Ann",
        "Lee",
        [address(f"work-{slug}@lee.example", "Work"), address(f"ann-{slug}@lee.example")],
        [alpha.pk, alpha_twin.pk, gone.pk],
    )
    twin_b = await records.create_contact(
        scope, "ann", "LEE", [address(f"ann2-{slug}@lee.example")], [alpha.pk]
    )
    await records.create_contact(scope, "Bob", "Adams", [], [alpha.pk])  # no addresses
    await records.create_contact(
        scope, "Cy", "Zu", [address(f"cy-{slug}@zu.example", "Home")], [alpha_twin.pk]
    )
    await Account.filter(pk=gone.pk).update(archived_at=NOW - timedelta(days=1))

    toggles = {
        (t.account_id, t.email_address.address): t
        for t in await AccountEmail.filter(firm_id=firm_id).prefetch_related("email_address")
    }
    anns = toggles[(alpha.pk, f"ann-{slug}@lee.example")]
    works = toggles[(alpha.pk, f"work-{slug}@lee.example")]
    await AccountEmail.filter(pk=anns.pk).update(
        login=True, notify=True, notify_all=False, notify_categories=["PROPOSALS", "APPROVALS"]
    )
    await AccountEmail.filter(pk=works.pk).update(login=True, email_sync=True)
    user = await PortalUser.create(
        firm_id=firm_id,
        email=f"ann-{slug}@lee.example",
        email_normalized=f"ann-{slug}@lee.example",
        password_hash="unused",
        activated_at=NOW,
    )
    for account in (alpha, gone):
        await PortalAccess.create(firm_id=firm_id, account_id=account.pk, portal_user=user)

    def invite(toggle: AccountEmail, n: int, **times: Any) -> Any:
        return Invitation.create(
            firm_id=firm_id,
            account_id=toggle.account_id,
            account_email_id=toggle.pk,
            email=f"ann-{slug}@lee.example",
            email_normalized=f"ann-{slug}@lee.example",
            token_hash=f"{slug}-{n}".ljust(64, "0"),
            expires_at=times.pop("expires_at", NOW + timedelta(days=7)),
            **times,
        )

    await invite(anns, 1, accepted_at=NOW - timedelta(hours=2), sent_at=NOW - timedelta(days=1))
    await invite(anns, 2, revoked_at=NOW - timedelta(hours=1))
    await invite(works, 3, expires_at=NOW - timedelta(minutes=1), sent_at=NOW - timedelta(days=9))
    await invite(works, 4, sent_at=NOW)

    same_moment = NOW - timedelta(hours=3)
    for n, account in enumerate([alpha, alpha, alpha, alpha_twin, gone]):
        doc = await Document.create(
            firm_id=firm_id,
            account_id=account.pk,
            filename=f"{slug}-{n}.pdf",
            content_type="application/pdf",
            size=1000 + n,
            sha256=f"{n:064x}",
        )
        if n < 3:  # three documents at one moment: the id decides
            await Document.filter(pk=doc.pk).update(created_at=same_moment)
    kinds = ["INVITATION", "NOTIFICATION", "REPLY", "STAFF_INBOX_ALERT", "NOTIFICATION"]
    for n, kind in enumerate(kinds):
        mail = await OutboundEmail.create(
            firm_id=firm_id,
            account_id=alpha.pk,
            kind=kind,
            category="PROPOSALS" if kind == "NOTIFICATION" and n == 1 else None,
            to_address=f"ann-{slug}@lee.example",
            from_name="Firm",
            subject=f"Subject {n}",
            body_encrypted="x",
            message_id=f"<{slug}-{n}@portico.test>",
            status="FAILED" if n == 1 else "SENT" if n == 4 else "QUEUED",
            attempts=n,
            last_error="550 no" if n == 1 else None,
            next_attempt_at=NOW,
            sent_at=NOW if n == 4 else None,
        )
        if n in (0, 1):  # a tie in time as well
            await OutboundEmail.filter(pk=mail.pk).update(created_at=same_moment)
    return {
        "alpha": alpha,
        "gone": gone,
        "twin": alpha_twin,
        "user": user,
        "contacts": (twin_a, twin_b),
    }


async def test_staff_reads_equal_plain_sql(acme, globex, client):
    seeded = await seed(acme.owner.firm_id, "acme")
    await seed(globex.owner.firm_id, "globex")
    firm_id = acme.owner.firm_id
    employee = await add_staff(acme, "em@acme.example")
    assert not employee.uses_inbox

    for archived in (False, True):
        variables = {"archived": archived}
        owner_answer = await acme.api.data(ACCOUNTS, variables)
        assert owner_answer == await expected_accounts(firm_id, archived, with_replies=True)
        employee_answer = await (await api_for(client, employee)).data(ACCOUNTS, variables)
        assert employee_answer == await expected_accounts(firm_id, archived, with_replies=False)
    # The data has what the comparison is meant to cover.
    edges = owner_answer["accounts"]["edges"]
    assert [e["node"]["name"] for e in edges] == ["alpha", "Alpha", "Beta", "Zed"]
    alpha = edges[0]["node"]
    assert [c["firstName"] for c in alpha["contacts"]] == ["Bob", "Ann", "ann"]
    statuses = {e["portalStatus"] for e in alpha["emails"]}
    assert statuses == {"ACTIVE", "PENDING_ACTIVATION", "NO_ACCESS"}
    assert {i["status"] for i in alpha["invitations"]} == {
        "ACCEPTED",
        "REVOKED",
        "EXPIRED",
        "PENDING",
    }
    assert alpha["documents"]["pageInfo"]["hasNextPage"] is True
    assert seeded["gone"].pk != seeded["alpha"].pk

    assert await acme.api.data(CONTACTS) == await expected_contacts(firm_id)
    assert await globex.api.data(CONTACTS) == await expected_contacts(globex.owner.firm_id)


async def test_client_reads_equal_plain_sql(acme, globex, client):
    seeded = await seed(acme.owner.firm_id, "acme")
    other = await seed(globex.owner.firm_id, "globex")
    user: PortalUser = seeded["user"]
    token, _ = await sessions.start_client_session(user, timedelta(hours=1), seeded["alpha"].pk)
    anna = Api(client, token)
    # Her account, an archived one she had, one she never had, another firm's.
    for account in (seeded["alpha"], seeded["gone"], seeded["twin"], other["alpha"]):
        answer = await anna.data(CLIENT_ACCOUNT, {"id": gid("Account", account.pk)})
        assert answer == await expected_client_account(user.pk, account.pk)
    assert (await anna.data(CLIENT_ACCOUNT, {"id": gid("Account", seeded["alpha"].pk)}))["account"][
        "documents"
    ]["totalCount"] == 3

    # What only staff may see is refused, not answered empty.
    body = await anna.post(
        "query($id: ID!) { account(id: $id) { contacts { id } } }",
        {"id": gid("Account", seeded["alpha"].pk)},
    )
    assert body["data"] == {"account": None}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["account", "contacts"], "FORBIDDEN")
    ]


async def test_same_contact_under_two_accounts_is_the_same_answer(acme):
    """A contact linked to several accounts reads the same under each (rows are shared)."""
    await seed(acme.owner.firm_id, "acme")
    data = await acme.api.data(ACCOUNTS, {"archived": True})
    seen: dict[str, list[dict]] = {}
    for edge in data["accounts"]["edges"]:
        for contact in edge["node"]["contacts"]:
            seen.setdefault(contact["id"], []).append(contact)
    shared = [answers for answers in seen.values() if len(answers) > 1]
    assert shared and all(a == answers[0] for answers in shared for a in answers)


INBOX = """
query($after: String) { inbox(first: 3, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  edges { node {
    id subject from to cc sentAt direction textBody threadId
    accounts { id name type autoSaveAttachments archivedAt }
    attachments { id filename contentType size skippedReason document { id filename createdAt } }
  } }
} }
"""

DOCUMENT_PAGES = """
query($id: ID!, $after: String) { account(id: $id) {
  documents(first: 2, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { id createdAt } }
  }
} }
"""


async def seed_mail(firm_id: int, slug: str, account_pks: list[int]) -> None:
    """Messages with ties in time, one in two accounts (one of them archived), files kept
    and skipped, and one message in no account (not in the inbox)."""
    same_moment = NOW - timedelta(hours=1)
    for n in range(5):
        message = await Message.create(
            firm_id=firm_id,
            message_id=f"<{slug}-{n}@mail.test>",
            message_key=f"{slug}{n}".ljust(64, "0"),
            thread_key=f"{slug}-thread",
            subject=f"Subject {n}",
            from_address=f"from{n}@{slug}.example",
            to_addresses=[f"to{n}@{slug}.example"],
            cc_addresses=[f"cc@{slug}.example"] if n % 2 else [],
            # One time with microseconds: its ISO text (and cursor) must match too.
            sent_at=same_moment if n < 3 else NOW - timedelta(minutes=n, microseconds=n * 250),
            direction="OUTBOUND" if n == 4 else "INBOUND",
            text_body=None if n == 2 else f"Body {n}",
        )
        linked = [] if n == 3 else account_pks[: 2 if n == 0 else 1]
        for account_pk in reversed(linked):
            await MessageAccount.create(
                firm_id=firm_id,
                message_id=message.pk,
                account_id=account_pk,
                sent_at=message.sent_at,
            )
        for position in reversed(range(n % 3)):  # stored out of order: position decides
            await Attachment.create(
                firm_id=firm_id,
                message_id=message.pk,
                position=position,
                filename=f"{slug}-{n}-{position}.pdf",
                content_type="application/pdf",
                size=100 * n + position,
                sha256=None if position else f"{n:064x}",
                skipped_reason="too large" if position else None,
            )


async def expected_inbox(firm_id: int) -> list[dict[str, Any]]:
    """Every inbox node, newest first (sent_at, then id), from plain SQL."""
    messages = await rows(
        f"SELECT * FROM message WHERE firm_id = {firm_id} AND id IN "
        f"(SELECT message_id FROM message_account WHERE firm_id = {firm_id})"
    )
    messages.sort(key=lambda m: (iso(m["sent_at"]), m["id"]), reverse=True)
    links = await rows(
        "SELECT l.message_id, a.* FROM message_account l JOIN account a ON a.id = l.account_id "
        f"WHERE l.firm_id = {firm_id} ORDER BY l.account_id"
    )
    files = await rows(f"SELECT * FROM attachment WHERE firm_id = {firm_id} ORDER BY position")
    documents = await rows(f"SELECT * FROM document WHERE firm_id = {firm_id} ORDER BY id")

    def held_by(f: dict[str, Any]) -> dict[str, Any] | None:
        """The document of one of the message's accounts with the file's content: the one
        saved from this attachment, else the oldest; none for a file not kept."""
        if f["sha256"] is None:
            return None
        accounts = {a["id"] for a in links if a["message_id"] == f["message_id"]}
        alike = [d for d in documents if d["sha256"] == f["sha256"] and d["account_id"] in accounts]
        own = [d for d in alike if d["attachment_id"] == f["id"]]
        d = (own or alike or [None])[0]
        if d is None:
            return None
        return {
            "id": gid("Document", d["id"]),
            "filename": d["filename"],
            "createdAt": iso(d["created_at"]),
        }

    def node(m: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": gid("Message", m["id"]),
            "subject": m["subject"],
            "from": m["from_address"],
            "to": as_list(m["to_addresses"]),
            "cc": as_list(m["cc_addresses"]),
            "sentAt": iso(m["sent_at"]),
            "direction": m["direction"],
            "textBody": m["text_body"],
            "threadId": m["thread_key"],
            "accounts": [
                {
                    "id": gid("Account", a["id"]),
                    "name": a["name"],
                    "type": a["type"],
                    "autoSaveAttachments": bool(a["auto_save_attachments"]),
                    "archivedAt": iso(a["archived_at"]),
                }
                for a in links
                if a["message_id"] == m["id"]
            ],
            "attachments": [
                {
                    "id": gid("Attachment", f["id"]),
                    "filename": f["filename"],
                    "contentType": f["content_type"],
                    "size": f["size"],
                    "skippedReason": f["skipped_reason"],
                    "document": held_by(f),
                }
                for f in files
                if f["message_id"] == m["id"]
            ],
        }

    return [node(m) for m in messages]


async def test_inbox_reads_equal_plain_sql(acme, globex):
    seeded = await seed(acme.owner.firm_id, "acme")
    other = await seed(globex.owner.firm_id, "globex")
    await seed_mail(acme.owner.firm_id, "acme", [seeded["alpha"].pk, seeded["gone"].pk])
    await seed_mail(globex.owner.firm_id, "globex", [other["alpha"].pk])
    # A document saved from one attachment: it wins over an older one with the same content.
    [kept] = await Attachment.filter(firm_id=acme.owner.firm_id, filename="acme-1-0.pdf")
    await Document.create(
        firm_id=acme.owner.firm_id,
        account_id=seeded["alpha"].pk,
        attachment_id=kept.pk,
        filename="saved.pdf",
        content_type="application/pdf",
        size=100,
        sha256=kept.sha256,
    )
    for firm in (acme, globex):
        expected = await expected_inbox(firm.owner.firm_id)
        nodes, after = [], None
        while True:  # every page, through the cursors
            page = (await firm.api.data(INBOX, {"after": after}))["inbox"]
            assert page["totalCount"] == len(expected)
            nodes += [edge["node"] for edge in page["edges"]]
            after = page["pageInfo"]["endCursor"]
            if not page["pageInfo"]["hasNextPage"]:
                break
        assert nodes == expected
    # The data has what the comparison is meant to cover.
    first = await expected_inbox(acme.owner.firm_id)
    assert len(first) == 4 and len(first[-1]["accounts"]) == 2  # the oldest: two accounts
    assert any(a["archivedAt"] for n in first for a in n["accounts"])
    assert {f["skippedReason"] for n in first for f in n["attachments"]} == {None, "too large"}
    held = [f["document"]["filename"] for n in first for f in n["attachments"] if f["document"]]
    assert "saved.pdf" in held and "acme-2.pdf" in held  # its own, and the oldest alike
    assert any(
        f["document"] is None and f["skippedReason"] is None
        for n in first
        for f in n["attachments"]
    )


async def test_document_pages_follow_plain_sql(acme, globex):
    """Account.documents page by page, through its cursors (ties in time decided by id)."""
    seeded = await seed(acme.owner.firm_id, "acme")
    await seed(globex.owner.firm_id, "globex")
    alpha = seeded["alpha"].pk
    documents = await rows(f"SELECT id, created_at FROM document WHERE account_id = {alpha}")
    documents.sort(key=lambda d: (iso(d["created_at"]), d["id"]), reverse=True)
    expected = [
        {"id": gid("Document", d["id"]), "createdAt": iso(d["created_at"])} for d in documents
    ]
    nodes, after = [], None
    while True:
        variables = {"id": gid("Account", alpha), "after": after}
        page = (await acme.api.data(DOCUMENT_PAGES, variables))["account"]["documents"]
        assert page["totalCount"] == len(expected)
        nodes += [edge["node"] for edge in page["edges"]]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert nodes == expected and len(nodes) == 3


DELIVERY_PAGES = """
query($id: ID!, $after: String) { account(id: $id) {
  deliveries(first: 2, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id to subject category kind status attempts lastError createdAt sentAt } }
  }
} }
"""


async def test_delivery_pages_follow_plain_sql(acme, globex, client):
    """Account.deliveries page by page, through its cursors, with and without the inbox
    right (replies and staff mail left out as the rules say; ties in time decided by id)."""
    seeded = await seed(acme.owner.firm_id, "acme")
    await seed(globex.owner.firm_id, "globex")
    alpha = seeded["alpha"].pk
    employee = await add_staff(acme, "em@acme.example")
    mail = await rows(f"SELECT * FROM outbound_email WHERE account_id = {alpha}")
    for api, with_replies in ((acme.api, True), (await api_for(client, employee), False)):
        shown = [
            m
            for m in mail
            if m["kind"] not in STAFF_KINDS
            and (with_replies or (m["kind"] != "REPLY" and m["mailbox_id"] is None))
        ]
        shown.sort(key=lambda m: (iso(m["created_at"]), m["id"]), reverse=True)
        expected = [delivery(m) for m in shown]
        nodes, after = [], None
        while True:
            variables = {"id": gid("Account", alpha), "after": after}
            page = (await api.data(DELIVERY_PAGES, variables))["account"]["deliveries"]
            assert page["totalCount"] == len(expected)
            nodes += [edge["node"] for edge in page["edges"]]
            after = page["pageInfo"]["endCursor"]
            if not page["pageInfo"]["hasNextPage"]:
                break
        assert nodes == expected and len(nodes) == (4 if with_replies else 3)
