"""The insourcing partner's side: work received from lead partners, accepted or declined, and the
insourced ticket that the link mirrors."""
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.insourcing_partner.models import ReceivedWork
from services.insourcing_partner.settings import InsourcingSettings
from shared.contracts import Envelope, Payload
from shared.errors import Conflict, NotFound
from shared.inbox import Rejected
from shared.kafka import outbound_topic
from shared.messages import (
    InsourceAccepted,
    InsourceCompletionRequested,
    InsourceDeclined,
    WorkCanceled,
    WorkCompleted,
    WorkRejected,
    WorkRequested,
)
from shared.notifications import notify
from shared.outsourcing import FINISHED, Status, insourcing_transition
from shared.sync import MIRROR_MESSAGES, LinkView, MirroringPolicy, lock_items, unlock_suspended
from shared.tickets.models import Ticket
from shared.tickets.rules import Lock
from shared.tickets.service import add_system_note, create_ticket, get_ticket, lock_ticket_of


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
        return await lock_ticket_of(session, select(ReceivedWork.ticket_id).where(ReceivedWork.link_id == link_id))


class Insourcing:
    def __init__(self, settings: InsourcingSettings):
        self.settings = settings
        self.links = ReceivedLinks()
        self.mirroring = MirroringPolicy(self.links, settings.partner_id, outbound_topic(settings.partner_id))
        self._emit = self.mirroring.publisher.emit

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

    async def request_approval(self, session: AsyncSession, ticket_id: str) -> ReceivedWork:
        """"Notify Lead Partner > Insource Complete": synchronization is suspended, and everything on
        the ticket now (own items and mirrors) is read-only until the lead decides."""
        ticket = await get_ticket(session, ticket_id, for_update=True)
        row = await self.links.for_ticket(session, ticket.id)
        if row is None:
            raise Conflict(f"ticket {ticket.number} was not received from a lead partner: it has no Insource Status")
        row.status = insourcing_transition("insource complete", Status(row.status))
        await lock_items(session, ticket.id, Lock.SUSPENSION)
        self._emit(session, InsourceCompletionRequested(link_id=row.link_id), row.link_id)
        await add_system_note(
            session, ticket.id, "Insource Complete",
            f"Asked {row.lead_partner_name} to approve the work. Synchronization is suspended; "
            "items added from now on stay on this ticket.",
        )
        return row

    async def _locked_with_ticket(self, session: AsyncSession, link_id: str) -> tuple[ReceivedWork, Ticket | None]:
        """The received work and its ticket, locked ticket first (the order every writer uses)."""
        ticket_id = await self.links.ticket_for_link(session, link_id)
        ticket = await get_ticket(session, ticket_id) if ticket_id else None  # locked by ticket_for_link
        row = await self._locked(session, link_id)
        if ticket is None and row.ticket_id:  # accepted while we waited for the row
            ticket = await get_ticket(session, row.ticket_id, for_update=True)
        return row, ticket

    # --- what the bridge tells the insourcing partner --------------------------------------------

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        if isinstance(payload, MIRROR_MESSAGES):
            await self.mirroring.apply(session, payload)
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
            notify(
                session, "work.requested", self.settings.notify_email,
                f"New work from {payload.lead_partner_name}: {payload.lead_ticket_number} {payload.title}",
                f"{payload.lead_partner_name} asks you to take their ticket {payload.lead_ticket_number} "
                f"({payload.title}). Instructions: {payload.instructions or '(none)'}. "
                "Accept or decline it under Received Work: Pending.",
                None,
            )
        elif isinstance(payload, WorkCanceled):
            row, ticket = await self._locked_with_ticket(session, payload.link_id)
            if Status(row.status) in FINISHED:
                return
            row.status = Status.CANCELED
            if ticket:
                await unlock_suspended(session, ticket.id)
                await add_system_note(
                    session, ticket.id, "Outsourcing canceled",
                    f"{row.lead_partner_name} canceled the request; nothing synchronizes any more.",
                )
            notify(
                session, "work.canceled", self.settings.notify_email,
                f"Work canceled by {row.lead_partner_name}: {row.lead_ticket_number} {row.title}",
                f"{row.lead_partner_name} canceled their request for ticket {row.lead_ticket_number} ({row.title}).",
                row.ticket_id,
            )
        elif isinstance(payload, WorkRejected):
            row, ticket = await self._locked_with_ticket(session, payload.link_id)
            if row.status != Status.WAITING_APPROVAL or ticket is None:
                return
            row.status, row.reason = Status.IN_PROGRESS, payload.reason
            await unlock_suspended(session, ticket.id)
            await add_system_note(
                session, ticket.id, "Rejected by the lead partner",
                f"{row.lead_partner_name} rejected the work: {payload.reason}\nSynchronization resumes; "
                "address the concerns and submit Insource Complete again.",
            )
            notify(
                session, "work.rejected", self.settings.notify_email,
                f"Work rejected by {row.lead_partner_name}: {ticket.number} {ticket.title}",
                f"{row.lead_partner_name} rejected the work on your ticket {ticket.number} ({ticket.title}), "
                f"their ticket {row.lead_ticket_number}. Reason: {payload.reason}\n"
                "The Insource Status is In Progress again and synchronization resumes.",
                ticket.id,
            )
        elif isinstance(payload, WorkCompleted):
            row, ticket = await self._locked_with_ticket(session, payload.link_id)
            if Status(row.status) in FINISHED or ticket is None:
                return
            row.status = Status.COMPLETE
            await lock_items(session, ticket.id, Lock.COMPLETION)
            how = "approved your work" if payload.approved else "set the outsourcing to Complete"
            await add_system_note(
                session, ticket.id, "Insource Complete: approved" if payload.approved else "Insource Status Complete",
                f"{row.lead_partner_name} {how}. The tickets are no longer synchronized; everything added "
                "before now is read-only. Bill the lead partner as your procedures say.",
            )
            notify(
                session, "insource.complete", self.settings.notify_email,
                f"Insource Complete: {ticket.number} {ticket.title}",
                f"{row.lead_partner_name} {how} on your ticket {ticket.number} ({ticket.title}), their ticket "
                f"{row.lead_ticket_number}. The Insource Status is Complete and the tickets are no longer "
                "synchronized. The ticket status itself is unchanged.",
                ticket.id,
            )
        else:
            raise Rejected(f"{env.type} is not for the insourcing partner")
