"""Tables of the ticket core. Item fields specific to a kind live in one validated JSONB column,
so that every kind is stored, listed and mirrored by the same code."""
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    FetchedValue,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.platform.db import Base


def new_id() -> str:
    return str(uuid.uuid4())


class Ticket(Base):
    __tablename__ = "tickets"
    __mapper_args__ = {"eager_defaults": True}  # read server-set timestamps back with RETURNING

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(32), default="New")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class TicketNumberCounter(Base):
    """The last ticket number handed out per day, so numbers read T20261126.0001, .0002, ..."""

    __tablename__ = "ticket_number_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class TicketItem(Base):
    __tablename__ = "ticket_items"
    __table_args__ = (
        Index("ix_ticket_items_ticket_id_kind", "ticket_id", "kind", "seq"),  # a ticket's items of a kind, in order
        # What waits for a receipt, for the health view and its metrics.
        Index("ix_ticket_items_pending", "ticket_id", postgresql_where=text("delivery_status = 'pending'")),
        Index("ix_ticket_items_changes", "ticket_id", "change_point"),  # what changed since a point
    )
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)  # creation order
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    origin: Mapped[str] = mapped_column(String(10))  # local | partner | system
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    # Part of the synchronized set of a link: set when the item crosses (or was received).
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the item is read-only for everyone: "suspension" (until the lead rejects), "completion" or
    # "partner_left" (for good).
    lock: Mapped[str | None] = mapped_column(String(16))
    # A partner's item the lead may now edit: set when the outsourcing completes.
    released: Mapped[bool] = mapped_column(Boolean, default=False)
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # The link the item crossed on (its own, or the one its mirror came over): a ticket outsourced
    # again later shares only what is added then.
    link_id: Mapped[str | None] = mapped_column(String(36))
    # Every edit makes a new version; a receipt and reconciliation name the version they confirm.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # On the creator's side of a shared item: pending | delivered | refused (null: never sent).
    delivery_status: Mapped[str | None] = mapped_column(String(10))
    delivery_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_reason: Mapped[str | None] = mapped_column(Text)
    # On a mirror: the version and content hash of the original it mirrors.
    source_version: Mapped[int | None] = mapped_column(Integer)
    source_hash: Mapped[str | None] = mapped_column(String(64))
    # The number of its last write, from one sequence (a trigger sets it on every update): a
    # reconciliation answer describes only the items written after the point the bridge last kept.
    change_point: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('ticket_item_changes')"),
                                              server_onupdate=FetchedValue())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class TicketItemRemoval(Base):
    """A deleted item's id and the change point of its deletion (written by a trigger), until the
    bridge keeps what the partner held after it."""

    __tablename__ = "ticket_item_removals"
    __table_args__ = (Index("ix_ticket_item_removals_changes", "ticket_id", "change_point"),)

    item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(36))
    change_point: Mapped[int] = mapped_column(BigInteger)


class AttachmentContent(Base):
    __tablename__ = "attachment_contents"

    item_id: Mapped[str] = mapped_column(ForeignKey("ticket_items.id", ondelete="CASCADE"), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)


