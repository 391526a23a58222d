"""The bridge operator's pages in a real browser (SPEC section 8): the links with their partners' names,
both ticket numbers, state and health, found by ticket number; Reconcile now; the dead letters with Replay
and Discard (asked first); sign-in with the bridge's own token; and GET /api/links a page at a time."""
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


async def partner_names(bridge) -> dict[str, str]:
    """The names the hub's directory gives the partners, as its operator onboarded them."""
    return {p["id"]: p["name"] for p in (await bridge.get("/api/partners")).json()}


async def test_links_page_shows_a_link_its_mirrors_and_reconciles_it(services, lead, insourcing, bridge):
    url, token = services["sync_bridge"].url, services["sync_bridge"].token
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    names = await partner_names(bridge)
    lead_name, insourcing_name = names["lead-partner"], names["insourcing-partner"]
    note = await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "seen from the bridge page"})
    assert note.status_code == 201, note.text
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "seen from the bridge page")

    async with browser_page() as context:
        page = await context.new_page()
        await sign_in(page, url, token)
        await expect(page.get_by_role("heading", name="Links")).to_be_visible()
        row = page.locator(f"#link-{link_id}")
        await expect(row).to_contain_text("active")
        # People's words: both partners by name and both tickets by the numbers their users know.
        for shown in (lead_ticket["number"], insourced["number"], lead_name, insourcing_name):
            await expect(row).to_contain_text(shown)
        # Created and last activity, each with its zone.
        await expect(row.locator("time")).to_have_count(2)
        for time in await row.locator("time").all():
            await expect(time).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
        # On a laptop every column is in sight, none behind a sideways scroll.
        await page.set_viewport_size({"width": 1280, "height": 800})
        table = page.locator(".table-wrap", has=page.get_by_role("table", name="Links"))
        assert await table.evaluate("e => e.scrollWidth <= e.clientWidth")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "bridge-links.png"), full_page=True)

        # On a phone the table wraps between words only: a ticket number, a time of day or a heading is
        # never cut in two (each is drawn on one line).
        await page.set_viewport_size({"width": 390, "height": 800})
        for whole in [*await row.locator(".number").all(), *await row.locator("time .nowrap").all(),
                      page.get_by_role("columnheader", name="Repairs")]:
            assert await whole.evaluate("e => e.getClientRects().length") == 1, await whole.text_content()
        await page.set_viewport_size({"width": 1280, "height": 800})

        # The state filter: a terminated-only list does not show the active link; active does.
        await page.get_by_label("State").select_option("terminated")
        await page.get_by_role("button", name="Find").click()
        await expect(page).to_have_url(re.compile(r"state=terminated"))
        await expect(row).to_have_count(0)
        await page.get_by_label("State").select_option("active")
        await page.get_by_role("button", name="Find").click()
        await expect(row).to_be_visible()

        # Found by the lead's ticket number: that link, and no link whose lead ticket is another. (The
        # insourcing partner numbers its tickets alike, so its ticket of the same number may show too.)
        await page.get_by_label("State").select_option("")
        await page.get_by_label("Ticket number or link id").fill(lead_ticket["number"])
        await page.get_by_role("button", name="Find").click()
        await expect(page).to_have_url(re.compile(r"q=" + re.escape(lead_ticket["number"])))
        await expect(row).to_be_visible()
        found = page.get_by_role("table", name="Links").locator("tbody tr")
        lead_numbers = [await r.locator("td").nth(1).locator(".number").text_content() for r in await found.all()]
        assert lead_numbers.count(lead_ticket["number"]) == 1, lead_numbers
        for other in await found.all():
            await expect(other).to_contain_text(lead_ticket["number"])
        await expect(page.get_by_role("status")).to_contain_text(f"found for {lead_ticket['number']}")
        # By the insourcing partner's number, by the start of the link id; nothing for a number no one has.
        for q in (insourced["number"], link_id[:8]):
            await page.get_by_label("Ticket number or link id").fill(q)
            await page.get_by_role("button", name="Find").click()
            await expect(row).to_be_visible()
        await page.get_by_label("Ticket number or link id").fill("no-such-number")
        await page.get_by_role("button", name="Find").click()
        await expect(page.get_by_role("table", name="Links")).to_contain_text("No links with a ticket number or id matching no-such-number")
        await page.get_by_role("link", name="Show all links").click()
        await expect(row).to_be_visible()

        # The detail: the note's mirror, both sides' health, and Reconcile now.
        await row.get_by_role("link", name=f"Link {link_id}").click()
        await expect(page.get_by_role("heading", name=f"Link {link_id}")).to_be_visible()
        await expect(page.locator("#link-summary")).to_have_text(re.compile(
            rf"{re.escape(lead_ticket['number'])} of {re.escape(lead_name)}, outsourced to\s+"
            rf"{re.escape(insourcing_name)} as {re.escape(insourced['number'])}"))
        mirrors = page.get_by_role("table", name="Mirrors")
        mirror_row = mirrors.locator("tr", has_text=note.json()["id"])
        await expect(mirror_row).to_contain_text(lead_name)
        await expect(mirror_row).to_contain_text("note")
        lead_side = page.get_by_role("region", name="Lead side")
        insourcing_side = page.get_by_role("region", name="Insourcing side")
        await expect(lead_side.get_by_role("heading")).to_have_text(f"Lead side: {lead_name}")
        await expect(insourcing_side.get_by_role("heading")).to_have_text(f"Insourcing side: {insourcing_name}")
        for side, ticket in ((lead_side, lead_ticket), (insourcing_side, insourced)):
            await expect(side).to_contain_text(ticket["number"])
            await expect(side).to_contain_text(ticket["id"])
        # Nothing was refused: the count says so quietly, not in red; what is red is a problem.
        zero = insourcing_side.locator(".badge", has_text="0 refused")
        await expect(zero).to_be_visible()
        bad = await page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bad').trim()")
        red = await page.evaluate(f"(() => {{ const e = document.createElement('b'); e.style.color = '{bad}'; "
                                  "document.body.append(e); const c = getComputedStyle(e).color; e.remove(); return c; })()")
        for badge in await page.locator(".badge", has_text=re.compile(r"^0 ")).all():
            assert await badge.evaluate("e => getComputedStyle(e).color") != red, await badge.text_content()
        await expect(page.locator(".badge.refused")).to_have_count(0)
        await expect(page.locator("main")).to_contain_text("UTC")
        await page.screenshot(path=str(SHOTS / "bridge-link.png"), full_page=True)

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

        # Discarding asks first: dismissed, the letter stays unresolved; accepted, it is discarded.
        asked = answer_dialogs(page, [False, True])
        await row.get_by_role("button", name="Discard").click()
        await eventually(lambda: _asked(asked, 1), timeout=10)
        assert asked[0].startswith(f"Discard dead letter {discarded}?") and "cannot be undone" in asked[0], asked
        await page.reload()
        await expect(page.locator(f"#letter-{discarded}")).to_be_visible()
        still = (await bridge.get("/api/dead-letters")).json()
        assert [d["resolved_at"] for d in still if d["id"] == discarded] == [None]

        await page.locator(f"#letter-{discarded}").get_by_role("button", name="Discard").click()
        await expect(page.get_by_role("status")).to_have_text(f"Dead letter {discarded}: discarded")
        await expect(page.locator(f"#letter-{discarded}")).to_have_count(0)
        assert len(asked) == 2

        answer_dialogs(stale, [True])
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

        # Rotating asks first (the partner's Kafka password changes at once): dismissed, nothing changes
        # and no bundle is shown; accepted, the new bundle is shown once.
        asked = answer_dialogs(page, [False, True, False, True])
        await page.get_by_role("button", name=f"Rotate the keys of {partner_id}").click()
        await eventually(lambda: _asked(asked, 1), timeout=10)
        assert asked[0].startswith("Rotate the keys of Page Co?"), asked
        await page.goto(f"{url}/partners")
        await expect(page.get_by_label("Bundle (JSON)")).to_have_count(0)
        await page.get_by_role("button", name=f"Rotate the keys of {partner_id}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"{partner_id} has a new password and signing key")
        # The second key: the dismissed rotation made none.
        assert '"signing_key_id": "k2"' in await page.get_by_label("Bundle (JSON)").input_value()

        # Removing asks first: declined, nothing happens; accepted, the partner is removed.
        await page.goto(f"{url}/partners")
        await page.get_by_role("button", name=f"Remove {partner_id}").click()
        await eventually(lambda: _asked(asked, 3), timeout=10)
        await page.goto(f"{url}/partners")
        await expect(page.locator(f"#partner-{partner_id}")).to_contain_text("active")
        await page.get_by_role("button", name=f"Remove {partner_id}").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Page Co ({partner_id}) was removed")
        assert "Remove Page Co?" in asked[2] and len(asked) == 4
        await expect(page.locator(f"#partner-{partner_id}")).to_contain_text("removed")
    listed = (await bridge.get("/api/partners")).json()
    assert [p["status"] for p in listed if p["id"] == partner_id] == ["removed"]


def answer_dialogs(page, replies: list[bool]) -> list[str]:
    """Answers the page's confirmations in turn (True: OK, False: Cancel); returns what they asked."""
    asked = []

    async def answer(dialog):
        asked.append(dialog.message)
        await (dialog.accept() if replies[len(asked) - 1] else dialog.dismiss())

    page.on("dialog", answer)
    return asked


async def _asked(asked: list, count: int) -> bool:
    return len(asked) >= count


async def test_the_link_list_comes_a_page_at_a_time_and_finds_a_link_by_either_ticket_number(lead, insourcing, bridge):
    """GET /api/links pages like every list ({items, next_cursor}, ?limit=, ?cursor=), newest first,
    each entry with both partners' names and both ticket numbers; `q` finds a link by either number or its id."""
    older_ticket, older_insourced, older = await linked_tickets(lead, insourcing)
    newer_ticket, newer_insourced, newer = await linked_tickets(lead, insourcing)
    names = await partner_names(bridge)

    first = (await bridge.get("/api/links", params={"limit": 1})).json()
    assert [link["id"] for link in first["items"]] == [newer] and first["next_cursor"]
    second = (await bridge.get("/api/links", params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert [link["id"] for link in second["items"]] == [older]
    entry = second["items"][0]
    assert (entry["lead_partner_name"], entry["lead_ticket_number"], entry["insourcing_partner_name"],
            entry["insourcing_ticket_number"]) == (names["lead-partner"], older_ticket["number"],
                                                  names["insourcing-partner"], older_insourced["number"])

    # Every link once, page after page, whatever the page size.
    seen, cursor = [], None
    while True:
        page = (await bridge.get("/api/links", params={"limit": 2} | ({"cursor": cursor} if cursor else {}))).json()
        assert len(page["items"]) <= 2
        seen += [link["id"] for link in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert len(seen) == len(set(seen)) and {older, newer} <= set(seen)
    assert seen == [link["id"] for link in (await bridge.get("/api/links", params={"limit": 500})).json()["items"]]

    async def found(q: str, **params) -> list[dict]:
        answer = await bridge.get("/api/links", params={"q": q, "limit": 500, **params})
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    # The lead's number: that link, and no other link with that lead ticket number.
    by_lead = await found(older_ticket["number"])
    assert [link["id"] for link in by_lead if link["lead_ticket_number"] == older_ticket["number"]] == [older]
    assert all(older_ticket["number"] in (link["lead_ticket_number"], link["insourcing_ticket_number"]) for link in by_lead)
    assert older in [link["id"] for link in await found(older_insourced["number"])]
    assert [link["id"] for link in await found(older)] == [older]
    assert [link["id"] for link in await found(older[:13].upper())] == [older]  # the start of its id, case aside
    assert newer in [link["id"] for link in await found(newer_ticket["number"][:-2])]  # the start of a number
    assert await found("no-such-number") == [] and await found(older, state="terminated") == []
    assert await found("T%") == []  # a wildcard is a character like any other
    for refused in ({"limit": 501}, {"limit": 0}, {"cursor": "not a cursor"}, {"q": "x" * 101}):
        assert (await bridge.get("/api/links", params=refused)).status_code == 422, refused
