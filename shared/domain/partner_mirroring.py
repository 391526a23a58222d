"""Partner-side mirroring, the same on both partners: which local items cross and when (the
outbound half), and how mirrors of the other partner's items are stored (the inbound half)."""
import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Boolean, Integer, LargeBinary, String, delete, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.contracts.messages import (
    ItemCreated,
    ItemDeleted,
    ItemUnshared,
    ItemUpdated,
    MirrorApplied,
    MirrorChunk,
    MirrorDelete,
    MirrorRefused,
    MirrorUpsert,
    SideStatus,
)
from shared.domain.partner_sync import ItemDeletion, PartnerSync, emit_item
from shared.domain.tickets.models import AttachmentContent, Ticket, TicketItem
from shared.domain.tickets.rules import Delivery, ItemFacts, ItemKind, Lock, Origin, item_editable
from shared.domain.tickets.service import ListedItem
from shared.domain.tickets.validation import InvalidItem, valid_item
from shared.domain.workflow import InsourceStatus, OutsourceStatus, synchronizing
from shared.platform.db import Base, plain_sql, utcnow
from shared.platform.inbox import Rejected
from shared.platform.outbox import Publisher

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class LinkView:
    """A ticket's current link as its own partner sees it."""

    link_id: str
    status: OutsourceStatus | InsourceStatus
    partner_id: str
    partner_ticket_number: str | None
    partner_name: str | None = None
    terms: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "link_id": self.link_id,
            "partner_id": self.partner_id,
            "partner_name": self.partner_name or self.partner_id,
            "partner_ticket_number": self.partner_ticket_number,
            "terms": self.terms,
        }


class LinkDirectory(Protocol):
    """Each partner keeps its links its own way (outsourcings on the lead, received work on the
    insourcing side); mirroring and reconciliation need only these look-ups."""

    async def link_for_ticket(self, session: AsyncSession, ticket_id: str) -> LinkView | None: ...

    async def ticket_for_link(self, session: AsyncSession, link_id: str) -> str | None:
        """The ticket `link_id` links, its row locked (the order every writer of a ticket uses)."""
        ...

    async def ticket_of(self, session: AsyncSession, link_id: str) -> str | None:
        """The ticket `link_id` links, without locking it (null before acceptance)."""
        ...

    async def tickets_for_links(self, session: AsyncSession, link_ids: list[str]) -> dict[str, str | None]:
        """`ticket_for_link` for several links in one statement, locked in the order given."""
        ...

    async def links_for_tickets(self, session: AsyncSession, ticket_ids: list[str]) -> dict[str, LinkView]:
        """`link_for_ticket` for several tickets in one statement (a ticket with no link is left out)."""
        ...

    async def side_status(self, session: AsyncSession, link_id: str) -> SideStatus:
        """This side's view of the link's workflow, for reconciliation."""
        ...

    async def open_links(self, session: AsyncSession) -> list[str]:
        """The links whose workflow is not finished here."""
        ...


class IncomingAttachment(Base):
    """An attachment mirror whose bytes are still arriving in chunks; it becomes an item when complete."""

    __tablename__ = "incoming_attachments"

    mirror_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(36))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB)
    internal: Mapped[bool] = mapped_column(Boolean)
    chunk_count: Mapped[int] = mapped_column(Integer)
    source_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    source_hash: Mapped[str | None] = mapped_column(String(64))


class IncomingChunk(Base):
    __tablename__ = "incoming_chunks"

    mirror_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MirroringPolicy:
    """The SyncPolicy of a partner service: a local, non-internal item crosses while the link is
    active; edits and deletes by its creator follow it."""

    def __init__(self, links: LinkDirectory, partner_id: str, outbound_topic: str):
        self.links = links
        self.publisher = Publisher(outbound_topic, partner_id)
        self.sync = PartnerSync(links, self.publisher)

    async def link_of(self, session: AsyncSession, ticket: Ticket) -> dict[str, Any] | None:
        link = await self.links.link_for_ticket(session, ticket.id)
        return link.as_json() if link else None

    def editable(self, item: TicketItem | ListedItem) -> bool:
        return item_editable(
            ItemFacts(Origin(item.origin), ItemKind(item.kind), Lock(item.lock) if item.lock else None, item.released)
        )

    async def item_written(
        self, session: AsyncSession, ticket_id: str, item: TicketItem, action: str, content: bytes | None = None
    ) -> None:
        if action != "created":
            item.version = (item.version or 1) + 1
        if item.origin != Origin.LOCAL or item.internal:
            return  # internal items never leave; mirrors and system notes are never mirrored back
        if action != "created" and not item.shared:
            return  # it never crossed, so there is nothing to follow it
        link = await self.links.link_for_ticket(session, ticket_id)
        if link is None or not synchronizing(link.status):
            return
        if action != "created" and item.link_id != link.link_id:
            return  # it crossed on an earlier link of the ticket, which is over
        await self.sync.item_sent(session, link.link_id)
        if action == "deleted":
            # Remembered until the other side confirms the mirror is gone.
            session.add(ItemDeletion(item_id=item.id, ticket_id=ticket_id, link_id=link.link_id, kind=item.kind,
                                     version=item.version, delivery_status=Delivery.PENDING, delivery_at=utcnow()))
            self.publisher.emit(session, ItemDeleted(link_id=link.link_id, item_id=item.id, kind=item.kind,
                                                     version=item.version), link.link_id)
            return
        item.shared, item.link_id = True, link.link_id
        item.delivery_status, item.delivery_at, item.delivery_reason = Delivery.PENDING, utcnow(), None
        emit_item(self.publisher, session, link.link_id, item, ItemCreated if action == "created" else ItemUpdated,
                  content)

    # --- the inbound half: what the bridge sends about the other ticket ---------------------------

    async def apply(self, session: AsyncSession, payload) -> None:
        """Apply mirror.upsert, mirror.chunk, mirror.delete or item.unshared from the bridge."""
        ticket_id = await self.links.ticket_for_link(session, payload.link_id)
        if ticket_id is None:
            raise Rejected(f"no ticket is linked by {payload.link_id}")
        if isinstance(payload, ItemUnshared):
            await self.sync.on_unshared(session, ticket_id, payload)
            return
        link = await self.links.link_for_ticket(session, ticket_id)
        # Only the ticket's current link synchronizes (an older link of the same ticket never does).
        current = link is not None and link.link_id == payload.link_id and synchronizing(link.status)
        if isinstance(payload, MirrorChunk):
            # The rest of an attachment already being received completes, whatever happened since.
            if await _staged(session, ticket_id, payload.mirror_id) is not None:
                await self._applied(session, payload.link_id, await _chunk(session, payload))
            return
        if not current:
            # This side suspended or ended synchronization before the item arrived: its own order
            # of events decides. A new item is refused (its creator is told); changes to earlier
            # mirrors are not mirrored.
            if (
                isinstance(payload, MirrorUpsert)
                and await _staged(session, ticket_id, payload.mirror_id) is None
                and await session.get(TicketItem, payload.mirror_id) is None
            ):
                self.publisher.emit(session, MirrorRefused(link_id=payload.link_id, mirror_id=payload.mirror_id), payload.link_id)
            return
        if isinstance(payload, MirrorUpsert):
            try:
                fields = valid_item(payload.kind, payload.fields, payload.chunk_count)
            except InvalidItem as exc:
                await self._refuse(session, payload, exc.reason)
                return
            checked = payload.model_copy(update={"fields": fields})
            await self._applied(session, payload.link_id, await _upsert(session, ticket_id, checked))
        elif isinstance(payload, MirrorDelete):
            item = await session.get(TicketItem, payload.mirror_id)
            if item is not None and item.ticket_id == ticket_id and item.origin == Origin.PARTNER:
                await session.delete(item)
            await session.execute(delete(IncomingAttachment).where(IncomingAttachment.mirror_id == payload.mirror_id))
            await session.execute(delete(IncomingChunk).where(IncomingChunk.mirror_id == payload.mirror_id))
            await self._applied(session, payload.link_id, (payload.mirror_id, payload.source_version))

    async def upserts_together(self, session: AsyncSession, messages: list[tuple[Any, MirrorUpsert, str]]) -> None:
        """Mirrors that came together, set-based (issue 30), with the effects of `apply` and `received` for
        each: the new notes, time entries and charges on their tickets' current links go in with one
        INSERT (in the order they came, which is the order a ticket lists them) and their receipts are
        staged as `apply` stages them; anything else (an attachment, a new version of a mirror held, a
        link not synchronizing here, fields refused) goes through `apply`, in its turn. The tickets are
        locked in one statement, their links read in one, and the links' bookkeeping is one more."""
        # Each ticket row first, in the order the messages came; then each ticket's current link.
        tickets = await self.links.tickets_for_links(session, [payload.link_id for _, payload, _ in messages])
        links_now = await self.links.links_for_tickets(session, [t for t in tickets.values() if t is not None])
        views: dict[str, tuple[str | None, bool]] = {}  # per link: its ticket, and whether it synchronizes it now
        for link_id, ticket_id in tickets.items():
            link = links_now.get(ticket_id) if ticket_id else None
            views[link_id] = ticket_id, link is not None and link.link_id == link_id and synchronizing(link.status)
        new: list[tuple[MirrorUpsert, str, dict[str, Any]]] = []
        for _, payload, _ in messages:
            ticket_id, current = views[payload.link_id]
            fields = _new_mirror_fields(payload) if ticket_id and current else None
            if fields is not None:
                new.append((payload, ticket_id, fields))
                continue
            await self._insert_mirrors(session, new)
            new = []
            await self.apply(session, payload)
        await self._insert_mirrors(session, new)
        await self.sync.received_links(session, list(views))

    async def _insert_mirrors(self, session: AsyncSession, new: list[tuple[MirrorUpsert, str, dict[str, Any]]]) -> None:
        """New mirrors in one statement; one that is already held (sent again, or a later version of a
        mirror created in this batch) goes through `apply` after it, as it would alone."""
        if not new:
            return
        columns = list(zip(*[(p.mirror_id, ticket_id, p.kind, p.internal, json.dumps(fields), p.link_id,
                              p.source_version, p.source_hash) for p, ticket_id, fields in new]))
        created = {row["id"] for row in await (await plain_sql(session)).fetch(
            "INSERT INTO ticket_items (id, ticket_id, kind, origin, internal, shared, released, fields, link_id,"
            " version, source_version, source_hash)"
            " SELECT id, ticket_id, kind, $9, internal, true, false, fields::jsonb, link_id, 1, source_version, source_hash"
            " FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::bool[], $5::text[], $6::varchar[], $7::int[],"
            " $8::varchar[]) WITH ORDINALITY AS m(id, ticket_id, kind, internal, fields, link_id, source_version,"
            " source_hash, position) ORDER BY position ON CONFLICT (id) DO NOTHING RETURNING id",
            *columns, Origin.PARTNER)}
        for payload, _, _ in new:
            if payload.mirror_id in created:
                created.discard(payload.mirror_id)  # a second message of the same mirror is an update
                await self._applied(session, payload.link_id, (payload.mirror_id, payload.source_version))
            else:
                await self.apply(session, payload)

    def together(self) -> dict[type, Any]:
        """The messages this side applies set-based when several come together (`InboxConsumer`)."""
        return {**self.sync.together(), MirrorUpsert: self.upserts_together}

    async def _refuse(self, session: AsyncSession, payload: MirrorUpsert, reason: str) -> None:
        """Fields this side's API would refuse are never stored, even from the bridge (a bug there must
        not leave a ticket here that cannot be read); the item's creator hears why through the bridge."""
        log.warning("mirror %s on link %s refused: %s", payload.mirror_id, payload.link_id, reason)
        edit = await session.get(TicketItem, payload.mirror_id) is not None  # a mirror of it is here already
        self.publisher.emit(session, MirrorRefused(
            link_id=payload.link_id, mirror_id=payload.mirror_id, reason=f"the partner did not store it: {reason}",
            source_version=payload.source_version if edit else None), payload.link_id)

    async def _applied(self, session: AsyncSession, link_id: str, done: tuple[str, int] | None) -> None:
        """The receipt: this side committed the mirror (of that version of the original)."""
        if done is not None:
            mirror_id, version = done
            self.publisher.emit(session, MirrorApplied(link_id=link_id, mirror_id=mirror_id, source_version=version),
                                link_id)


MIRROR_MESSAGES = (MirrorUpsert, MirrorChunk, MirrorDelete, ItemUnshared)


def _new_mirror_fields(payload: MirrorUpsert) -> dict[str, Any] | None:
    """The fields a new note, time entry or charge is stored with, as `apply` checks them; None for an
    attachment (its bytes come in chunks) or fields this side refuses (`apply` says why)."""
    if payload.kind == ItemKind.ATTACHMENT:
        return None
    try:
        return valid_item(payload.kind, payload.fields, payload.chunk_count)
    except InvalidItem:
        return None


async def lock_items(session: AsyncSession, ticket_id: str, lock: Lock) -> None:
    """Everything on the ticket now (own items and mirrors) becomes read-only, for `lock`'s reason."""
    await session.execute(update(TicketItem).where(TicketItem.ticket_id == ticket_id).values(lock=lock))


async def lock_shared_items(session: AsyncSession, ticket_id: str) -> None:
    """The lead's own items that crossed stay as they are while the partner waits for approval, so
    that the two tickets still agree when synchronization resumes."""
    await session.execute(
        update(TicketItem)
        .where(TicketItem.ticket_id == ticket_id, TicketItem.origin == Origin.LOCAL, TicketItem.shared.is_(True),
               TicketItem.lock.is_(None))
        .values(lock=Lock.SUSPENSION)
    )


async def lock_partner_items(session: AsyncSession, ticket_id: str, link_id: str) -> None:
    """The mirrors that came over `link_id` become read-only for good: the partner left the hub, and a
    later completion of the ticket with another partner does not release them."""
    await session.execute(
        update(TicketItem)
        .where(TicketItem.ticket_id == ticket_id, TicketItem.origin == Origin.PARTNER, TicketItem.link_id == link_id)
        .values(lock=Lock.PARTNER_LEFT)
    )


async def unlock_suspended(session: AsyncSession, ticket_id: str) -> None:
    await session.execute(
        update(TicketItem).where(TicketItem.ticket_id == ticket_id, TicketItem.lock == Lock.SUSPENSION).values(lock=None)
    )


async def release_partner_items(session: AsyncSession, ticket_id: str) -> None:
    """After completion the lead may edit the partner's items (the rule keeps time entries read-only)."""
    await session.execute(
        update(TicketItem).where(TicketItem.ticket_id == ticket_id, TicketItem.origin == Origin.PARTNER).values(released=True)
    )


async def _staged(session: AsyncSession, ticket_id: str, mirror_id: str) -> IncomingAttachment | None:
    """An attachment mirror on this ticket whose chunks are still arriving."""
    return await session.scalar(
        select(IncomingAttachment).where(IncomingAttachment.mirror_id == mirror_id, IncomingAttachment.ticket_id == ticket_id)
    )


async def _upsert(session: AsyncSession, ticket_id: str, payload: MirrorUpsert) -> tuple[str, int] | None:
    """Store the mirror; (mirror id, version) once it is complete (an attachment: once all its bytes are in)."""
    done = (payload.mirror_id, payload.source_version)
    if payload.kind != ItemKind.ATTACHMENT:
        # A new mirror in one plain statement (every note received takes this path: issue 11); an
        # update (or a redelivered create) takes the path below.
        created = await (await plain_sql(session)).fetchval(
            "INSERT INTO ticket_items (id, ticket_id, kind, origin, internal, shared, released, fields, link_id,"
            " version, source_version, source_hash) VALUES ($1, $2, $3, $4, $5, true, false, $6::jsonb, $7, 1, $8, $9)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            payload.mirror_id, ticket_id, payload.kind, Origin.PARTNER, payload.internal, json.dumps(payload.fields),
            payload.link_id, payload.source_version, payload.source_hash)
        if created is not None:
            return done
    item = await session.get(TicketItem, payload.mirror_id)
    if item is not None:
        if item.ticket_id != ticket_id or item.origin != Origin.PARTNER:
            raise Rejected(f"item {payload.mirror_id} is not a mirror on ticket {ticket_id}")
        if (item.source_version or 1) > payload.source_version:
            return None  # an older version sent again after a newer one: the mirror keeps the newer
        item.fields = {**item.fields, **payload.fields}
        item.source_version, item.source_hash = payload.source_version, payload.source_hash
        return done
    # A new attachment: it becomes an item once all its chunks are in.
    await session.execute(
        insert(IncomingAttachment)
        .values(
            mirror_id=payload.mirror_id,
            ticket_id=ticket_id,
            fields=payload.fields,
            internal=payload.internal,
            chunk_count=payload.chunk_count,
            source_version=payload.source_version,
            source_hash=payload.source_hash,
        )
        .on_conflict_do_nothing()
    )
    return await _assemble_if_complete(session, payload.mirror_id, payload.link_id)


async def _chunk(session: AsyncSession, payload: MirrorChunk) -> tuple[str, int] | None:
    await session.execute(
        insert(IncomingChunk)
        .values(mirror_id=payload.mirror_id, index=payload.index, data=base64.b64decode(payload.data))
        .on_conflict_do_nothing()
    )
    return await _assemble_if_complete(session, payload.mirror_id, payload.link_id)


async def _assemble_if_complete(session: AsyncSession, mirror_id: str, link_id: str) -> tuple[str, int] | None:
    staged = await session.get(IncomingAttachment, mirror_id)
    if staged is None:
        return None
    have = await session.scalar(select(func.count()).where(IncomingChunk.mirror_id == mirror_id))
    if have < staged.chunk_count:
        return None
    parts = await session.scalars(select(IncomingChunk.data).where(IncomingChunk.mirror_id == mirror_id).order_by(IncomingChunk.index))
    content = b"".join(parts.all())
    if hashlib.sha256(content).hexdigest() != staged.fields.get("sha256") or len(content) != staged.fields.get("size"):
        raise Rejected(f"attachment {mirror_id} arrived with a checksum or size that does not match")
    session.add(
        TicketItem(
            id=mirror_id,
            ticket_id=staged.ticket_id,
            kind=ItemKind.ATTACHMENT,
            origin=Origin.PARTNER,
            internal=staged.internal,
            shared=True,
            fields=staged.fields,
            link_id=link_id,
            source_version=staged.source_version,
            source_hash=staged.source_hash,
        )
    )
    await session.flush()
    session.add(AttachmentContent(item_id=mirror_id, content=content))
    await session.execute(delete(IncomingChunk).where(IncomingChunk.mirror_id == mirror_id))
    await session.delete(staged)
    return mirror_id, staged.source_version
