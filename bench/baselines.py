"""Hand-written endpoints serving the JSON Portico gives for bench/http.py's queries.

Each is a Starlette app built by a factory, so bench/http.py runs it under uvicorn in a
process of its own, exactly as `portico serve` runs Portico:

    uvicorn bench.baselines:tortoise_app --factory   (Tortoise models, prefetch_related)
    uvicorn bench.baselines:sql_app --factory        (plain SQL statements + orjson)

They read BENCH_DATABASE_URL and BENCH_FIRM_ID, check no token (the least any server
could do), and answer GET /accounts (the nested accounts query) and GET /contacts?search=
(the contact search) with the same `{"data": ...}` document as Portico, in the same order:
accounts by lower(name), id; contacts by last and first name, id; a contact's addresses
the default field ("Email") first, then by id; an account's emails by contact, address.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tortoise import Tortoise
from tortoise.expressions import Q, Subquery
from tortoise.functions import Lower

from models import Account, Contact, EmailAddress
from portico import db

DEFAULT_LABEL = "Email"  # services/shared/emails.py
PAGE = 50


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


def tortoise_app() -> Starlette:
    """The endpoint a developer writes with the ORM: models, prefetch_related, JSONResponse."""
    routes = [Route("/accounts", _orm_accounts), Route("/contacts", _orm_contacts)]
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


def sql_app() -> Starlette:
    """The least any server could do: the statements by hand, rows into orjson."""
    routes = [Route("/accounts", _sql_accounts), Route("/contacts", _sql_contacts)]
    return Starlette(routes=routes, lifespan=_database)
