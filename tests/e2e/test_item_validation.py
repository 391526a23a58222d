"""Every door validates, through the real services: bad mirrors planted on a partner's inbound topic
(signed as the bridge) are refused and every read of the ticket still answers 200, the lead can still
complete it; a mirror the partner refuses shows `refused` with the reason on its creator's item;
attachment names and content types have limits at upload, and what the API accepts crosses; the note
made of the longest lead time entry fits a note; terms refuse numbers that are not finite."""
import uuid

import pytest

from services.sync_bridge.mirroring import CUT, MIRROR_NAMESPACE
from shared.contracts.messages import MirrorUpsert
from shared.domain.tickets.schemas import MAX_TEXT, MAX_TITLE
from shared.platform.kafka import inbound_topic
from tests.e2e.flows import arrived, items, linked_tickets, new_ticket
from tests.e2e.test_dead_letters import from_bridge, produce
from tests.e2e.test_sync_guarantees import delivery
from tests.handlers.test_item_validation import BAD_MIRRORS

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.broker]  # also run on Tansu
LEAD, PARTNER = "lead-partner", "insourcing-partner"
KINDS = ("notes", "time-entries", "charges", "attachments")


async def test_bad_mirrors_planted_on_a_partners_inbound_topic_are_refused_and_every_read_still_answers(
        lead, insourcing, infrastructure, signatures):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    planted = {LEAD: [], PARTNER: []}
    for kind, fields in BAD_MIRRORS.values():
        for partner in (LEAD, PARTNER):
            mirror = MirrorUpsert(link_id=link_id, mirror_id=str(uuid.uuid4()), kind=kind, fields=fields,
                                  chunk_count=1 if kind == "attachment" else 0)
            await produce(infrastructure, inbound_topic(partner), from_bridge(mirror), signatures)
            planted[partner].append(mirror.mirror_id)
    # Markers after them on the same ordered stream: once they are in, the planted ones were handled.
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "lead marker"})
    await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "partner marker"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "lead marker")
    await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "partner marker")

    for client, ticket_id, partner in ((lead, lead_ticket["id"], LEAD), (insourcing, insourced["id"], PARTNER)):
        for kind in KINDS:
            held = await items(client, ticket_id, kind)  # 200, or items() fails the test
            assert not {i["id"] for i in held} & set(planted[partner])
        letters = (await client.get("/api/dead-letters")).json()
        assert not [d for d in letters if d["key"] == link_id]  # refused with a reason, not failed and parked
    completed = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/complete")
    assert completed.status_code == 200, completed.text


async def test_a_mirror_the_partner_refuses_shows_refused_with_the_reason_on_the_creators_item(
        lead, insourcing, infrastructure, signatures):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    sent = (await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "door code 1234"})).json()
    await delivery(lead, lead_ticket["id"], "notes", sent["id"], "delivered")
    # The bridge's mirror of that version, altered as a bug in the bridge would alter it.
    mirror_id = str(uuid.uuid5(MIRROR_NAMESPACE, f"{link_id}:{sent['id']}"))
    broken = MirrorUpsert(link_id=link_id, mirror_id=mirror_id, kind="note", fields={"title": "", "body": "x" * 200_000})
    await produce(infrastructure, inbound_topic(PARTNER), from_bridge(broken), signatures)

    refused = await delivery(lead, lead_ticket["id"], "notes", sent["id"], "refused")
    assert refused["delivery"]["reason"].startswith(
        "the partner did not store it: invalid note: body: String should have at most 32000 characters")
    [mirror] = [n for n in await items(insourcing, insourced["id"], "notes") if n["id"] == mirror_id]
    assert mirror["body"] == "door code 1234"  # the partner keeps the version it had


@pytest.mark.parametrize("filename, content_type, field", [
    ("a" * 256, "text/plain", "file.filename"),
    ("a" * 4_000, "text/plain", "file.filename"),
    ("      ", "text/plain", "file.filename"),
    ("report.txt", "a/" + "b" * 298, "file.content_type"),
])
async def test_an_attachment_name_or_content_type_over_the_limits_is_a_422_naming_it_and_nothing_is_stored(
        lead, filename, content_type, field):
    ticket = await new_ticket(lead)
    answer = await lead.post(f"/api/tickets/{ticket['id']}/attachments",
                             files={"file": (filename, b"hello", content_type)})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == field and answer.json()["detail"].startswith(f"{field}: ")
    assert await items(lead, ticket["id"], "attachments") == []


async def test_an_attachment_at_the_limits_the_api_accepts_crosses_and_is_delivered(lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    name = "n" * (MAX_TITLE - 4) + ".txt"
    sent = await lead.post(f"/api/tickets/{lead_ticket['id']}/attachments",
                           files={"file": (name, b"hello", "text/plain; charset=" + "x" * 200)})
    assert sent.status_code == 201, sent.text
    await arrived(insourcing, insourced["id"], "attachments", lambda a: a["filename"] == name)
    await delivery(lead, lead_ticket["id"], "attachments", sent.json()["id"], "delivered")


async def test_the_longest_lead_time_entry_arrives_as_a_note_within_a_notes_limits_cut_with_a_marker(lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    resource = "R" * MAX_TITLE
    entry = await lead.post(f"/api/tickets/{lead_ticket['id']}/time-entries", json={
        "resource": resource, "date_worked": "2026-11-20", "hours": 8, "summary": "s" * MAX_TEXT})
    assert entry.status_code == 201, entry.text
    [note] = await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"].startswith(resource))
    assert len(note["title"]) == MAX_TITLE and len(note["body"]) == MAX_TEXT
    assert note["title"].endswith(CUT) and note["body"].endswith(CUT) and " worked 8 h on 2026-11-20 " in note["body"]
    await delivery(lead, lead_ticket["id"], "time-entries", entry.json()["id"], "delivered")


@pytest.mark.parametrize("rate", ["Infinity", "1e400", "NaN", "-Infinity"])
async def test_terms_with_a_rate_that_is_not_a_finite_number_are_a_422_on_the_rate(lead, rate):
    ticket = await new_ticket(lead)
    body = f'{{"partner_id": "{PARTNER}", "terms": {{"rate_type": "hourly", "rate": {rate}}}}}'
    answer = await lead.post(f"/api/tickets/{ticket['id']}/outsource", content=body,
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "terms.rate"
    assert (await lead.get(f"/api/tickets/{ticket['id']}")).json()["outsource"] is None
