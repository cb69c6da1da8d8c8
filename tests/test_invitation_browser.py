"""The invitation email's link, opened in headless Chromium against a real server: the
invitee sets a password on Portico's own page and is signed in; the link then refuses."""

from __future__ import annotations

import re
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

import httpx
import pytest
from playwright.async_api import BrowserContext, expect

from tests.support import browser, server
from tests.support.server import DEMO_FIRM, DEMO_OWNER_EMAIL, DEMO_PASSWORD, LiveServer

chromium = browser.chromium
context = browser.context
live_server = server.live_server
live_server_process = server.live_server_process

pytestmark = pytest.mark.e2e

LINK = re.compile(r"(http://\S+/invitation\?token=[A-Za-z0-9_\-]+)")
NEW_PASSWORD = "browser-chosen-pw-1"


def gql(http: httpx.Client, query: str, variables: dict | None = None, token: str = "") -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    payload = body.json()
    assert "errors" not in payload, payload
    return payload["data"]


def received_mail(process: LiveServer, to: str, timeout: float = 20.0) -> EmailMessage:
    """The .eml the server's in-process worker wrote for `to` (the embedded default)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(process.outbox.glob("*.eml")) if process.outbox.exists() else []:
            message = message_from_bytes(path.read_bytes(), policy=policy.default)
            if message["To"] == to:
                return message  # type: ignore[return-value]
        time.sleep(0.1)
    raise AssertionError(f"no mail to {to} in {process.outbox}:\n{process.log()}")


def invite(base: str, address: str) -> None:
    """As the demo owner: a new account and contact, LOGIN on with the invitation sent."""
    with httpx.Client(base_url=base, timeout=10) as http:
        token = gql(
            http,
            "mutation($f: String!, $e: String!, $p: String!) { staffSignIn(firm: $f, email: $e, password: $p) { token } }",
            {"f": DEMO_FIRM, "e": DEMO_OWNER_EMAIL, "p": DEMO_PASSWORD},
        )["staffSignIn"]["token"]
        account = gql(
            http,
            'mutation { createAccount(input: {name: "Browser Family", type: FAMILY}) { account { id } } }',
            token=token,
        )["createAccount"]["account"]["id"]
        gql(
            http,
            'mutation($a: [ID!], $e: String!) { createContact(input: {firstName: "Bea", lastName: "Browser", emails: [{address: $e}], accountIds: $a}) { errors { code } } }',
            {"a": [account], "e": address},
            token=token,
        )
        emails = gql(
            http,
            "query($id: ID!) { account(id: $id) { emails { id } } }",
            {"id": account},
            token=token,
        )
        gql(
            http,
            "mutation($id: ID!) { setEmailFlags(input: {accountEmailId: $id, login: true}) { errors { code } } }",
            {"id": emails["account"]["emails"][0]["id"]},
            token=token,
        )


async def test_invitee_opens_the_mailed_link_and_sets_a_password(
    chromium: str, live_server: str, live_server_process: LiveServer, context: BrowserContext
) -> None:
    invite(live_server, "bea@browser.example")
    mail = received_mail(live_server_process, "bea@browser.example")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    link = LINK.search(text).group(1)
    assert link.startswith(live_server)

    page = await context.new_page()
    await page.goto(link)
    await expect(page.locator("h1")).to_contain_text("Browser Family")
    await page.fill("#password", NEW_PASSWORD)
    await page.fill("#confirm", "something-else-1")
    await page.click("#submit")
    await expect(page.locator(".error")).to_contain_text("differ")
    await page.fill("#password", NEW_PASSWORD)
    await page.fill("#confirm", NEW_PASSWORD)
    await page.click("#submit")
    await expect(page.locator("#done")).to_contain_text("signed in to the portal of Browser Family")
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["portico_session"]["httpOnly"] is True

    # The link is single use; the password now signs the client in.
    await page.goto(link)
    await expect(page.locator(".error")).to_contain_text("used already")
    with httpx.Client(base_url=live_server, timeout=10) as http:
        signed_in = gql(
            http,
            "mutation($f: String!, $e: String!, $p: String!) { signIn(firm: $f, email: $e, password: $p) { errors { code } currentAccount { name } } }",
            {"f": DEMO_FIRM, "e": "bea@browser.example", "p": NEW_PASSWORD},
        )["signIn"]
    assert signed_in == {"errors": [], "currentAccount": {"name": "Browser Family"}}
