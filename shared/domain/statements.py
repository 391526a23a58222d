"""The statements of a link as both partners keep them (SPEC section 12): the insourcing partner freezes
one at each Insource Complete (version 1, 2, ...) from its own items and the terms, sends it with the
request, and the lead stores the copy it received; both answer the same statement and SHA-256."""
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.domain import billing
from shared.domain.tickets.models import TicketItem
from shared.domain.tickets.rules import Delivery, ItemKind, Origin
from shared.platform.db import Base


class Statement(Base):
    """One frozen statement of a link."""

    __tablename__ = "statements"

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    def as_json(self) -> dict[str, Any]:
        return {"link_id": self.link_id, "version": self.version, "sha256": self.sha256, "statement": self.body,
                "frozen_at": self.created_at}


async def freeze(session: AsyncSession, link_id: str, ticket_id: str, terms: dict | None, version: int) -> Statement:
    """The insourcing partner's statement of the link now: its own time entries and charges on the
    ticket, priced by the terms."""
    rows = await session.scalars(
        select(TicketItem).where(TicketItem.ticket_id == ticket_id, TicketItem.origin == Origin.LOCAL,
                                 TicketItem.kind.in_([ItemKind.TIME_ENTRY, ItemKind.CHARGE]))
        .order_by(TicketItem.seq))
    items = [billing.BilledItem(item.id, item.kind, item.fields, shared=item.shared and item.link_id == link_id,
                                delivered=item.delivery_status == Delivery.DELIVERED, internal=item.internal)
             for item in rows]
    return await keep(session, link_id, billing.statement(terms, items, version))


async def keep(session: AsyncSession, link_id: str, body: dict[str, Any]) -> Statement:
    """A statement stored as it is (a copy received is kept as it came: its hash is recomputed, not trusted)."""
    row = await session.get(Statement, (link_id, body["version"]))
    if row is None:
        row = Statement(link_id=link_id, version=body["version"], body=body, sha256=billing.sha256(body))
        session.add(row)
        await session.flush()
    return row


async def latest(session: AsyncSession, link_id: str) -> Statement | None:
    return await session.scalar(
        select(Statement).where(Statement.link_id == link_id).order_by(Statement.version.desc()).limit(1))
