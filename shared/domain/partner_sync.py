"""What a partner keeps to prove its link is in sync (SPEC section 9): each shared item's delivery
receipt, a tombstone for each shared deletion until its receipt, and per link when it last sent,
received and was reconciled. It answers the bridge's reconciliation (a manifest of what it holds,
the items asked for again) and asks for one itself when something stays unconfirmed."""
import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String, Text, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from shared.contracts.envelope import Payload
from shared.contracts.messages import (
    CHUNK_BYTES,
    MANIFEST_PART,
    AttachmentChunk,
    ItemCreated,
    ItemDelivered,
    ItemRefused,
    ItemDeleted,
    ItemUnshared,
    Manifest,
    ManifestRequested,
    PartnerLeft,
    Reconciled,
    ReconcileRequested,
    ResendRequested,
    SideHealth,
)
from shared.domain import manifests, workflow
from shared.domain.tickets.models import AttachmentContent, TicketItem
from shared.domain.tickets.rules import Delivery, ItemKind, Origin
from shared.platform.db import Base, plain_sql, utcnow
from shared.platform.inbox import DataLoss
from shared.platform.outbox import Publisher

log = logging.getLogger(__name__)


class ItemDeletion(Base):
    """A shared item its creator deleted: kept until the other side confirms the mirror is gone."""

    __tablename__ = "item_deletions"

    item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(36), index=True)
    link_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer)
    delivery_status: Mapped[str] = mapped_column(String(10))
    delivery_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LinkSync(Base):
    """One partner's record of one link's synchronization."""

    __tablename__ = "link_sync"

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last change of the link's workflow (sent or received), and the newest one a reconciliation
    # found in sync: a change newer than that is unconfirmed.
    changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    manifest_as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Since when an item of the link waits for its receipt (null: nothing waits).
    pending_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    in_sync: Mapped[bool | None] = mapped_column(Boolean)
    requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    request_reason: Mapped[str | None] = mapped_column(Text)


# The messages that change a link's workflow (as opposed to items, receipts and reconciliation).
_ITEM_OR_SYNC = ("item.", "attachment.", "mirror.", "sync.")
# The other partner left the hub: no reconciliation can confirm what it ends, so nothing asks for one.
_UNCONFIRMABLE = (PartnerLeft.type,)


def _is_workflow(payload: Payload) -> bool:
    """A change of the link's workflow that a reconciliation should confirm."""
    return not payload.type.startswith(_ITEM_OR_SYNC) and payload.type not in _UNCONFIRMABLE


async def _touch(session: AsyncSession, link_id: str, **values: Any) -> None:
    await session.execute(
        insert(LinkSync).values(link_id=link_id, **values).on_conflict_do_update(index_elements=[LinkSync.link_id], set_=values)
    )


async def _not_held(session: AsyncSession, link_ids: list[str]) -> list[str]:
    """The links among `link_ids` whose sync row no other transaction holds, now locked by this one.
    The watch touches many links in one transaction; waiting on a row a consumer's batch holds while
    that batch waits on a ticket an API request holds (which waits on a row the watch holds) was a
    deadlock, and the request's caller got a 503. Skipping what is held (asked on the next tick)
    means the watch never waits, so it is never part of such a cycle."""
    if not link_ids:
        return []
    free = set(await session.scalars(
        select(LinkSync.link_id).where(LinkSync.link_id.in_(link_ids)).with_for_update(skip_locked=True)))
    known = set(await session.scalars(select(LinkSync.link_id).where(LinkSync.link_id.in_(link_ids))))
    return [link_id for link_id in link_ids if link_id in free or link_id not in known]


class PartnerSync:
    """The receipts, health and reconciliation answers of one partner service."""

    def __init__(self, links, publisher: Publisher):
        self.links = links  # the service's LinkDirectory (partner_mirroring.LinkDirectory)
        self.publisher = publisher

    # --- bookkeeping, called by the service as it sends and receives -----------------------------

    async def send(self, session: AsyncSession, payload: Payload, link_id: str) -> None:
        """Stage a message to the bridge and note it on the link."""
        self.publisher.emit(session, payload, link_id)
        now = utcnow()
        values: dict[str, Any] = {"last_sent_at": now}
        if _is_workflow(payload):
            values["changed_at"] = now
        await _touch(session, link_id, **values)

    async def item_sent(self, session: AsyncSession, link_id: str) -> None:
        # Every item shared passes here: one plain statement (issue 11).
        await (await plain_sql(session)).execute(
            "INSERT INTO link_sync (link_id, last_sent_at, pending_since) VALUES ($1, now(), now())"
            " ON CONFLICT (link_id) DO UPDATE SET last_sent_at = now(),"
            " pending_since = coalesce(link_sync.pending_since, now())", link_id)

    async def received(self, session: AsyncSession, payload: Payload) -> None:
        link_id = getattr(payload, "link_id", None)
        if link_id is None or payload.type.startswith("sync."):
            return
        await self.links.ticket_for_link(session, link_id)  # the ticket row before its link's bookkeeping
        # Every message a partner receives passes here: one plain statement (issue 11).
        changed = ", changed_at = excluded.changed_at" if _is_workflow(payload) else ""
        now = utcnow()
        await (await plain_sql(session)).execute(
            "INSERT INTO link_sync (link_id, last_received_at, changed_at) VALUES ($1, $2, $3)"
            f" ON CONFLICT (link_id) DO UPDATE SET last_received_at = excluded.last_received_at{changed}",
            link_id, now, now if changed else None)

    async def partner_left(self, session: AsyncSession, ticket_id: str, link_id: str, partner_name: str) -> None:
        """The other partner left the hub: no receipt will come for what still waits for one (it is
        refused, saying why), no deletion will be confirmed, and the link is no longer watched."""
        now = utcnow()
        await session.execute(
            update(TicketItem)
            .where(TicketItem.ticket_id == ticket_id, TicketItem.link_id == link_id,
                   TicketItem.delivery_status == Delivery.PENDING)
            .values(delivery_status=Delivery.REFUSED, delivery_at=now,
                    delivery_reason=f"{partner_name} left the hub before confirming it")
        )
        await session.execute(delete(ItemDeletion).where(ItemDeletion.link_id == link_id))
        await session.execute(
            update(LinkSync).where(LinkSync.link_id == link_id)
            .values(pending_since=None, confirmed_through=func.greatest(LinkSync.confirmed_through, LinkSync.changed_at))
        )

    # --- receipts ---------------------------------------------------------------------------------

    async def on_delivered(self, session: AsyncSession, payload: ItemDelivered) -> None:
        # The ticket row first, as every writer of the ticket does: an item marked pending by a
        # transaction not yet committed is seen once it is.
        ticket_id = await self.links.ticket_for_link(session, payload.link_id)
        # Every note's receipt passes here: plain statements (issue 11).
        db = await plain_sql(session)
        await db.execute(
            "UPDATE ticket_items SET delivery_status = $3, delivery_at = $4, delivery_reason = NULL, updated_at = now()"
            " WHERE id = $1 AND origin = $5 AND version = $2",
            payload.item_id, payload.version, Delivery.DELIVERED, utcnow(), Origin.LOCAL)
        # A deletion confirmed: nothing more to remember.
        await db.execute("DELETE FROM item_deletions WHERE item_id = $1 AND version <= $2", payload.item_id, payload.version)
        await self._settle(session, payload.link_id, ticket_id)

    async def delivered_together(self, session: AsyncSession, messages: list[tuple[Any, ItemDelivered, str]]) -> None:
        """Receipts that came together, set-based (issue 30): what `on_delivered` and `received` do for
        each, in five statements for them all, where each receipt alone takes five."""
        receipts = [payload for _, payload, _ in messages]
        # Each ticket row first, in the order the receipts came.
        tickets = await self.links.tickets_for_links(session, [r.link_id for r in receipts])
        db = await plain_sql(session)
        items, versions = [r.item_id for r in receipts], [r.version for r in receipts]
        await db.execute(
            "UPDATE ticket_items AS i SET delivery_status = $3, delivery_at = $4, delivery_reason = NULL, updated_at = now()"
            " FROM unnest($1::varchar[], $2::int[]) AS r(id, version)"
            " WHERE i.id = r.id AND i.origin = $5 AND i.version = r.version",
            items, versions, Delivery.DELIVERED, utcnow(), Origin.LOCAL)
        await db.execute("DELETE FROM item_deletions AS d USING unnest($1::varchar[], $2::int[]) AS r(id, version)"
                         " WHERE d.item_id = r.id AND d.version <= r.version", items, versions)
        await self._settle_links(session, tickets)
        await self.received_links(session, list(tickets))

    async def received_links(self, session: AsyncSession, link_ids: list[str]) -> None:
        """What `received` notes of each link, in one statement, for messages that change no workflow
        (items and receipts), their tickets locked already."""
        await (await plain_sql(session)).execute(
            "INSERT INTO link_sync (link_id, last_received_at) SELECT unnest($1::varchar[]), $2"
            " ON CONFLICT (link_id) DO UPDATE SET last_received_at = excluded.last_received_at", link_ids, utcnow())

    def together(self) -> dict[type[Payload], Callable[[AsyncSession, list[tuple[Any, Any, str]]], Awaitable[None]]]:
        """The messages this side applies set-based when several come together (`InboxConsumer`)."""
        return {ItemDelivered: self.delivered_together}

    async def on_refused(self, session: AsyncSession, payload: ItemRefused) -> None:
        """An edit or a deletion stayed on this side; the item itself remains shared as it was."""
        ticket_id = await self.links.ticket_for_link(session, payload.link_id)
        if ticket_id is None:
            return
        await session.execute(
            update(TicketItem)
            .where(TicketItem.id == payload.item_id, TicketItem.ticket_id == ticket_id,
                   TicketItem.origin == Origin.LOCAL, TicketItem.version == payload.version)
            .values(delivery_status=Delivery.REFUSED, delivery_at=utcnow(), delivery_reason=payload.reason)
        )
        await session.execute(delete(ItemDeletion).where(ItemDeletion.item_id == payload.item_id))
        await self._settle(session, payload.link_id)

    async def on_unshared(self, session: AsyncSession, ticket_id: str, payload: ItemUnshared) -> None:
        await session.execute(
            update(TicketItem)
            .where(TicketItem.id == payload.item_id, TicketItem.ticket_id == ticket_id, TicketItem.origin == Origin.LOCAL)
            .values(shared=False, delivery_status=Delivery.REFUSED, delivery_at=utcnow(), delivery_reason=payload.reason)
        )
        await session.execute(delete(ItemDeletion).where(ItemDeletion.item_id == payload.item_id))
        await self._settle(session, payload.link_id)

    async def _settle(self, session: AsyncSession, link_id: str, ticket_id: str | None = None) -> None:
        """Nothing of the link waits any more: say so (the watch stops asking about it)."""
        await self._settle_links(session, {link_id: ticket_id or await self.links.ticket_for_link(session, link_id)})

    @staticmethod
    async def _settle_links(session: AsyncSession, tickets: dict[str, str | None]) -> None:
        """`_settle` for each link (to its ticket, locked; None: not linked to one), in one plain
        statement: it runs for every receipt, or for every batch of them."""
        await (await plain_sql(session)).execute(
            "UPDATE link_sync AS s SET pending_since = NULL FROM unnest($1::varchar[], $2::varchar[]) AS l(link_id, ticket_id)"
            " WHERE s.link_id = l.link_id AND s.pending_since IS NOT NULL AND (l.ticket_id IS NULL OR NOT EXISTS"
            # A literal, not a parameter: the partial index of pending items serves it.
            f" (SELECT FROM ticket_items WHERE ticket_id = l.ticket_id AND delivery_status = '{Delivery.PENDING}')"
            " AND NOT EXISTS (SELECT FROM item_deletions WHERE ticket_id = l.ticket_id))",
            list(tickets), list(tickets.values()))

    # --- reconciliation: what the bridge asks ----------------------------------------------------

    async def on_manifest_requested(self, session: AsyncSession, payload: ManifestRequested) -> None:
        link_id = payload.link_id
        # The ticket row first, as every writer of the ticket does (then its link's bookkeeping):
        # the other order deadlocked with an API write on the same ticket.
        ticket_id = await self.links.ticket_for_link(session, link_id)
        side = await self.links.side_status(session, link_id)
        health = SideHealth()
        current = ticket_id is not None and (await self.links.link_for_ticket(session, ticket_id)).link_id == link_id
        if current:
            # Only the ticket's current link holds its shared set (an older link's items were its own).
            answer = await manifests.describe(await plain_sql(session), ticket_id, link_id, payload.since)
            health = await self._health_counts(session, ticket_id, link_id)
        else:
            answer = manifests.Description(as_of=0, since=None, digest=manifests.digest([]))
        row = await session.get(LinkSync, link_id)
        await _touch(session, link_id, manifest_as_of=row.changed_at if row else None)
        parts = max(1, -(-max(len(answer.items), len(answer.mirrors), len(answer.removed)) // MANIFEST_PART))
        for part in range(parts):
            window = slice(part * MANIFEST_PART, (part + 1) * MANIFEST_PART)
            self.publisher.emit(session, Manifest(
                link_id=link_id, round_id=payload.round_id, part=part, parts=parts, side=side, health=health,
                items=answer.items[window], mirrors=answer.mirrors[window], removed=answer.removed[window],
                as_of=answer.as_of, since=answer.since, digest=answer.digest), link_id)

    async def on_resend_requested(self, session: AsyncSession, payload: ResendRequested) -> None:
        """Send the items again as they are now: their latest version, attachments with their bytes."""
        ticket_id = await self.links.ticket_of(session, payload.link_id)
        if ticket_id is None:
            return
        rows = await session.scalars(
            select(TicketItem).where(TicketItem.id.in_(payload.item_ids), TicketItem.ticket_id == ticket_id)
        )
        found = {item.id: item for item in rows}
        # In the order they were created, as they first crossed (a deletion has no place: first).
        for item_id in sorted(payload.item_ids, key=lambda i: found[i].seq if i in found else -1):
            item = found.get(item_id)
            if item is None:
                deletion = await session.get(ItemDeletion, item_id)
                if deletion is not None:
                    self.publisher.emit(session, ItemDeleted(link_id=payload.link_id, item_id=item_id,
                                                             kind=deletion.kind, version=deletion.version),
                                        payload.link_id)
                continue
            if item.origin != Origin.LOCAL or not item.shared or item.internal or item.link_id != payload.link_id:
                continue  # never sent on this link: nothing the rules keep local leaves by a repair
            content = None
            if item.kind == ItemKind.ATTACHMENT:
                content = await session.scalar(select(AttachmentContent.content).where(AttachmentContent.item_id == item.id))
            emit_item(self.publisher, session, payload.link_id, item, ItemCreated, content)

    async def on_reconciled(self, session: AsyncSession, payload: Reconciled) -> None:
        await self.links.ticket_for_link(session, payload.link_id)  # the ticket row first
        row = await session.get(LinkSync, payload.link_id, with_for_update=True)
        if row is None:
            return
        row.last_reconciled_at = utcnow()
        row.in_sync = payload.in_sync
        if payload.in_sync and row.manifest_as_of is not None:
            # Confirmed: the workflow as it was when this side described it (later changes are not).
            row.confirmed_through = max(row.confirmed_through or row.manifest_as_of, row.manifest_as_of)
        if payload.in_sync:
            # In sync: the other side holds no mirror of an item deleted here (or never will again).
            await session.execute(delete(ItemDeletion).where(ItemDeletion.link_id == payload.link_id))
            await self._settle(session, payload.link_id)

    def handlers(self) -> dict[type[Payload], Callable[[AsyncSession, Any], Awaitable[None]]]:
        return {
            ItemDelivered: self.on_delivered,
            ItemRefused: self.on_refused,
            ManifestRequested: self.on_manifest_requested,
            ResendRequested: self.on_resend_requested,
            Reconciled: self.on_reconciled,
        }

    # --- health ---------------------------------------------------------------------------------

    async def _health_counts(self, session: AsyncSession, ticket_id: str, link_id: str) -> SideHealth:
        counts = dict((await session.execute(
            select(TicketItem.delivery_status, func.count())
            .where(TicketItem.ticket_id == ticket_id, TicketItem.origin == Origin.LOCAL,
                   TicketItem.delivery_status.is_not(None))
            .group_by(TicketItem.delivery_status)
        )).all())
        deletions = (await session.execute(
            select(func.count(), func.min(ItemDeletion.delivery_at)).where(ItemDeletion.ticket_id == ticket_id)
        )).one()
        oldest_item = await session.scalar(
            select(func.min(TicketItem.delivery_at)).where(TicketItem.ticket_id == ticket_id,
                                                           TicketItem.delivery_status == Delivery.PENDING)
        )
        oldest = min((t for t in (oldest_item, deletions[1]) if t is not None), default=None)
        row = await session.get(LinkSync, link_id)
        return SideHealth(
            pending=counts.get(Delivery.PENDING, 0) + deletions[0],
            delivered=counts.get(Delivery.DELIVERED, 0),
            refused=counts.get(Delivery.REFUSED, 0),
            oldest_pending_at=oldest.isoformat() if oldest else None,
            last_sent_at=row.last_sent_at.isoformat() if row and row.last_sent_at else None,
            last_received_at=row.last_received_at.isoformat() if row and row.last_received_at else None,
        )

    async def health(self, session: AsyncSession, ticket_id: str) -> dict[str, Any] | None:
        """GET /api/tickets/{id}/sync: None when the ticket was never linked."""
        link = await self.links.link_for_ticket(session, ticket_id)
        if link is None:
            return None
        counts = await self._health_counts(session, ticket_id, link.link_id)
        row = await session.get(LinkSync, link.link_id)
        in_sync = counts.pending == 0 and (row is None or row.in_sync is not False)
        return {
            "link_id": link.link_id,
            "link_state": workflow.link_state_of(link.status).value,
            "status": link.status.value,
            "partner_id": link.partner_id,
            "in_sync": in_sync,
            "last_sent_at": row.last_sent_at if row else None,
            "last_received_at": row.last_received_at if row else None,
            "last_reconciled_at": row.last_reconciled_at if row else None,
            "pending": counts.pending,
            "delivered": counts.delivered,
            "refused": counts.refused,
            "oldest_pending_at": counts.oldest_pending_at,
        }


def emit_item(publisher: Publisher, session: AsyncSession, link_id: str, item: TicketItem, model,
              content: bytes | None = None) -> None:
    """An item (created, updated or sent again) as messages: the item, then an attachment's bytes in chunks."""
    chunks: list[bytes] = []
    if item.kind == ItemKind.ATTACHMENT and model is ItemCreated:
        content = content or b""
        chunks = [content[i : i + CHUNK_BYTES] for i in range(0, len(content), CHUNK_BYTES)] or [b""]
    publisher.emit(session, model(link_id=link_id, item_id=item.id, kind=item.kind, fields=item.fields,
                                  chunk_count=len(chunks), version=item.version), link_id)
    for index, chunk in enumerate(chunks):
        publisher.emit(session, AttachmentChunk(link_id=link_id, item_id=item.id, index=index, count=len(chunks),
                                                data=base64.b64encode(chunk).decode()), link_id)


class SyncWatch:
    """Asks the bridge to reconcile a link whose items wait for receipts, or whose last workflow
    change no reconciliation has confirmed, once `grace` has passed; at most once per interval."""

    def __init__(self, sync: PartnerSync, interval: float, grace: float = 5.0):
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        self.sync = sync
        self.interval = interval
        self.grace = min(grace, interval)
        self.requests_total = 0
        self.pending_items = 0
        self.oldest_pending_age = 0.0
        self._wake = asyncio.Event()
        self._loss = DataLoss()
        self._lost_since: datetime | None = None

    def attach(self, sessions: async_sessionmaker[AsyncSession]) -> "SyncWatch":
        self.sessions = sessions
        return self

    def broker_lost_data(self, where: str) -> None:
        """A consumer saw the broker lose data: every open link is asked about at once."""
        log.warning("the broker lost data on %s: reconciling every open link", where)
        self._lost_since = self._loss.seen(where)
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                lost_since, self._lost_since = self._lost_since, None
                await self.tick(lost_since)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sync watch failed; trying again in %.0fs", self.interval)

    async def tick(self, lost_since: datetime | None = None) -> int:
        """Ask about the links that need it; every open link when the broker lost data at `lost_since`."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            settled = now - timedelta(seconds=self.grace)
            if lost_since:
                # Every open link, except those asked about a moment ago (a loss is seen on several
                # partitions at once: the bridge is asked once).
                recent = set(await session.scalars(select(LinkSync.link_id).where(LinkSync.requested_at > settled)))
                link_ids = [link for link in await self.sync.links.open_links(session) if link not in recent]
                reason = "the broker lost data"
            else:
                link_ids = list(await session.scalars(
                    select(LinkSync.link_id).where(
                        or_(LinkSync.pending_since < settled,
                            (LinkSync.changed_at < settled)
                            & (LinkSync.changed_at > func.coalesce(LinkSync.confirmed_through, text("'-infinity'")))),
                        or_(LinkSync.requested_at.is_(None),
                            LinkSync.requested_at < now - timedelta(seconds=self.interval)),
                    ).limit(1000)
                ))
                reason = "unconfirmed changes or items waiting for their receipt"
            ready = await _not_held(session, link_ids)
            if lost_since and len(ready) < len(link_ids):
                self._lost_since = self._lost_since or lost_since  # the rest on the next tick, in a second
                asyncio.get_running_loop().call_later(1.0, self._wake.set)
            link_ids = ready
            for link_id in link_ids:
                self.sync.publisher.emit(
                    session, ReconcileRequested(link_id=link_id, reason=reason, lost_since=lost_since), link_id)
                await _touch(session, link_id, requested_at=now, request_reason=reason)
            pending = (await session.execute(
                select(func.count(), func.min(TicketItem.delivery_at)).where(TicketItem.delivery_status == Delivery.PENDING)
            )).one()
            self.pending_items = pending[0]
            self.oldest_pending_age = (now - pending[1]).total_seconds() if pending[1] else 0.0
        self.requests_total += len(link_ids)
        return len(link_ids)
