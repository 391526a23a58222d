"""The lists an agent pages through (SPEC section 5): tickets newest first with search and status,
Outsourced Work and Received Work a page at a time with dates and last activity, and the partner's sync
view naming the link's state."""
import secrets

import pytest

from tests.e2e.flows import every, linked_tickets, new_ticket, outsource, received

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_tickets_are_listed_newest_first_found_by_number_or_title_words_and_paged(lead):
    word = secrets.token_hex(4)
    made = [await new_ticket(lead, f"Printer {word} jam {n}") for n in range(5)]
    first = await lead.get("/api/tickets", params={"q": f"jam {word}", "limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [t["number"] for t in page["items"]] == [made[4]["number"], made[3]["number"]]
    assert page["items"][0]["outsource"] is None and page["next_cursor"]
    rest = await every(lead, "/api/tickets", q=f"jam {word}")
    assert [t["id"] for t in rest] == [t["id"] for t in reversed(made)]
    second = (await lead.get("/api/tickets", params={"q": f"jam {word}", "limit": 2,
                                                     "cursor": page["next_cursor"]})).json()
    assert [t["number"] for t in second["items"]] == [made[2]["number"], made[1]["number"]]
    # By number (its start), and by status.
    by_number = (await lead.get("/api/tickets", params={"q": made[0]["number"]})).json()["items"]
    assert [t["id"] for t in by_number] == [made[0]["id"]]
    await lead.patch(f"/api/tickets/{made[1]['id']}", json={"status": "In Progress"})
    in_progress = await every(lead, "/api/tickets", q=word, status="In Progress")
    assert [t["id"] for t in in_progress] == [made[1]["id"]]
    # A search is text, not a pattern; bad input is a 422 that names it.
    assert (await lead.get("/api/tickets", params={"q": "%"})).status_code == 200
    assert (await lead.get("/api/tickets", params={"status": "Sleeping"})).status_code == 422
    assert (await lead.get("/api/tickets", params={"cursor": "nope"})).status_code == 422


async def test_the_dashboards_are_paged_and_say_when_and_what_changed_last(lead, insourcing):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing, description="Third floor")
    work = await received(insourcing, link_id)
    assert work["description"] == "Third floor" and work["received_at"] == work["created_at"]
    assert work["last_activity_at"] >= work["received_at"]
    before = work["last_activity_at"]
    assert (await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "on site"})).status_code == 201
    after = next(w for w in await every(insourcing, "/api/received-work") if w["link_id"] == link_id)
    assert after["last_activity_at"] > before

    outsourced = next(w for w in await every(lead, "/api/outsourced-work") if w["link_id"] == link_id)
    assert (outsourced["ticket_number"], outsourced["partner_name"]) == (lead_ticket["number"], "Insourcing Partner")
    assert outsourced["last_activity_at"] >= outsourced["created_at"]
    await outsource(lead, (await new_ticket(lead))["id"])  # two at least, whatever ran before
    one = (await lead.get("/api/outsourced-work", params={"limit": 1})).json()
    assert len(one["items"]) == 1 and one["next_cursor"]
    following = (await lead.get("/api/outsourced-work", params={"limit": 1, "cursor": one["next_cursor"]})).json()
    assert following["items"][0]["link_id"] != one["items"][0]["link_id"]


async def test_the_sync_view_names_the_links_state_and_the_sides_status_apart(lead, insourcing):
    lead_ticket = await new_ticket(lead)
    link_id = (await outsource(lead, lead_ticket["id"]))["link_id"]
    seen = (await lead.get(f"/api/tickets/{lead_ticket['id']}/sync")).json()
    assert (seen["link_id"], seen["link_state"], seen["status"]) == (link_id, "pending", "Assigned")
    # The ticket answers the partner's name and the terms with the link.
    ticket = (await lead.get(f"/api/tickets/{lead_ticket['id']}")).json()
    assert ticket["outsource"]["partner_name"] == "Insourcing Partner" and ticket["outsource"]["terms"] is None


async def test_a_cursor_no_list_gave_is_a_422_that_says_so_on_every_paged_list(lead, insourcing, bridge):
    made_up = {"cursor": "595812551987865184_1t6H0tF"}  # the year 20850: found by the fuzzing
    for client, path in ((lead, "/api/tickets"), (lead, "/api/outsourced-work"), (insourcing, "/api/received-work"),
                         (bridge, "/api/links")):
        answer = await client.get(path, params=made_up)
        assert answer.status_code == 422 and "not a cursor this list gave" in answer.text, (path, answer.text)
