"""The bridge operator's pages in a real browser (SPEC section 8): the links with their state and
health, Reconcile now, the dead letters with Replay and Discard, and sign-in with the bridge's own token."""
import re
import uuid
from contextlib import asynccontextmanager
from datetime import datetime

import pytest
from playwright.async_api import async_playwright, expect

from shared.platform.kafka import outbound_topic
from tests.e2e.flows import arrived, linked_tickets
from tests.e2e.test_resilience import produce
from tests.harness import LOGS, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
SHOTS = LOGS / "screenshots"
OPERATOR = "operator (from environment)"  # the name the bridge gives the token from BRIDGE_API_TOKEN


@asynccontextmanager
async def browser_page():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            context = await browser.new_context()
            context.set_default_timeout(20_000)
            yield context
        finally:
            await browser.close()


async def sign_in(page, url: str, token: str) -> None:
    await page.goto(f"{url}/links")
    await expect(page).to_have_url(re.compile(r"/signin"))
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()


async def test_links_page_shows_a_link_its_mirrors_and_reconciles_it(services, lead, insourcing, bridge):
    url, token = services["sync_bridge"].url, services["sync_bridge"].token
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    note = await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "seen from the bridge page"})
    assert note.status_code == 201, note.text
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "seen from the bridge page")

    async with browser_page() as context:
        page = await context.new_page()
        await sign_in(page, url, token)
        await expect(page.get_by_role("heading", name="Links")).to_be_visible()
        row = page.locator(f"#link-{link_id}")
        await expect(row).to_contain_text("active")
        await expect(row).to_contain_text(lead_ticket["id"])
        await expect(row).to_contain_text(insourced["id"])
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "bridge-links.png"), full_page=True)

        # The state filter: a terminated-only list does not show the active link; active does.
        await page.get_by_label("State").select_option("terminated")
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(re.compile(r"state=terminated"))
        await expect(row).to_have_count(0)
        await page.get_by_label("State").select_option("active")
        await page.get_by_role("button", name="Filter").click()
        await expect(row).to_be_visible()

        # The detail: the note's mirror, both sides' health, and Reconcile now.
        await row.get_by_role("link", name=link_id).click()
        await expect(page.get_by_role("heading", name=f"Link {link_id}")).to_be_visible()
        mirrors = page.get_by_role("table", name="Mirrors")
        mirror_row = mirrors.locator("tr", has_text=note.json()["id"])
        await expect(mirror_row).to_contain_text("lead-partner")
        await expect(mirror_row).to_contain_text("note")
        await expect(page.get_by_role("region", name="Lead side")).to_contain_text(lead_ticket["id"])
        await expect(page.get_by_role("region", name="Insourcing side")).to_contain_text(insourced["id"])

        before = (await bridge.get(f"/api/links/{link_id}/health")).json()["last_reconciled_at"]
        await page.get_by_role("button", name="Reconcile now").click()
        await expect(page.get_by_role("status")).to_contain_text("Reconciliation started")

        async def reconciled():
            await page.reload()
            shown = page.locator("#last-reconciled time")
            if not await shown.count():
                return None
            at = datetime.fromisoformat(await shown.get_attribute("datetime"))
            return at if before is None or at > datetime.fromisoformat(before) else None

        await eventually(reconciled, timeout=20, interval=1.0)
        await expect(page.locator("#last-reconciled")).not_to_contain_text("never")

        missing = await page.goto(f"{url}/links/no-such-link")
        assert missing.status == 404
        await expect(page.get_by_role("alert")).to_have_text("link no-such-link not found")
    # The JSON API answers from the same functions as the page.
    health = (await bridge.get(f"/api/links/{link_id}/health")).json()
    assert health["link_state"] == "active" and health["last_reconciled_at"] is not None
    started = await bridge.post(f"/api/links/{link_id}/reconcile")
    assert started.status_code == 202 and started.json()["link_id"] == link_id, started.text
    assert (await bridge.post("/api/links/no-such-link/reconcile")).status_code == 404


async def _parked(bridge, keys: list[str]) -> dict[str, dict]:
    async def check():
        letters = {d["key"]: d for d in (await bridge.get("/api/dead-letters")).json() if d["key"] in keys}
        return letters if len(letters) == len(keys) else None

    return await eventually(check, timeout=60, interval=0.5)


async def test_dead_letters_are_discarded_and_replayed_from_the_page(services, bridge, infrastructure, signatures):
    url, token = services["sync_bridge"].url, services["sync_bridge"].token
    keys = [f"poison-{uuid.uuid4()}" for _ in range(2)]
    for key in keys:
        await produce(infrastructure, outbound_topic("lead-partner"), [b"{not json"], key.encode(), signatures)
    letters = await _parked(bridge, keys)
    discarded, replayed = letters[keys[0]]["id"], letters[keys[1]]["id"]

    async with browser_page() as context:
        page = await context.new_page()
        await sign_in(page, url, token)
        await page.get_by_role("link", name="Dead letters").click()
        await expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
        row = page.locator(f"#letter-{discarded}")
        await expect(row).to_contain_text("not an envelope")
        await expect(row).to_contain_text(keys[0])
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "bridge-dead-letters.png"), full_page=True)

        # A second tab still shows the letter after the first discarded it: its Discard is refused in words.
        stale = await context.new_page()
        await stale.goto(f"{url}/dead-letters")
        await expect(stale.locator(f"#letter-{discarded}")).to_be_visible()

        await row.get_by_role("button", name="Discard").click()
        await expect(page.get_by_role("status")).to_have_text(f"Dead letter {discarded}: discarded")
        await expect(page.locator(f"#letter-{discarded}")).to_have_count(0)

        await stale.locator(f"#letter-{discarded}").get_by_role("button", name="Discard").click()
        await expect(stale.get_by_role("alert")).to_contain_text(f"dead letter {discarded} is resolved already")
        await expect(stale.locator("body")).not_to_contain_text('{"detail"')

        await page.get_by_role("link", name="Show the resolved ones too").click()
        await expect(page).to_have_url(re.compile(r"include_resolved=true"))
        await expect(page.locator(f"#letter-{discarded}")).to_contain_text(f"discarded by {OPERATOR}")

        # A poison message replayed is still poison: parked again, said in words, still listed.
        await page.goto(f"{url}/dead-letters")
        await page.locator(f"#letter-{replayed}").get_by_role("button", name="Replay").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Dead letter {replayed}: parked again: not an envelope")
        await expect(page.locator(f"#letter-{replayed}")).to_be_visible()
    after = (await bridge.get("/api/dead-letters", params={"include_resolved": "true"})).json()
    assert {d["id"]: d["resolved_by"] for d in after if d["id"] in (discarded, replayed)} == {
        discarded: OPERATOR, replayed: None}


async def test_another_services_token_cannot_sign_in_to_the_bridge(services):
    url = services["sync_bridge"].url
    async with browser_page() as context:
        page = await context.new_page()
        await sign_in(page, url, services["lead_partner"].token)
        await expect(page.get_by_role("alert")).to_contain_text("not valid here")
        await expect(page).to_have_url(re.compile(r"/signin"))
        await page.goto(f"{url}/dead-letters")
        await expect(page).to_have_url(re.compile(r"/signin\?next=/dead-letters"))


async def test_partners_page_onboards_shows_the_bundle_once_and_removes(services, bridge):
    """The hub operator's directory in the browser (SPEC section 10): onboard, the bundle shown once,
    a bad id refused in words, remove."""
    url, token = services["sync_bridge"].url, services["sync_bridge"].token
    partner_id = f"page-{uuid.uuid4().hex[:6]}"
    async with browser_page() as context:
        page = await context.new_page()
        await sign_in(page, url, token)
        await page.get_by_role("link", name="Partners").click()
        await expect(page.get_by_role("heading", name="Partners", exact=True)).to_be_visible()
        await expect(page.locator("#partner-insourcing-partner")).to_contain_text("configured")

        await page.get_by_label("Id").fill("Not_Valid")
        await page.get_by_label("Name").fill("Page Co")
        await page.evaluate("document.getElementById('partner-id').removeAttribute('pattern')")  # as a script would send it
        await page.get_by_role("button", name="Onboard").click()
        await expect(page.get_by_role("alert")).to_contain_text("lowercase")

        await page.get_by_label("Id").fill(partner_id)
        await page.get_by_label("Name").fill("Page Co")
        await page.get_by_label("Role").select_option("lead")
        await page.get_by_role("button", name="Onboard").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Page Co ({partner_id}) is onboarded")
        shown = await page.get_by_label("Bundle (JSON)").input_value()
        assert f'"partner_id": "{partner_id}"' in shown and '"signing_key"' in shown
        await expect(page.locator(f"#partner-{partner_id}")).to_contain_text("active")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "bridge-partners.png"), full_page=True)

        # Shown once: the page read again has no bundle, nor its secrets.
        await page.goto(f"{url}/partners")
        await expect(page.get_by_label("Bundle (JSON)")).to_have_count(0)
        secret = shown.split('"signing_key": "')[1].split('"')[0]
        assert secret not in await page.content()

        # Removing asks first: declined, nothing happens; accepted, the partner is removed.
        asked = []

        async def answer(dialog):
            asked.append(dialog.message)
            await (dialog.dismiss() if len(asked) == 1 else dialog.accept())

        page.on("dialog", answer)
        await page.get_by_role("button", name=f"Remove {partner_id}").click()
        await eventually(lambda: _asked(asked, 1), timeout=10)
        await page.goto(f"{url}/partners")
        await expect(page.locator(f"#partner-{partner_id}")).to_contain_text("active")
        await page.get_by_role("button", name=f"Remove {partner_id}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Page Co ({partner_id}) was removed")
        assert "Remove Page Co?" in asked[0] and len(asked) == 2
        await expect(page.locator(f"#partner-{partner_id}")).to_contain_text("removed")
    listed = (await bridge.get("/api/partners")).json()
    assert [p["status"] for p in listed if p["id"] == partner_id] == ["removed"]


async def _asked(asked: list, count: int) -> bool:
    return len(asked) >= count
