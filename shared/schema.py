"""Which tables each service's database holds, as the models describe them: the platform's (tokens,
outbox, inbox, dead letters) in every service; the ticket core, incoming mirrors and notifications
in both partners. A service's models module adds its own tables; its Alembic environment compares
with the result, and tests/integration/test_schema.py checks the migrations build exactly that."""
from shared.auth import ApiToken
from shared.db import service_metadata
from shared.inbox import DeadLetter, InboxRecord
from shared.notifications import Notification
from shared.outbox import OutboxMessage
from shared.sync import IncomingAttachment, IncomingChunk
from shared.tickets.models import AttachmentContent, Ticket, TicketItem, TicketNumberCounter

PLATFORM_TABLES = [ApiToken.__table__, OutboxMessage.__table__, InboxRecord.__table__, DeadLetter.__table__]
PARTNER_TABLES = [
    *PLATFORM_TABLES,
    Ticket.__table__, TicketNumberCounter.__table__, TicketItem.__table__, AttachmentContent.__table__,
    IncomingAttachment.__table__, IncomingChunk.__table__, Notification.__table__,
]

__all__ = ["PARTNER_TABLES", "PLATFORM_TABLES", "service_metadata"]
