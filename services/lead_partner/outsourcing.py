"""The lead partner's side of outsourcing: send a ticket to a partner, cancel, follow what the
partner answers, and keep the ticket's link for mirroring."""
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.lead_partner.models import Outsourcing
from services.lead_partner.settings import LeadSettings
from shared.contracts import Envelope, Payload, envelope
from shared.errors import NotFound
from shared.inbox import Rejected
from shared.kafka import outbound_topic
from shared.messages import (
    MirrorChunk,
    MirrorDelete,
    MirrorUpsert,
    OutsourceCanceled,
    OutsourceRequested,
    Terms,
    WorkAccepted,
    WorkDeclined,
)
from shared.outbox import add_to_outbox
from shared.outsourcing import Status, lead_transition, may_outsource
from shared.sync import LinkView, apply_mirror
from shared.tickets.models import Ticket
from shared.tickets.service import add_system_note, get_ticket


class Outsourcings:
    """The lead's LinkDirectory: a ticket's link is its latest outsourcing."""

    async def latest(self, session: AsyncSession, ticket_id: str) -> Outsourcing | None:
        return await session.scalar(
            select(Outsourcing).where(Outsourcing.ticket_id == ticket_id).order_by(Outsourcing.created_at.desc()).limit(1)
        )

    async def link_for_ticket(self, session: AsyncSession, ticket_id: str) -> LinkView | None:
        row = await self.latest(session, ticket_id)
        if row is None:
            return None
        return LinkView(row.link_id, Status(row.status), row.partner_id, row.partner_ticket_number)

    async def ticket_for_link(self, session: AsyncSession, link_id: str) -> str | None:
        return await session.scalar(select(Outsourcing.ticket_id).where(Outsourcing.link_id == link_id))


class LeadOutsourcing:
    def __init__(self, settings: LeadSettings):
        self.settings = settings
        self.links = Outsourcings()
        self.topic = outbound_topic(settings.partner_id)

    def _emit(self, session: AsyncSession, payload: Payload, link_id: str) -> None:
        add_to_outbox(session, self.topic, envelope(payload, source=self.settings.partner_id, link_id=link_id))

    async def _current(self, session: AsyncSession, ticket_id: str) -> tuple[Ticket, Outsourcing]:
        ticket = await get_ticket(session, ticket_id, for_update=True)
        row = await self.links.latest(session, ticket_id)
        if row is None:
            raise NotFound(f"ticket {ticket.number} has not been outsourced")
        return ticket, row

    async def outsource(
        self, session: AsyncSession, ticket_id: str, partner_id: str, instructions: str, terms: Terms | None
    ) -> Outsourcing:
        ticket = await get_ticket(session, ticket_id, for_update=True)
        partner = next((p for p in self.settings.partners if p.id == partner_id), None)
        if partner is None:
            known = ", ".join(p.id for p in self.settings.partners)
            raise NotFound(f"unknown partner {partner_id!r}; this lead partner may outsource to: {known}")
        last = await self.links.latest(session, ticket_id)
        may_outsource(ticket.status, Status(last.status) if last else None)
        row = Outsourcing(
            link_id=str(uuid.uuid4()),
            ticket_id=ticket.id,
            partner_id=partner.id,
            partner_name=partner.name,
            status=Status.ASSIGNED,
            instructions=instructions,
            terms=terms.model_dump() if terms else None,
        )
        session.add(row)
        await session.flush()
        self._emit(
            session,
            OutsourceRequested(
                link_id=row.link_id,
                lead_partner_name=self.settings.partner_name,
                lead_ticket_id=ticket.id,
                lead_ticket_number=ticket.number,
                insourcing_partner_id=partner.id,
                title=ticket.title,
                description=ticket.description,
                instructions=instructions,
                terms=terms,
            ),
            row.link_id,
        )
        await add_system_note(session, ticket.id, "Outsourced", f"Outsourced to {partner.name}; Outsource Status Assigned.")
        return row

    async def cancel(self, session: AsyncSession, ticket_id: str) -> Outsourcing:
        ticket, row = await self._current(session, ticket_id)
        row.status = lead_transition("cancel", Status(row.status))
        self._emit(session, OutsourceCanceled(link_id=row.link_id), row.link_id)
        await add_system_note(session, ticket.id, "Outsourcing canceled", f"The request to {row.partner_name} was canceled.")
        return row

    async def dashboard(self, session: AsyncSession, status: Status | None) -> list[tuple[Outsourcing, Ticket]]:
        query = select(Outsourcing, Ticket).join(Ticket, Ticket.id == Outsourcing.ticket_id).order_by(Outsourcing.created_at)
        if status:
            query = query.where(Outsourcing.status == status)
        return [tuple(row) for row in (await session.execute(query)).all()]

    # --- what the bridge tells the lead ----------------------------------------------------------

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        if isinstance(payload, (MirrorUpsert, MirrorChunk, MirrorDelete)):
            await apply_mirror(session, self.links, payload)
            return
        if not isinstance(payload, (WorkAccepted, WorkDeclined)):
            raise Rejected(f"{env.type} is not for the lead partner")
        row = await session.get(Outsourcing, payload.link_id)
        if row is None:
            raise Rejected(f"no outsourcing has link {payload.link_id}")
        await get_ticket(session, row.ticket_id, for_update=True)
        if isinstance(payload, WorkAccepted):
            # The bridge saw the acceptance before any cancel: the acceptance stands.
            note = f"{row.partner_name} accepted the ticket as {payload.partner_ticket_number}."
            if row.status == Status.CANCELED:
                note += " The cancel reached the partner too late; the outsourcing goes on."
            row.status, row.partner_ticket_number = Status.IN_PROGRESS, payload.partner_ticket_number
            await add_system_note(session, row.ticket_id, "Outsourcing accepted", note)
        else:
            row.status, row.reason = Status.DECLINED, payload.reason
            await add_system_note(
                session, row.ticket_id, "Outsourcing declined", f"{row.partner_name} declined the ticket: {payload.reason}"
            )
