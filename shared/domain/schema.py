"""Which tables each service's database holds, as the models describe them: the platform's (tokens,
outbox, inbox, dead letters) in every service; the ticket core, incoming mirrors and notifications
in both partners. A service's models module adds its own tables; its Alembic environment compares
with the result, and tests/integration/test_schema.py checks the migrations build exactly that."""
from shared.domain.partner_mirroring import IncomingAttachment, IncomingChunk
from shared.domain.partner_sync import ItemDeletion, LinkSync
from shared.domain.statements import Statement
from shared.domain.tickets.models import AttachmentContent, Ticket, TicketItem, TicketItemRemoval, TicketNumberCounter
from shared.platform.auth import ApiToken
from shared.platform.db import service_metadata
from shared.platform.idempotency import IdempotencyKey
from shared.platform.inbox import DeadLetter, InboxRecord, StreamPosition
from shared.platform.notifications import Notification
from shared.platform.outbox import OutboxMessage

PLATFORM_TABLES = [
    ApiToken.__table__, OutboxMessage.__table__, InboxRecord.__table__, DeadLetter.__table__, StreamPosition.__table__,
]
PARTNER_TABLES = [
    *PLATFORM_TABLES,
    Ticket.__table__, TicketNumberCounter.__table__, TicketItem.__table__, TicketItemRemoval.__table__,
    AttachmentContent.__table__,
    IncomingAttachment.__table__, IncomingChunk.__table__, Notification.__table__,
    ItemDeletion.__table__, LinkSync.__table__, Statement.__table__, IdempotencyKey.__table__,
]

__all__ = ["PARTNER_TABLES", "PLATFORM_TABLES", "service_metadata"]
