"""Headless Debian Chromium for end-to-end tests (Playwright, never its own browser download).

Import the fixtures into a test module: `chromium = browser.chromium`, `context = browser.context`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import BrowserContext, async_playwright

from tests.support.services import need_chromium

# Without the networking flags Chromium keeps trying to reach the internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; module-scoped so a missing browser skips before the server starts."""
    return need_chromium()


@pytest.fixture
async def context(chromium: str) -> AsyncIterator[BrowserContext]:
    """A fresh browser (new temporary profile) and context: no cookies, no local storage."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            yield context
        finally:
            await browser.close()
