"""The insourcing partner's side: work received from lead partners, accepted or declined, and the
insourced ticket that the link mirrors."""
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.insourcing_partner.models import ReceivedWork
from services.insourcing_partner.settings import InsourcingSettings
from shared.contracts import Envelope, Payload, envelope
from shared.errors import NotFound
from shared.inbox import Rejected
from shared.kafka import outbound_topic
from shared.messages import (
    InsourceAccepted,
    InsourceDeclined,
    MirrorChunk,
    MirrorDelete,
    MirrorUpsert,
    WorkCanceled,
    WorkRequested,
)
from shared.outbox import add_to_outbox
from shared.outsourcing import FINISHED, Status, insourcing_transition
from shared.sync import LinkView, apply_mirror
from shared.tickets.models import Ticket
from shared.tickets.service import add_system_note, create_ticket


class ReceivedLinks:
    """The insourcing side's LinkDirectory: an insourced ticket belongs to one received work."""

    async def for_ticket(self, session: AsyncSession, ticket_id: str) -> ReceivedWork | None:
        return await session.scalar(select(ReceivedWork).where(ReceivedWork.ticket_id == ticket_id))

    async def link_for_ticket(self, session: AsyncSession, ticket_id: str) -> LinkView | None:
        row = await self.for_ticket(session, ticket_id)
        if row is None:
            return None
        return LinkView(row.link_id, Status(row.status), row.lead_partner_id, row.lead_ticket_number)

    async def ticket_for_link(self, session: AsyncSession, link_id: str) -> str | None:
        return await session.scalar(select(ReceivedWork.ticket_id).where(ReceivedWork.link_id == link_id))


class Insourcing:
    def __init__(self, settings: InsourcingSettings):
        self.settings = settings
        self.links = ReceivedLinks()
        self.topic = outbound_topic(settings.partner_id)

    def _emit(self, session: AsyncSession, payload: Payload, link_id: str) -> None:
        add_to_outbox(session, self.topic, envelope(payload, source=self.settings.partner_id, link_id=link_id))

    async def _locked(self, session: AsyncSession, link_id: str) -> ReceivedWork:
        row = await session.scalar(select(ReceivedWork).where(ReceivedWork.link_id == link_id).with_for_update())
        if row is None:
            raise NotFound(f"no received work with link {link_id}")
        return row

    async def received(self, session: AsyncSession, status: Status | None) -> list[ReceivedWork]:
        query = select(ReceivedWork).order_by(ReceivedWork.created_at)
        if status:
            query = query.where(ReceivedWork.status == status)
        return list((await session.scalars(query)).all())

    async def accept(self, session: AsyncSession, link_id: str) -> ReceivedWork:
        row = await self._locked(session, link_id)
        row.status = insourcing_transition("accept", Status(row.status))
        ticket = await create_ticket(session, row.title, row.description, status="New")
        row.ticket_id = ticket.id
        self._emit(
            session,
            InsourceAccepted(link_id=link_id, insourcing_ticket_id=ticket.id, insourcing_ticket_number=ticket.number),
            link_id,
        )
        details = f"Insourced from {row.lead_partner_name}, their ticket {row.lead_ticket_number}."
        if row.instructions:
            details += f"\nInstructions: {row.instructions}"
        await add_system_note(session, ticket.id, "Received work accepted", details)
        return row

    async def decline(self, session: AsyncSession, link_id: str, reason: str) -> ReceivedWork:
        row = await self._locked(session, link_id)
        row.status = insourcing_transition("decline", Status(row.status))
        row.reason = reason
        self._emit(session, InsourceDeclined(link_id=link_id, reason=reason), link_id)
        return row

    # --- what the bridge tells the insourcing partner --------------------------------------------

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        if isinstance(payload, (MirrorUpsert, MirrorChunk, MirrorDelete)):
            await apply_mirror(session, self.links, payload)
        elif isinstance(payload, WorkRequested):
            await session.execute(
                insert(ReceivedWork)
                .values(
                    link_id=payload.link_id,
                    lead_partner_id=payload.lead_partner_id,
                    lead_partner_name=payload.lead_partner_name,
                    lead_ticket_number=payload.lead_ticket_number,
                    title=payload.title,
                    description=payload.description,
                    instructions=payload.instructions,
                    terms=payload.terms.model_dump() if payload.terms else None,
                    status=Status.PENDING,
                )
                .on_conflict_do_nothing()
            )
        elif isinstance(payload, WorkCanceled):
            row = await self._locked(session, payload.link_id)
            if Status(row.status) in FINISHED:
                return
            row.status = Status.CANCELED
            if row.ticket_id:
                await session.get(Ticket, row.ticket_id, with_for_update=True)
                await add_system_note(
                    session, row.ticket_id, "Outsourcing canceled",
                    f"{row.lead_partner_name} canceled the request; nothing synchronizes any more.",
                )
        else:
            raise Rejected(f"{env.type} is not for the insourcing partner")
