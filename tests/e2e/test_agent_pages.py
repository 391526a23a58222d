"""An agent's whole day in the partners' pages (SPEC section 8, issue 26), in a real browser: the
ticket's description, dates and status; the terms and their currency on Received Work before accepting
and on both ticket pages, with the hours logged so far; partner names; the dashboards' dates, last
activity and "waiting for me"; a question before what cannot be undone; times with their zone; numbers
that never break mid-word; and a live page that misses nothing landing while it loads."""
import asyncio
import re

import pytest
from playwright.async_api import expect

from tests.e2e.flows import arrived, linked_tickets, new_ticket, outsource, received
from tests.e2e.test_web_ui import LIVE, signed_in

pytestmark = pytest.mark.asyncio(loop_scope="session")
TERMS = {"rate_type": "hourly", "rate": 95, "authorized_hours": 6}
UTC_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")


async def test_the_ticket_page_shows_the_description_and_dates_and_changes_the_status(browser, services, lead):
    ticket = await new_ticket(lead, "Badge reader offline", description="Lobby door, since 7:00")
    page = await signed_in(browser, services["lead_partner"])
    await page.goto(f"/tickets/{ticket['id']}")
    await expect(page.get_by_test_id("description")).to_have_text("Lobby door, since 7:00")
    await expect(page.get_by_text(re.compile(r"Created \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"))).to_be_visible()
    await page.get_by_label("Ticket status").select_option("In Progress")
    await page.get_by_role("button", name="Change status").click()
    await expect(page.get_by_label("Ticket status")).to_have_value("In Progress")
    assert (await lead.get(f"/api/tickets/{ticket['id']}")).json()["status"] == "In Progress"
    # ... and the list finds it by its status and by a word of its title, the number never broken.
    await page.goto("/tickets?status=In+Progress&q=badge")
    cell = page.locator("tr", has_text="Badge reader offline").get_by_role("link", name=ticket["number"])
    await expect(cell).to_be_visible()
    await page.set_viewport_size({"width": 360, "height": 800})
    box, size = await cell.bounding_box(), await cell.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert box["height"] < 2 * size, f"the ticket number wraps: {box['height']}px high at {size}px"


async def test_the_price_is_shown_before_accepting_and_on_both_ticket_pages_with_the_hours_so_far(
        browser, services, lead, insourcing):
    ticket = await new_ticket(lead, "Replace the core switch", description="Rack 3, after 18:00")
    link_id = (await outsource(lead, ticket["id"], instructions="Bring a spare", terms=TERMS))["link_id"]
    await received(insourcing, link_id, "Pending")

    partner = await signed_in(browser, services["insourcing_partner"])
    await partner.goto("/received-work")
    await partner.get_by_role("link", name="Waiting for me (Pending)").click()
    row = partner.locator(f"#work-{link_id}")
    await expect(row.get_by_test_id("work-terms")).to_contain_text("95.00 USD per hour, 6.00 h authorized")
    await expect(row.get_by_test_id("work-description")).to_have_text("Rack 3, after 18:00")
    await expect(row.locator("td").nth(1)).to_contain_text("Bring a spare")
    await expect(row.locator("time").first).to_have_text(UTC_TIME)
    await expect(row).to_contain_text("Lead Partner")
    await row.get_by_role("button", name="Accept").click()
    await expect(partner.get_by_test_id("terms")).to_contain_text("95.00 USD per hour")
    await expect(partner.get_by_test_id("partner-name")).to_have_text("Lead Partner")
    insourced_url = partner.url

    # Two hours logged at the partner: both pages say so, the lead's live.
    lead_page = await signed_in(browser, services["lead_partner"])
    await lead_page.goto(f"/tickets/{ticket['id']}")
    await expect(lead_page.get_by_test_id("partner-name")).to_have_text("Insourcing Partner")
    await expect(lead_page.get_by_test_id("hours-logged")).to_have_text("0 h")
    insourced_id = insourced_url.rsplit("/", 1)[-1]
    logged = await insourcing.post(f"/api/tickets/{insourced_id}/time-entries", json={
        "resource": "Ana", "date_worked": "2026-12-07", "hours": "2.00", "summary": "Swapped the switch"})
    assert logged.status_code == 201, logged.text
    await expect(lead_page.get_by_test_id("hours-logged")).to_have_text("2.00 h", timeout=LIVE)
    await partner.reload()
    await expect(partner.get_by_test_id("hours-logged")).to_have_text("2.00 h")

    # The lead's dashboard: the terms, when it was outsourced, and its last activity.
    await lead_page.goto("/outsourced-work")
    line = lead_page.locator("tr", has_text=ticket["number"])
    await expect(line).to_contain_text("95.00 USD per hour")
    await expect(line.locator("time")).to_have_count(2)


async def test_what_cannot_be_undone_is_asked_first_and_no_keeps_it(browser, services, lead, insourcing):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    note = await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "Keep me unless asked"})
    assert note.status_code == 201
    page = await signed_in(browser, services["lead_partner"], answer_confirms=False)
    asked: list[str] = []

    async def answer(dialog):
        asked.append(dialog.message)
        await (dialog.dismiss() if len(asked) == 1 else dialog.accept())

    page.on("dialog", answer)
    await page.goto(f"/tickets/{lead_ticket['id']}")
    item = page.locator("ol.timeline li", has_text="Keep me unless asked")
    await item.get_by_role("button", name="Delete").click()
    await expect(item).to_be_visible()  # "no": nothing was sent
    assert asked and "cannot be undone" in asked[0]
    await item.get_by_role("button", name="Delete").click()
    await expect(page.locator("ol.timeline li", has_text="Keep me unless asked")).to_have_count(0)
    assert len(asked) == 2
    notes = (await lead.get(f"/api/tickets/{lead_ticket['id']}/notes")).json()["items"]
    assert "Keep me unless asked" not in [n["body"] for n in notes]


async def test_a_live_page_misses_nothing_that_lands_while_it_loads(browser, services, lead, insourcing):
    """The lead writes a note at the moment the partner's page loads, again and again: each shows up."""
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    page = await signed_in(browser, services["insourcing_partner"])
    for n in range(8):
        text = f"Crossing while the page loads #{n}"
        load = asyncio.ensure_future(page.goto(f"/tickets/{insourced['id']}"))
        await asyncio.sleep(0.05 * (n % 4))
        sent = await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": text})
        assert sent.status_code == 201
        await load
        # A miss never shows without a reload; the time allowed is only the note's way across the hub.
        await expect(page.locator("ol.timeline li", has_text=text)).to_be_visible(timeout=3 * LIVE)
    await arrived(insourcing, insourced["id"], "notes", lambda i: i["body"].startswith("Crossing"), count=8)
