"""Receipts that arrive together are applied set-based (issue 30), with exactly the effects of applying
them one at a time: the lead's and the bridge's real inbox and handler on a real database, records
signed as their senders sign them. The same receipts go to twin links, one batch applied together and
one message at a time, and each item, tombstone, link and message passed on ends the same on both."""
import itertools
import uuid

import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select

from services.sync_bridge.mirroring import MIRROR_NAMESPACE
from services.sync_bridge.models import ItemMirror, Link
from services.sync_bridge.reconciliation import start_round
from shared.contracts.envelope import envelope, parse
from shared.contracts.messages import ItemDelivered, MirrorApplied, WorkAccepted
from shared.domain.partner_sync import ItemDeletion, LinkSync
from shared.domain.tickets.models import TicketItem
from shared.domain.tickets.rules import ItemKind
from shared.domain.tickets.service import add_item, delete_item, update_item
from shared.platform.inbox import InboxConsumer
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.outbox import OutboxMessage
from shared.platform.signing import KeyRing, Signatures
from tests.handlers.sides import LEAD, PARTNER, Side, active_link, from_partner, note, outsourced

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEYS = Signatures.per_partner({LEAD: KeyRing.parse(KeyRing.generate()), PARTNER: KeyRing.parse(KeyRing.generate())})
TOPIC = inbound_topic(LEAD)
_offsets = itertools.count(50_000)


def record(payload) -> ConsumerRecord:
    value = envelope(payload, source="bridge", link_id=payload.link_id).to_bytes()
    return ConsumerRecord(TOPIC, 0, next(_offsets), 1_700_000_000_000, 0, payload.link_id.encode(), value, None,
                          36, len(value), tuple(KEYS.sign(TOPIC, value)))


async def lead_note(lead: Side, ticket_id: str, body: str) -> TicketItem:
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
    notes = {name: await lead_note(lead, a_ticket, name) for name in ("n1", "n2", "edited", "deleted")}
    notes |= {name: await lead_note(lead, b_ticket, name) for name in ("m1", "m2")}
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



# --- the bridge: partners' receipts (mirror.applied) passed on to the items' creators -----------------

PARTNER_OUT = outbound_topic(PARTNER)


def from_the_partner(payload) -> ConsumerRecord:
    value = envelope(payload, source=PARTNER, link_id=payload.link_id).to_bytes()
    return ConsumerRecord(PARTNER_OUT, 0, next(_offsets), 1_700_000_000_000, 0, payload.link_id.encode(), value, None,
                          36, len(value), tuple(KEYS.sign(PARTNER_OUT, value)))


async def links_with_items(bridge: Side) -> tuple[list[str], list[tuple[str, str]], str]:
    """Two active links, three notes of the lead passed on over each (the second in a reconciliation
    round); (links, (link, item) of each note, the round)."""
    links, items = [await active_link(bridge), await active_link(bridge)], []
    for link_id in links:
        for n in range(3):
            item_id = str(uuid.uuid4())
            await from_partner(bridge, LEAD, note(link_id, item_id, f"note {n}"))
            items.append((link_id, item_id))
    async with bridge.sessions() as session, session.begin():
        round_id = await start_round(session, await session.get(Link, links[1], with_for_update=True))
    return links, items, round_id


def applied(items: list[tuple[str, str]]) -> list[MirrorApplied]:
    """The partner's receipts, the links interleaved, the first note's twice (two versions)."""
    order = [items[0], items[3], items[1], items[4], items[2], items[5]]
    out = [MirrorApplied(link_id=link_id, mirror_id=str(uuid.uuid5(MIRROR_NAMESPACE, f"{link_id}:{item_id}")),
                         source_version=1) for link_id, item_id in order]
    return [*out, out[0].model_copy(update={"source_version": 2})]


async def passed_on(bridge: Side, links: list[str]) -> dict:
    """What the items' creator will read, per link in order, as (item position, version); and which
    mirrors are noted as receipted during the round."""
    async with bridge.sessions() as session:
        rows = (await session.execute(select(OutboxMessage.key, OutboxMessage.value).where(
            OutboxMessage.key.in_(links), OutboxMessage.type == "item.delivered").order_by(OutboxMessage.id))).all()
        in_round = set(await session.scalars(select(ItemMirror.source_item_id).where(
            ItemMirror.link_id.in_(links), ItemMirror.receipt_in_round.is_not(None))))
    return {"delivered": [(links.index(key), parse(value)[1].item_id, parse(value)[1].version) for key, value in rows],
            "receipted in the round": in_round}


async def test_the_bridge_passes_on_receipts_together_as_it_passes_them_one_at_a_time(bridge):
    (together_links, together_items, _), (alone_links, alone_items, _) = \
        await links_with_items(bridge), await links_with_items(bridge)
    inbox = InboxConsumer(bridge.sessions, None, bridge.handle, name="sync_bridge", signatures=KEYS,
                          together=bridge.service.together())
    await inbox.handle_batch([from_the_partner(r) for r in applied(together_items)])
    for receipt in applied(alone_items):
        await inbox.handle(from_the_partner(receipt))

    order, versions = [0, 3, 1, 4, 2, 5, 0], [1, 1, 1, 1, 1, 1, 2]
    for links, items in ((together_links, together_items), (alone_links, alone_items)):
        outcome = await passed_on(bridge, links)
        assert outcome["delivered"] == [(links.index(items[n][0]), items[n][1], v) for n, v in zip(order, versions)]
        assert outcome["receipted in the round"] == {item_id for _, item_id in items[3:]}  # the second link's
    assert (inbox.applied_total, inbox.parked_total) == (14, 0)


async def test_a_forged_receipt_among_others_is_parked_alone_and_the_others_pass(bridge):
    links, items, _ = await links_with_items(bridge)
    receipts = applied(items)
    forged = MirrorApplied(link_id=links[0], mirror_id=str(uuid.uuid4()), source_version=1)  # no such mirror
    inbox = InboxConsumer(bridge.sessions, None, bridge.handle, name="sync_bridge", signatures=KEYS,
                          together=bridge.service.together())
    await inbox.handle_batch([from_the_partner(r) for r in [*receipts[:3], forged, *receipts[3:]]])
    assert (inbox.applied_total, inbox.parked_total) == (7, 1)
    assert len((await passed_on(bridge, links))["delivered"]) == 7
