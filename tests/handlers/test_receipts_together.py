"""Receipts that arrive together are applied set-based (issue 30), with exactly the effects of applying
them one at a time: the lead's real inbox and handler on a real database, records signed as the bridge
signs them. The same receipts go to two twin pairs of links, one batch applied together and one
message at a time, and each item, tombstone and link ends the same on both."""
import itertools

import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select

from shared.contracts.envelope import envelope
from shared.contracts.messages import ItemDelivered, WorkAccepted
from shared.domain.partner_sync import ItemDeletion, LinkSync
from shared.domain.tickets.models import TicketItem
from shared.domain.tickets.rules import ItemKind
from shared.domain.tickets.service import add_item, delete_item, update_item
from shared.platform.inbox import InboxConsumer
from shared.platform.kafka import inbound_topic
from shared.platform.signing import KeyRing, Signatures
from tests.handlers.sides import LEAD, PARTNER, Side, outsourced

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEYS = Signatures.per_partner({LEAD: KeyRing.parse(KeyRing.generate()), PARTNER: KeyRing.parse(KeyRing.generate())})
TOPIC = inbound_topic(LEAD)
_offsets = itertools.count(50_000)


def record(payload) -> ConsumerRecord:
    value = envelope(payload, source="bridge", link_id=payload.link_id).to_bytes()
    return ConsumerRecord(TOPIC, 0, next(_offsets), 1_700_000_000_000, 0, payload.link_id.encode(), value, None,
                          36, len(value), tuple(KEYS.sign(TOPIC, value)))


async def note(lead: Side, ticket_id: str, body: str) -> TicketItem:
    return await lead.call(add_item, lead.service.mirroring, ticket_id, ItemKind.NOTE, {"title": "", "body": body}, False)


async def pair_of_links(lead: Side) -> dict:
    """Two links in progress: on the first, two notes, a note edited since it was sent (version 2) and a
    shared note deleted (its tombstone waits for the receipt); on the second, two notes."""
    made = {}
    for name in ("a", "b"):
        ticket_id, link_id = await outsourced(lead)
        await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-7"))
        made[name] = (ticket_id, link_id)
    (a_ticket, a), (b_ticket, b) = made["a"], made["b"]
    notes = {name: await note(lead, a_ticket, name) for name in ("n1", "n2", "edited", "deleted")}
    notes |= {name: await note(lead, b_ticket, name) for name in ("m1", "m2")}
    await lead.call(update_item, lead.service.mirroring, a_ticket, ItemKind.NOTE, notes["edited"].id, {"body": "v2"})
    await lead.call(delete_item, lead.service.mirroring, a_ticket, ItemKind.NOTE, notes["deleted"].id)
    return {"links": (a, b), "notes": notes}


def receipts(made: dict) -> list[ItemDelivered]:
    """What the bridge sends back, the two links interleaved; the edited note's receipt is for the
    version before the edit (it stays pending), the deleted note's for its deletion."""
    a, b = made["links"]
    n = made["notes"]
    return [ItemDelivered(link_id=a, item_id=n["n1"].id, version=1),
            ItemDelivered(link_id=b, item_id=n["m1"].id, version=1),
            ItemDelivered(link_id=a, item_id=n["n2"].id, version=1),
            ItemDelivered(link_id=a, item_id=n["edited"].id, version=1),
            ItemDelivered(link_id=a, item_id=n["deleted"].id, version=2),
            ItemDelivered(link_id=b, item_id=n["m2"].id, version=1)]


async def outcome(lead: Side, made: dict) -> dict:
    """What a user and the sync watch see: each note's delivery, the tombstones left, and per link
    whether something still waits and whether a message was noted as received."""
    async with lead.sessions() as session:
        notes = {name: await session.get(TicketItem, item.id) for name, item in made["notes"].items()}
        tombstones = set(await session.scalars(select(ItemDeletion.item_id).where(
            ItemDeletion.link_id.in_(made["links"]))))
        links = [await session.get(LinkSync, link_id) for link_id in made["links"]]
    return {
        "delivery": {name: item and item.delivery_status for name, item in notes.items()},
        "tombstones": {name for name, item in made["notes"].items() if item.id in tombstones},
        "links": [(row.pending_since is not None, row.last_received_at is not None) for row in links],
    }


async def test_receipts_applied_together_end_as_receipts_applied_one_at_a_time(lead):
    together, alone = await pair_of_links(lead), await pair_of_links(lead)
    inbox = InboxConsumer(lead.sessions, None, lead.handle, name="lead_partner", signatures=KEYS,
                          together=lead.service.sync.together())
    await inbox.handle_batch([record(r) for r in receipts(together)])
    for receipt in receipts(alone):
        await inbox.handle(record(receipt))

    expected = {
        "delivery": {"n1": "delivered", "n2": "delivered", "edited": "pending", "deleted": None,
                     "m1": "delivered", "m2": "delivered"},
        "tombstones": set(),
        "links": [(True, True), (False, True)],  # the first link's edit still waits for its receipt
    }
    assert await outcome(lead, together) == expected
    assert await outcome(lead, alone) == expected
    assert inbox.applied_total == 12 and inbox.parked_total == 0


async def test_a_receipt_batch_applied_again_changes_nothing(lead):
    made = await pair_of_links(lead)
    inbox = InboxConsumer(lead.sessions, None, lead.handle, name="lead_partner", signatures=KEYS,
                          together=lead.service.sync.together())
    batch = [record(r) for r in receipts(made)]
    await inbox.handle_batch(batch)
    before = await outcome(lead, made)
    await inbox.handle_batch(batch)  # a replay after a crash: the inbox knows every id
    assert await outcome(lead, made) == before
    assert (inbox.applied_total, inbox.duplicates_total) == (6, 6)

