"""Use cases of the ticket core. Each write locks its ticket row first, so that all writes to one
ticket (and the events they stage in the outbox) commit one after the other, in order."""
import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import and_, event, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.domain.tickets.models import AttachmentContent, Ticket, TicketItem, TicketNumberCounter, new_id
from shared.domain.tickets.rules import ItemKind, Lock, Origin
from shared.domain.tickets.schemas import MAX_ATTACHMENT_BYTES, AttachmentFields, stored_fields
from shared.platform import paging
from shared.platform.db import UnitOfWork, plain_sql
from shared.platform.errors import Conflict, NotFound, TooLarge, size_in_words


class SyncPolicy(Protocol):
    """What the outsourcing side of a service adds to the core: link state, and mirroring."""

    async def link_of(self, session: AsyncSession, ticket: Ticket) -> dict[str, Any] | None: ...

    def editable(self, item: "TicketItem | ListedItem") -> bool: ...

    async def item_written(
        self, session: AsyncSession, ticket_id: str, item: TicketItem, action: str, content: bytes | None = None
    ) -> None: ...


async def next_ticket_number(session: AsyncSession) -> str:
    day = datetime.now(UTC).strftime("%Y%m%d")
    last = await session.scalar(
        insert(TicketNumberCounter)
        .values(day=day, last=1)
        .on_conflict_do_update(index_elements=[TicketNumberCounter.day], set_={"last": TicketNumberCounter.last + 1})
        .returning(TicketNumberCounter.last)
    )
    return f"T{day}.{last:04d}"


async def create_ticket(session: AsyncSession, title: str, description: str = "", status: str = "New") -> Ticket:
    ticket = Ticket(number=await next_ticket_number(session), title=title, description=description, status=status)
    session.add(ticket)
    await session.flush()
    return ticket


async def list_tickets(session: AsyncSession, q: str, status: str | None, limit: int,
                       cursor: str | None) -> tuple[list[Ticket], str | None]:
    """A page of tickets, newest first: `q` matches a ticket number from its start, or every word of it
    in the title; `status` one Ticket Status."""
    query = select(Ticket)
    if words := q.split():
        in_title = and_(*(Ticket.title.ilike(f"%{_like(word)}%", escape="\\") for word in words))
        query = query.where(or_(Ticket.number.ilike(f"{_like(q.strip())}%", escape="\\"), in_title))
    if status:
        query = query.where(Ticket.status == status)
    query = paging.after(query, Ticket.created_at, Ticket.id, cursor, newest_first=True).limit(limit + 1)
    return paging.page(list((await session.scalars(query)).all()), limit, lambda t: t.created_at, lambda t: t.id)


async def update_ticket(session: AsyncSession, ticket_id: str, changes) -> Ticket:
    """A ticket's title, description or status changed (the fields `changes` sets)."""
    ticket = await get_ticket(session, ticket_id, for_update=True)
    for name, value in changes.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(ticket, name, value)
    await session.flush()  # server-made values for the answer
    return ticket


def _like(text: str) -> str:
    """`text` matched as it is: LIKE's wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def get_ticket(session: AsyncSession, ticket_id: str, *, for_update: bool = False) -> Ticket:
    query = select(Ticket).where(Ticket.id == ticket_id)
    if for_update:
        query = query.with_for_update()
    ticket = await session.scalar(query)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return ticket


_LOCKED = "tickets.locked_for_link"


async def lock_ticket_of_link(session: AsyncSession, link_id: str, links_table: str) -> str | None:
    """The ticket `link_id` links (`links_table` maps links to tickets), its row locked, in one
    plain statement; asked once per transaction, since the lock holds until the transaction ends
    (a receipt asked three times: for itself, its link's bookkeeping and the link's settling)."""
    held = session.info.setdefault(_LOCKED, {})
    if (links_table, link_id) not in held:
        ticket_id = await (await plain_sql(session)).fetchval(
            f"SELECT id FROM tickets WHERE id = (SELECT ticket_id FROM {links_table} WHERE link_id = $1) FOR UPDATE",
            link_id)
        if ticket_id is None:
            return None  # not linked to a ticket (yet): asked again next time
        held[links_table, link_id] = ticket_id
    return held[links_table, link_id]


async def lock_tickets_of_links(session: AsyncSession, link_ids: list[str], links_table: str) -> dict[str, str | None]:
    """`lock_ticket_of_link` for several links in one statement (a batch of messages, issue 30): their
    tickets locked in the order the links are given, cached alike; None for a link not linked (yet)."""
    held = session.info.setdefault(_LOCKED, {})
    wanted = [link_id for link_id in dict.fromkeys(link_ids) if (links_table, link_id) not in held]
    if wanted:
        for row in await (await plain_sql(session)).fetch(
                "SELECT u.link_id, t.id FROM unnest($1::varchar[]) WITH ORDINALITY AS u(link_id, n)"
                f" JOIN {links_table} AS l ON l.link_id = u.link_id JOIN tickets AS t ON t.id = l.ticket_id"
                " ORDER BY u.n FOR UPDATE OF t", wanted):
            held[links_table, row["link_id"]] = row["id"]
    return {link_id: held.get((links_table, link_id)) for link_id in link_ids}


@event.listens_for(UnitOfWork, "after_transaction_end")
def _forget_locks(session: Session, transaction) -> None:
    # Any end, a savepoint's too: a savepoint rolled back releases the locks taken in it.
    session.info.pop(_LOCKED, None)


@dataclasses.dataclass(frozen=True, slots=True)
class ListedItem:
    """An item as a page lists it: the columns `item_out` and `SyncPolicy.editable` read, from one
    plain statement (issue 30: through the ORM a page of 20 notes cost the service 3.9 ms of CPU,
    and every page a user opens, or a poll, paid it)."""
    id: str
    seq: int
    ticket_id: str
    kind: str
    origin: str
    internal: bool
    shared: bool
    lock: str | None
    released: bool
    fields: dict[str, Any]
    delivery_status: str | None
    delivery_at: datetime | None
    delivery_reason: str | None
    created_at: datetime
    updated_at: datetime


# Up to a page of a ticket's items of a kind, in one index range scan. Two statements, the first page's
# and the next ones' (after a number), as the ORM wrote them: each is prepared once per connection and
# its plan kept, and one statement for both, its plan made on the small first pages the API polls, took
# 24 ms a page to walk a ticket of 100,000 notes in the bench's order (4.1 ms this way).
_COLUMNS = ", ".join(field.name for field in dataclasses.fields(ListedItem))
_FIRST_PAGE = f"SELECT {_COLUMNS} FROM ticket_items WHERE ticket_id = $1 AND kind = $2 ORDER BY seq LIMIT $3"
_NEXT_PAGE = (f"SELECT {_COLUMNS} FROM ticket_items WHERE ticket_id = $1 AND kind = $2 AND seq > $3"
              " ORDER BY seq LIMIT $4")


async def list_items(
    session: AsyncSession, ticket_id: str, kind: ItemKind, limit: int, after: int | None = None
) -> tuple[list[ListedItem], bool]:
    """Up to `limit` items of a kind, oldest first, after the item numbered `after`; and whether more follow.
    Read outside a transaction: a page is one statement, and only an empty one asks whether the
    ticket exists (an item's ticket does: a foreign key)."""
    db = await plain_sql(session, one_read=True)
    if after is None:
        rows = await db.fetch(_FIRST_PAGE, ticket_id, str(kind.value), limit + 1)
    else:
        rows = await db.fetch(_NEXT_PAGE, ticket_id, str(kind.value), after, limit + 1)
    if not rows and await db.fetchval("SELECT 1 FROM tickets WHERE id = $1", ticket_id) is None:
        raise NotFound(f"ticket {ticket_id} not found")
    items = [ListedItem(*row) for row in rows]  # _COLUMNS are ListedItem's fields, in order
    return items[:limit], len(items) > limit


async def get_item(session: AsyncSession, ticket_id: str, kind: ItemKind, item_id: str) -> TicketItem:
    item = await session.scalar(
        select(TicketItem).where(TicketItem.id == item_id, TicketItem.ticket_id == ticket_id, TicketItem.kind == kind)
    )
    if item is None:
        raise NotFound(f"{kind.path.rstrip('s').replace('-', ' ')} {item_id} not found on ticket {ticket_id}")
    return item


async def add_item(
    session: AsyncSession,
    policy: SyncPolicy,
    ticket_id: str,
    kind: ItemKind,
    fields: dict[str, Any],
    internal: bool,
    content: bytes | None = None,
) -> TicketItem:
    # Every note, charge, time entry and attachment a user adds passes here: plain SQL (issue 11).
    # The item the caller gets back is not in the session; it is the row as written.
    db = await plain_sql(session)
    if await db.fetchval("SELECT id FROM tickets WHERE id = $1 FOR UPDATE", ticket_id) is None:
        raise NotFound(f"ticket {ticket_id} not found")
    # The policy sees the item before it is written, so that `shared` goes in with the INSERT.
    item = TicketItem(id=new_id(), ticket_id=ticket_id, kind=kind, origin=Origin.LOCAL, internal=internal,
                      shared=False, lock=None, released=False, fields=fields, version=1)
    await policy.item_written(session, ticket_id, item, "created", content)
    item.seq, item.created_at, item.updated_at = await db.fetchrow(
        "INSERT INTO ticket_items (id, ticket_id, kind, origin, internal, shared, released, fields, link_id, version,"
        " delivery_status, delivery_at) VALUES ($1, $2, $3, $4, $5, $6, false, $7::jsonb, $8, 1, $9, $10)"
        " RETURNING seq, created_at, updated_at",
        item.id, ticket_id, kind, Origin.LOCAL, internal, item.shared, json.dumps(fields), item.link_id,
        item.delivery_status, item.delivery_at)
    if kind == ItemKind.ATTACHMENT:
        await db.execute("INSERT INTO attachment_contents (item_id, content) VALUES ($1, $2)", item.id, content or b"")
    return item


def attachment_fields(filename: str, content_type: str, content: bytes) -> dict[str, Any]:
    """An upload's description, held to the limits a mirror of it must meet on the other side (a
    pydantic ValidationError names the file name or content type they refuse)."""
    if len(content) > MAX_ATTACHMENT_BYTES:
        raise TooLarge(f"attachment is {len(content)} bytes; the limit is {size_in_words(MAX_ATTACHMENT_BYTES)}")
    fields = AttachmentFields.model_validate({
        "filename": filename,
        "content_type": content_type,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    })
    return stored_fields(fields, exclude=set())


def _refuse_unless_editable(policy: SyncPolicy, item: TicketItem) -> None:
    if policy.editable(item):
        return
    noun = ItemKind(item.kind).value.replace("_", " ")
    if item.lock == Lock.SUSPENSION:
        why = "synchronization is suspended (Insource Complete) and items from before it are read-only"
    elif item.lock == Lock.COMPLETION:
        why = "the outsourcing is complete and items from before it are read-only for good"
    elif item.lock == Lock.PARTNER_LEFT:
        why = "the partner left the hub, which ended the outsourcing, and items from before then are read-only for good"
    elif item.origin == Origin.SYSTEM:
        why = "it was written by the system"
    elif item.kind == ItemKind.TIME_ENTRY:
        why = "time entries added by the partner stay read-only"
    else:
        why = "it was added by the partner and the tickets are linked"
    raise Conflict(f"this {noun} is read-only: {why}")


async def update_item(
    session: AsyncSession, policy: SyncPolicy, ticket_id: str, kind: ItemKind, item_id: str, changes: dict[str, Any]
) -> TicketItem:
    ticket = await get_ticket(session, ticket_id, for_update=True)
    item = await get_item(session, ticket_id, kind, item_id)
    _refuse_unless_editable(policy, item)
    if changes:
        item.fields = {**item.fields, **changes}
        await session.flush()
        await policy.item_written(session, ticket.id, item, "updated")
    return item


async def delete_item(session: AsyncSession, policy: SyncPolicy, ticket_id: str, kind: ItemKind, item_id: str) -> None:
    ticket = await get_ticket(session, ticket_id, for_update=True)
    item = await get_item(session, ticket_id, kind, item_id)
    _refuse_unless_editable(policy, item)
    await policy.item_written(session, ticket.id, item, "deleted")
    await session.delete(item)
    await session.flush()


async def attachment_content(session: AsyncSession, ticket_id: str, item_id: str) -> tuple[TicketItem, bytes]:
    item = await get_item(session, ticket_id, ItemKind.ATTACHMENT, item_id)
    content = await session.scalar(select(AttachmentContent.content).where(AttachmentContent.item_id == item_id))
    return item, content or b""


async def add_system_note(session: AsyncSession, ticket_id: str, title: str, body: str) -> TicketItem:
    """An automatic note: each side writes its own, and none is ever mirrored."""
    item = TicketItem(
        ticket_id=ticket_id, kind=ItemKind.NOTE, origin=Origin.SYSTEM, internal=False, fields={"title": title, "body": body}
    )
    session.add(item)
    await session.flush()
    return item
