"""The insourcing partner's side: work received from lead partners, accepted or declined, and the
insourced ticket that the link mirrors."""
import json
import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.insourcing_partner import wording
from services.insourcing_partner.models import ReceivedWork
from services.insourcing_partner.settings import InsourcingSettings
from shared.contracts.envelope import Envelope, Payload
from shared.contracts.messages import (
    InsourceAccepted,
    InsourceCompletionRequested,
    InsourceDeclined,
    InsourceInvoiced,
    PartnerLeft,
    SideStatus,
    WorkCanceled,
    WorkCompleted,
    WorkRejected,
    WorkRequested,
    WorkRequestedV2,
)
from shared.domain import billing, statements, workflow
from shared.domain.partner_mirroring import MIRROR_MESSAGES, LinkView, MirroringPolicy, lock_items, unlock_suspended
from shared.domain.tickets.models import Ticket, TicketItem
from shared.domain.tickets.rules import Lock
from shared.domain.tickets.service import (
    add_system_note,
    create_ticket,
    get_ticket,
    lock_ticket_of_link,
    lock_tickets_of_links,
)
from shared.domain.money import TermsOut
from shared.domain.workflow import InsourceStatus
from shared.platform import paging
from shared.platform.db import plain_sql, utcnow
from shared.platform.errors import Conflict, NotFound
from shared.platform.kafka import outbound_topic
from shared.platform.messagebus import Ignored, MessageBus
from shared.platform.notifications import notify

log = logging.getLogger(__name__)


def _link_view(row) -> LinkView:
    """A ticket's link as `ReceivedLinks` reads it from its received work's row."""
    return LinkView(row["link_id"], InsourceStatus(row["status"]), row["lead_partner_id"], row["lead_ticket_number"],
                    row["lead_partner_name"], json.loads(row["terms"]) if row["terms"] else None)


class ReceivedLinks:
    """The insourcing side's LinkDirectory: an insourced ticket belongs to one received work."""

    async def for_ticket(self, session: AsyncSession, ticket_id: str) -> ReceivedWork | None:
        return await session.scalar(select(ReceivedWork).where(ReceivedWork.ticket_id == ticket_id))

    async def link_for_ticket(self, session: AsyncSession, ticket_id: str) -> LinkView | None:
        # Plain SQL: every mirror received and every note written asks (issue 11).
        row = await (await plain_sql(session)).fetchrow(
            "SELECT link_id, status, lead_partner_id, lead_ticket_number, lead_partner_name, terms::text AS terms FROM received_work"
            " WHERE ticket_id = $1", ticket_id)
        return _link_view(row) if row is not None else None

    async def links_for_tickets(self, session: AsyncSession, ticket_ids: list[str]) -> dict[str, LinkView]:
        rows = await (await plain_sql(session)).fetch(
            "SELECT ticket_id, link_id, status, lead_partner_id, lead_ticket_number, lead_partner_name,"
            " terms::text AS terms FROM received_work WHERE ticket_id = ANY($1::varchar[])", ticket_ids)
        return {row["ticket_id"]: _link_view(row) for row in rows}

    async def ticket_for_link(self, session: AsyncSession, link_id: str) -> str | None:
        return await lock_ticket_of_link(session, link_id, ReceivedWork.__tablename__)

    async def tickets_for_links(self, session: AsyncSession, link_ids: list[str]) -> dict[str, str | None]:
        return await lock_tickets_of_links(session, link_ids, ReceivedWork.__tablename__)

    async def ticket_of(self, session: AsyncSession, link_id: str) -> str | None:
        return await session.scalar(select(ReceivedWork.ticket_id).where(ReceivedWork.link_id == link_id))

    async def side_status(self, session: AsyncSession, link_id: str) -> SideStatus:
        row = await session.get(ReceivedWork, link_id)
        if row is None:
            return SideStatus(known=False)
        number = await session.scalar(select(Ticket.number).where(Ticket.id == row.ticket_id)) if row.ticket_id else None
        held = await statements.current(session, link_id)
        return SideStatus(status=row.status, rounds=row.rounds, reason=row.reason, ticket_id=row.ticket_id,
                          ticket_number=number, keeps_statements=True, statement_version=held and held.version,
                          statement_sha256=held and held.sha256)

    async def open_links(self, session: AsyncSession) -> list[str]:
        finished = [s.value for s in workflow.FINISHED_INSOURCE]
        return list(await session.scalars(select(ReceivedWork.link_id).where(ReceivedWork.status.not_in(finished))))


class Insourcing:
    def __init__(self, settings: InsourcingSettings):
        self.settings = settings
        self.links = ReceivedLinks()
        self.mirroring = MirroringPolicy(self.links, settings.partner_id, outbound_topic(settings.partner_id))
        self.sync = self.mirroring.sync
        self._emit = self.sync.send
        # What the bridge tells the insourcing partner, and who handles each message.
        self.bus = MessageBus("insourcing partner", {
            WorkRequested: self.on_requested,
            WorkRequestedV2: self.on_requested,  # read from this release, sent from the next
            WorkCanceled: self.on_canceled,
            WorkRejected: self.on_rejected,
            WorkCompleted: self.on_completed,
            PartnerLeft: self.on_partner_left,
            **{message: self.mirroring.apply for message in MIRROR_MESSAGES},
            **self.sync.handlers(),
        })

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        await self.bus.dispatch(session, payload)
        await self.sync.received(session, payload)

    async def _locked(self, session: AsyncSession, link_id: str) -> ReceivedWork:
        row = await session.scalar(select(ReceivedWork).where(ReceivedWork.link_id == link_id).with_for_update())
        if row is None:
            raise NotFound(f"no received work with link {link_id}")
        return row

    async def received(self, session: AsyncSession, status: InsourceStatus | None, limit: int = paging.PAGE_MAX,
                       cursor: str | None = None) -> tuple[list[tuple[ReceivedWork, datetime]], str | None]:
        """A page of received work, newest first, each with its last activity: the latest change of the
        work, its ticket or any of the ticket's items."""
        newest_item = (select(func.max(TicketItem.updated_at)).where(TicketItem.ticket_id == ReceivedWork.ticket_id)
                       .scalar_subquery())
        ticket_changed = select(Ticket.updated_at).where(Ticket.id == ReceivedWork.ticket_id).scalar_subquery()
        last_activity = func.greatest(ReceivedWork.updated_at, ticket_changed, newest_item)
        query = select(ReceivedWork, last_activity)
        if status:
            query = query.where(ReceivedWork.status == status)
        query = paging.after(query, ReceivedWork.created_at, ReceivedWork.link_id, cursor, newest_first=True)
        rows = [tuple(row) for row in (await session.execute(query.limit(limit + 1))).all()]
        return paging.page(rows, limit, lambda row: row[0].created_at, lambda row: row[0].link_id)

    async def accept(self, session: AsyncSession, link_id: str) -> ReceivedWork:
        row = await self._locked(session, link_id)
        row.status = workflow.insource("accept", row.status)
        ticket = await create_ticket(session, row.title, row.description, status="New")
        row.ticket_id = ticket.id
        await self._emit(
            session,
            InsourceAccepted(link_id=link_id, insourcing_ticket_id=ticket.id, insourcing_ticket_number=ticket.number),
            link_id,
        )
        await add_system_note(
            session, ticket.id, *wording.accepted(row.lead_partner_name, row.lead_ticket_number, row.instructions))
        return row

    async def decline(self, session: AsyncSession, link_id: str, reason: str) -> ReceivedWork:
        row = await self._locked(session, link_id)
        row.status = workflow.insource("decline", row.status)
        row.reason = reason
        await self._emit(session, InsourceDeclined(link_id=link_id, reason=reason), link_id)
        return row

    async def request_approval(self, session: AsyncSession, ticket_id: str) -> ReceivedWork:
        """"Notify Lead Partner > Insource Complete": synchronization is suspended, and everything on
        the ticket now (own items and mirrors) is read-only until the lead decides."""
        ticket = await get_ticket(session, ticket_id, for_update=True)
        row = await self.links.for_ticket(session, ticket.id)
        if row is None:
            raise Conflict(f"ticket {ticket.number} was not received from a lead partner: it has no Insource Status")
        row.status = workflow.insource("insource complete", row.status)
        row.rounds += 1
        await lock_items(session, ticket.id, Lock.SUSPENSION)
        frozen = await statements.freeze(session, row.link_id, ticket.id, row.terms, row.rounds)
        await self._emit(session, InsourceCompletionRequested(link_id=row.link_id, statement=frozen.body), row.link_id)
        await add_system_note(session, ticket.id, *wording.insource_complete(row.lead_partner_name))
        return row

    async def _locked_with_ticket(self, session: AsyncSession, link_id: str) -> tuple[ReceivedWork, Ticket | None]:
        """The received work and its ticket, locked ticket first (the order every writer uses)."""
        ticket_id = await self.links.ticket_for_link(session, link_id)
        ticket = await get_ticket(session, ticket_id) if ticket_id else None  # locked by ticket_for_link
        row = await self._locked(session, link_id)
        if ticket is None and row.ticket_id:  # accepted while we waited for the row
            ticket = await get_ticket(session, row.ticket_id, for_update=True)
        return row, ticket

    # --- what the bridge tells the insourcing partner (one handler per message) ------------------

    async def on_requested(self, session: AsyncSession, payload: WorkRequested) -> None:
        new = await session.scalar(
            insert(ReceivedWork)
            .values(
                link_id=payload.link_id,
                lead_partner_id=payload.lead_partner_id,
                lead_partner_name=payload.lead_partner_name,
                lead_ticket_number=payload.lead_ticket_number,
                title=payload.title,
                description=payload.description,
                instructions=payload.instructions,
                terms=TermsOut.stored(payload.terms.model_dump()) if payload.terms else None,
                status=workflow.RECEIVED,
            )
            .on_conflict_do_nothing()
            .returning(ReceivedWork.link_id)
        )
        if new is None:
            raise Ignored(f"work {payload.link_id} was requested already (the request was sent again)")
        notify(session, "work.requested", self.settings.notify_email,
               *wording.requested_mail(payload.lead_partner_name, payload.lead_ticket_number, payload.title,
                                       payload.instructions), None)

    async def on_canceled(self, session: AsyncSession, payload: WorkCanceled) -> None:
        row, ticket = await self._locked_with_ticket(session, payload.link_id)
        row.status = workflow.insource("link.canceled", row.status)
        if ticket:
            await unlock_suspended(session, ticket.id)
            await add_system_note(session, ticket.id, *wording.canceled_note(row.lead_partner_name))
        notify(session, "work.canceled", self.settings.notify_email,
               *wording.canceled_mail(row.lead_partner_name, row.lead_ticket_number, row.title), row.ticket_id)

    async def on_rejected(self, session: AsyncSession, payload: WorkRejected) -> None:
        row, ticket = await self._locked_with_ticket(session, payload.link_id)
        if ticket is None:
            return  # never accepted here, so nothing waits for approval
        if payload.round != row.rounds:
            raise Ignored(f"the rejection of Insource Complete {payload.round} no longer applies "
                          f"(this side is at Insource Complete {row.rounds})")
        row.status = workflow.insource("link.rejected", row.status)
        row.reason = payload.reason
        await unlock_suspended(session, ticket.id)
        await add_system_note(session, ticket.id, *wording.rejected_note(row.lead_partner_name, payload.reason))
        notify(session, "work.rejected", self.settings.notify_email,
               *wording.rejected_mail(row.lead_partner_name, ticket.number, ticket.title, row.lead_ticket_number,
                                      payload.reason), ticket.id)

    async def on_completed(self, session: AsyncSession, payload: WorkCompleted) -> None:
        row, ticket = await self._locked_with_ticket(session, payload.link_id)
        if ticket is None:
            return  # never accepted here: the bridge ends only accepted links this way
        row.status = workflow.insource("link.completed", row.status)
        await self._settle(session, row, ticket, payload)
        await lock_items(session, ticket.id, Lock.COMPLETION)
        await add_system_note(session, ticket.id, *wording.complete_note(row.lead_partner_name, payload.approved))
        notify(session, "insource.complete", self.settings.notify_email,
               *wording.complete_mail(row.lead_partner_name, ticket.number, ticket.title, row.lead_ticket_number,
                                      payload.approved), ticket.id)

    async def _settle(self, session: AsyncSession, row: ReceivedWork, ticket: Ticket, payload: WorkCompleted) -> None:
        """The statement the link ended with: the lead's own when its Complete froze one (checked: one its
        lines and the terms could not make is refused, and this side's is settled instead), the one the
        lead approved, or (a release-1.0.0 lead names none) the one waiting, else one frozen now."""
        ending = None
        if payload.statement is not None:
            try:
                body = billing.checked(payload.statement, version=payload.statement_version, terms=row.terms)
                ending = await statements.keep(session, row.link_id, body, authoritative=True)
            except billing.BadStatement as exc:
                await self._disagree(session, row, ticket, f"the lead's statement was refused: {exc}")
        elif payload.statement_version is not None:
            ending = await statements.of_version(session, row.link_id, payload.statement_version)
        if ending is None:
            ending = await statements.latest(session, row.link_id)
            if ending is None or ending.version != row.rounds or not payload.approved:
                ending = await statements.freeze(session, row.link_id, ticket.id, row.terms,
                                                 (ending.version if ending else 0) + 1)
        if payload.statement_sha256 is not None and ending.sha256 != payload.statement_sha256:
            await self._disagree(session, row, ticket, f"the lead named statement version {payload.statement_version}"
                                 f" with SHA-256 {payload.statement_sha256[:12]}, this side holds version"
                                 f" {ending.version} with {ending.sha256[:12]}")
        statements.settle(ending, statements.APPROVED if payload.approved else statements.COMPLETED)

    async def _disagree(self, session: AsyncSession, row: ReceivedWork, ticket: Ticket, what: str) -> None:
        """The two sides do not hold the same statement at completion: loudly, on the ticket and in the log."""
        log.warning("link %s ended with statements that differ: %s", row.link_id, what)
        await add_system_note(session, ticket.id, *wording.statements_differ(row.lead_partner_name, what))

    async def invoice(self, session: AsyncSession, link_id: str, invoice_number: str) -> statements.Statement:
        """Mark the statement the link ended with invoiced, and tell the lead. The same number again is
        answered as before; another number for an invoiced statement is a conflict."""
        row, _ = await self._locked_with_ticket(session, link_id)  # the ticket first, as every writer
        ending = await statements.settled(session, link_id)
        if ending is None and row.status == InsourceStatus.COMPLETE:
            raise Conflict(f"work {link_id} ended before statements were kept: there is no statement to invoice")
        if ending is None:
            raise Conflict(f"work {link_id} is {row.status}: only work the lead approved or completed can be invoiced")
        ending = await statements.of_version(session, link_id, ending.version)  # locked
        if ending.invoice_number == invoice_number:
            return ending
        if ending.invoice_number is not None:
            raise Conflict(f"statement version {ending.version} of work {link_id} was invoiced already, as"
                           f" {ending.invoice_number}")
        ending.invoice_number, ending.invoiced_at = invoice_number, utcnow()
        await self._emit(session, InsourceInvoiced(
            link_id=link_id, statement_version=ending.version, statement_sha256=ending.sha256,
            invoice_number=invoice_number, statement=ending.body), link_id)
        if row.ticket_id:
            await add_system_note(session, row.ticket_id, *wording.invoiced_note(
                row.lead_partner_name, invoice_number, ending.body["totals"]["total"], ending.body.get("currency")))
        return ending

    async def on_partner_left(self, session: AsyncSession, payload: PartnerLeft) -> None:
        """The hub removed the lead partner: the work is Canceled and, as after a completion, everything
        on the ticket now is read-only for good."""
        row, ticket = await self._locked_with_ticket(session, payload.link_id)
        row.status = workflow.insource("link.partner_left", row.status)
        if ticket:
            await lock_items(session, ticket.id, Lock.PARTNER_LEFT)
            await self.sync.partner_left(session, ticket.id, row.link_id, payload.partner_name)
            await add_system_note(session, ticket.id,
                                  *wording.partner_left_note(payload.partner_name, payload.partner_id))
        notify(session, "partner.left", self.settings.notify_email,
               *wording.partner_left_mail(payload.partner_name, payload.partner_id, row.lead_ticket_number, row.title),
               row.ticket_id)
