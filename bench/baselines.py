"""Hand-written endpoints serving the JSON Portico gives for bench/http.py's queries.

Each is a Starlette app built by a factory, so bench/http.py runs it under uvicorn in a
process of its own, exactly as `portico serve` runs Portico:

    uvicorn bench.baselines:tortoise_app --factory   (Tortoise models, prefetch_related)
    uvicorn bench.baselines:sql_app --factory        (plain SQL statements + orjson)

They read BENCH_DATABASE_URL and BENCH_FIRM_ID, check no token (the least any server
could do), and answer GET /accounts (the nested accounts query), GET /contacts?search=
(the contact search), GET /inbox (the staff inbox's first page with each message's accounts
and attachments) and GET /account?id= (one account's screen: its emails with portal status
and latest invitation, its deliveries and documents) with the same `{"data": ...}` document
as Portico, in the same order: accounts by lower(name), id; contacts by last and first
name, id; a contact's addresses the default field ("Email") first, then by id; an account's
emails by contact, address; mail newest first (sent_at, id); a message's accounts by id,
its attachments by position; deliveries and documents newest first (created_at, id);
invitations newest (highest id) first. Times are ISO 8601 in UTC, as Portico writes them.
"""

from __future__ import annotations

import base64
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tortoise import Tortoise
from tortoise.expressions import Q, Subquery
from tortoise.functions import Lower

from models import (
    Account,
    Contact,
    EmailAddress,
    Message,
    MessageAccount,
    OutboundEmail,
    PortalAccess,
)
from models import Document as DocumentModel
from portico import db

DEFAULT_LABEL = "Email"  # services/shared/emails.py
PAGE = 50
SCREEN_PAGE = 20  # the account read's deliveries(first: 20) and documents(first: 20)
STAFF_KINDS = ("STAFF_INBOX_ALERT", "STAFF_INBOX_DIGEST")  # never an account's deliveries


def _gid(type_name: str, pk: int) -> str:
    """A Relay global id as Portico writes it: base64 of "Type:pk"."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


def _moment(value: Any) -> datetime | None:
    """A stored time, aware and in UTC (SQLite's driver hands back text)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(value: Any) -> str | None:
    moment = _moment(value)
    return moment.isoformat() if moment is not None else None


def _message_cursor(sent_at: datetime, pk: int) -> str:
    """services/mail/message_pages.encode_cursor, restated."""
    return base64.urlsafe_b64encode(f"message:{sent_at.isoformat()}|{pk}".encode()).decode()


def _invitation_status(accepted: Any, revoked: Any, expires: Any) -> str:
    """The product rule (domain.md): accepted, revoked, else expired once expires_at passed."""
    if accepted is not None:
        return "ACCEPTED"
    if revoked is not None:
        return "REVOKED"
    return "EXPIRED" if _moment(expires) <= datetime.now(UTC) else "PENDING"  # type: ignore[operator]


def _inbox_document(total: int, nodes: list[dict[str, Any]], last: Any, more: bool) -> Response:
    """The inbox answer around its nodes; `last` is (sent_at, id) of the last one."""
    info = {"hasNextPage": more, "endCursor": _message_cursor(*last) if last else None}
    edges = [{"node": node} for node in nodes]
    return _orjson({"data": {"inbox": {"totalCount": total, "pageInfo": info, "edges": edges}}})


def _page(total: int, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """A newest-first page of the account read: `nodes` holds up to one more than the page."""
    return {
        "totalCount": total,
        "pageInfo": {"hasNextPage": len(nodes) > SCREEN_PAGE},
        "edges": [{"node": node} for node in nodes[:SCREEN_PAGE]],
    }


def _delivery(pk: int, row: Any) -> dict[str, Any]:
    return {
        "id": _gid("Delivery", pk),
        "to": row["to_address"],
        "subject": row["subject"],
        "kind": row["kind"],
        "category": row["category"],
        "status": row["status"],
        "attempts": row["attempts"],
        "lastError": row["last_error"],
        "createdAt": _iso(row["created_at"]),
        "sentAt": _iso(row["sent_at"]),
    }


def _document(pk: int, row: Any) -> dict[str, Any]:
    return {
        "id": _gid("Document", pk),
        "filename": row["filename"],
        "contentType": row["content_type"],
        "size": row["size"],
        "createdAt": _iso(row["created_at"]),
    }


def _account_id(request: Request) -> int:
    return int(request.query_params["id"])


def _firm_id() -> int:
    return int(os.environ["BENCH_FIRM_ID"])


@asynccontextmanager
async def _database(app: Starlette) -> AsyncIterator[None]:
    await db.init_db(os.environ["BENCH_DATABASE_URL"])
    try:
        yield
    finally:
        await db.close_db()


def _search_term(request: Request) -> str:
    return request.query_params.get("search", "").strip()


# --- Starlette + Tortoise models -------------------------------------------------------------


def _address_order(row: EmailAddress) -> tuple[bool, int]:
    return (row.label != DEFAULT_LABEL, row.id)


def _person_order(row: Contact) -> tuple[str, str, int]:
    return (row.last_name.casefold(), row.first_name.casefold(), row.id)


async def _orm_accounts(request: Request) -> Response:
    accounts = (
        await Account.filter(firm_id=_firm_id(), archived_at=None)
        .annotate(sort_name=Lower("name"))
        .order_by("sort_name", "id")
        .limit(PAGE)
        .prefetch_related("contact_links__contact__email_addresses", "emails__email_address")
    )
    edges = []
    for account in accounts:
        contacts = sorted((link.contact for link in account.contact_links), key=_person_order)
        emails = sorted(
            account.emails, key=lambda e: (e.email_address.contact_id, e.email_address_id)
        )
        node = {
            "contacts": [
                {
                    "emailAddresses": [
                        {"address": a.address}
                        for a in sorted(c.email_addresses, key=_address_order)
                    ]
                }
                for c in contacts
            ],
            "emails": [
                {"login": e.login, "emailAddress": {"address": e.email_address.address}}
                for e in emails
            ],
        }
        edges.append({"node": node})
    return JSONResponse({"data": {"accounts": {"edges": edges}}})


async def _orm_contacts(request: Request) -> Response:
    firm_id = _firm_id()
    query = Contact.filter(firm_id=firm_id)
    if term := _search_term(request):
        addresses = EmailAddress.filter(firm_id=firm_id, address_normalized__icontains=term)
        query = query.filter(
            Q(first_name__icontains=term)
            | Q(last_name__icontains=term)
            | Q(id__in=Subquery(addresses.values("contact_id")))
        )
    contacts = (
        await query.annotate(sort_last=Lower("last_name"), sort_first=Lower("first_name"))
        .order_by("sort_last", "sort_first", "id")
        .limit(PAGE)
        .prefetch_related("email_addresses")
    )
    edges = [
        {
            "node": {
                "firstName": c.first_name,
                "lastName": c.last_name,
                "emailAddresses": [
                    {"address": a.address} for a in sorted(c.email_addresses, key=_address_order)
                ],
            }
        }
        for c in contacts
    ]
    return JSONResponse({"data": {"contacts": {"edges": edges}}})


async def _orm_inbox(request: Request) -> Response:
    firm_id = _firm_id()
    linked = MessageAccount.filter(firm_id=firm_id).values("message_id")
    query = Message.filter(firm_id=firm_id, id__in=Subquery(linked))
    total = await query.count()
    messages = (
        await query.order_by("-sent_at", "-id")
        .limit(PAGE + 1)
        .prefetch_related("account_links__account", "attachments")
    )
    nodes = [
        {
            "id": _gid("Message", m.pk),
            "subject": m.subject,
            "from": m.from_address,
            "to": m.to_addresses,
            "cc": m.cc_addresses,
            "sentAt": m.sent_at.isoformat(),
            "direction": m.direction,
            "accounts": [
                {"id": _gid("Account", link.account_id), "name": link.account.name}
                for link in sorted(m.account_links, key=lambda k: k.account_id)
            ],
            "attachments": [
                {
                    "id": _gid("Attachment", a.pk),
                    "filename": a.filename,
                    "contentType": a.content_type,
                    "size": a.size,
                    "skippedReason": a.skipped_reason,
                }
                for a in sorted(m.attachments, key=lambda a: a.position)
            ],
        }
        for m in messages[:PAGE]
    ]
    page = messages[:PAGE]
    last = (page[-1].sent_at, page[-1].pk) if page else None
    return _inbox_document(total, nodes, last, len(messages) > PAGE)


async def _orm_account(request: Request) -> Response:
    firm_id = _firm_id()
    account = await Account.get(firm_id=firm_id, pk=_account_id(request)).prefetch_related(
        "emails__email_address", "emails__invitations"
    )
    active = {
        (access.account_id, access.portal_user.email_normalized)
        for access in await PortalAccess.filter(account_id=account.pk).select_related("portal_user")
    }
    emails = []
    for e in sorted(account.emails, key=lambda e: (e.email_address.contact_id, e.email_address_id)):
        latest = max(e.invitations, key=lambda i: i.pk, default=None)
        activated = (account.pk, e.email_address.address_normalized) in active
        emails.append(
            {
                "login": e.login,
                "notify": e.notify,
                "emailSync": e.email_sync,
                "portalStatus": (
                    ("ACTIVE" if activated else "PENDING_ACTIVATION") if e.login else "NO_ACCESS"
                ),
                "latestInvitation": None
                if latest is None
                else {
                    "status": _invitation_status(
                        latest.accepted_at, latest.revoked_at, latest.expires_at
                    ),
                    "sentAt": _iso(latest.sent_at),
                },
                "emailAddress": {"address": e.email_address.address},
            }
        )
    deliveries = OutboundEmail.filter(firm_id=firm_id, account_id=account.pk).exclude(
        kind__in=STAFF_KINDS
    )
    documents = DocumentModel.filter(firm_id=firm_id, account_id=account.pk)
    newest = ("-created_at", "-id")
    node = {
        "id": _gid("Account", account.pk),
        "name": account.name,
        "emails": emails,
        "deliveries": _page(
            await deliveries.count(),
            [
                _delivery(d.pk, d.__dict__ | {"status": d.status.value})
                for d in await deliveries.order_by(*newest).limit(SCREEN_PAGE + 1)
            ],
        ),
        "documents": _page(
            await documents.count(),
            [
                _document(d.pk, d.__dict__)
                for d in await documents.order_by(*newest).limit(SCREEN_PAGE + 1)
            ],
        ),
    }
    return JSONResponse({"data": {"account": node}})


def tortoise_app() -> Starlette:
    """The endpoint a developer writes with the ORM: models, prefetch_related, JSONResponse."""
    routes = [
        Route("/accounts", _orm_accounts),
        Route("/contacts", _orm_contacts),
        Route("/inbox", _orm_inbox),
        Route("/account", _orm_account),
    ]
    return Starlette(routes=routes, lifespan=_database)


# --- Starlette + plain SQL + orjson ----------------------------------------------------------


def _marks(count: int, start: int = 1) -> str:
    """Numbered parameter placeholders ($1 or ?1) for this connection's dialect: a value may
    then stand in several places of one statement."""
    sign = "$" if Tortoise.get_connection("default").capabilities.dialect == "postgres" else "?"
    return ",".join(f"{sign}{i}" for i in range(start, start + count))


def _orjson(document: dict[str, Any]) -> Response:
    return Response(orjson.dumps(document), media_type="application/json")


async def _rows(sql: str, values: list[Any]) -> list[Any]:
    _, rows = await Tortoise.get_connection("default").execute_query(sql, values)
    return rows


async def _sql_accounts(request: Request) -> Response:
    ids = [
        row["id"]
        for row in await _rows(
            f"SELECT id FROM account WHERE firm_id = {_marks(1)} AND archived_at IS NULL "
            f"ORDER BY lower(name), id LIMIT {PAGE}",
            [_firm_id()],
        )
    ]
    nodes: dict[int, dict[str, list[Any]]] = {i: {"contacts": [], "emails": []} for i in ids}
    if ids:
        contacts: dict[tuple[int, int], list[dict[str, str]]] = {}
        for row in await _rows(
            "SELECT ac.account_id, c.id, e.address FROM account_contact ac "
            "JOIN contact c ON c.id = ac.contact_id "
            "LEFT JOIN email_address e ON e.contact_id = c.id "
            f"WHERE ac.account_id IN ({_marks(len(ids))}) "
            "ORDER BY lower(c.last_name), lower(c.first_name), c.id, "
            f"CASE WHEN e.label = '{DEFAULT_LABEL}' THEN 0 ELSE 1 END, e.id",
            ids,
        ):
            key = (row["account_id"], row["id"])
            if key not in contacts:
                contacts[key] = []
                nodes[key[0]]["contacts"].append({"emailAddresses": contacts[key]})
            if row["address"] is not None:
                contacts[key].append({"address": row["address"]})
        for row in await _rows(
            "SELECT ae.account_id, ae.login, e.address FROM account_email ae "
            "JOIN email_address e ON e.id = ae.email_address_id "
            f"WHERE ae.account_id IN ({_marks(len(ids))}) "
            "ORDER BY e.contact_id, ae.email_address_id",
            ids,
        ):
            nodes[row["account_id"]]["emails"].append(
                {"login": bool(row["login"]), "emailAddress": {"address": row["address"]}}
            )
    edges = [{"node": nodes[i]} for i in ids]
    return _orjson({"data": {"accounts": {"edges": edges}}})


async def _sql_contacts(request: Request) -> Response:
    where, values = f"c.firm_id = {_marks(1)}", [_firm_id()]
    if term := _search_term(request):
        escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        where += (
            f" AND (lower(c.first_name) LIKE {_marks(1, 2)} ESCAPE '\\'"
            f" OR lower(c.last_name) LIKE {_marks(1, 2)} ESCAPE '\\'"
            " OR c.id IN (SELECT contact_id FROM email_address"
            f" WHERE firm_id = {_marks(1)} AND address_normalized LIKE {_marks(1, 2)} ESCAPE '\\'))"
        )
        values.append(like)
    contacts = await _rows(
        f"SELECT c.id, c.first_name, c.last_name FROM contact c WHERE {where} "
        f"ORDER BY lower(c.last_name), lower(c.first_name), c.id LIMIT {PAGE}",
        values,
    )
    ids = [row["id"] for row in contacts]
    addresses: dict[int, list[dict[str, str]]] = defaultdict(list)
    if ids:
        for row in await _rows(
            "SELECT contact_id, address FROM email_address "
            f"WHERE contact_id IN ({_marks(len(ids))}) "
            f"ORDER BY contact_id, CASE WHEN label = '{DEFAULT_LABEL}' THEN 0 ELSE 1 END, id",
            ids,
        ):
            addresses[row["contact_id"]].append({"address": row["address"]})
    edges = [
        {
            "node": {
                "firstName": row["first_name"],
                "lastName": row["last_name"],
                "emailAddresses": addresses[row["id"]],
            }
        }
        for row in contacts
    ]
    return _orjson({"data": {"contacts": {"edges": edges}}})


def _json_list(value: Any) -> list[Any]:
    """A JSON column: text on SQLite, already decoded on PostgreSQL."""
    return orjson.loads(value) if isinstance(value, str | bytes) else list(value)


async def _sql_inbox(request: Request) -> Response:
    firm_id = _firm_id()
    within = (
        f"firm_id = {_marks(1)} AND id IN "
        f"(SELECT message_id FROM message_account WHERE firm_id = {_marks(1)})"
    )
    [count] = await _rows(f"SELECT COUNT(*) AS n FROM message WHERE {within}", [firm_id])
    messages = await _rows(
        "SELECT id, subject, from_address, to_addresses, cc_addresses, sent_at, direction "
        f"FROM message WHERE {within} ORDER BY sent_at DESC, id DESC LIMIT {PAGE + 1}",
        [firm_id],
    )
    page = messages[:PAGE]
    ids = [row["id"] for row in page]
    accounts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    files: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        for row in await _rows(
            "SELECT ma.message_id, a.id, a.name FROM message_account ma "
            "JOIN account a ON a.id = ma.account_id "
            f"WHERE ma.message_id IN ({_marks(len(ids))}) ORDER BY ma.message_id, ma.account_id",
            ids,
        ):
            accounts[row["message_id"]].append(
                {"id": _gid("Account", row["id"]), "name": row["name"]}
            )
        for row in await _rows(
            "SELECT id, message_id, filename, content_type, size, skipped_reason FROM attachment "
            f"WHERE message_id IN ({_marks(len(ids))}) ORDER BY message_id, position",
            ids,
        ):
            files[row["message_id"]].append(
                {
                    "id": _gid("Attachment", row["id"]),
                    "filename": row["filename"],
                    "contentType": row["content_type"],
                    "size": row["size"],
                    "skippedReason": row["skipped_reason"],
                }
            )
    nodes = [
        {
            "id": _gid("Message", row["id"]),
            "subject": row["subject"],
            "from": row["from_address"],
            "to": _json_list(row["to_addresses"]),
            "cc": _json_list(row["cc_addresses"]),
            "sentAt": _iso(row["sent_at"]),
            "direction": row["direction"],
            "accounts": accounts[row["id"]],
            "attachments": files[row["id"]],
        }
        for row in page
    ]
    last = (_moment(page[-1]["sent_at"]), page[-1]["id"]) if page else None
    return _inbox_document(count["n"], nodes, last, len(messages) > PAGE)


async def _sql_account(request: Request) -> Response:
    firm_id, pk = _firm_id(), _account_id(request)
    [account] = await _rows(
        f"SELECT id, name FROM account WHERE firm_id = {_marks(1)} AND id = {_marks(1, 2)}",
        [firm_id, pk],
    )
    # The newest invitation of each address and whether a portal user with that address
    # has access, in the one statement.
    emails = await _rows(
        "SELECT ae.login, ae.notify, ae.email_sync, e.address, i.sent_at, i.expires_at,"
        " i.accepted_at, i.revoked_at, i.id AS invitation_id,"
        " EXISTS (SELECT 1 FROM portal_access pa JOIN portal_user pu ON pu.id = pa.portal_user_id"
        "  WHERE pa.account_id = ae.account_id AND pu.email_normalized = e.address_normalized)"
        "  AS activated "
        "FROM account_email ae JOIN email_address e ON e.id = ae.email_address_id "
        "LEFT JOIN invitation i ON i.id = (SELECT MAX(id) FROM invitation"
        "  WHERE account_email_id = ae.id) "
        f"WHERE ae.account_id = {_marks(1)} ORDER BY e.contact_id, ae.email_address_id",
        [pk],
    )
    newest = f"firm_id = {_marks(1)} AND account_id = {_marks(1, 2)}"
    not_staff = "kind NOT IN (" + ", ".join(f"'{k}'" for k in STAFF_KINDS) + ")"
    window = "COUNT(*) OVER () AS total"
    deliveries = await _rows(
        "SELECT id, to_address, subject, kind, category, status, attempts, last_error,"
        f" created_at, sent_at, {window} FROM outbound_email WHERE {newest} AND {not_staff} "
        f"ORDER BY created_at DESC, id DESC LIMIT {SCREEN_PAGE + 1}",
        [firm_id, pk],
    )
    documents = await _rows(
        f"SELECT id, filename, content_type, size, created_at, {window} FROM document "
        f"WHERE {newest} ORDER BY created_at DESC, id DESC LIMIT {SCREEN_PAGE + 1}",
        [firm_id, pk],
    )
    node = {
        "id": _gid("Account", account["id"]),
        "name": account["name"],
        "emails": [
            {
                "login": bool(e["login"]),
                "notify": bool(e["notify"]),
                "emailSync": bool(e["email_sync"]),
                "portalStatus": (
                    ("ACTIVE" if e["activated"] else "PENDING_ACTIVATION")
                    if e["login"]
                    else "NO_ACCESS"
                ),
                "latestInvitation": None
                if e["invitation_id"] is None
                else {
                    "status": _invitation_status(
                        e["accepted_at"], e["revoked_at"], e["expires_at"]
                    ),
                    "sentAt": _iso(e["sent_at"]),
                },
                "emailAddress": {"address": e["address"]},
            }
            for e in emails
        ],
        "deliveries": _page(
            deliveries[0]["total"] if deliveries else 0,
            [_delivery(row["id"], row) for row in deliveries],
        ),
        "documents": _page(
            documents[0]["total"] if documents else 0,
            [_document(row["id"], row) for row in documents],
        ),
    }
    return _orjson({"data": {"account": node}})


def sql_app() -> Starlette:
    """The least any server could do: the statements by hand, rows into orjson."""
    routes = [
        Route("/accounts", _sql_accounts),
        Route("/contacts", _sql_contacts),
        Route("/inbox", _sql_inbox),
        Route("/account", _sql_account),
    ]
    return Starlette(routes=routes, lifespan=_database)
