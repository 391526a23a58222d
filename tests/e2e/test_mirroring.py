"""SPEC section 4 while the link is active: every item kind crosses in both directions, edits and
deletes by the creator follow, mirrors are read-only, internal items never leave."""
import asyncio
import hashlib
import os

import pytest

from tests.e2e.flows import arrived, items, linked_tickets, new_ticket, outsource, outsource_status, received
from tests.harness import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.broker]  # also run on Tansu

TIME_ENTRY = {"resource": "Ana", "date_worked": "2026-11-20", "hours": 2.5, "summary": "Swapped the PSU"}
CHARGE = {"name": "PSU 550W", "quantity": 1, "unit_price": 79.5}


@pytest.fixture
async def link(lead, insourcing):
    return await linked_tickets(lead, insourcing)


async def test_a_lead_note_appears_on_the_insourced_ticket_read_only(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    sent = (await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"title": "Call", "body": "Door code 1234"})).json()
    assert sent["shared"] is True
    [mirror] = await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "Door code 1234")
    assert (mirror["title"], mirror["origin"], mirror["shared"], mirror["editable"]) == ("Call", "partner", True, False)
    refused = await insourcing.patch(f"/api/tickets/{insourced['id']}/notes/{mirror['id']}", json={"body": "x"})
    assert refused.status_code == 409 and "read-only" in refused.json()["detail"]
    assert (await insourcing.delete(f"/api/tickets/{insourced['id']}/notes/{mirror['id']}")).status_code == 409


async def test_a_partner_note_arrives_on_the_lead_ticket_as_an_internal_note(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "Found a bad cable"})
    [mirror] = await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "Found a bad cable")
    assert mirror["internal"] is True and mirror["origin"] == "partner" and mirror["editable"] is False


async def test_a_lead_time_entry_arrives_as_a_note_that_describes_it(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    await lead.post(f"/api/tickets/{lead_ticket['id']}/time-entries", json=TIME_ENTRY)
    [note] = await arrived(insourcing, insourced["id"], "notes", lambda n: "Swapped the PSU" in n["body"])
    for fact in ("Ana", "2.5", "2026-11-20"):
        assert fact in note["body"]
    assert await items(insourcing, insourced["id"], "time-entries") == []


async def test_a_partner_time_entry_arrives_on_the_lead_as_a_read_only_time_entry(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    await insourcing.post(f"/api/tickets/{insourced['id']}/time-entries", json=TIME_ENTRY)
    [entry] = await arrived(lead, lead_ticket["id"], "time-entries", lambda e: e["summary"] == "Swapped the PSU")
    assert (entry["hours"], entry["resource"], entry["origin"], entry["editable"]) == (2.5, "Ana", "partner", False)


@pytest.mark.parametrize("direction", ["lead to partner", "partner to lead"])
async def test_charges_cross_in_both_directions(lead, insourcing, link, direction):
    lead_ticket, insourced, _ = link
    source, target, source_id, target_id = (
        (lead, insourcing, lead_ticket["id"], insourced["id"]) if direction == "lead to partner"
        else (insourcing, lead, insourced["id"], lead_ticket["id"])
    )
    await source.post(f"/api/tickets/{source_id}/charges", json=CHARGE)
    [charge] = await arrived(target, target_id, "charges", lambda c: c["name"] == "PSU 550W")
    assert (charge["quantity"], charge["unit_price"], charge["origin"]) == (1.0, 79.5, "partner")


@pytest.mark.parametrize("direction", ["lead to partner", "partner to lead"])
async def test_a_10_mib_attachment_crosses_with_identical_bytes(lead, insourcing, link, direction):
    lead_ticket, insourced, _ = link
    source, target, source_id, target_id = (
        (lead, insourcing, lead_ticket["id"], insourced["id"]) if direction == "lead to partner"
        else (insourcing, lead, insourced["id"], lead_ticket["id"])
    )
    content = os.urandom(10 * 1024 * 1024)  # 10 MiB: far over Kafka's 1 MiB message limit
    sent = await source.post(f"/api/tickets/{source_id}/attachments",
                             files={"file": ("dump.bin", content, "application/octet-stream")})
    assert sent.status_code == 201
    [mirror] = await arrived(target, target_id, "attachments", lambda a: a["filename"] == "dump.bin")
    assert mirror["sha256"] == hashlib.sha256(content).hexdigest() and mirror["size"] == len(content)
    body = (await target.get(f"/api/tickets/{target_id}/attachments/{mirror['id']}/content")).content
    assert body == content


async def test_a_small_and_an_empty_attachment_cross_too(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    await lead.post(f"/api/tickets/{lead_ticket['id']}/attachments", files={"file": ("a.txt", b"hello", "text/plain")})
    await lead.post(f"/api/tickets/{lead_ticket['id']}/attachments", files={"file": ("empty.txt", b"", "text/plain")})
    found = await arrived(insourcing, insourced["id"], "attachments", lambda a: True, count=2)
    assert sorted((a["filename"], a["size"]) for a in found) == [("a.txt", 5), ("empty.txt", 0)]


async def test_edits_and_deletes_by_the_creator_follow_the_item(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    note = (await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "first draft"})).json()
    await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "first draft")
    edited = await insourcing.patch(f"/api/tickets/{insourced['id']}/notes/{note['id']}", json={"body": "final"})
    assert edited.status_code == 200
    await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "final")
    assert not [n for n in await items(lead, lead_ticket["id"], "notes") if n["body"] == "first draft"]

    charge = (await lead.post(f"/api/tickets/{lead_ticket['id']}/charges", json=CHARGE)).json()
    await arrived(insourcing, insourced["id"], "charges", lambda c: c["name"] == "PSU 550W")
    await lead.patch(f"/api/tickets/{lead_ticket['id']}/charges/{charge['id']}", json={"quantity": 3})
    await arrived(insourcing, insourced["id"], "charges", lambda c: c["quantity"] == 3.0)
    assert (await lead.delete(f"/api/tickets/{lead_ticket['id']}/charges/{charge['id']}")).status_code == 204
    await eventually(lambda: _none(insourcing, insourced["id"], "charges"))


async def _none(client, ticket_id, kind):
    return await items(client, ticket_id, kind) == []


async def test_an_edited_lead_time_entry_updates_its_note_at_the_partner(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    entry = (await lead.post(f"/api/tickets/{lead_ticket['id']}/time-entries", json=TIME_ENTRY)).json()
    await arrived(insourcing, insourced["id"], "notes", lambda n: "Swapped the PSU" in n["body"])
    await lead.patch(f"/api/tickets/{lead_ticket['id']}/time-entries/{entry['id']}", json={"summary": "Replaced the PSU"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: "Replaced the PSU" in n["body"])
    assert not [n for n in await items(insourcing, insourced["id"], "notes") if "Swapped the PSU" in n["body"]]


async def test_internal_items_never_leave_their_side(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "customer is difficult", "internal": True})
    await lead.post(f"/api/tickets/{lead_ticket['id']}/charges", json={**CHARGE, "name": "margin", "internal": True})
    await insourcing.post(f"/api/tickets/{insourced['id']}/time-entries", json={**TIME_ENTRY, "internal": True})
    await insourcing.post(f"/api/tickets/{insourced['id']}/attachments",
                          files={"file": ("secret.txt", b"x", "text/plain")}, data={"internal": "true"})
    # A public note sent after them: once it has crossed, anything internal would have crossed too.
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "public marker"})
    await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "partner marker"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "public marker")
    await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "partner marker")
    assert not [n for n in await items(insourcing, insourced["id"], "notes") if "difficult" in n["body"]]
    assert await items(insourcing, insourced["id"], "charges") == []
    assert await items(lead, lead_ticket["id"], "time-entries") == []
    assert await items(lead, lead_ticket["id"], "attachments") == []
    internal = [n for n in await items(lead, lead_ticket["id"], "notes") if n["internal"] and n["origin"] == "local"]
    assert internal and internal[0]["shared"] is False


async def test_system_notes_are_never_mirrored(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "marker"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "marker")
    partner_notes = await items(insourcing, insourced["id"], "notes")
    assert all(n["origin"] != "partner" or n["body"] == "marker" for n in partner_notes)
    assert not [n for n in await items(lead, lead_ticket["id"], "notes") if n["origin"] == "partner"]


async def test_items_added_before_the_partner_accepts_stay_local(lead, insourcing):
    ticket = await new_ticket(lead)
    link_id = (await outsource(lead, ticket["id"]))["link_id"]
    early = (await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "before acceptance"})).json()
    assert early["shared"] is False
    await received(insourcing, link_id, "Pending")
    insourced_id = (await insourcing.post(f"/api/received-work/{link_id}/accept")).json()["ticket_id"]
    await outsource_status(lead, ticket["id"], "In Progress")
    await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "after acceptance"})
    await arrived(insourcing, insourced_id, "notes", lambda n: n["body"] == "after acceptance")
    assert not [n for n in await items(insourcing, insourced_id, "notes") if n["body"] == "before acceptance"]


async def test_many_items_arrive_exactly_once_and_in_order(lead, insourcing, link):
    lead_ticket, insourced, _ = link
    bodies = [f"step {n:02d}" for n in range(40)]
    for body in bodies:
        await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": body})
    found = await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"].startswith("step "), count=40)
    assert [n["body"] for n in found] == bodies


async def test_concurrent_writes_on_both_sides_all_arrive(lead, insourcing, link, bridge):
    lead_ticket, insourced, link_id = link
    await asyncio.gather(
        *[lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": f"lead {n}"}) for n in range(15)],
        *[insourcing.post(f"/api/tickets/{insourced['id']}/charges", json={**CHARGE, "name": f"part {n}"})
          for n in range(15)],
    )
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"].startswith("lead "), count=15)
    await arrived(lead, lead_ticket["id"], "charges", lambda c: c["name"].startswith("part "), count=15)
    counts = (await bridge.get(f"/api/links/{link_id}")).json()
    assert (counts["mirrored_to_insourcing"], counts["mirrored_to_lead"]) == (15, 15)
