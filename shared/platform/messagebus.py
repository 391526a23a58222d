"""One named handler per message type, found in a mapping (the message bus of *Architecture
Patterns with Python*): a service says which messages it handles and who handles each; a message
no handler is registered for is refused loudly (dead letter), never dropped."""
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.envelope import Payload
from shared.platform.inbox import Rejected

log = logging.getLogger(__name__)


class Ignored(Exception):
    """A message that no longer applies in the current state: applied as a no-op, not parked."""

# (session, what the handler needs: the payload itself, or a richer event the service built from it)
MessageHandler = Callable[[AsyncSession, Any], Awaitable[None]]


class MessageBus:
    def __init__(self, service: str, handlers: Mapping[type[Payload], MessageHandler]):
        self.service = service
        self.handlers = dict(handlers)

    async def dispatch(self, session: AsyncSession, payload: Payload, event: Any = None) -> None:
        handler = self.handlers.get(type(payload))
        if handler is None:
            raise Rejected(f"{payload.type} is not for the {self.service}")
        try:
            await handler(session, payload if event is None else event)
        except Ignored as exc:
            # The state had moved on (the other side's order of events decided): a no-op, on record.
            log.warning("%s: %s", self.service, exc)
