"""The lead partner's side of outsourcing: send a ticket to a partner, cancel, follow what the
partner answers, and keep the ticket's link for mirroring."""
import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.lead_partner.models import Outsourcing
from services.lead_partner.settings import LeadSettings
from shared.contracts import Envelope, Payload
from shared.errors import Conflict, NotFound
from shared.inbox import Rejected
from shared.kafka import outbound_topic
from shared.messages import (
    OutsourceCanceled,
    OutsourceCompleted,
    OutsourceRejected,
    OutsourceRequested,
    Terms,
    WorkAccepted,
    WorkDeclined,
    WorkWaitingApproval,
)
from shared.notifications import notify
from shared.outsourcing import FINISHED, Status, lead_transition, may_outsource
from shared.sync import (
    MIRROR_MESSAGES,
    LinkView,
    MirroringPolicy,
    lock_shared_items,
    release_partner_items,
    unlock_suspended,
)
from shared.tickets.models import Ticket, TicketItem
from shared.tickets.rules import ItemKind, Origin
from shared.tickets.service import add_system_note, get_ticket, lock_ticket_of


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
        return await lock_ticket_of(session, select(Outsourcing.ticket_id).where(Outsourcing.link_id == link_id))


class LeadOutsourcing:
    def __init__(self, settings: LeadSettings):
        self.settings = settings
        self.links = Outsourcings()
        self.mirroring = MirroringPolicy(self.links, settings.partner_id, outbound_topic(settings.partner_id))
        self._emit = self.mirroring.publisher.emit

    async def _current(self, session: AsyncSession, ticket_id: str) -> tuple[Ticket, Outsourcing]:
        ticket = await get_ticket(session, ticket_id, for_update=True)
        row = await self.links.latest(session, ticket_id)
        if row is None:
            raise Conflict(f"ticket {ticket.number} is not outsourced: there is no Outsource Status to change")
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

    async def reject(self, session: AsyncSession, ticket_id: str, reason: str) -> Outsourcing:
        ticket, row = await self._current(session, ticket_id)
        row.status = lead_transition("reject", Status(row.status))
        row.reason = reason
        await unlock_suspended(session, ticket.id)
        self._emit(session, OutsourceRejected(link_id=row.link_id, reason=reason), row.link_id)
        await add_system_note(
            session, ticket.id, "Outsourced work rejected",
            f"Rejected the work of {row.partner_name}: {reason}\nSynchronization resumes.",
        )
        return row

    async def finish(self, session: AsyncSession, ticket_id: str, action: str) -> Outsourcing:
        """Approve (from Waiting Approval) or Complete at any time: the results are the same."""
        ticket, row = await self._current(session, ticket_id)
        row.status = lead_transition(action, Status(row.status))
        hours = await self._partner_hours_charge(session, ticket, row)  # before this link's items are released
        await unlock_suspended(session, ticket.id)  # the lead's own items are its own again; edits stay local
        await release_partner_items(session, ticket.id)
        self._emit(session, OutsourceCompleted(link_id=row.link_id, approved=action == "approve"), row.link_id)
        what = "approved the work of" if action == "approve" else "set the outsourcing to Complete for"
        await add_system_note(
            session, ticket.id, "Outsourcing complete",
            f"The lead partner {what} {row.partner_name} (their ticket {row.partner_ticket_number}). "
            f"The tickets are no longer synchronized. Partner hours: {hours} h.",
        )
        notify(
            session, "outsourcing.complete", self.settings.notify_email,
            f"Outsourcing complete: {ticket.number} {ticket.title}",
            f"The outsourcing of ticket {ticket.number} ({ticket.title}) to {row.partner_name} is Complete: "
            f"the lead partner {what} the partner's work. The tickets are no longer synchronized. "
            f"Partner ticket: {row.partner_ticket_number}. Partner hours: {hours} h.",
            ticket.id,
        )
        return row

    async def _partner_hours_charge(self, session: AsyncSession, ticket: Ticket, row: Outsourcing) -> Decimal:
        """The partner's time entries, summed into one non-billable charge on the lead ticket."""
        entries = await session.scalars(
            select(TicketItem.fields).where(
                TicketItem.ticket_id == ticket.id,
                TicketItem.kind == ItemKind.TIME_ENTRY,
                TicketItem.origin == Origin.PARTNER,
                TicketItem.released.is_(False),  # not counted by an earlier outsourcing of this ticket
            )
        )
        hours = sum((Decimal(str(f["hours"])) for f in entries.all()), Decimal(0))
        if hours > 0:
            terms = row.terms or {}
            rate = Decimal(str(terms.get("rate", 0))) if terms.get("rate_type") == "hourly" else Decimal(0)
            session.add(
                TicketItem(
                    ticket_id=ticket.id,
                    kind=ItemKind.CHARGE,
                    origin=Origin.SYSTEM,
                    internal=True,
                    fields={
                        "name": f"Outsourced labor: {row.partner_name}",
                        "description": f"Time entries of {row.partner_name} on their ticket {row.partner_ticket_number}",
                        "quantity": str(hours),
                        "unit_price": str(rate),
                        "billable": False,
                    },
                )
            )
        return hours

    async def dashboard(self, session: AsyncSession, status: Status | None) -> list[tuple[Outsourcing, Ticket]]:
        query = select(Outsourcing, Ticket).join(Ticket, Ticket.id == Outsourcing.ticket_id).order_by(Outsourcing.created_at)
        if status:
            query = query.where(Outsourcing.status == status)
        return [tuple(row) for row in (await session.execute(query)).all()]

    # --- what the bridge tells the lead ----------------------------------------------------------

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        if isinstance(payload, MIRROR_MESSAGES):
            await self.mirroring.apply(session, payload)
            return
        if not isinstance(payload, (WorkAccepted, WorkDeclined, WorkWaitingApproval)):
            raise Rejected(f"{env.type} is not for the lead partner")
        ticket_id = await self.links.ticket_for_link(session, payload.link_id)
        if ticket_id is None:
            raise Rejected(f"no outsourcing has link {payload.link_id}")
        ticket = await get_ticket(session, ticket_id)  # locked by ticket_for_link
        row = await session.get(Outsourcing, payload.link_id, with_for_update=True)
        about = f"ticket {ticket.number} ({ticket.title})"
        if isinstance(payload, WorkWaitingApproval):
            if Status(row.status) in FINISHED:
                return  # the lead completed it meanwhile; nothing is waiting for approval
            row.status = Status.WAITING_APPROVAL
            await lock_shared_items(session, ticket.id)
            await add_system_note(
                session, ticket.id, "Insource Complete",
                f"{row.partner_name} reports the work done and asks for approval. Synchronization is suspended.",
            )
            notify(
                session, "approval.requested", self.settings.notify_email,
                f"Approval requested: {ticket.number} {ticket.title}",
                f"{row.partner_name} has completed the work on {about} (their ticket {row.partner_ticket_number}) "
                "and asks you to approve or reject it. Synchronization is suspended until you decide.",
                ticket.id,
            )
        elif isinstance(payload, WorkAccepted):
            # The bridge saw the acceptance before any cancel: the acceptance stands, unless the
            # lead has outsourced the ticket again meanwhile; then this older link is ended.
            note = f"{row.partner_name} accepted the ticket as {payload.partner_ticket_number}."
            latest = await self.links.latest(session, ticket.id)
            if row.status == Status.CANCELED and latest.link_id != row.link_id:
                row.partner_ticket_number = payload.partner_ticket_number
                self._emit(session, OutsourceCompleted(link_id=row.link_id, approved=False), row.link_id)
                await add_system_note(
                    session, ticket.id, "Outsourcing ended",
                    f"{note} The cancel reached the partner too late and the ticket is outsourced again, "
                    "so that earlier outsourcing was set to Complete.",
                )
                return
            if row.status == Status.CANCELED:
                note += " The cancel reached the partner too late; the outsourcing goes on."
            row.status, row.partner_ticket_number = Status.IN_PROGRESS, payload.partner_ticket_number
            await add_system_note(session, row.ticket_id, "Outsourcing accepted", note)
            notify(
                session, "work.accepted", self.settings.notify_email,
                f"Outsourcing accepted: {ticket.number} {ticket.title}",
                f"{row.partner_name} accepted {about} as their ticket {payload.partner_ticket_number}. "
                "Notes, attachments, charges and time entries now synchronize.",
                ticket.id,
            )
        else:
            row.status, row.reason = Status.DECLINED, payload.reason
            await add_system_note(
                session, row.ticket_id, "Outsourcing declined", f"{row.partner_name} declined the ticket: {payload.reason}"
            )
            notify(
                session, "work.declined", self.settings.notify_email,
                f"Outsourcing declined: {ticket.number} {ticket.title}",
                f"{row.partner_name} declined {about}. Reason: {payload.reason}",
                ticket.id,
            )
