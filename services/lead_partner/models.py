"""The lead partner's own tables: its outsourcings (one row per time a ticket was outsourced) and the
hub's directory of the insourcing partners it may outsource to."""
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.domain.schema import PARTNER_TABLES, service_metadata
from shared.platform.db import Base


class Outsourcing(Base):
    __tablename__ = "outsourcings"
    __table_args__ = (Index("ix_outsourcings_ticket", "ticket_id", "created_at"), Index("ix_outsourcings_status", "status"))
    __mapper_args__ = {"eager_defaults": True}

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    partner_id: Mapped[str] = mapped_column(String(100))
    partner_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    instructions: Mapped[str] = mapped_column(Text, default="")
    terms: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    partner_ticket_number: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    # How many Insource Completes the partner sent (a resent one is applied once), and, once
    # Complete, whether it was approved or set Complete: what reconciliation compares.
    rounds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    approved: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class PartnerDirectory(Base):
    """The latest directory the hub sent (directory.partners): one row, replaced only by a higher version."""

    __tablename__ = "partner_directory"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1: one hub
    version: Mapped[int] = mapped_column(BigInteger)
    partners: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)  # [{id, name}], in the hub's order
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# What the lead's migrations must build (tests/integration/test_schema.py).
metadata = service_metadata(*PARTNER_TABLES, Outsourcing.__table__, PartnerDirectory.__table__)
