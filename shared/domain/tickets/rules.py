"""Pure rules of the ticket core: which statuses exist, and may an item be edited now. No I/O."""
import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any


class TicketStatus(enum.StrEnum):
    NEW = "New"
    IN_PROGRESS = "In Progress"
    WAITING_CUSTOMER = "Waiting Customer"
    COMPLETE = "Complete"


class ItemKind(enum.StrEnum):
    NOTE = "note"
    TIME_ENTRY = "time_entry"
    CHARGE = "charge"
    ATTACHMENT = "attachment"

    @property
    def path(self) -> str:
        """The collection name in URLs: notes, time-entries, charges, attachments."""
        return {"note": "notes", "time_entry": "time-entries", "charge": "charges", "attachment": "attachments"}[self]


class Origin(enum.StrEnum):
    LOCAL = "local"  # created on this ticket by this partner
    PARTNER = "partner"  # a mirror of the other partner's item
    SYSTEM = "system"  # written automatically by this service


class Lock(enum.StrEnum):
    SUSPENSION = "suspension"  # Insource Complete: read-only until the lead rejects
    COMPLETION = "completion"  # the outsourcing is complete: read-only for good
    PARTNER_LEFT = "partner_left"  # the other partner left the hub, which ended the link: read-only for good


@dataclass(frozen=True)
class ItemFacts:
    origin: Origin
    kind: ItemKind
    lock: Lock | None = None
    released: bool = False


def item_editable(item: ItemFacts) -> bool:
    """Only the creator edits an item, and not while a suspension or completion locks it. Once an
    outsourcing is complete, the lead may edit the partner's notes, charges and attachments
    (released), never its time entries. System notes are a record and are never edited."""
    if item.lock is not None:
        return False
    if item.origin == Origin.LOCAL:
        return True
    return item.origin == Origin.PARTNER and item.released and item.kind != ItemKind.TIME_ENTRY


class Delivery(enum.StrEnum):
    """Where a shared item stands on its creator's side (SPEC section 9)."""

    PENDING = "pending"  # sent; the other side has not confirmed this version yet
    DELIVERED = "delivered"  # the other side committed the mirror of this version
    REFUSED = "refused"  # the bridge or the other side would not take it (the reason says why)


def content_hash(kind: str, fields: dict[str, Any]) -> str:
    """The hash of an item's content as its creator holds it; the bridge stamps it on the mirror,
    and reconciliation compares the two (an attachment's fields carry the sha256 of its bytes)."""
    canonical = json.dumps({"kind": kind, "fields": fields}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
