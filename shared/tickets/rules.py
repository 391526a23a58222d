"""Pure rules of the ticket core: which statuses exist, and may an item be edited now. No I/O."""
import enum
from dataclasses import dataclass


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


@dataclass(frozen=True)
class ItemFacts:
    origin: Origin
    kind: ItemKind
    locked: bool


def item_editable(item: ItemFacts) -> bool:
    """Only the creator edits an item, and only while it is not locked (suspension or completion).
    System notes are a record of what happened and are never edited."""
    return item.origin == Origin.LOCAL and not item.locked
