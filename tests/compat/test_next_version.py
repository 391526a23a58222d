"""A partner one release ahead (SPEC section 11): its messages carry optional fields this release does
not know, in the envelope, the payload, a nested part and an item's fields. Today's bridge and today's
partner apply them (ignoring what they do not know), and park nothing."""
import json
import uuid

import pytest

from shared.contracts.envelope import envelope
from shared.contracts.messages import ItemCreated, Terms, WorkRequested
from shared.platform.kafka import inbound_topic, outbound_topic
from tests.e2e.flows import arrived, linked_tickets, received
from tests.harness import kafka_write

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEAD, PARTNER = "lead-partner", "insourcing-partner"


def next_release(message_payload, *, source: str, link_id: str, **extra) -> tuple[bytes, str]:
    """The message as the next release writes it: one more optional field at each level named."""
    message = json.loads(envelope(message_payload, source=source, link_id=link_id).to_bytes())
    message["trace_id"] = "4bf92f3577b34da6"
    for where, fields in extra.items():
        part = message["payload"]
        for step in where.split("__")[1:]:
            part = part[step]
        part |= fields
    return json.dumps(message).encode(), message["event_id"]


async def parked(client, event_id: str) -> list:
    return [d for d in (await client.get("/api/dead-letters", params={"limit": 500})).json() if d["event_id"] == event_id]


async def test_an_item_a_partner_of_the_next_release_sends_reaches_the_other_side(
        lead, insourcing, bridge, infrastructure, signatures):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    note = ItemCreated(link_id=link_id, item_id=str(uuid.uuid4()), kind="note",
                       fields={"title": "From the next release", "body": "Fan replaced; airflow normal"})
    value, event_id = next_release(note, source=LEAD, link_id=link_id,
                                   payload={"priority": "high"}, payload__fields={"mood": "calm"})
    topic = outbound_topic(LEAD)
    await kafka_write(infrastructure.kafka_admin, topic, value, signatures.sign(topic, value), key=link_id.encode())

    [mirror] = await arrived(insourcing, insourced["id"], "notes", lambda n: n["title"] == "From the next release")
    assert mirror["body"] == "Fan replaced; airflow normal" and "mood" not in json.dumps(mirror)
    assert await parked(bridge, event_id) == []


async def test_work_the_bridge_of_the_next_release_sends_is_received_by_todays_partner(
        insourcing, infrastructure, signatures):
    link_id = str(uuid.uuid4())
    work = WorkRequested(link_id=link_id, lead_partner_id=LEAD, lead_partner_name="Lead Partner",
                         lead_ticket_number="T-9001", title="Badge reader offline", description="Lobby door",
                         instructions="Bring a spare reader", terms=Terms(rate_type="hourly", rate=95))
    value, event_id = next_release(work, source="bridge", link_id=link_id,
                                   payload={"sla_hours": 4}, payload__terms={"discount_code": "SPRING"})
    topic = inbound_topic(PARTNER)
    await kafka_write(infrastructure.kafka_admin, topic, value, signatures.sign(topic, value), key=link_id.encode())

    received_work = await received(insourcing, link_id, "Pending")
    assert (received_work["title"], received_work["instructions"]) == ("Badge reader offline", "Bring a spare reader")
    assert await parked(insourcing, event_id) == []
