"""The statement both companies settle by (SPEC section 12), end to end: Insource Complete freezes one
from the partner's own shared, delivered time entries and charges priced by the terms; the lead holds
the same statement and SHA-256; a reject and a new Insource Complete make version 2."""
import hashlib
import json

import pytest

from tests.e2e.flows import every, linked_tickets, outsource_status
from tests.harness import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.broker]  # also run on Tansu
TERMS = {"rate_type": "hourly", "rate": "95.00", "authorized_hours": "3", "currency": "EUR"}


async def delivered(insourcing, ticket_id: str, kind: str, item_id: str) -> None:
    async def check():
        found = [i for i in await every(insourcing, f"/api/tickets/{ticket_id}/{kind}") if i["id"] == item_id]
        return found and found[0]["delivery"] and found[0]["delivery"]["status"] == "delivered"

    await eventually(check, timeout=30)


async def log(insourcing, ticket_id: str, kind: str, internal: bool = False, **fields) -> dict:
    answer = await insourcing.post(f"/api/tickets/{ticket_id}/{kind}", json={**fields, "internal": internal})
    assert answer.status_code == 201, answer.text
    if not internal:
        await delivered(insourcing, ticket_id, kind, answer.json()["id"])
    return answer.json()


async def both_statements(lead, insourcing, lead_id: str, insourced_id: str, version: int) -> dict:
    async def check():
        answer = await lead.get(f"/api/tickets/{lead_id}/statement")
        return answer.json() if answer.status_code == 200 and answer.json()["version"] == version else None

    theirs = await eventually(check, timeout=30)
    ours = (await insourcing.get(f"/api/tickets/{insourced_id}/statement")).json()
    assert (ours["version"], ours["sha256"], ours["statement"]) == (version, theirs["sha256"], theirs["statement"])
    canonical = json.dumps(ours["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(canonical).hexdigest() == ours["sha256"]
    return ours["statement"]


async def test_insource_complete_freezes_one_statement_both_sides_hold_and_a_reject_makes_version_2(lead, insourcing):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing, title="Replace the UPS batteries", terms=TERMS)
    insourced_id = insourced["id"]
    assert (await lead.get(f"/api/tickets/{lead_ticket['id']}/statement")).status_code == 404

    work = {"resource": "Ana", "date_worked": "2026-12-07", "summary": "Swapped 4 batteries"}
    await log(insourcing, insourced_id, "time-entries", hours="2.50", **work)
    await log(insourcing, insourced_id, "charges", name="Battery", quantity="2", unit_price="19.99")
    await log(insourcing, insourced_id, "time-entries", internal=True, hours="1.00", **work)  # never billed
    assert (await insourcing.post(f"/api/tickets/{insourced_id}/insource/complete")).status_code == 200
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")
    first = await both_statements(lead, insourcing, lead_ticket["id"], insourced_id, 1)
    assert [line["amount"] for line in first["lines"]] == ["237.50", "39.98"]
    assert (first["totals"]["total"], first["currency"], first["warnings"]) == ("277.48", "EUR", [])

    rejected = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={"reason": "one more check"})
    assert rejected.status_code == 200
    await eventually(lambda: _insource_status(insourcing, insourced_id, "In Progress"))
    await log(insourcing, insourced_id, "time-entries", hours="1.00", **work)
    assert (await insourcing.post(f"/api/tickets/{insourced_id}/insource/complete")).status_code == 200
    second = await both_statements(lead, insourcing, lead_ticket["id"], insourced_id, 2)
    assert second["totals"]["total"] == "372.48"
    assert second["warnings"] == ["3.50 h logged, over the 3.00 h authorized"]

    # The lead approves by hash: the version its agent read before the reject is superseded.
    approve = f"/api/tickets/{lead_ticket['id']}/outsource/approve"
    stale = await lead.post(approve, json={"statement_sha256": hashlib.sha256(_canonical(first)).hexdigest()})
    assert stale.status_code == 409 and "the current one is version 2" in stale.json()["detail"], stale.text
    blind = await lead.post(approve, json={})
    assert blind.status_code == 422 and "statement_sha256 is required" in blind.json()["detail"]
    current = (await lead.get(f"/api/tickets/{lead_ticket['id']}/statement")).json()["sha256"]
    assert (await lead.post(approve, json={"statement_sha256": current})).status_code == 200
    await eventually(lambda: _insource_status(insourcing, insourced_id, "Complete"))

    # Settled alike, and after completion nothing changes it: not a time entry logged afterwards.
    await log_local(insourcing, insourced_id, "time-entries", hours="5.00", **work)
    for client, ticket_id in ((lead, lead_ticket["id"]), (insourcing, insourced_id)):
        held = (await client.get(f"/api/tickets/{ticket_id}/statement")).json()
        assert (held["version"], held["sha256"], held["settled"]) == (2, current, "approved")

    # The partner invoices exactly that statement; the lead sees the number.
    invoiced = await insourcing.post(f"/api/received-work/{link_id}/invoice", json={"invoice_number": " INV-2026-001 "})
    assert invoiced.status_code == 200, invoiced.text
    assert (invoiced.json()["invoice_number"], invoiced.json()["total"], invoiced.json()["statement_sha256"]) == \
        ("INV-2026-001", "372.48", current)

    async def lead_sees_invoice():
        held = (await lead.get(f"/api/tickets/{lead_ticket['id']}/statement")).json()
        return held["invoice_number"] == "INV-2026-001" and held["sha256"] == current

    await eventually(lead_sees_invoice, timeout=30)


async def test_the_leads_complete_at_any_time_freezes_what_had_crossed_and_both_sides_end_with_it(lead, insourcing):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing, title="Rack the new switch", terms=TERMS)
    insourced_id = insourced["id"]
    await log(insourcing, insourced_id, "time-entries", hours="1.25", resource="Ana", date_worked="2026-12-07",
              summary="Racked and patched")
    completed = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/complete")
    assert completed.status_code == 200, completed.text
    ours = (await lead.get(f"/api/tickets/{lead_ticket['id']}/statement")).json()
    assert (ours["version"], ours["settled"], ours["statement"]["totals"]["total"]) == (1, "completed", "118.75")

    async def partner_holds_it():
        theirs = await insourcing.get(f"/api/tickets/{insourced_id}/statement")
        return theirs.status_code == 200 and theirs.json()["settled"] == "completed" and theirs.json()

    theirs = await eventually(partner_holds_it, timeout=30)
    assert (theirs["sha256"], theirs["statement"]) == (ours["sha256"], ours["statement"])


def _canonical(statement: dict) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


async def log_local(insourcing, ticket_id: str, kind: str, **fields) -> dict:
    """An item written after the link ended: it stays on this side."""
    answer = await insourcing.post(f"/api/tickets/{ticket_id}/{kind}", json=fields)
    assert answer.status_code == 201 and answer.json()["shared"] is False, answer.text
    return answer.json()


async def _insource_status(insourcing, ticket_id: str, status: str) -> bool:
    return (await insourcing.get(f"/api/tickets/{ticket_id}")).json()["insource"]["status"] == status
