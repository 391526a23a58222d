"""Messages that arrive together are applied set-based (issue 30), with exactly the effects of applying
them one at a time: receipts (the lead's item.delivered, the bridge's mirror.applied), the bridge
passing new items on (item.created) and a partner storing mirrors (mirror.upsert). Each side's real
inbox and handler on a real database, records signed as their senders sign them. The same messages go
to twin links, one batch applied together and one message at a time, with the cases the set-based path
hands back to the handler among them (fields refused, a link not crossing, an attachment, a version of
a mirror already held), and each item, tombstone, link and message passed on ends the same on both."""
import itertools
import uuid
from datetime import datetime

import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select

from services.sync_bridge.mirroring import MIRROR_NAMESPACE
from services.sync_bridge.models import ItemMirror, Link
from services.sync_bridge.reconciliation import start_round
from shared.contracts.envelope import envelope, parse
from shared.contracts.messages import (
    ItemCreated,
    ItemDelivered,
    MirrorApplied,
    MirrorUpsert,
    WorkAccepted,
    WorkDeclined,
)
from shared.domain.partner_sync import ItemDeletion, LinkSync
from shared.domain.tickets.models import TicketItem
from shared.domain.tickets.rules import ItemKind
from shared.domain.tickets.service import add_item, delete_item, update_item
from shared.platform.db import utcnow
from shared.platform.inbox import InboxConsumer
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.outbox import OutboxMessage
from shared.platform.signing import KeyRing, Signatures
from tests.handlers.sides import (
    LEAD,
    PARTNER,
    Side,
    accepted_work,
    active_link,
    from_partner,
    note,
    outsourced,
    pending_link,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEYS = Signatures.per_partner({LEAD: KeyRing.parse(KeyRing.generate()), PARTNER: KeyRing.parse(KeyRing.generate())})
TOPIC = inbound_topic(LEAD)
_offsets = itertools.count(50_000)


def signed(payload, topic: str, source: str) -> ConsumerRecord:
    """A message as its sender writes it on `topic`, signed, as aiokafka hands it over."""
    value = envelope(payload, source=source, link_id=payload.link_id).to_bytes()
    return ConsumerRecord(topic, 0, next(_offsets), 1_700_000_000_000, 0, payload.link_id.encode(), value, None,
                          36, len(value), tuple(KEYS.sign(topic, value)))


def record(payload) -> ConsumerRecord:
    return signed(payload, TOPIC, "bridge")


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
    assert (inbox.applied_total, inbox.parked_total, inbox.batches_split_total) == (12, 0, 0)  # applied together


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
    return signed(payload, PARTNER_OUT, PARTNER)


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
    assert (inbox.applied_total, inbox.parked_total, inbox.batches_split_total) == (14, 0, 0)


async def test_a_forged_receipt_among_others_is_parked_alone_and_the_others_pass(bridge):
    links, items, _ = await links_with_items(bridge)
    receipts = applied(items)
    forged = MirrorApplied(link_id=links[0], mirror_id=str(uuid.uuid4()), source_version=1)  # no such mirror
    inbox = InboxConsumer(bridge.sessions, None, bridge.handle, name="sync_bridge", signatures=KEYS,
                          together=bridge.service.together())
    await inbox.handle_batch([from_the_partner(r) for r in [*receipts[:3], forged, *receipts[3:]]])
    assert (inbox.applied_total, inbox.parked_total, inbox.batches_split_total) == (7, 1, 1)
    assert len((await passed_on(bridge, links))["delivered"]) == 7


# --- a partner: mirrors (mirror.upsert) stored -----------------------------------------------------

IN_PARTNER = inbound_topic(PARTNER)


def to_the_partner(payload) -> ConsumerRecord:
    return signed(payload, IN_PARTNER, "bridge")


async def three_links(insourcing: Side) -> list[tuple[str, str]]:
    """(link, ticket): two in progress, and one whose Insource Complete waits for the lead's approval."""
    links = [await accepted_work(insourcing) for _ in range(3)]
    await insourcing.call(insourcing.service.request_approval, links[2][1])
    return links


def upserts(links: list[tuple[str, str]]) -> list[MirrorUpsert]:
    """New notes on the two active links, interleaved; a note's second version right after its first; a
    charge; fields this side refuses; an attachment (stored once its chunks arrive); and a new note on
    the link that waits for approval (refused: synchronization is suspended here)."""
    (a, _), (b, _), (waiting, _) = links
    ids = [str(uuid.uuid4()) for _ in range(8)]

    def upsert(link_id: str, n: int, kind: str = "note", **changes) -> MirrorUpsert:
        fields = {"title": "", "body": f"note {n}"} if kind == "note" else {}
        return MirrorUpsert(link_id=link_id, mirror_id=ids[n], kind=kind, fields=fields, source_hash=f"h{n}") \
            .model_copy(update=changes)

    return [upsert(a, 0), upsert(b, 1), upsert(a, 0, fields={"title": "", "body": "note 0, edited"}, source_version=2),
            upsert(a, 2), upsert(b, 3, "charge", fields={"name": "cable", "quantity": "2", "unit_price": "3.50"}),
            upsert(a, 4, fields={"title": "", "body": "x" * 100_000}),  # over a note's limit
            upsert(b, 5, "attachment", fields={"filename": "a.txt", "content_type": "text/plain", "size": 1,
                                               "sha256": "0" * 64}, chunk_count=1),
            upsert(waiting, 6), upsert(a, 7)]


async def stored(insourcing: Side, links: list[tuple[str, str]], since: datetime) -> dict:
    """Per link, in order: what its ticket lists (kind, fields, version held) and the messages staged
    for the bridge (type, version); and whether the link noted a message received since `since`."""
    async with insourcing.sessions() as session:
        out = {}
        for n, (link_id, ticket_id) in enumerate(links):
            items = (await session.scalars(select(TicketItem).where(
                TicketItem.ticket_id == ticket_id, TicketItem.origin == "partner").order_by(TicketItem.seq))).all()
            staged = [parse(value)[1] for value in await session.scalars(select(OutboxMessage.value).where(
                OutboxMessage.key == link_id, OutboxMessage.type.like("mirror.%")).order_by(OutboxMessage.id))]
            row = await session.get(LinkSync, link_id)
            out[n] = {"items": [(i.kind, i.fields, i.source_version) for i in items],
                      "staged": [(m.type, getattr(m, "source_version", None)) for m in staged],
                      "received": row is not None and row.last_received_at >= since}
        return out


async def test_mirrors_stored_together_end_as_mirrors_stored_one_at_a_time(insourcing):
    together, alone = await three_links(insourcing), await three_links(insourcing)
    since = utcnow()
    inbox = InboxConsumer(insourcing.sessions, None, insourcing.handle, name="insourcing_partner", signatures=KEYS,
                          together=insourcing.service.mirroring.together())
    await inbox.handle_batch([to_the_partner(u) for u in upserts(together)])
    for upsert in upserts(alone):
        await inbox.handle(to_the_partner(upsert))
    assert (inbox.applied_total, inbox.parked_total, inbox.batches_split_total) == (18, 0, 0)
    result = await stored(insourcing, together, since)
    assert result == await stored(insourcing, alone, since)
    assert [(kind, fields.get("body"), version) for kind, fields, version in result[0]["items"]] == [
        ("note", "note 0, edited", 2), ("note", "note 2", 1), ("note", "note 7", 1)]
    assert result[0]["staged"] == [("mirror.applied", 1), ("mirror.applied", 2), ("mirror.applied", 1),
                                   ("mirror.refused", None), ("mirror.applied", 1)]
    assert [kind for kind, _, _ in result[1]["items"]] == ["note", "charge"]  # the attachment waits for its bytes
    assert result[2] == {"items": [], "staged": [("mirror.refused", None)], "received": True}


# --- the bridge: new items (item.created) passed on -----------------------------------------------

LEAD_OUT = outbound_topic(LEAD)


def from_the_lead(payload) -> ConsumerRecord:
    return signed(payload, LEAD_OUT, LEAD)


async def bridge_links(bridge: Side) -> list[str]:
    """Two active links (the second in a reconciliation round) and one the partner has not accepted yet."""
    links = [await active_link(bridge), await active_link(bridge), await pending_link(bridge)]
    async with bridge.sessions() as session, session.begin():
        await start_round(session, await session.get(Link, links[1], with_for_update=True))
    return links


def created(links: list[str]) -> list[ItemCreated]:
    """The lead's new items: notes over both active links, a time entry (a note at the partner), fields
    the partner's API would refuse, an item announced twice, and a note on the link not accepted yet."""
    a, b, pending = links
    ids = [str(uuid.uuid4()) for _ in range(6)]
    entry = {"resource": "Bo", "date_worked": "2026-11-26", "hours": 3, "summary": "Rewired the rack"}
    return [note(a, ids[0], "one"), note(b, ids[1], "two"),
            ItemCreated(link_id=a, item_id=ids[2], kind="time_entry", fields=entry),
            note(b, ids[3], "x" * 100_000), note(a, ids[0], "one"), note(pending, ids[4], "too early"),
            note(b, ids[5], "three")]


async def passed(bridge: Side, links: list[str]) -> list:
    """Per link, in order: the item messages staged (to whom, type, kind, body); and its mappings (kind,
    refused, noted in a round)."""
    async with bridge.sessions() as session:
        out = []
        for link_id in links:
            staged = [(topic, parse(value)[1]) for topic, value in (await session.execute(
                select(OutboxMessage.topic, OutboxMessage.value).where(OutboxMessage.key == link_id)
                .order_by(OutboxMessage.id))).all()]
            mirrors = (await session.scalars(select(ItemMirror).where(ItemMirror.link_id == link_id)
                                             .order_by(ItemMirror.created_at, ItemMirror.kind))).all()
            out.append({
                "staged": [(topic, m.type, getattr(m, "kind", None), (getattr(m, "fields", None) or {}).get("body"))
                           for topic, m in staged if m.type in ("mirror.upsert", "item.unshared", "item.refused")],
                "mirrors": sorted((m.kind, m.deleted, m.forwarded_in_round is not None) for m in mirrors),
            })
        return out


async def test_the_bridge_passes_new_items_on_together_as_it_passes_them_one_at_a_time(bridge):
    together, alone = await bridge_links(bridge), await bridge_links(bridge)
    inbox = InboxConsumer(bridge.sessions, None, bridge.handle, name="sync_bridge", signatures=KEYS,
                          together=bridge.service.together())
    await inbox.handle_batch([from_the_lead(c) for c in created(together)])
    for item in created(alone):
        await inbox.handle(from_the_lead(item))
    assert (inbox.applied_total, inbox.parked_total, inbox.batches_split_total) == (14, 0, 0)
    result = await passed(bridge, together)
    assert result == await passed(bridge, alone)
    a, b, pending = result
    to_partner, to_lead = inbound_topic(PARTNER), inbound_topic(LEAD)
    # the first note, the time entry as a note, and the first note again (announced twice: sent again)
    assert [(topic, t, kind) for topic, t, kind, _ in a["staged"]] == [(to_partner, "mirror.upsert", "note")] * 3
    assert a["staged"][0][3] == a["staged"][2][3] == "one" and "Bo" in a["staged"][1][3]
    assert ("mirror.upsert", "note", "three") in [(t, k, body) for _, t, k, body in b["staged"]]
    assert [t for topic, t, _, _ in b["staged"] if topic == to_lead] == ["item.unshared"]  # the refused fields
    assert b["mirrors"] == [("note", False, True), ("note", False, True), ("note", True, True)]
    assert [t for _, t, _, _ in pending["staged"]] == ["item.unshared"]


async def outsourced_twice(lead: Side) -> tuple[str, str, str]:
    """A lead ticket outsourced, declined, and outsourced again (accepted): (ticket, the old link, the current one)."""
    ticket_id, old = await outsourced(lead)
    await lead.receive(WorkDeclined(link_id=old, reason="too far"))
    async with lead.sessions() as session, session.begin():
        current = (await lead.service.outsource(session, ticket_id, PARTNER, "again", None)).link_id
    await lead.receive(WorkAccepted(link_id=current, partner_ticket_number="I-8"))
    return ticket_id, old, current


async def test_the_lead_stores_mirrors_together_only_over_a_tickets_current_link(lead):
    results = []
    for apply_together in (True, False):
        ticket_id, old, current = await outsourced_twice(lead)
        mirrors = [MirrorUpsert(link_id=link_id, mirror_id=str(uuid.uuid4()), kind="note",
                                fields={"title": "", "body": body}) for link_id, body in
                   ((current, "first"), (old, "over the declined link"), (current, "second"))]
        inbox = InboxConsumer(lead.sessions, None, lead.handle, name="lead_partner", signatures=KEYS,
                              together=lead.service.mirroring.together())
        records = [record(m) for m in mirrors]
        if apply_together:
            await inbox.handle_batch(records)
        else:
            for one in records:
                await inbox.handle(one)
        async with lead.sessions() as session:
            bodies = [i.fields["body"] for i in (await session.scalars(select(TicketItem).where(
                TicketItem.ticket_id == ticket_id, TicketItem.origin == "partner").order_by(TicketItem.seq))).all()]
            staged = [(key == current, t) for key, t in (await session.execute(
                select(OutboxMessage.key, OutboxMessage.type).where(OutboxMessage.key.in_([old, current]),
                                                                    OutboxMessage.type.like("mirror.%"))
                .order_by(OutboxMessage.id))).all()]
        results.append((bodies, staged, inbox.parked_total, inbox.batches_split_total))
    assert results[0] == results[1]
    assert results[0] == (["first", "second"],
                          [(True, "mirror.applied"), (False, "mirror.refused"), (True, "mirror.applied")], 0, 0)


async def test_an_item_the_other_partner_announces_again_in_the_same_batch_is_parked_not_passed_on(bridge):
    link_id = await active_link(bridge)
    item_id = str(uuid.uuid4())
    inbox = InboxConsumer(bridge.sessions, None, bridge.handle, name="sync_bridge", signatures=KEYS,
                          together=bridge.service.together())
    claimed = note(link_id, item_id, "mine")
    await inbox.handle_batch([from_the_lead(claimed), from_the_partner(claimed)])
    assert (inbox.applied_total, inbox.parked_total) == (1, 1)
    async with bridge.sessions() as session:
        upserts = (await session.scalars(select(OutboxMessage.topic).where(
            OutboxMessage.key == link_id, OutboxMessage.type == "mirror.upsert"))).all()
    assert upserts == [inbound_topic(PARTNER)]  # passed on once, to the partner; the lead gets no mirror of its own item

