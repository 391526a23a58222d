"""What the browser tests share: one Chromium for the session."""
import pytest_asyncio
from playwright.async_api import async_playwright


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def browser():
    async with async_playwright() as p:
        # Debian's Chromium; `playwright install` cannot download here and is never called.
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        yield browser
        await browser.close()
