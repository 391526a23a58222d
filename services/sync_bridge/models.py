"""The bridge's own tables: the link registry."""
from datetime import datetime

from sqlalchemy import DateTime, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.domain.schema import PLATFORM_TABLES, service_metadata
from shared.platform.db import Base


class Link(Base):
    """One lead ticket outsourced to one insourcing partner, and (once accepted) its insourced ticket."""

    __tablename__ = "links"
    __table_args__ = (Index("ix_links_state", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | active | suspended | terminated
    lead_partner_id: Mapped[str] = mapped_column(String(100))
    lead_ticket_id: Mapped[str] = mapped_column(String(36))
    insourcing_partner_id: Mapped[str] = mapped_column(String(100))
    insourcing_ticket_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ItemMirror(Base):
    """The id mapping: an item on one ticket and its mirror on the other."""

    __tablename__ = "item_mirrors"

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_partner_id: Mapped[str] = mapped_column(String(100))
    mirror_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(20))  # the mirror's kind (a lead time entry is a note at the partner)
    deleted: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    def target_partner_id(self, link: Link) -> str:
        return link.insourcing_partner_id if self.source_partner_id == link.lead_partner_id else link.lead_partner_id


# What the bridge's migrations must build (tests/integration/test_schema.py).
metadata = service_metadata(*PLATFORM_TABLES, Link.__table__, ItemMirror.__table__)
