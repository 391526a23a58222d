"""Completing an insourced ticket (the seed workflow; SPEC sections 3 and 4): Insource Complete
suspends synchronization, reject resumes it, approve or complete-at-any-time ends the link."""
import asyncio
import signal

import pytest

from tests.conftest import INSOURCING_EMAIL, LEAD_EMAIL
from tests.e2e.flows import (
    approve,
    arrived,
    every,
    insource_status,
    items,
    linked_tickets,
    mail,
    new_ticket,
    outsource_status,
    waiting_approval,
)
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIME_ENTRY = {"resource": "Ana", "date_worked": "2026-11-25", "hours": 1.5, "summary": "Diagnosed"}
CHARGE = {"name": "Cable", "quantity": 2, "unit_price": 5}
KINDS = ["notes", "time-entries", "charges", "attachments"]


async def add(client, ticket_id: str, kind: str, label: str) -> dict:
    if kind == "attachments":
        answer = await client.post(f"/api/tickets/{ticket_id}/attachments", files={"file": (f"{label}.txt", label.encode())})
    else:
        body = {"notes": {"body": label}, "time-entries": {**TIME_ENTRY, "summary": label},
                "charges": {**CHARGE, "name": label}}[kind]
        answer = await client.post(f"/api/tickets/{ticket_id}/{kind}", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def labelled(label: str):
    return lambda i: label in (i.get("body") or i.get("summary") or i.get("name") or i.get("filename") or "")


# --- Insource Complete ---------------------------------------------------------------------------


async def test_insource_complete_moves_both_sides_to_waiting_approval_and_emails_the_lead(lead, insourcing, bridge, mailbox):
    lead_ticket, insourced, link_id = await waiting_approval(lead, insourcing)
    assert (await insourcing.get(f"/api/tickets/{insourced['id']}")).json()["insource"]["status"] == "Waiting Approval"
    received = await every(insourcing, "/api/received-work", status="Waiting Approval")
    assert link_id in [w["link_id"] for w in received]
    outsourced = await every(lead, "/api/outsourced-work", status="Waiting Approval")
    assert link_id in [w["link_id"] for w in outsourced]
    assert (await bridge.get(f"/api/links/{link_id}")).json()["state"] == "suspended"
    [email] = await mail(mailbox, LEAD_EMAIL, f"Approval requested: {lead_ticket['number']}")
    assert lead_ticket["title"] in email["subject"] and "Insourcing Partner" in email["body"]
    # Neither ticket's own status changes.
    assert (await lead.get(f"/api/tickets/{lead_ticket['id']}")).json()["status"] == "New"
    assert (await insourcing.get(f"/api/tickets/{insourced['id']}")).json()["status"] == "New"


async def test_insource_complete_is_allowed_only_from_in_progress_and_only_on_insourced_tickets(lead, insourcing):
    _, insourced, _ = await waiting_approval(lead, insourcing)
    again = await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    assert again.status_code == 409 and "Waiting Approval" in again.json()["detail"]
    own = await new_ticket(insourcing)
    refused = await insourcing.post(f"/api/tickets/{own['id']}/insource/complete")
    assert refused.status_code == 409 and "no Insource Status" in refused.json()["detail"]


@pytest.mark.parametrize("kind", KINDS)
async def test_everything_from_before_the_suspension_is_read_only_on_the_insourcing_ticket(lead, insourcing, kind):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    own = await add(insourcing, insourced["id"], kind, f"own-{kind}")
    await add(lead, lead_ticket["id"], "notes" if kind == "time-entries" else kind, f"mirrored-{kind}")
    target_kind = "notes" if kind == "time-entries" else kind
    [mirror] = await arrived(insourcing, insourced["id"], target_kind, labelled(f"mirrored-{kind}"))
    await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    for item_kind, item in ((kind, own), (target_kind, mirror)):
        listed = next(i for i in await items(insourcing, insourced["id"], item_kind) if i["id"] == item["id"])
        assert listed["editable"] is False
        edit = {"notes": {"body": "x"}, "time-entries": {"hours": 1}, "charges": {"quantity": 1},
                "attachments": {"filename": "x"}}[item_kind]
        refused = await insourcing.patch(f"/api/tickets/{insourced['id']}/{item_kind}/{item['id']}", json=edit)
        assert refused.status_code == 409 and "suspended" in refused.json()["detail"]
        assert (await insourcing.delete(f"/api/tickets/{insourced['id']}/{item_kind}/{item['id']}")).status_code == 409


async def test_items_added_while_suspended_stay_local_even_after_synchronization_resumes(lead, insourcing):
    lead_ticket, insourced, _ = await waiting_approval(lead, insourcing)
    partner_side = await add(insourcing, insourced["id"], "charges", "added-while-suspended")
    lead_side = await add(lead, lead_ticket["id"], "notes", "lead-added-while-suspended")
    assert partner_side["shared"] is False and lead_side["shared"] is False
    assert partner_side["editable"] is True  # new items are the partner's to work with, locally
    await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={"reason": "Missing the invoice"})
    await insource_status(insourcing, insourced["id"], "In Progress")
    await add(lead, lead_ticket["id"], "notes", "after-resume-marker")
    await add(insourcing, insourced["id"], "charges", "partner-after-resume-marker")
    await arrived(insourcing, insourced["id"], "notes", labelled("after-resume-marker"))
    await arrived(lead, lead_ticket["id"], "charges", labelled("partner-after-resume-marker"))
    assert not [i for i in await items(lead, lead_ticket["id"], "charges") if i["name"] == "added-while-suspended"]
    assert not [i for i in await items(insourcing, insourced["id"], "notes") if "lead-added-while" in i["body"]]
    # Editing an item that never crossed does not make it cross.
    await insourcing.patch(f"/api/tickets/{insourced['id']}/charges/{partner_side['id']}", json={"quantity": 9})
    await add(insourcing, insourced["id"], "charges", "second-marker")
    await arrived(lead, lead_ticket["id"], "charges", labelled("second-marker"))
    assert not [i for i in await items(lead, lead_ticket["id"], "charges") if i["name"] == "added-while-suspended"]


# --- Reject --------------------------------------------------------------------------------------


async def test_reject_needs_a_reason_and_waiting_approval(lead, insourcing):
    lead_ticket, _, _ = await linked_tickets(lead, insourcing)
    early = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={"reason": "no"})
    assert early.status_code == 409 and "In Progress" in early.json()["detail"]
    lead_ticket, _, _ = await waiting_approval(lead, insourcing)
    empty = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={"reason": ""})
    assert empty.status_code == 422 and "reason" in empty.json()["detail"]
    missing = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={})
    assert missing.status_code == 422


async def test_reject_emails_the_partner_notes_the_reason_and_resumes_synchronization(lead, insourcing, bridge, mailbox):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    own = await add(insourcing, insourced["id"], "notes", "pre-suspension note")
    await arrived(lead, lead_ticket["id"], "notes", labelled("pre-suspension note"))
    await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")
    rejected = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={"reason": "Printer still jams"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "In Progress"

    await insource_status(insourcing, insourced["id"], "In Progress")
    [email] = await mail(mailbox, INSOURCING_EMAIL, f"Work rejected by Lead Partner: {insourced['number']}")
    assert "Printer still jams" in email["body"] and insourced["title"] in email["subject"]
    notes = await items(insourcing, insourced["id"], "notes")
    assert any("Printer still jams" in n["body"] and n["origin"] == "system" for n in notes)
    assert (await bridge.get(f"/api/links/{link_id}")).json()["state"] == "active"
    # The creator may edit its pre-suspension item again, and the edit propagates.
    edited = await insourcing.patch(f"/api/tickets/{insourced['id']}/notes/{own['id']}", json={"body": "fixed the rollers"})
    assert edited.status_code == 200
    await arrived(lead, lead_ticket["id"], "notes", labelled("fixed the rollers"))
    # And the partner can submit again.
    again = await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    assert again.status_code == 200
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")


# --- Approve, and Complete at any time -----------------------------------------------------------


@pytest.fixture(params=["approve", "complete from Waiting Approval", "complete from In Progress"])
async def finished(request, lead, insourcing):
    """Linked tickets with items on both sides, then finished in one of the three ways."""
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    for kind in KINDS:
        await add(insourcing, insourced["id"], kind, f"partner-{kind}")
    await add(insourcing, insourced["id"], "time-entries", "partner-more-time")
    await add(lead, lead_ticket["id"], "notes", "lead-note")
    await arrived(lead, lead_ticket["id"], "time-entries", lambda i: True, count=2)
    await arrived(lead, lead_ticket["id"], "attachments", labelled("partner-attachments"))
    await arrived(insourcing, insourced["id"], "notes", labelled("lead-note"))
    action = request.param.split()[0]
    if request.param != "complete from In Progress":
        await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
        await outsource_status(lead, lead_ticket["id"], "Waiting Approval")
    answer = await (approve(lead, lead_ticket["id"]) if action == "approve"
                    else lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/{action}"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "Complete"
    await insource_status(insourcing, insourced["id"], "Complete")
    return lead_ticket, insourced, link_id


async def test_completion_emails_both_partners_notes_both_tickets_and_ends_the_link(finished, lead, insourcing, bridge, mailbox):
    lead_ticket, insourced, link_id = finished
    await mail(mailbox, LEAD_EMAIL, f"Outsourcing complete: {lead_ticket['number']}")
    [partner_mail] = await mail(mailbox, INSOURCING_EMAIL, f"Insource Complete: {insourced['number']}")
    assert "Lead Partner" in partner_mail["body"] and insourced["title"] in partner_mail["subject"]
    for client, ticket in ((lead, lead_ticket), (insourcing, insourced)):
        notes = await items(client, ticket["id"], "notes")
        assert any(n["origin"] == "system" and "no longer synchronized" in n["body"] for n in notes)
        assert (await client.get(f"/api/tickets/{ticket['id']}")).json()["status"] == "New"
    assert (await bridge.get(f"/api/links/{link_id}")).json()["state"] == "terminated"
    assert (await lead.get("/api/outsourced-work", params={"status": "Complete"})).status_code == 200


async def test_after_completion_nothing_crosses_in_either_direction(finished, lead, insourcing):
    lead_ticket, insourced, _ = finished
    lead_note = await add(lead, lead_ticket["id"], "notes", "lead-after-completion")
    partner_note = await add(insourcing, insourced["id"], "notes", "partner-after-completion")
    assert lead_note["shared"] is False and partner_note["shared"] is False
    # Give a stray mirror every chance to arrive, through a link that is still active elsewhere.
    other_lead, other_insourced, _ = await linked_tickets(lead, insourcing)
    await add(lead, other_lead["id"], "notes", "other-link-marker")
    await arrived(insourcing, other_insourced["id"], "notes", labelled("other-link-marker"))
    assert not [n for n in await items(insourcing, insourced["id"], "notes") if "lead-after-completion" in n["body"]]
    assert not [n for n in await items(lead, lead_ticket["id"], "notes") if "partner-after-completion" in n["body"]]


async def test_on_the_insourcing_ticket_everything_before_completion_is_read_only_for_good(finished, insourcing):
    _, insourced, _ = finished
    for kind in KINDS:
        for item in await items(insourcing, insourced["id"], kind):
            if item["origin"] == "system":
                continue
            assert item["editable"] is False, item
    note = next(n for n in await items(insourcing, insourced["id"], "notes") if n["body"] == "partner-notes")
    refused = await insourcing.patch(f"/api/tickets/{insourced['id']}/notes/{note['id']}", json={"body": "x"})
    assert refused.status_code == 409 and "complete" in refused.json()["detail"]
    new = await add(insourcing, insourced["id"], "charges", "billing-prep")
    assert new["editable"] is True and new["shared"] is False


async def test_on_the_lead_ticket_the_partners_items_become_editable_except_time_entries(finished, lead, insourcing):
    lead_ticket, insourced, _ = finished
    for kind in ("notes", "charges", "attachments"):
        [item] = [i for i in await items(lead, lead_ticket["id"], kind) if labelled(f"partner-{kind}")(i)]
        assert item["editable"] is True
        edit = {"notes": {"body": "partner-notes (reviewed)"}, "charges": {"quantity": 7},
                "attachments": {"filename": "partner-attachments-final.txt"}}[kind]
        assert (await lead.patch(f"/api/tickets/{lead_ticket['id']}/{kind}/{item['id']}", json=edit)).status_code == 200
    for entry in await items(lead, lead_ticket["id"], "time-entries"):
        assert entry["editable"] is False
        refused = await lead.patch(f"/api/tickets/{lead_ticket['id']}/time-entries/{entry['id']}", json={"hours": 1})
        assert refused.status_code == 409 and "time entries" in refused.json()["detail"]
    # The lead's edits stay on the lead's ticket.
    await asyncio.sleep(1.0)
    assert [n["body"] for n in await items(insourcing, insourced["id"], "notes") if n["body"].startswith("partner-notes")] \
        == ["partner-notes"]


async def test_the_partners_hours_become_one_non_billable_charge_on_the_lead_ticket(finished, lead):
    lead_ticket, _, _ = finished
    charges = [c for c in await items(lead, lead_ticket["id"], "charges") if c["origin"] == "system"]
    assert len(charges) == 1
    assert charges[0]["quantity"] == 3.0 and charges[0]["billable"] is False  # 1.5 h + 1.5 h
    assert "Insourcing Partner" in charges[0]["name"]


# --- Races the design settles --------------------------------------------------------------------


async def test_the_partners_own_order_decides_what_crosses_around_insource_complete(lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    before = await add(insourcing, insourced["id"], "notes", "a moment before")
    await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    after = await add(insourcing, insourced["id"], "notes", "a moment after")
    assert before["shared"] is True and after["shared"] is False
    await arrived(lead, lead_ticket["id"], "notes", labelled("a moment before"))
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")
    assert not [n for n in await items(lead, lead_ticket["id"], "notes") if "a moment after" in n["body"]]


async def test_a_lead_item_sent_before_the_lead_heard_of_insource_complete_does_not_reach_the_partner(
    lead, insourcing, services
):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    bridge = services["sync_bridge"]
    bridge.proc.send_signal(signal.SIGSTOP)  # the lead cannot hear of Insource Complete for now
    try:
        await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
        crossing = await add(lead, lead_ticket["id"], "notes", "crossing in flight")
        assert crossing["shared"] is True  # as far as the lead knows, the link is active
    finally:
        bridge.proc.send_signal(signal.SIGCONT)
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")

    async def unshared():
        note = next(n for n in await items(lead, lead_ticket["id"], "notes") if n["id"] == crossing["id"])
        return note["shared"] is False

    await eventually(unshared, timeout=30)
    assert not [n for n in await items(insourcing, insourced["id"], "notes") if "crossing in flight" in n["body"]]


@pytest.mark.parametrize("first, second", [("approve", "approve"), ("complete", "complete"),
                                           ("approve", "reject"), ("approve", "complete")])
async def test_racing_decisions_have_exactly_one_winner(lead, insourcing, first, second):
    lead_ticket, insourced, _ = await waiting_approval(lead, insourcing)
    url = f"/api/tickets/{lead_ticket['id']}/outsource/"
    sha = (await lead.get(f"/api/tickets/{lead_ticket['id']}/statement")).json()["sha256"]
    bodies = {"reject": {"reason": "race"}, "approve": {"statement_sha256": sha}, "complete": None}
    answers = await asyncio.gather(lead.post(url + first, json=bodies[first]), lead.post(url + second, json=bodies[second]))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 409)
    assert "the status is" in loser.json()["detail"]
    winner = next(a for a in answers if a.status_code == 200).json()["status"]
    await insource_status(insourcing, insourced["id"], winner)


# --- Notifications -------------------------------------------------------------------------------


async def test_each_workflow_event_emails_the_partner_it_concerns(lead, insourcing, mailbox):
    ticket = await new_ticket(lead, title="Switch replacement")
    link_id = (await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": "insourcing-partner"})).json()["link_id"]
    [requested] = await mail(mailbox, INSOURCING_EMAIL, f"New work from Lead Partner: {ticket['number']}")
    assert "Switch replacement" in requested["subject"]
    await lead.post(f"/api/tickets/{ticket['id']}/outsource/cancel")
    await mail(mailbox, INSOURCING_EMAIL, f"Work canceled by Lead Partner: {ticket['number']}")

    declined_ticket = await new_ticket(lead, title="Cabling")
    link_id = (await lead.post(f"/api/tickets/{declined_ticket['id']}/outsource", json={"partner_id": "insourcing-partner"})).json()["link_id"]
    await mail(mailbox, INSOURCING_EMAIL, f"New work from Lead Partner: {declined_ticket['number']}")
    await insourcing.post(f"/api/received-work/{link_id}/decline", json={"reason": "No fibre tools"})
    [declined] = await mail(mailbox, LEAD_EMAIL, f"Outsourcing declined: {declined_ticket['number']}")
    assert "No fibre tools" in declined["body"]

    accepted_ticket, _, _ = await linked_tickets(lead, insourcing, title="VPN")
    await mail(mailbox, LEAD_EMAIL, f"Outsourcing accepted: {accepted_ticket['number']}")

    async def all_marked_sent():
        # The mail sink has the message as soon as DATA ends; the sender marks the row a moment later.
        listed = [n for n in (await lead.get("/api/notifications")).json() if n["ticket_id"] == accepted_ticket["id"]]
        return listed if listed and all(n["sent_at"] for n in listed) else None

    listed = await eventually(all_marked_sent)
    assert "work.accepted" in {n["kind"] for n in listed}


async def test_notifications_wait_out_an_smtp_outage_side_by_side_and_are_sent_once(lead, insourcing, mailbox):
    mailbox.stop()
    try:
        tickets = [await new_ticket(lead, title=f"Sent during the outage {n}") for n in (1, 2)]
        for ticket in tickets:
            await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": "insourcing-partner"})

        async def pending():
            # Each is tried again and again: one failing mail does not hold up the one behind it.
            listed = (await insourcing.get("/api/notifications")).json()
            mine = [n for n in listed if any(t["number"] in n["subject"] for t in tickets)]
            waiting = [n for n in mine if n["sent_at"] is None and n["attempts"] >= 2]
            return waiting if len(waiting) == 2 else None

        for waiting in await eventually(pending, timeout=30):
            assert waiting["to"] == INSOURCING_EMAIL and waiting["last_error"]
    finally:
        mailbox.start()
    for ticket in tickets:
        await mail(mailbox, INSOURCING_EMAIL, ticket["number"])

    async def sent():
        listed = (await insourcing.get("/api/notifications")).json()
        done = [n for n in listed if any(t["number"] in n["subject"] for t in tickets) and n["sent_at"]]
        return done if len(done) == 2 else None

    await eventually(sent, timeout=30)
    await asyncio.sleep(1.5)
    for ticket in tickets:
        assert len(mailbox.to(INSOURCING_EMAIL, ticket["number"])) == 1


async def test_the_partners_hours_are_charged_once_per_outsourcing(lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    await add(insourcing, insourced["id"], "time-entries", "first round")
    await arrived(lead, lead_ticket["id"], "time-entries", labelled("first round"))
    await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/complete")
    second = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource", json={"partner_id": "insourcing-partner"})
    link_id = second.json()["link_id"]
    await eventually(lambda: _pending(insourcing, link_id))
    insourced_again = (await insourcing.post(f"/api/received-work/{link_id}/accept")).json()["ticket_id"]
    await outsource_status(lead, lead_ticket["id"], "In Progress")
    await insourcing.post(f"/api/tickets/{insourced_again}/time-entries", json={**TIME_ENTRY, "hours": 2, "summary": "second round"})
    await arrived(lead, lead_ticket["id"], "time-entries", labelled("second round"))
    await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/complete")
    charges = [c["quantity"] for c in await items(lead, lead_ticket["id"], "charges") if c["origin"] == "system"]
    assert charges == [1.5, 2.0]


async def _pending(insourcing, link_id):
    work = await every(insourcing, "/api/received-work", status="Pending")
    return any(w["link_id"] == link_id for w in work)


async def test_while_waiting_for_approval_the_leads_shared_items_are_read_only_too(lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    shared = await add(lead, lead_ticket["id"], "notes", "agreed wording")
    await arrived(insourcing, insourced["id"], "notes", labelled("agreed wording"))
    await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")
    refused = await lead.patch(f"/api/tickets/{lead_ticket['id']}/notes/{shared['id']}", json={"body": "changed"})
    assert refused.status_code == 409 and "suspended" in refused.json()["detail"]
    await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={"reason": "one more thing"})
    edited = await lead.patch(f"/api/tickets/{lead_ticket['id']}/notes/{shared['id']}", json={"body": "changed"})
    assert edited.status_code == 200
    await arrived(insourcing, insourced["id"], "notes", labelled("changed"))


async def test_an_attachment_racing_completion_either_arrives_whole_or_is_marked_not_shared(lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    content = bytes(range(256)) * (12 * 1024)  # 3 MiB: several chunks
    sent = (await insourcing.post(f"/api/tickets/{insourced['id']}/attachments",
                                  files={"file": ("racing.bin", content)})).json()
    await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/complete")
    await insource_status(insourcing, insourced["id"], "Complete")

    async def settled():
        on_lead = [a for a in await items(lead, lead_ticket["id"], "attachments") if a["filename"] == "racing.bin"]
        if on_lead:
            body = (await lead.get(f"/api/tickets/{lead_ticket['id']}/attachments/{on_lead[0]['id']}/content")).content
            return body == content
        mine = next(a for a in await items(insourcing, insourced["id"], "attachments") if a["id"] == sent["id"])
        return mine["shared"] is False

    await eventually(settled, timeout=30)
