"""The load test's firms: seeded through the services before the servers start, then made
real through the API (clients accept their mailed invitations; documents are uploaded).

Each firm has an owner and an admin (both with the inbox right, so both may subscribe), a
mailbox on the bench's Dovecot, and accounts of one contact and one address each, in four
groups that never overlap, so that what the load does to one group cannot change what
another group's account expects:
- sync: EMAIL SYNC on; the bench appends mail from these addresses to the firm's mailbox;
- notify: NOTIFY on; staff send the firm's mail to them;
- clients: LOGIN on and accepted at setup; the clients sign in and read their documents;
- toggle: staff flip LOGIN and NOTIFY on these (invitations go out and are withdrawn).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from bench import data
from models import AccountEmail, StaffMember, StaffRole
from portico.settings import Settings
from schema import ids
from services.firm import firms, staff
from services.shared import sessions
from services.shared.scope import FirmScope
from tests.support.imap import ImapServer
from tests.support.mail import add_mailbox

STAFF_PASSWORD = "load-staff-password-2026"
CLIENT_PASSWORD = "load-client-password-2026"
GROUPS = ("sync", "notify", "clients", "toggle")
DOCUMENTS_PER_CLIENT = 2


@dataclass
class Firm:
    index: int
    pk: int
    slug: str
    domain: str
    mailbox: str  # the firm's address, its Dovecot user
    staff_emails: list[str]
    # group: [(account pk, account email pk, address)]
    accounts: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    documents: dict[str, list[str]] = field(default_factory=dict)  # client address: doc ids

    def group(self, name: str) -> list[tuple[int, int, str]]:
        return self.accounts[name]


@dataclass
class World:
    firms: list[Firm]
    # one staff session per subscriber: (firm index, token)
    subscriber_tokens: list[tuple[int, str]]
    staff_tokens: dict[int, str]  # firm index: the owner's token (setup and staff load)


async def seed(
    settings: Settings, imap: ImapServer, firm_count: int, per_group: int, subscribers: int
) -> World:
    """The firms in the database (Tortoise initialised), before any Portico process runs."""
    made = []
    for i in range(firm_count):
        made.append(await _firm(settings, imap, i, per_group))
    tokens = []
    for n in range(subscribers):
        firm = made[n % firm_count]
        member = await _staff_member(firm, n // firm_count % len(firm.staff_emails))
        token, _ = await sessions.start_staff_session(member, timedelta(hours=6))
        tokens.append((firm.index, token))
    owners = {}
    for firm in made:
        token, _ = await sessions.start_staff_session(
            await _staff_member(firm, 0), timedelta(hours=6)
        )
        owners[firm.index] = token
    return World(made, tokens, owners)


async def _staff_member(firm: Firm, which: int) -> StaffMember:
    return await StaffMember.get(firm_id=firm.pk, email_normalized=firm.staff_emails[which])


async def _firm(settings: Settings, imap: ImapServer, i: int, per_group: int) -> Firm:
    slug = f"load-{i}-{secrets.token_hex(3)}"
    domain = f"f{i}.load.example"
    owner_email = f"owner@{domain}"
    row, owner = await firms.create_firm(
        f"Load Firm {i}", slug, owner_email, "Owner", STAFF_PASSWORD
    )
    admin_email = f"admin@{domain}"
    await staff.add_staff_member(
        FirmScope(row.pk), owner, admin_email, "Admin", StaffRole.ADMIN, True, True
    )
    await firms.set_staff_password(slug, admin_email, STAFF_PASSWORD)
    mailbox = f"office@{domain}"
    await add_mailbox(row.pk, imap, settings, mailbox)
    firm = Firm(i, row.pk, slug, domain, mailbox, [owner_email, admin_email])
    account_ids = await data.bulk_accounts(row.pk, per_group * len(GROUPS), domain)
    emails = {
        e.account_id: e
        for e in await AccountEmail.filter(firm_id=row.pk).select_related("email_address")
    }
    for g, name in enumerate(GROUPS):
        chosen = account_ids[g * per_group : (g + 1) * per_group]
        rows = [emails[a] for a in chosen]
        firm.accounts[name] = [(a, emails[a].pk, emails[a].email_address.address) for a in chosen]
        if name == "sync":
            await AccountEmail.filter(pk__in=[r.pk for r in rows]).update(email_sync=True)
        elif name in ("notify", "clients"):
            await AccountEmail.filter(pk__in=[r.pk for r in rows]).update(notify=True)
    return firm


# Through the API, once the servers and workers run ---------------------------------------

SET_FLAGS = """mutation Flags($input: SetEmailFlagsInput!) { setEmailFlags(input: $input) {
  errors { code message } accountEmail { login notify portalStatus } } }"""
ACCEPT = """mutation Accept($t: String!, $p: String) { acceptInvitation(token: $t, password: $p) {
  errors { code message } token } }"""
UPLOAD = """mutation Upload($a: ID!, $f: Upload!) { uploadDocument(accountId: $a, file: $f) {
  errors { code message } document { id } } }"""


async def _graphql(http: httpx.AsyncClient, token: str | None, query: str, variables: dict) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    body = answer.json()
    if answer.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"setup: {answer.status_code} {body}")
    [payload] = body["data"].values()
    if payload.get("errors"):
        raise RuntimeError(f"setup: {payload['errors']}")
    return payload


async def open_portals(
    http: httpx.AsyncClient, world: World, tokens_of: Callable[[str], list[str]], within: float
) -> None:
    """LOGIN on for every client address (invitations mailed), then each client accepts the
    link it received (`tokens_of(address)`: the invitation tokens mailed there)."""
    for firm in world.firms:
        owner = world.staff_tokens[firm.index]
        for _, email_pk, _ in firm.group("clients"):
            flags = {"accountEmailId": ids.encode("AccountEmail", email_pk), "login": True}
            await _graphql(http, owner, SET_FLAGS, {"input": flags})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for firm in world.firms:
        for _, _, address in firm.group("clients"):
            while not (found := tokens_of(address)):
                if loop.time() > deadline:
                    raise RuntimeError(f"setup: no invitation reached {address}")
                await asyncio.sleep(0.1)
            await _graphql(http, None, ACCEPT, {"t": found[-1], "p": CLIENT_PASSWORD})


async def upload_documents(http: httpx.AsyncClient, world: World) -> None:
    """A few small documents in each client's account (clients download them under load)."""
    for firm in world.firms:
        owner = world.staff_tokens[firm.index]
        for account_pk, _, address in firm.group("clients"):
            for n in range(DOCUMENTS_PER_CLIENT):
                content = f"statement {n} for {address}\n".encode() * 50
                operations = {
                    "query": UPLOAD,
                    "variables": {"a": ids.encode("Account", account_pk), "f": None},
                }
                answer = await http.post(
                    "/graphql",
                    headers={
                        "Authorization": f"Bearer {owner}",
                        "GraphQL-Require-Preflight": "1",
                    },
                    data={
                        "operations": json.dumps(operations),
                        "map": json.dumps({"0": ["variables.f"]}),
                    },
                    files={"0": (f"statement-{n}.txt", content, "text/plain")},
                )
                body = answer.json()
                payload = (body.get("data") or {}).get("uploadDocument") or {}
                if answer.status_code != 200 or body.get("errors") or payload.get("errors"):
                    raise RuntimeError(f"setup: upload {answer.status_code} {body}")
                firm.documents.setdefault(address, []).append(payload["document"]["id"])
