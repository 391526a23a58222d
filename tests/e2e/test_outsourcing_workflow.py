"""SPEC section 3 up to acceptance: outsource, cancel, decline, accept, with every refusal a 409
that names the current status, and both sides agreeing once the messages have crossed."""
import pytest

from tests.e2e.flows import (
    PARTNER,
    every,
    items,
    linked_tickets,
    new_ticket,
    outsource,
    outsource_status,
    received,
)
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

TERMS = {"rate_type": "hourly", "rate": 95.0, "authorized_hours": 6, "authorized_charge": "600"}
# Money as both partners answer it (SPEC section 12): decimal strings with two places, and a currency.
AS_STORED = {"rate_type": "hourly", "rate": "95.00", "authorized_hours": "6.00", "authorized_charge": "600.00",
             "currency": "USD"}


async def test_the_lead_can_outsource_to_the_insourcing_partner_out_of_the_box(lead):
    partners = (await lead.get("/api/partners")).json()
    # The hub's insourcing partners (others may have been onboarded by other tests), never a lead.
    assert {"id": PARTNER, "name": "Insourcing Partner"} in partners
    assert "lead-partner" not in [p["id"] for p in partners]


async def test_an_outsourced_ticket_is_assigned_and_reaches_the_partner_as_pending_work(lead, insourcing):
    ticket = await new_ticket(lead, title="Firewall upgrade", description="Model FG-60")
    sent = await outsource(lead, ticket["id"], instructions="Weekend only", terms=TERMS)
    assert sent["status"] == "Assigned"
    outsource_field = (await lead.get(f"/api/tickets/{ticket['id']}")).json()["outsource"]
    assert outsource_field == {"status": "Assigned", "link_id": sent["link_id"], "partner_id": PARTNER,
                               "partner_name": "Insourcing Partner", "partner_ticket_number": None,
                               "terms": AS_STORED}
    work = await received(insourcing, sent["link_id"], "Pending")
    assert work["lead_partner"] == "Lead Partner" and work["lead_ticket_number"] == ticket["number"]
    assert (work["title"], work["instructions"]) == ("Firewall upgrade", "Weekend only")
    assert work["terms"] == AS_STORED  # exact, to the cent, on both sides
    assert work["ticket_id"] is None
    assigned = await every(lead, "/api/outsourced-work", status="Assigned")
    assert ticket["number"] in [w["ticket_number"] for w in assigned]
    pending = await every(insourcing, "/api/received-work", status="Pending")
    assert sent["link_id"] in [w["link_id"] for w in pending]


async def test_accepting_creates_the_insourced_ticket_and_both_sides_show_in_progress(lead, insourcing, bridge):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing, title="Mail down", description="Since 9:00")
    assert (insourced["title"], insourced["description"]) == ("Mail down", "Since 9:00")
    assert insourced["insource"] == {"status": "In Progress", "link_id": link_id, "partner_id": "lead-partner",
                                     "partner_name": "Lead Partner", "partner_ticket_number": lead_ticket["number"],
                                     "terms": None}
    notes = await items(insourcing, insourced["id"], "notes")
    assert any(lead_ticket["number"] in n["body"] and "Please look today" in n["body"] for n in notes)
    lead_view = (await lead.get(f"/api/tickets/{lead_ticket['id']}")).json()
    assert lead_view["outsource"]["partner_ticket_number"] == insourced["number"]
    assert lead_view["status"] == "New"  # the ticket's own status never changes with the outsource status
    link = (await bridge.get(f"/api/links/{link_id}")).json()
    assert link["state"] == "active" and link["lead_ticket_id"] == lead_ticket["id"]
    assert link["insourcing_ticket_id"] == insourced["id"]
    in_progress = await every(lead, "/api/outsourced-work", status="In Progress")
    assert link_id in [w["link_id"] for w in in_progress]


async def test_accept_is_refused_once_accepted_naming_the_status(lead, insourcing):
    _, _, link_id = await linked_tickets(lead, insourcing)
    again = await insourcing.post(f"/api/received-work/{link_id}/accept")
    assert again.status_code == 409 and "In Progress" in again.json()["detail"]
    decline = await insourcing.post(f"/api/received-work/{link_id}/decline", json={"reason": "too late"})
    assert decline.status_code == 409 and "In Progress" in decline.json()["detail"]


async def test_declining_needs_a_reason_which_reaches_the_lead_ticket_as_a_note(lead, insourcing, bridge):
    ticket = await new_ticket(lead)
    link_id = (await outsource(lead, ticket["id"]))["link_id"]
    await received(insourcing, link_id, "Pending")
    empty = await insourcing.post(f"/api/received-work/{link_id}/decline", json={"reason": "  "})
    assert empty.status_code == 422 and "reason" in empty.json()["detail"]
    declined = await insourcing.post(f"/api/received-work/{link_id}/decline", json={"reason": "No engineer free"})
    assert declined.status_code == 200 and declined.json()["insource_status"] == "Declined"
    await outsource_status(lead, ticket["id"], "Declined")
    notes = await items(lead, ticket["id"], "notes")
    assert any("No engineer free" in n["body"] and n["origin"] == "system" for n in notes)
    assert (await bridge.get(f"/api/links/{link_id}")).json()["state"] == "terminated"


async def test_cancel_is_allowed_only_while_assigned_and_reaches_the_partner(lead, insourcing):
    ticket = await new_ticket(lead)
    link_id = (await outsource(lead, ticket["id"]))["link_id"]
    await received(insourcing, link_id, "Pending")
    canceled = await lead.post(f"/api/tickets/{ticket['id']}/outsource/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "Canceled"
    await received(insourcing, link_id, "Canceled")
    again = await lead.post(f"/api/tickets/{ticket['id']}/outsource/cancel")
    assert again.status_code == 409 and "Canceled" in again.json()["detail"]
    accept = await insourcing.post(f"/api/received-work/{link_id}/accept")
    assert accept.status_code == 409 and "Canceled" in accept.json()["detail"]


async def test_cancel_is_refused_after_the_partner_accepted(lead, insourcing):
    lead_ticket, _, _ = await linked_tickets(lead, insourcing)
    refused = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/cancel")
    assert refused.status_code == 409 and "In Progress" in refused.json()["detail"]


async def test_a_ticket_is_outsourced_once_at_a_time_and_again_after_a_decline(lead, insourcing):
    ticket = await new_ticket(lead)
    first = await outsource(lead, ticket["id"])
    twice = await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": PARTNER})
    assert twice.status_code == 409 and "Assigned" in twice.json()["detail"]
    await received(insourcing, first["link_id"], "Pending")
    await insourcing.post(f"/api/received-work/{first['link_id']}/decline", json={"reason": "busy"})
    await outsource_status(lead, ticket["id"], "Declined")
    second = await outsource(lead, ticket["id"])
    assert second["link_id"] != first["link_id"] and second["status"] == "Assigned"
    await received(insourcing, second["link_id"], "Pending")


async def test_a_complete_ticket_cannot_be_outsourced(lead):
    ticket = await new_ticket(lead)
    await lead.patch(f"/api/tickets/{ticket['id']}", json={"status": "Complete"})
    refused = await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": PARTNER})
    assert refused.status_code == 409 and "Complete" in refused.json()["detail"]


async def test_outsourcing_to_an_unknown_partner_or_with_bad_terms_is_refused(lead):
    ticket = await new_ticket(lead)
    unknown = await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": "acme"})
    assert unknown.status_code == 404 and "acme" in unknown.json()["detail"]
    bad_terms = await lead.post(f"/api/tickets/{ticket['id']}/outsource",
                                json={"partner_id": PARTNER, "terms": {"rate_type": "daily", "rate": 5}})
    assert bad_terms.status_code == 422 and "rate_type" in bad_terms.json()["detail"]
    for terms, named in (({"rate_type": "hourly", "rate": "95.001"}, "no more than 2 decimal places"),
                         ({"rate_type": "hourly", "rate": "95", "currency": "XYZ"}, "not an ISO 4217 currency"),
                         ({"rate_type": "flat", "rate": "-5"}, "greater than or equal to 0")):
        answer = await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": PARTNER, "terms": terms})
        assert answer.status_code == 422 and named in answer.text, answer.text
    assert (await lead.get(f"/api/tickets/{ticket['id']}")).json()["outsource"] is None
    # A currency the lead names is kept; the money stays exact.
    sent = await outsource(lead, ticket["id"], terms={"rate_type": "flat", "rate": "1250.10", "currency": "EUR"})
    assert sent["terms"] == {"rate_type": "flat", "rate": "1250.10", "authorized_hours": None,
                             "authorized_charge": None, "currency": "EUR"}


async def test_the_workflow_calls_need_the_outsourcing_permission(services, lead):
    proc = services["lead_partner"]
    created = proc.cli("tokens", "create", "--name", "tech", "--permission", "tickets")
    token = dict(line.split(": ", 1) for line in created.stdout.strip().splitlines())["token"]
    ticket = await new_ticket(lead)
    async with proc.client(token=token) as technician:
        refused = await technician.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": PARTNER})
        assert refused.status_code == 403 and "outsourcing" in refused.json()["detail"]
        assert (await technician.get("/api/outsourced-work")).status_code == 403


async def test_unknown_received_work_is_404(insourcing):
    assert (await insourcing.post("/api/received-work/nope/accept")).status_code == 404


async def test_the_bridge_lists_links_and_their_state(lead, insourcing, bridge):
    _, _, link_id = await linked_tickets(lead, insourcing)
    links = (await bridge.get("/api/links", params={"state": "active"})).json()["items"]  # newest first
    assert link_id in [l["id"] for l in links]
    assert (await bridge.get("/api/links/nope")).status_code == 404
    assert (await eventually(lambda: _link(bridge, link_id)))["last_event_at"] is not None


async def _link(bridge, link_id):
    return (await bridge.get(f"/api/links/{link_id}")).json()
