"""Talking to Portico as a test does: GraphQL over HTTP as one viewer, firms with an owner,
staff members made directly, and waiting for something to become true."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from models import StaffMember, StaffRole
from services.firm import firms
from services.shared import sessions

PASSWORD = "correct-horse-battery"
_PASSWORD_HASH = PasswordHasher().hash(PASSWORD)


class Api:
    """GraphQL over HTTP against the ASGI app, as one signed-in (or anonymous) client."""

    def __init__(self, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.http = http
        self.token = token

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
        )
        # Each call stands alone: a cookie set by one response is not sent with the next.
        self.http.cookies.clear()
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result's data, asserting there were no top-level errors."""
        body = await self.post(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def ok(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The single mutation payload, asserting its `errors` is empty."""
        data = await self.data(query, variables)
        [payload] = data.values()
        assert payload["errors"] == [], payload["errors"]
        return payload


@dataclass
class Firm:
    slug: str
    owner: StaffMember
    api: Api


async def make_firm(http: httpx.AsyncClient, slug: str) -> Firm:
    _, owner = await firms.create_firm(
        f"{slug.title()} LLP", slug, f"owner@{slug}.example", "Owner", PASSWORD
    )
    return Firm(slug, owner, await api_for(http, owner))


async def api_for(http: httpx.AsyncClient, staff: StaffMember) -> Api:
    """An Api signed in as `staff` (session made directly: sign-in has its own tests)."""
    token, _ = await sessions.start_staff_session(staff, timedelta(hours=1))
    return Api(http, token)


async def add_staff(
    firm: Firm, email: str, role: StaffRole = StaffRole.EMPLOYEE, **rights: bool
) -> StaffMember:
    return await StaffMember.create(
        firm_id=firm.owner.firm_id,
        email=email,
        email_normalized=email.lower(),
        name=email.split("@")[0].title(),
        role=role,
        password_hash=_PASSWORD_HASH,
        **rights,
    )


async def eventually(
    check: Callable[[], Any], what: str = "the condition holds", seconds: float = 10.0
) -> None:
    """Waits until `check()` (plain or async) is truthy; fails after `seconds`, naming `what`."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        if not deadline.expired():
            raise  # from `check` itself
        pytest.fail(f"not within {seconds:g} s: {what}")


def chained_document(levels: int) -> str:
    """A document `levels` fields deep (leaves not counted) and small enough for the work
    budget: one page of contacts, then an address's contact, its addresses, ..."""
    fields = ["contacts(first: 1)", "edges", "node"]
    while len(fields) < levels:
        fields.append("contact" if fields[-1] == "emailAddresses" else "emailAddresses")
    document = "id"
    for name in reversed(fields):
        document = f"{name} {{ {document} }}"
    return f"{{ {document} }}"
