"""/docs of each service in Chromium with every request to another host refused, as on a machine without
the internet: Swagger UI renders from the service's own files under its Content-Security-Policy (no inline
script), lists the service's operations, and Authorize then Try it out reaches the API with the token.
Also /favicon.ico, and the policy /docs is sent with. Screenshots go to var/test-logs/screenshots/."""
import re
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.harness import LOGS

pytestmark = pytest.mark.asyncio(loop_scope="session")
SHOTS = LOGS / "screenshots"
LOCAL = {"127.0.0.1", "localhost"}
KNOWN_PATH = {"lead_partner": "/api/tickets", "insourcing_partner": "/api/tickets", "sync_bridge": "/api/links"}
TITLE = {"lead_partner": "Lead Partner", "insourcing_partner": "Insourcing Partner", "sync_bridge": "Sync Bridge"}
# Playwright's init script runs outside the page's policy: it records what the policy refused.
RECORD_VIOLATIONS = """window.__refused = [];
document.addEventListener("securitypolicyviolation",
    e => window.__refused.push(e.violatedDirective + " " + (e.blockedURI || "inline")));"""


class Offline:
    """A page whose requests to any host but this machine are aborted, with what it tried and what the
    console said."""

    def __init__(self, page: Page):
        self.page, self.local, self.outside, self.errors = page, [], [], []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    @classmethod
    async def open(cls, browser, base_url: str) -> "Offline":
        context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        await context.add_init_script(RECORD_VIOLATIONS)
        offline = cls(await context.new_page())

        async def only_local(route):
            if urlsplit(route.request.url).hostname in LOCAL:
                offline.local.append(urlsplit(route.request.url).path)
                await route.continue_()
            else:
                offline.outside.append(route.request.url)
                await route.abort("internetdisconnected")

        await context.route("**/*", only_local)
        return offline

    async def refused_by_policy(self) -> list[str]:
        return await self.page.evaluate("window.__refused")


def operation(page: Page, method: str, path: str):
    return page.locator(f".opblock.opblock-{method}", has=page.locator(f'.opblock-summary-path[data-path="{path}"]'))


@pytest.mark.parametrize("name", ["lead_partner", "insourcing_partner", "sync_bridge"])
async def test_api_docs_render_with_the_internet_cut_off(browser, services, name):
    service = services[name]
    offline = await Offline.open(browser, service.url)
    page = offline.page
    await page.goto("/docs")

    await expect(page).to_have_title(f"{TITLE[name]} - Swagger UI")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text(TITLE[name])
    await expect(page.locator(f'.opblock-summary-path[data-path="{KNOWN_PATH[name]}"]').first).to_be_visible()
    await expect(page.get_by_role("button", name="Authorize")).to_be_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"api-docs-{name}.png"))

    assert {"/docs/swagger-ui-bundle.js", "/docs/api-docs.js", "/openapi.json"} <= set(offline.local)
    assert offline.outside == []
    assert await offline.refused_by_policy() == []
    assert offline.errors == [], "the console reported errors (a refused script or style names the policy)"
    await page.context.close()


async def test_authorize_with_the_token_then_try_it_out_answers_200_in_the_page(browser, services):
    bridge = services["sync_bridge"]
    offline = await Offline.open(browser, bridge.url)
    page = offline.page
    await page.goto("/docs")
    links = operation(page, "get", "/api/links")
    await links.locator(".opblock-summary").click()
    await links.get_by_role("button", name="Try it out").click()

    # Without the token the API refuses, as it says in the page...
    await links.get_by_role("button", name="Execute").click()
    status = links.locator(".live-responses-table tbody .response-col_status")
    await expect(status).to_have_text("401")

    # ...and with it, entered once under Authorize, the same call answers.
    await page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".modal-ux")
    await dialog.get_by_label("auth-bearer-value").fill(bridge.token)
    await dialog.get_by_role("button", name="Apply credentials").click()
    await expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    await dialog.get_by_role("button", name="Close").click()
    await links.get_by_role("button", name="Execute").click()
    await expect(status).to_have_text("200")
    await expect(links.locator(".live-responses-table tbody .response-col_description")).to_contain_text('"items"')
    await page.screenshot(path=str(SHOTS / "api-docs-try-it-out.png"), full_page=True)

    assert offline.outside == []
    assert await offline.refused_by_policy() == []
    assert offline.errors == [] or all(re.search(r"\b401\b", e) for e in offline.errors)
    await page.context.close()


async def test_favicon_and_the_policy_docs_is_sent_with(services):
    async with httpx.AsyncClient() as http:
        for service in services.values():
            icon = await http.get(f"{service.url}/favicon.ico")
            assert icon.status_code == 200
            assert icon.headers["content-type"].startswith("image/")
            assert icon.content[:4] == b"\x00\x00\x01\x00"  # an icon file, not a page saying "not found"

            docs = await http.get(f"{service.url}/docs")
            policy = dict(part.strip().split(" ", 1) for part in docs.headers["content-security-policy"].split(";"))
            assert policy["script-src"] == "'self'"
            assert "unsafe-inline" not in policy.get("style-src", "")
            assert "cdn" not in docs.text and "https://" not in docs.text
