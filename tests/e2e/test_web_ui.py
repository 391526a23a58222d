"""The agents' web UI in a real browser (Chromium driven by Playwright): the seed's whole flow through
both partners' pages in two browser contexts, live updates without a reload, sign-in and sign-out,
CSRF refusal, escaping, and refusals shown in words. Screenshots go to var/test-logs/screenshots/."""
import asyncio

import pytest
from playwright.async_api import Page, expect

from tests.harness import LOGS

pytestmark = pytest.mark.asyncio(loop_scope="session")
SHOTS = LOGS / "screenshots"
LIVE = 5_000  # ms: "within about a second", with room for a slow machine


async def signed_in(browser, service, answer_confirms: bool = True) -> Page:
    context = await browser.new_context(base_url=service.url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    # Every action that cannot be undone asks first; the flows here answer yes (test_agent_pages.py says no too).
    if answer_confirms:
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()) if dialog.type == "confirm" else None)
    await page.goto("/")
    await expect(page).to_have_url(f"{service.url}/signin?next=/tickets")
    await page.get_by_label("API token").fill(service.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tickets")).to_be_visible()
    return page


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def shown_after_reloading(page: Page, locator, timeout: float = 15.0) -> None:
    """Reloads the page, as its user would, until `locator` shows (or `timeout` seconds pass)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await locator.count() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(locator).to_be_visible()


def status_of(page: Page):
    return page.get_by_test_id("link-status")


async def test_the_whole_seed_flow_through_both_uis(browser, services):
    lead = await signed_in(browser, services["lead_partner"])
    partner = await signed_in(browser, services["insourcing_partner"])

    # Lead: a new ticket, outsourced with terms.
    await lead.get_by_label("Title").fill("Server room too hot")
    await lead.get_by_label("Description").fill("The fan is loud")
    await lead.get_by_role("button", name="Create").click()
    heading = lead.get_by_role("heading", level=1)
    await expect(heading).to_contain_text("Server room too hot")
    number = (await heading.inner_text()).split()[0]
    await lead.get_by_text("Outsource", exact=True).click()
    await lead.get_by_label("Partner").select_option(label="Insourcing Partner")
    await lead.get_by_label("Instructions").fill("Please look today")
    await lead.get_by_label("Rate type").select_option("hourly")
    await lead.get_by_label("Rate (USD)").fill("95")
    await lead.get_by_label("Authorized hours").fill("4")
    await lead.get_by_role("button", name="Send to partner").click()
    await expect(status_of(lead)).to_have_text("Assigned")

    # Insourcing: the work appears under Received Work; Accept opens the insourced ticket.
    await partner.get_by_role("link", name="Received Work").click()
    row = partner.locator("tr", has_text=number)
    await shown_after_reloading(partner, row)  # the list is not live: a user reloads it
    await row.get_by_role("button", name="Accept").click()
    await expect(status_of(partner)).to_have_text("In Progress")
    # ... and the lead's open page follows without a reload.
    await expect(status_of(lead)).to_have_text("In Progress", timeout=LIVE)

    # A note typed on one side appears live on the other, marked From partner; the writer sees it Delivered.
    await partner.get_by_label("Body").fill("Replaced the fan")
    await partner.get_by_role("button", name="Add note").click()
    arrived = lead.locator("ol.timeline li", has_text="Replaced the fan")
    await expect(arrived).to_be_visible(timeout=LIVE)
    await expect(arrived.locator(".badge", has_text="From partner")).to_be_visible()
    await expect(partner.locator("ol.timeline li", has_text="Replaced the fan").locator(".badge", has_text="Delivered")) \
        .to_be_visible(timeout=LIVE)
    await shot(lead, "lead-ticket")

    # Insource Complete: both sides Waiting Approval; the lead's page offers Approve and Reject.
    await partner.get_by_text("Notify Lead Partner").click()
    await partner.get_by_role("button", name="Insource Complete").click()
    await expect(status_of(partner)).to_have_text("Waiting Approval")
    await expect(status_of(lead)).to_have_text("Waiting Approval", timeout=LIVE)
    # The form says a reason is needed before anything is sent.
    await lead.get_by_role("button", name="Reject").click()
    assert await lead.get_by_label("Reason").evaluate("field => field.validity.valueMissing")
    await lead.get_by_label("Reason").fill("The fan is still noisy")
    await lead.get_by_role("button", name="Reject").click()
    await expect(status_of(lead)).to_have_text("In Progress")
    await expect(status_of(partner)).to_have_text("In Progress", timeout=LIVE)
    await expect(partner.locator("ol.timeline li", has_text="The fan is still noisy")).to_be_visible()

    # Insource Complete again, then approve: both Complete, and read-only items show no edit controls.
    await partner.get_by_text("Notify Lead Partner").click()
    await partner.get_by_role("button", name="Insource Complete").click()
    await expect(status_of(lead)).to_have_text("Waiting Approval", timeout=LIVE)
    await lead.get_by_role("button", name="Approve").click()
    await expect(status_of(lead)).to_have_text("Complete")
    await expect(status_of(partner)).to_have_text("Complete", timeout=LIVE)
    fan = partner.locator("ol.timeline li", has_text="Replaced the fan")
    await expect(fan.get_by_role("button", name="Delete")).to_have_count(0)
    await expect(fan.get_by_text("Edit")).to_have_count(0)
    await shot(partner, "insourcing-ticket-complete")
    await partner.get_by_role("link", name="Received Work").click()
    await shot(partner, "received-work")
    await lead.get_by_role("link", name="Outsourced Work").click()
    await lead.get_by_label("Outsource Status").select_option("Complete")
    await lead.get_by_role("button", name="Filter").click()
    await expect(lead.locator("tr", has_text=number)).to_be_visible()
    await shot(lead, "outsourced-work")


async def test_sign_in_refuses_a_bad_token_and_sign_out_ends_the_session(browser, services):
    context = await browser.new_context(base_url=services["lead_partner"].url)
    page = await context.new_page()
    await page.goto("/tickets")
    await page.get_by_label("API token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await page.get_by_label("API token").fill(services["insourcing_partner"].token)  # another service's
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await page.get_by_label("API token").fill(services["lead_partner"].token)
    await page.get_by_role("button", name="Sign in").click()
    cookie = next(c for c in await context.cookies() if c["name"].startswith("session-lead-partner-"))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    answer = await page.request.get("/tickets")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API token")).to_be_visible()
    await page.goto("/tickets")
    await expect(page).to_have_url(f"{services['lead_partner'].url}/signin?next=/tickets")


async def test_one_browser_stays_signed_in_to_every_service_on_the_same_host(browser, services):
    # Cookies are kept per host, not per port: each service names its own, so signing in to one does
    # not sign its user out of another (make run serves all three on 127.0.0.1).
    context = await browser.new_context()
    page = await context.new_page()
    for name in ("lead_partner", "insourcing_partner", "sync_bridge"):
        service = services[name]
        await page.goto(f"{service.url}/signin")
        await page.get_by_label("API token").fill(service.token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    for name in ("lead_partner", "insourcing_partner"):
        await page.goto(f"{services[name].url}/tickets")
        await expect(page.get_by_role("heading", name="Tickets")).to_be_visible()
    await context.close()


async def test_a_form_posted_without_the_pages_csrf_token_is_refused(browser, services):
    page = await signed_in(browser, services["lead_partner"])
    forged = await page.request.post("/tickets", form={"title": "planted by another site"})
    assert forged.status == 403 and "CSRF" in await forged.text()
    await page.goto("/tickets?q=planted")
    await expect(page.get_by_text("planted by another site")).to_have_count(0)


async def test_what_a_user_typed_is_shown_as_text_and_refusals_are_shown_in_words(browser, services):
    page = await signed_in(browser, services["lead_partner"])
    alerts = []
    page.on("dialog", lambda dialog: alerts.append(dialog.message))
    await page.get_by_label("Title").fill("<b>bold</b> title")
    await page.get_by_role("button", name="Create").click()
    await page.get_by_label("Body").fill("<script>alert('x')</script>")
    await page.get_by_role("button", name="Add note").click()
    await expect(page.locator("ol.timeline li", has_text="<script>alert('x')</script>")).to_be_visible()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("<b>bold</b> title")
    assert alerts == []
    # 413: a file over 10 MiB is refused next to the upload form, and nothing is stored.
    await page.get_by_label("File").set_input_files(
        {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"\0" * (10 * 1024 * 1024 + 1)})
    await page.get_by_role("button", name="Upload attachment").click()
    await expect(page.get_by_role("alert")).to_contain_text("over the limit")
    await expect(page.locator("ol.timeline li", has_text="big.bin")).to_have_count(0)
    # 409: cancelling an outsourcing that does not exist is refused in words, on the ticket page.
    ticket_url = "/".join(page.url.split("/")[:5])  # http://host/tickets/<id>
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    refused = await page.request.post(f"{ticket_url}/outsource/cancel", form={"csrf": csrf})
    assert refused.status == 409 and "is not outsourced" in await refused.text()
    assert refused.headers["content-type"].startswith("text/html")


async def test_the_pages_work_at_phone_width(browser, services):
    async with services["insourcing_partner"].client() as api:  # a title with no space to break it at
        assert (await api.post("/api/tickets", json={"title": "x" * 255})).status_code == 201
    context = await browser.new_context(base_url=services["insourcing_partner"].url,
                                        viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto("/signin")
    await page.get_by_label("API token").fill(services["insourcing_partner"].token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Create")).to_be_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"


async def test_a_token_without_outsourcing_sees_no_outsourcing_buttons_and_is_refused_anyway(browser, services):
    created = services["lead_partner"].cli("tokens", "create", "--name", "helpdesk", "--permission", "tickets")
    assert created.returncode == 0, created.stderr
    token = created.stdout.split("token: ")[1].strip()
    context = await browser.new_context(base_url=services["lead_partner"].url)
    page = await context.new_page()
    await page.goto("/signin")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Title").fill("Helpdesk ticket")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Helpdesk ticket")
    await expect(page.get_by_role("button", name="Add note")).to_be_visible()
    await expect(page.get_by_text("Outsource", exact=True)).to_have_count(0)
    await expect(page.get_by_role("link", name="Outsourced Work")).to_be_visible()
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    refused = await page.request.post(f"{page.url}/outsource", form={"csrf": csrf, "partner_id": "insourcing-partner"})
    assert refused.status == 403 and "lacks the &#39;outsourcing&#39; permission" in await refused.text()
