"""The insourcing partner's own table: the work it received from lead partners."""
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.domain.schema import PARTNER_TABLES, service_metadata
from shared.platform.db import Base


class ReceivedWork(Base):
    __tablename__ = "received_work"
    __table_args__ = (Index("ix_received_work_ticket", "ticket_id"), Index("ix_received_work_status", "status"))
    __mapper_args__ = {"eager_defaults": True}

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    lead_partner_id: Mapped[str] = mapped_column(String(100))
    lead_partner_name: Mapped[str] = mapped_column(String(255))
    lead_ticket_number: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str] = mapped_column(Text)
    terms: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(32))
    ticket_id: Mapped[str | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    rounds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # Insource Completes sent
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


# What the insourcing partner's migrations must build (tests/integration/test_schema.py).
metadata = service_metadata(*PARTNER_TABLES, ReceivedWork.__table__)
