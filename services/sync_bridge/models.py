"""The bridge's own tables: the link registry and the partner directory."""
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Identity, Index, Integer, LargeBinary, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.domain.schema import PLATFORM_TABLES, service_metadata
from shared.platform.idempotency import IdempotencyKey
from shared.platform.db import Base


class Link(Base):
    """One lead ticket outsourced to one insourcing partner, and (once accepted) its insourced ticket."""

    __tablename__ = "links"
    __table_args__ = (
        Index("ix_links_state", "state"),
        # The scheduler looks only at links with a round under way or due: idle links cost nothing.
        Index("ix_links_reconciling", "id", postgresql_where=text("reconcile_due OR round_id IS NOT NULL")),
        # The link list's order and its cursor (GET /api/links, the Links page): newest first, a page at a time.
        Index("ix_links_created", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | active | suspended | terminated
    lead_partner_id: Mapped[str] = mapped_column(String(100))
    lead_ticket_id: Mapped[str] = mapped_column(String(36))
    # The numbers the partners' users know the tickets by, which the operator searches for. Text: the
    # contract sets no length, and a long number must not fail the event that brings it.
    lead_ticket_number: Mapped[str | None] = mapped_column(Text)
    insourcing_partner_id: Mapped[str] = mapped_column(String(100))
    insourcing_ticket_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the bridge decided, kept so that reconciliation can tell a side that missed it again.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # the work request, as the partner gets it
    # The statement of the latest Insource Complete, as the lead got it (null from a release-1.0.0 partner).
    statement: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The statement the link ended with, as outsource.completed named it (version, SHA-256 and, when the
    # lead's Complete froze it, the statement): a link.completed sent again carries it too.
    completion: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    insourcing_ticket_number: Mapped[str | None] = mapped_column(Text)
    rounds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # Insource Completes applied
    outcome: Mapped[str | None] = mapped_column(String(16))  # canceled | declined | completed
    approved: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)  # the last decline or reject reason
    # Reconciliation: the round under way, whether another is due, and what the last one found.
    round_id: Mapped[str | None] = mapped_column(String(36))
    round_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the round is asked again if its answers are not all back (they were lost, or wait behind
    # a backlog): ROUND_TIMEOUT after a first question, twice the last wait after each repeat.
    round_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reconcile_due: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    last_reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    in_sync: Mapped[bool | None] = mapped_column(Boolean)
    repairs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_repair_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Each side's last manifest summary (receipt counts, last traffic), for the health view.
    lead_health: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    insourcing_health: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


@dataclass(frozen=True)
class LinkFacts:
    """What passing an item on reads of its link, from one plain statement that locks and stamps the
    row (issue 11: loading the whole link through the ORM was half the bridge's cost of an item).
    The handlers that change a link get the mapped Link instead."""

    id: str
    state: str
    lead_partner_id: str
    insourcing_partner_id: str
    round_id: str | None


class ItemMirror(Base):
    """The id mapping: an item on one ticket and its mirror on the other."""

    __tablename__ = "item_mirrors"
    __table_args__ = (Index("ix_item_mirrors_mirror", "link_id", "mirror_id"),)

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_partner_id: Mapped[str] = mapped_column(String(100))
    mirror_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(20))  # the mirror's kind (a lead time entry is a note at the partner)
    deleted: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The reconciliation round under way when the bridge last passed the item on (its first version,
    # an edit, a deletion, a chunk): after that round's questions, so its answers cannot show it yet.
    forwarded_in_round: Mapped[str | None] = mapped_column(String(36))
    # The round under way when the bridge last passed the mirror's receipt (item.delivered) to the item's
    # creator: after that round's questions, so the creator's answer cannot show it yet (issue 28).
    receipt_in_round: Mapped[str | None] = mapped_column(String(36))

    def target_partner_id(self, link: "Link | LinkFacts") -> str:
        return link.insourcing_partner_id if self.source_partner_id == link.lead_partner_id else link.lead_partner_id


class ManifestPart(Base):
    """A part of one side's answer to a reconciliation round, kept until the round is compared."""

    __tablename__ = "manifest_parts"

    round_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    side: Mapped[str] = mapped_column(String(100), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    parts: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)


class KeptManifest(Base):
    """What the bridge keeps of one side's answer (issue 28): the point of that side's own changes it
    describes, and its entries below. A round asks only for what changed after it."""

    __tablename__ = "kept_manifests"

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    as_of: Mapped[int] = mapped_column(BigInteger)


class KeptEntry(Base):
    """One item or mirror of a kept answer, in the order the bridge first heard of it."""

    __tablename__ = "kept_manifest_entries"

    link_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    entry_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, Identity())
    mirror: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    delivery: Mapped[str | None] = mapped_column(String(10))


class Repair(Base):
    """One difference reconciliation found and repaired."""

    __tablename__ = "repairs"
    __table_args__ = (Index("ix_repairs_link", "link_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    link_id: Mapped[str] = mapped_column(String(36))
    round_id: Mapped[str] = mapped_column(String(36))
    what: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Partner(Base):
    """A partner the hub serves (SPEC section 10), onboarded through the bridge's API or command line.
    A removed one stays, so its id is never given to another company and its old links still name it."""

    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # lead | insourcing
    # onboarding | active | removed (the column is "status"; not a workflow status, so named apart)
    membership: Mapped[str] = mapped_column("status", String(16))
    kafka_username: Mapped[str | None] = mapped_column(String(100))  # None: a broker without users
    # What the broker keeps of its password (salt and salted password, never the password), encrypted
    # with BRIDGE_SECRET_KEY: the bridge gives the user back to a broker that lost its metadata.
    kafka_credential_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PartnerKey(Base):
    """A message signing key the bridge shares with one partner, encrypted with BRIDGE_SECRET_KEY.
    The newest signs; an older one verifies until `valid_until` (KEY_GRACE_S after its rotation)."""

    __tablename__ = "partner_keys"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DirectoryVersion(Base):
    """One row: the directory's version, raised by every change in the changing transaction. Its row
    lock puts concurrent changes one after the other, so each announces a list with all before it."""

    __tablename__ = "directory_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    version: Mapped[int] = mapped_column(BigInteger)


# What the bridge's migrations must build (tests/integration/test_schema.py).
metadata = service_metadata(
    *PLATFORM_TABLES, Link.__table__, ItemMirror.__table__, ManifestPart.__table__, KeptManifest.__table__,
    KeptEntry.__table__, Repair.__table__,
    Partner.__table__, PartnerKey.__table__, DirectoryVersion.__table__, IdempotencyKey.__table__,
)
