"""What the handler tests are made of: each service's real database and message handler (a Side),
and the steps that bring a link, a ticket or a received work to where a test starts."""
import uuid

from sqlalchemy import select

from shared.contracts.envelope import Payload, envelope, parse
from shared.contracts.messages import (
    DirectoryChanged,
    DirectoryEntry,
    InsourceAccepted,
    ItemCreated,
    OutsourceRequested,
    WorkRequested,
)
from shared.domain.tickets.models import TicketItem
from shared.domain.tickets.service import create_ticket
from shared.platform.db import make_engine, make_sessionmaker
from shared.platform.kafka import outbound_topic
from shared.platform.notifications import Notification
from shared.platform.outbox import OutboxMessage

LEAD, PARTNER = "lead-partner", "insourcing-partner"
# The hub's directory as the lead's tests start from it: the lead may outsource to the partner.
PARTNER_ENTRY = DirectoryEntry(id=PARTNER, name="Insourcing Partner")
IN_LEAD, IN_PARTNER = "psa.lead-partner.inbound", "psa.insourcing-partner.inbound"


class Side:
    """One service's database and its message handler, as its inbox consumer would call it."""

    def __init__(self, url: str, handle):
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.handle = handle

    async def receive(self, payload: Payload, source: str = "bridge", topic: str = "") -> None:
        link_id = getattr(payload, "link_id", None)  # a directory message belongs to no link
        async with self.sessions() as session, session.begin():
            await self.handle(session, envelope(payload, source=source, link_id=link_id), payload, topic)

    async def call(self, method, *args):
        """An API action, in one transaction as the endpoint runs it."""
        async with self.sessions() as session, session.begin():
            return await method(session, *args)

    async def staged(self, link_id: str) -> list[tuple[str, str]]:
        """(topic, type) of every message staged for the link, in order."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(OutboxMessage.topic, OutboxMessage.type).where(OutboxMessage.key == link_id).order_by(OutboxMessage.id))
            return [tuple(r) for r in rows.all()]

    async def last_staged(self, link_id: str) -> Payload:
        """The last message staged for the link, as its receiver will read it."""
        async with self.sessions() as session:
            value = await session.scalar(select(OutboxMessage.value).where(OutboxMessage.key == link_id)
                                         .order_by(OutboxMessage.id.desc()).limit(1))
            return parse(value)[1]

    async def get(self, model, key):
        async with self.sessions() as session:
            return await session.get(model, key)

    async def mails(self, kind: str) -> list[Notification]:
        async with self.sessions() as session:
            return list((await session.scalars(select(Notification).where(Notification.kind == kind))).all())


async def from_partner(bridge: Side, sender: str, payload: Payload) -> None:
    """A partner's event reaching the bridge on that partner's outbound topic."""
    await bridge.receive(payload, source=sender, topic=outbound_topic(sender))


def requested(link_id: str) -> OutsourceRequested:
    return OutsourceRequested(link_id=link_id, lead_partner_name="Lead", lead_ticket_id=str(uuid.uuid4()),
                              lead_ticket_number="T-1", insourcing_partner_id=PARTNER, title="Printer",
                              description="", instructions="today", terms=None)


async def pending_link(bridge: Side) -> str:
    link_id = str(uuid.uuid4())
    await from_partner(bridge, LEAD, requested(link_id))
    return link_id


async def active_link(bridge: Side) -> str:
    link_id = await pending_link(bridge)
    await from_partner(bridge, PARTNER, InsourceAccepted(link_id=link_id, insourcing_ticket_id=str(uuid.uuid4()),
                                                          insourcing_ticket_number="I-1"))
    return link_id


def note(link_id: str, item_id: str, body: str) -> ItemCreated:
    return ItemCreated(link_id=link_id, item_id=item_id, kind="note", fields={"title": "", "body": body})


def directory(version: int, *entries: DirectoryEntry) -> DirectoryChanged:
    """The bridge's directory.partners; the partner stays in it (the tests share one lead database)."""
    return DirectoryChanged(version=version, partners=[PARTNER_ENTRY, *entries])


async def outsourced(lead: Side) -> tuple[str, str]:
    """A new lead ticket outsourced to the partner: (ticket id, link id)."""
    async with lead.sessions() as session, session.begin():
        ticket = await create_ticket(session, "Printer offline")
        row = await lead.service.outsource(session, ticket.id, PARTNER, "today", None)
        return ticket.id, row.link_id


async def received_work(insourcing: Side) -> str:
    link_id = str(uuid.uuid4())
    await insourcing.receive(WorkRequested(link_id=link_id, lead_partner_id=LEAD, lead_partner_name="Lead Co",
                                           lead_ticket_number="T-42", title="Server room too hot", description="",
                                           instructions="on site", terms=None))
    return link_id


async def accepted_work(insourcing: Side) -> tuple[str, str]:
    link_id = await received_work(insourcing)
    row = await insourcing.call(insourcing.service.accept, link_id)
    return link_id, row.ticket_id


async def items_on(side: Side, ticket_id: str) -> list[TicketItem]:
    async with side.sessions() as session:
        return list((await session.scalars(select(TicketItem).where(TicketItem.ticket_id == ticket_id))).all())
