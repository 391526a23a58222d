"""The statements of a link as both partners keep them (SPEC section 12): the insourcing partner freezes
one at each Insource Complete (version 1, 2, ...) from its own items and the terms, sends it with the
request, and the lead stores the copy it received; the lead approves one of them by its SHA-256, or
its Complete at any time freezes one of what had crossed by then. The statement the link ended with
is settled on both sides (and never changes after), then invoiced by the partner."""
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Index, Integer, Numeric, Select, String, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.domain import billing
from shared.domain.tickets.models import TicketItem
from shared.domain.tickets.rules import Delivery, ItemKind, Origin
from shared.platform import paging
from shared.platform.db import Base, utcnow
from shared.platform.errors import Conflict, Unprocessable

APPROVED, COMPLETED = "approved", "completed"  # how the link ended with a statement


class Statement(Base):
    """One frozen statement of a link, and what became of it."""

    __tablename__ = "statements"
    # The reports: settled statements, newest first.
    __table_args__ = (
        Index("ix_statements_settled", "settled_at", "link_id", postgresql_where=text("settled IS NOT NULL")),
        # A link ends with one statement: never two settled (the reports would count it twice).
        Index("ux_statements_one_settled", "link_id", unique=True, postgresql_where=text("settled IS NOT NULL")),
    )

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The link ended with this statement: "approved" by the lead, or "completed" (the lead's Complete at
    # any time). One statement of a link at most; the others were superseded.
    settled: Mapped[str | None] = mapped_column(String(16))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    invoice_number: Mapped[str | None] = mapped_column(String(64))
    invoiced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def as_json(self) -> dict[str, Any]:
        return {"link_id": self.link_id, "version": self.version, "sha256": self.sha256, "statement": self.body,
                "frozen_at": self.created_at, "settled": self.settled, "settled_at": self.settled_at,
                "invoice_number": self.invoice_number, "invoiced_at": self.invoiced_at}


async def freeze(session: AsyncSession, link_id: str, ticket_id: str, terms: dict | None, version: int, *,
                 crossed: bool = False) -> Statement:
    """The statement of the link now, priced by the terms. The insourcing partner's: its own time
    entries and charges on the ticket that are shared and delivered. `crossed` (the lead's Complete at
    any time): the mirrors of the partner's items that had crossed by then."""
    query = select(TicketItem).where(TicketItem.ticket_id == ticket_id,
                                     TicketItem.kind.in_([ItemKind.TIME_ENTRY, ItemKind.CHARGE]))
    if crossed:
        query = query.where(TicketItem.origin == Origin.PARTNER, TicketItem.link_id == link_id)
    else:
        query = query.where(TicketItem.origin == Origin.LOCAL)
    items = [billing.BilledItem(item.id, item.kind, item.fields, internal=item.internal,
                                shared=crossed or (item.shared and item.link_id == link_id),
                                delivered=crossed or item.delivery_status == Delivery.DELIVERED)
             for item in await session.scalars(query.order_by(TicketItem.seq))]
    return await keep(session, link_id, billing.statement(terms, items, version))


async def keep(session: AsyncSession, link_id: str, body: dict[str, Any], *, authoritative: bool = False) -> Statement:
    """A statement stored as it is (a copy received is kept as it came: its hash is recomputed, not
    trusted). `authoritative`: the statement the link ended with replaces a different one of the same
    version that never got approved (an Insource Complete overtaken by the lead's Complete)."""
    row = await session.get(Statement, (link_id, body["version"]), with_for_update=True)
    digest = billing.sha256(body)
    if row is None:
        row = Statement(link_id=link_id, version=body["version"], body=body, sha256=digest)
        session.add(row)
        await session.flush()
    elif authoritative and row.sha256 != digest and row.settled is None:
        row.body, row.sha256 = body, digest
    return row


async def latest(session: AsyncSession, link_id: str) -> Statement | None:
    return await session.scalar(
        select(Statement).where(Statement.link_id == link_id).order_by(Statement.version.desc()).limit(1))


async def of_version(session: AsyncSession, link_id: str, version: int) -> Statement | None:
    return await session.get(Statement, (link_id, version), with_for_update=True)


def approvable(current: Statement | None, sha256: str | None, held: list[Statement], round_: int) -> Statement | None:
    """The statement an approval names, checked against the one waiting: required when one waits, and
    only that one (a superseded or unknown hash is a conflict naming the current version)."""
    if current is None:
        if held:  # this partner sends statements: the one of this Insource Complete has not arrived (or was refused)
            raise Conflict(f"this lead does not hold the statement of Insource Complete {round_} yet (the latest it holds"
                           f" is version {held[-1].version}): reconciliation sends it again; or set Complete, which"
                           " freezes a statement of what has crossed")
        if sha256 is not None:
            raise Conflict("there is no statement to approve: the partner's Insource Complete carried none"
                           " (its release predates statements); approve without statement_sha256")
        return None
    named = f"version {current.version} (statement_sha256 {current.sha256})"
    if sha256 is None:
        raise Unprocessable(f"statement_sha256 is required: approve the statement you read, the current one is {named}")
    if sha256.lower() == current.sha256:
        return current
    old = next((s for s in held if s.sha256 == sha256.lower()), None)
    if old is not None:
        raise Conflict(f"statement version {old.version} was superseded: the current one is {named}")
    raise Conflict(f"no statement of this link has SHA-256 {sha256}: the current one is {named}")


def settle(row: Statement, outcome: str) -> None:
    """The link ended with this statement; after this nothing changes it but its invoice."""
    if row.settled is None:
        row.settled, row.settled_at = outcome, utcnow()


async def settled(session: AsyncSession, link_id: str) -> Statement | None:
    return await session.scalar(select(Statement).where(Statement.link_id == link_id, Statement.settled.is_not(None)))


async def current(session: AsyncSession, link_id: str) -> Statement | None:
    """The statement the link ended with, else the latest (one query)."""
    return await session.scalar(select(Statement).where(Statement.link_id == link_id)
                                .order_by(Statement.settled.is_(None), Statement.version.desc()).limit(1))


async def all_of(session: AsyncSession, link_id: str) -> list[Statement]:
    return list(await session.scalars(select(Statement).where(Statement.link_id == link_id)
                                      .order_by(Statement.version)))


# --- the billing reports (both partners: receivables and payables) --------------------------------

AMOUNTS = ("labor", "charges", "total")
CURRENCY = Statement.body["currency"].astext  # for the reports' sums, per currency
TOTAL = Statement.body["totals"]["total"].astext.cast(Numeric)  # summed exactly by the database


def figures(row: Statement) -> dict[str, Any]:
    """What a report row shows of the statement the link ended with: version, hash, how and when it
    was settled, currency and amounts (two-place strings)."""
    totals = row.body["totals"]
    return {"statement_version": row.version, "statement_sha256": row.sha256, "settled": row.settled,
            "settled_at": row.settled_at, "currency": row.body.get("currency"),
            **{name: totals[name] for name in AMOUNTS}}


async def settled_page(session: AsyncSession, query: Select, limit: int | None, cursor: str | None,
                       item) -> tuple[list[dict], str | None]:
    """A report's rows (`query` selects the Statement first), newest settled first, a page at a time;
    `limit` None: every row (an export)."""
    query = paging.after(query, Statement.settled_at, Statement.link_id, cursor, newest_first=True)
    if limit is None:
        return [item(*row) for row in (await session.execute(query)).all()], None
    rows, next_cursor = paging.page((await session.execute(query.limit(limit + 1))).all(), limit,
                                    lambda row: row[0].settled_at, lambda row: row[0].link_id)
    return [item(*row) for row in rows], next_cursor


def as_numbers(rows: list[dict]) -> list[dict]:
    """Rows for a CSV: amounts as Decimals, which the export writes as numbers, never guarded as text."""
    return [{**row, **{name: Decimal(row[name]) for name in AMOUNTS}} for row in rows]
