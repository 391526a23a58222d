"""The bridge's item mirroring: an item a partner creates, edits or deletes while the link is
active reaches the other ticket as a mirror (attachments in chunks), under an id of its own kept in
the id map; what arrives while the link is not active stays on its side, and its creator is told."""
import logging
import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync_bridge.links import LinkEvent, send
from services.sync_bridge.models import ItemMirror, LinkFacts
from shared.contracts.messages import (
    AttachmentChunk,
    ItemBody,
    ItemCreated,
    ItemDeleted,
    ItemDelivered,
    ItemRefused,
    ItemUnshared,
    ItemUpdated,
    MirrorApplied,
    MirrorChunk,
    MirrorDelete,
    MirrorRefused,
    MirrorUpsert,
)
from shared.domain import workflow
from shared.domain.tickets.rules import ItemKind, content_hash
from shared.domain.tickets.schemas import MAX_TEXT, MAX_TITLE
from shared.domain.tickets.validation import InvalidItem, valid_fields, valid_item
from shared.platform.db import plain_sql
from shared.platform.inbox import Rejected

log = logging.getLogger(__name__)
MIRROR_NAMESPACE = uuid.UUID("6f1c2a52-8d7e-4d0b-9a51-2f0b6c1d9e11")
CUT = "… [cut to fit: the full text is on the lead's time entry]"


def fit(text: str, limit: int) -> str:
    """`text`, or as much of it as fits in `limit` characters with the CUT marker at its end."""
    return text if len(text) <= limit else text[: limit - len(CUT)] + CUT


def lead_time_entry_as_note(fields: dict) -> dict:
    """The note that describes a lead's time entry to the partner, within a note's limits: the facts
    first, then the summary, cut with a visible marker where the whole would not fit."""
    billable = "billable" if fields.get("billable", True) else "non-billable"
    facts = f"{fields['resource']} worked {fields['hours']} h on {fields['date_worked']} ({billable}): "
    return {
        "title": fit(f"Time entry by {fields['resource']}", MAX_TITLE),
        "body": facts + fit(fields["summary"], MAX_TEXT - len(facts)),
    }


def forwarded_item(kind: str, fields: dict, chunk_count: int, from_lead: bool) -> tuple[str, dict]:
    """What the other partner receives for an item: its kind and fields there, held to the limits the
    other partner's API holds its own items to (InvalidItem when they do not pass). A lead's time entry
    is described to the partner as a note, not billed to it."""
    fields = valid_item(kind, fields, chunk_count)
    if from_lead and kind == ItemKind.TIME_ENTRY:
        return ItemKind.NOTE.value, valid_fields(ItemKind.NOTE, lead_time_entry_as_note(fields))
    return kind, fields


def _upsert(link: LinkFacts, mirror_id: str, from_lead: bool, payload: ItemBody) -> MirrorUpsert:
    kind, fields = forwarded_item(payload.kind, payload.fields, payload.chunk_count, from_lead)
    return MirrorUpsert(
        link_id=link.id,
        mirror_id=mirror_id,
        kind=kind,
        fields=fields,
        # The partner's notes must not reach the lead's customer.
        internal=(not from_lead) and kind == ItemKind.NOTE,
        chunk_count=payload.chunk_count,
        source_version=payload.version,
        source_hash=content_hash(payload.kind, payload.fields),
    )


NOT_CROSSING = {
    "pending": "the partner has not accepted the work yet",
    "suspended": "synchronization was suspended (Insource Complete) when it reached the bridge",
    "terminated": "the link had ended when it reached the bridge",
}


def _crosses(event: LinkEvent) -> bool:
    link = event.link
    if workflow.link_crosses(link.state):
        return True
    log.info("link %s is %s: %s of item %s stays on its side", link.id, link.state, event.payload.type,
             event.payload.item_id)
    return False


async def _mapping_of_sender(session: AsyncSession, event: LinkEvent) -> ItemMirror | None:
    """The live mirror of the event's item, refused if another partner created the item."""
    mapping = await session.get(ItemMirror, (event.link.id, event.payload.item_id))
    if mapping is None or mapping.deleted:
        log.info("no mirror of item %s on link %s: %s not forwarded", event.payload.item_id, event.link.id,
                 event.payload.type)
        return None
    if mapping.source_partner_id != event.sender:
        raise Rejected(f"{event.sender} did not create item {event.payload.item_id}")
    return mapping


async def created(session: AsyncSession, event: LinkEvent) -> None:
    payload: ItemCreated = event.payload
    link = event.link
    values = dict(
        link_id=link.id,
        source_item_id=payload.item_id,
        source_partner_id=event.sender,
        mirror_id=str(uuid.uuid5(MIRROR_NAMESPACE, f"{link.id}:{payload.item_id}")),
        kind="note" if (event.from_lead and payload.kind == "time_entry") else payload.kind,
        deleted=False,
        forwarded_in_round=link.round_id,
    )
    if not _crosses(event):
        # Recorded as refused, so that no later repair sends it (it stays local for good).
        await session.execute(insert(ItemMirror).values(**{**values, "deleted": True}).on_conflict_do_nothing())
        send(session, event.sender, ItemUnshared(link_id=link.id, item_id=payload.item_id,
                                                 reason=NOT_CROSSING[link.state]), link.id)
        return
    try:
        upsert = _upsert(link, values["mirror_id"], event.from_lead, payload)
    except InvalidItem as exc:
        await _refuse_invalid(session, event, exc.reason, values)
        return
    # The common case in one plain statement (every item passes here: issue 11); an item announced
    # twice keeps its first mapping.
    inserted = await (await plain_sql(session)).fetchval(
        "INSERT INTO item_mirrors (link_id, source_item_id, source_partner_id, mirror_id, kind, deleted,"
        " forwarded_in_round) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING mirror_id",
        *(values[column] for column in ("link_id", "source_item_id", "source_partner_id", "mirror_id", "kind",
                                        "deleted", "forwarded_in_round")))
    if inserted is None:
        mapping = await session.get(ItemMirror, (link.id, payload.item_id))
        if mapping.source_partner_id != event.sender:
            raise Rejected(f"{event.sender} did not create item {payload.item_id}")
        if mapping.deleted:
            log.info("item %s on link %s was deleted or refused; not mirrored again", payload.item_id, link.id)
            return
        forwarded(mapping, link)
    send(session, event.other_partner, upsert, link.id)


async def created_together(session: AsyncSession, events: list[LinkEvent]) -> None:
    """Items that came together, as `created` passes each on: the new ones on links that cross, with
    fields the other side takes, mapped in one INSERT and passed on in their turn; anything else (a
    link not crossing, fields refused, an item announced before) through `created`, in its turn."""
    new: list[tuple[LinkEvent, MirrorUpsert]] = []
    for event in events:
        upsert = _new_mirror(event)
        if upsert is None:
            await _map_new(session, new)
            new = []
            await created(session, event)
        else:
            new.append((event, upsert))
    await _map_new(session, new)


def _new_mirror(event: LinkEvent) -> MirrorUpsert | None:
    """What `created` sends for a new item, or None where it would not send it (it says why)."""
    if not workflow.link_crosses(event.link.state):
        return None
    try:
        return _upsert(event.link, str(uuid.uuid5(MIRROR_NAMESPACE, f"{event.link.id}:{event.payload.item_id}")),
                       event.from_lead, event.payload)
    except InvalidItem:
        return None


async def _map_new(session: AsyncSession, new: list[tuple[LinkEvent, MirrorUpsert]]) -> None:
    """New items' mappings in one statement, each passed on; one mapped before, or announced again in
    the batch (by its creator or by the other partner), goes through `created`, which checks who
    created it."""
    if not new:
        return
    columns = list(zip(*[(e.link.id, e.payload.item_id, e.sender, u.mirror_id, u.kind, e.link.round_id)
                         for e, u in new]))
    mapped = {(row["link_id"], row["source_item_id"]) for row in await (await plain_sql(session)).fetch(
        "INSERT INTO item_mirrors (link_id, source_item_id, source_partner_id, mirror_id, kind, deleted, forwarded_in_round)"
        " SELECT link_id, item_id, partner_id, mirror_id, kind, false, round_id FROM unnest($1::varchar[],"
        " $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[])"
        " AS n(link_id, item_id, partner_id, mirror_id, kind, round_id)"
        " ON CONFLICT DO NOTHING RETURNING link_id, source_item_id", *columns)}
    for event, upsert in new:
        if (event.link.id, event.payload.item_id) in mapped:
            mapped.discard((event.link.id, event.payload.item_id))
            send(session, event.other_partner, upsert, event.link.id)
        else:
            await created(session, event)


def forwarded(mapping: ItemMirror, link: LinkFacts) -> None:
    """Notes the round under way (if any) on an item the bridge passes on (its first version, an
    edit, a deletion or a chunk): the round's questions went out before it, so the answers cannot
    show it, and reconciliation leaves it out of that round; a later round compares it (its creator
    asks for one while it waits for the receipt). Outside a round this writes nothing. A receipt
    passed on is not noted: the receiving side's answer is right about the item either way, and a
    receipt sent again costs one message."""
    if link.round_id is not None:
        mapping.forwarded_in_round = link.round_id


async def _refuse_invalid(session: AsyncSession, event: LinkEvent, reason: str, new_mapping: dict | None) -> None:
    """An item the other side's API would refuse is not passed on; its creator hears why. A new item
    stays local for good (recorded as refused, so no repair sends it); an edit leaves the partner with
    the version it had."""
    payload, link = event.payload, event.link
    log.warning("link %s: %s of item %s from %s not passed on: %s", link.id, payload.type, payload.item_id,
                event.sender, reason)
    mapping = await session.get(ItemMirror, (link.id, payload.item_id))
    if mapping is not None and mapping.source_partner_id != event.sender:
        raise Rejected(f"{event.sender} did not create item {payload.item_id}")
    if mapping is not None and not mapping.deleted:
        send(session, event.sender, ItemRefused(
            link_id=link.id, item_id=payload.item_id, version=payload.version,
            reason=f"the bridge did not pass it on: {reason}; the partner keeps the version it had"), link.id)
        return
    if mapping is None and new_mapping is not None:
        session.add(ItemMirror(**{**new_mapping, "deleted": True}))
    send(session, event.sender, ItemUnshared(link_id=link.id, item_id=payload.item_id,
                                             reason=f"the bridge did not pass it on: {reason}"), link.id)


def refuse_change(session: AsyncSession, event: LinkEvent, what: str) -> None:
    """An edit or deletion that met a link no longer crossing: its creator hears it stayed local."""
    payload = event.payload
    send(session, event.sender, ItemRefused(
        link_id=event.link.id, item_id=payload.item_id, version=payload.version,
        reason=f"{what} was not passed on: {NOT_CROSSING[event.link.state]}; the partner keeps the version it had",
    ), event.link.id)


async def updated(session: AsyncSession, event: LinkEvent) -> None:
    if not _crosses(event):
        refuse_change(session, event, "the edit")
        return
    if mapping := await _mapping_of_sender(session, event):
        try:
            upsert = _upsert(event.link, mapping.mirror_id, event.from_lead, event.payload)
        except InvalidItem as exc:
            await _refuse_invalid(session, event, exc.reason, None)
            return
        forwarded(mapping, event.link)
        send(session, event.other_partner, upsert, event.link.id)


async def deleted(session: AsyncSession, event: LinkEvent) -> None:
    payload: ItemDeleted = event.payload
    if not _crosses(event):
        refuse_change(session, event, "the deletion")
        return
    if mapping := await _mapping_of_sender(session, event):
        mapping.deleted = True
        forwarded(mapping, event.link)
        send(session, event.other_partner, MirrorDelete(link_id=event.link.id, mirror_id=mapping.mirror_id,
                                                        source_version=payload.version), event.link.id)
    else:
        # No mirror exists on the other side, so the deletion has nothing left to do there.
        send(session, event.sender, ItemDelivered(link_id=event.link.id, item_id=payload.item_id,
                                                  version=payload.version), event.link.id)


async def chunk(session: AsyncSession, event: LinkEvent) -> None:
    """The rest of an attachment whose first part crossed follows it, whatever happened since."""
    payload: AttachmentChunk = event.payload
    link = event.link
    mapping = await session.get(ItemMirror, (link.id, payload.item_id))
    if mapping is not None and not mapping.deleted and mapping.source_partner_id == event.sender:
        forwarded(mapping, link)
        send(session, mapping.target_partner_id(link), MirrorChunk(
            link_id=link.id, mirror_id=mapping.mirror_id, index=payload.index, count=payload.count,
            data=payload.data), link.id)


async def refused(session: AsyncSession, event: LinkEvent) -> None:
    """The receiving partner would not store the mirror (synchronization was over on its side, or the
    fields fail its checks); the item's creator hears why. A refused edit leaves the earlier mirror."""
    payload: MirrorRefused = event.payload
    link = event.link
    mapping = await session.scalar(
        select(ItemMirror).where(ItemMirror.link_id == link.id, ItemMirror.mirror_id == payload.mirror_id)
    )
    if mapping is None or mapping.source_partner_id == event.sender or mapping.deleted:
        return
    if payload.source_version is not None:
        send(session, mapping.source_partner_id, ItemRefused(
            link_id=link.id, item_id=mapping.source_item_id, version=payload.source_version,
            reason=f"{payload.reason}; the partner keeps the version it had"), link.id)
        return
    mapping.deleted = True
    send(session, mapping.source_partner_id, ItemUnshared(
        link_id=link.id, item_id=mapping.source_item_id, reason=payload.reason), link.id)


async def applied(session: AsyncSession, event: LinkEvent) -> None:
    """A receipt: the other side committed the mirror; its creator is told which version arrived."""
    payload: MirrorApplied = event.payload
    link = event.link
    # Every item's receipt passes here: one plain statement (issue 11). During a round, the receipt is
    # noted as passed on after its questions: in flight for that round, not lost (issue 28).
    db = await plain_sql(session)
    if link.round_id is None:
        mapping = await db.fetchrow(
            "SELECT source_partner_id, source_item_id FROM item_mirrors WHERE link_id = $1 AND mirror_id = $2",
            link.id, payload.mirror_id)
    else:
        mapping = await db.fetchrow(
            "UPDATE item_mirrors SET receipt_in_round = $3 WHERE link_id = $1 AND mirror_id = $2"
            " RETURNING source_partner_id, source_item_id", link.id, payload.mirror_id, link.round_id)
    if mapping is None or mapping["source_partner_id"] == event.sender:
        raise Rejected(f"{event.sender} holds no mirror {payload.mirror_id} on link {link.id}")
    send(session, mapping["source_partner_id"], ItemDelivered(
        link_id=link.id, item_id=mapping["source_item_id"], version=payload.source_version), link.id)


async def applied_together(session: AsyncSession, events: list[LinkEvent]) -> None:
    """Receipts that came together, as `applied` passes each on: the mirrors looked up in one
    statement, and those on a link in a reconciliation round noted in one more."""
    db = await plain_sql(session)
    found = {}
    for in_round, statement in ((False, "SELECT m.link_id, m.mirror_id, m.source_partner_id, m.source_item_id"
                                        " FROM item_mirrors AS m JOIN unnest($1::varchar[], $2::varchar[], $3::varchar[])"
                                        " AS u(link_id, mirror_id, round_id)"
                                        " ON m.link_id = u.link_id AND m.mirror_id = u.mirror_id"),
                                (True, "UPDATE item_mirrors AS m SET receipt_in_round = u.round_id"
                                       " FROM unnest($1::varchar[], $2::varchar[], $3::varchar[]) AS u(link_id, mirror_id, round_id)"
                                       " WHERE m.link_id = u.link_id AND m.mirror_id = u.mirror_id"
                                       " RETURNING m.link_id, m.mirror_id, m.source_partner_id, m.source_item_id")):
        these = [event for event in events if (event.link.round_id is not None) == in_round]
        if these:
            for row in await db.fetch(statement, [e.link.id for e in these], [e.payload.mirror_id for e in these],
                                      [e.link.round_id for e in these]):
                found[row["link_id"], row["mirror_id"]] = row
    for event in events:
        mapping = found.get((event.link.id, event.payload.mirror_id))
        if mapping is None or mapping["source_partner_id"] == event.sender:
            raise Rejected(f"{event.sender} holds no mirror {event.payload.mirror_id} on link {event.link.id}")
        send(session, mapping["source_partner_id"], ItemDelivered(
            link_id=event.link.id, item_id=mapping["source_item_id"], version=event.payload.source_version), event.link.id)


HANDLERS = {
    ItemCreated: created,
    ItemUpdated: updated,
    ItemDeleted: deleted,
    AttachmentChunk: chunk,
    MirrorRefused: refused,
    MirrorApplied: applied,
}
