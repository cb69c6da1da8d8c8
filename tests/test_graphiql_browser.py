"""GraphiQL in headless Chromium against a real server, offline: sign in, then query by cookie.

Debian's Chromium (/usr/bin/chromium) is driven by Playwright; `playwright install` is never
needed. Every request to another host than the server is blocked and recorded, and the test
asserts there was none: the page works without the internet.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.async_api import (
    BrowserContext,
    Page,
    Request,
    Route,
    WebSocket,
    expect,
)

from tests.support import browser, server
from tests.support.server import (
    DEMO_ACCOUNTS,
    DEMO_FIRM,
    DEMO_OWNER_EMAIL,
    DEMO_OWNER_NAME,
    DEMO_PASSWORD,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# conftest.py does not provide these: the module gets its own server.
chromium = browser.chromium
context = browser.context
live_server = server.live_server
live_server_process = server.live_server_process

# The flags Chromium needs to run headless as root without reaching for the internet.

SIGN_IN = """mutation SignIn($firm: String!, $email: String!, $password: String!) {
  staffSignIn(firm: $firm, email: $email, password: $password) {
    errors { message }
    viewer { ... on StaffMember { name } }
  }
}"""
SIGN_IN_VARIABLES = {"firm": DEMO_FIRM, "email": DEMO_OWNER_EMAIL, "password": DEMO_PASSWORD}
ACCOUNTS = "{ accounts { totalCount } }"


def graphiql_link(base: str, query: str, variables: dict[str, str] | None = None) -> str:
    """A link that opens GraphiQL with `query` loaded (a browser asks for text/html)."""
    params = {"query": query}
    if variables:
        params["variables"] = json.dumps(variables)
    return f"{base}/graphql?{urlencode(params)}"


async def run_in_graphiql(page: Page, url: str, expected: str) -> None:
    """Opens the link, presses GraphiQL's run button, and waits for `expected` in the result."""
    await page.goto(url)
    await page.locator(".graphiql-execute-button").click()
    await expect(page.locator(".result-window")).to_contain_text(
        expected, timeout=browser.TIMEOUT_MS
    )


async def test_sign_in_then_query_with_the_session_cookie(
    chromium: str, live_server: str, context: BrowserContext
) -> None:
    origin = urlsplit(live_server).netloc
    outside: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    async def only_the_server(route: Route) -> None:
        # Offline means offline: anything not bound for the server is recorded and refused.
        if urlsplit(route.request.url).netloc == origin:
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    def on_websocket(socket: WebSocket) -> None:
        if urlsplit(socket.url).netloc != origin:
            outside.append(socket.url)

    def on_failed(request: Request) -> None:
        failed.append(f"{request.url}: {request.failure}")

    await context.route("**/*", only_the_server)
    page = await context.new_page()
    page.on("websocket", on_websocket)
    page.on("requestfailed", on_failed)
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Before signing in, the same query is refused: what follows really is the cookie's doing.
    await run_in_graphiql(page, graphiql_link(live_server, ACCOUNTS), "UNAUTHENTICATED")

    await run_in_graphiql(
        page, graphiql_link(live_server, SIGN_IN, SIGN_IN_VARIABLES), DEMO_OWNER_NAME
    )
    [cookie] = [c for c in await context.cookies() if c["name"] == "portico_session"]
    assert cookie["httpOnly"]
    assert "portico_session" not in await page.evaluate("document.cookie")

    await run_in_graphiql(
        page, graphiql_link(live_server, ACCOUNTS), f'"totalCount": {DEMO_ACCOUNTS}'
    )

    assert outside == [], f"requests to other hosts than {origin}: {outside}"
    assert failed == []
    assert errors == []
