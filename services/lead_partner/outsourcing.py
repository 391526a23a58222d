"""The lead partner's side of outsourcing: send a ticket to a partner of the hub's directory, cancel,
follow what the partner answers, and keep the ticket's link for mirroring."""
import json
import logging
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.lead_partner import wording
from services.lead_partner.directory import HubDirectory
from services.lead_partner.models import Outsourcing
from services.lead_partner.settings import LeadSettings
from shared.contracts.envelope import Envelope, Payload
from shared.contracts.messages import (
    DirectoryChanged,
    LinkUnknown,
    OutsourceCanceled,
    OutsourceCompleted,
    OutsourceRejected,
    OutsourceRequested,
    PartnerLeft,
    SideStatus,
    WorkAccepted,
    WorkDeclined,
    WorkInvoiced,
    WorkWaitingApproval,
)
from shared.domain import billing, statements, workflow
from shared.domain.partner_mirroring import (
    MIRROR_MESSAGES,
    LinkView,
    MirroringPolicy,
    lock_partner_items,
    lock_shared_items,
    release_partner_items,
    unlock_suspended,
)
from shared.domain.tickets.models import Ticket, TicketItem
from shared.domain.tickets.rules import ItemKind, Origin
from shared.domain.tickets.service import add_system_note, get_ticket, lock_ticket_of_link, lock_tickets_of_links
from shared.domain.money import TermsIn, TermsOut, on_the_wire
from shared.domain.workflow import OutsourceStatus
from shared.platform import paging
from shared.platform.db import plain_sql, utcnow
from shared.platform.errors import Conflict
from shared.platform.inbox import Rejected
from shared.platform.kafka import outbound_topic
from shared.platform.messagebus import Ignored, MessageBus
from shared.platform.notifications import notify

log = logging.getLogger(__name__)


def _link_view(row) -> LinkView:
    """A ticket's link as `Outsourcings` reads it from its latest outsourcing's row."""
    return LinkView(row["link_id"], OutsourceStatus(row["status"]), row["partner_id"], row["partner_ticket_number"],
                    row["partner_name"], json.loads(row["terms"]) if row["terms"] else None)


class Outsourcings:
    """The lead's LinkDirectory: a ticket's link is its latest outsourcing."""

    async def latest(self, session: AsyncSession, ticket_id: str) -> Outsourcing | None:
        return await session.scalar(
            select(Outsourcing).where(Outsourcing.ticket_id == ticket_id).order_by(Outsourcing.created_at.desc()).limit(1)
        )

    async def link_for_ticket(self, session: AsyncSession, ticket_id: str) -> LinkView | None:
        # Plain SQL: every note written and every mirror received asks (issue 11).
        row = await (await plain_sql(session)).fetchrow(
            "SELECT link_id, status, partner_id, partner_ticket_number, partner_name, terms::text AS terms FROM outsourcings"
            " WHERE ticket_id = $1 ORDER BY created_at DESC LIMIT 1", ticket_id)
        return _link_view(row) if row is not None else None

    async def links_for_tickets(self, session: AsyncSession, ticket_ids: list[str]) -> dict[str, LinkView]:
        rows = await (await plain_sql(session)).fetch(
            "SELECT DISTINCT ON (ticket_id) ticket_id, link_id, status, partner_id, partner_ticket_number, partner_name,"
            " terms::text AS terms FROM outsourcings WHERE ticket_id = ANY($1::varchar[]) ORDER BY ticket_id, created_at DESC",
            ticket_ids)
        return {row["ticket_id"]: _link_view(row) for row in rows}

    async def ticket_for_link(self, session: AsyncSession, link_id: str) -> str | None:
        return await lock_ticket_of_link(session, link_id, Outsourcing.__tablename__)

    async def tickets_for_links(self, session: AsyncSession, link_ids: list[str]) -> dict[str, str | None]:
        return await lock_tickets_of_links(session, link_ids, Outsourcing.__tablename__)

    async def ticket_of(self, session: AsyncSession, link_id: str) -> str | None:
        return await session.scalar(select(Outsourcing.ticket_id).where(Outsourcing.link_id == link_id))

    async def side_status(self, session: AsyncSession, link_id: str) -> SideStatus:
        row = await session.get(Outsourcing, link_id)
        if row is None:
            return SideStatus(known=False)
        held = await statements.current(session, link_id)
        frozen_here = held is not None and held.settled == statements.COMPLETED
        return SideStatus(status=row.status, rounds=row.rounds, reason=row.reason, approved=row.approved,
                          ticket_id=row.ticket_id, keeps_statements=True, statement_version=held and held.version,
                          statement_sha256=held and held.sha256, statement=held.body if frozen_here else None)

    async def open_links(self, session: AsyncSession) -> list[str]:
        finished = [s.value for s in workflow.FINISHED_OUTSOURCE]
        return list(await session.scalars(select(Outsourcing.link_id).where(Outsourcing.status.not_in(finished))))


class LeadOutsourcing:
    def __init__(self, settings: LeadSettings):
        self.settings = settings
        self.links = Outsourcings()
        self.mirroring = MirroringPolicy(self.links, settings.partner_id, outbound_topic(settings.partner_id))
        self.sync = self.mirroring.sync
        self._emit = self.sync.send
        self.directory = HubDirectory(settings.partner_id, outbound_topic(settings.partner_id))
        # What the bridge tells the lead, and who handles each message.
        self.bus = MessageBus("lead partner", {
            WorkAccepted: self.on_accepted,
            WorkDeclined: self.on_declined,
            WorkWaitingApproval: self.on_waiting_approval,
            WorkInvoiced: self.on_invoiced,
            PartnerLeft: self.on_partner_left,
            LinkUnknown: self.on_link_unknown,
            DirectoryChanged: self.directory.on_changed,  # of no link
            **{message: self.mirroring.apply for message in MIRROR_MESSAGES},
            **self.sync.handlers(),
        })

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        await self.bus.dispatch(session, payload)
        await self.sync.received(session, payload)

    def _priced(self, terms: TermsIn) -> dict:
        """The terms as stored: amounts as two-place strings, in the lead's currency unless the caller named one."""
        return TermsOut.stored({**terms.model_dump(), "currency": terms.currency or self.settings.currency})

    async def _current(self, session: AsyncSession, ticket_id: str) -> tuple[Ticket, Outsourcing]:
        ticket = await get_ticket(session, ticket_id, for_update=True)
        row = await self.links.latest(session, ticket_id)
        if row is None:
            raise Conflict(f"ticket {ticket.number} is not outsourced: there is no Outsource Status to change")
        return ticket, row

    # --- what the lead's users do (API) ----------------------------------------------------------

    async def outsource(
        self, session: AsyncSession, ticket_id: str, partner_id: str, instructions: str, terms: TermsIn | None
    ) -> Outsourcing:
        ticket = await get_ticket(session, ticket_id, for_update=True)
        partner = await self.directory.partner(session, partner_id)
        last = await self.links.latest(session, ticket_id)
        workflow.may_outsource(ticket.status, OutsourceStatus(last.status) if last else None)
        row = Outsourcing(
            link_id=str(uuid.uuid4()),
            ticket_id=ticket.id,
            partner_id=partner.id,
            partner_name=partner.name,
            status=workflow.OUTSOURCED,
            instructions=instructions,
            terms=self._priced(terms) if terms else None,
        )
        session.add(row)
        await session.flush()
        await self._emit(session, self._request(ticket, row), row.link_id)
        await add_system_note(session, ticket.id, *wording.outsourced(partner.name))
        return row

    def _request(self, ticket: Ticket, row: Outsourcing) -> OutsourceRequested:
        return OutsourceRequested(
            link_id=row.link_id,
            lead_partner_name=self.settings.partner_name,
            lead_ticket_id=ticket.id,
            lead_ticket_number=ticket.number,
            insourcing_partner_id=row.partner_id,
            title=ticket.title,
            description=ticket.description,
            instructions=row.instructions,
            terms=on_the_wire(row.terms),
        )

    async def cancel(self, session: AsyncSession, ticket_id: str) -> Outsourcing:
        ticket, row = await self._current(session, ticket_id)
        row.status = workflow.outsource("cancel", row.status)
        await self._emit(session, OutsourceCanceled(link_id=row.link_id), row.link_id)
        await add_system_note(session, ticket.id, *wording.canceled(row.partner_name))
        return row

    async def reject(self, session: AsyncSession, ticket_id: str, reason: str) -> Outsourcing:
        ticket, row = await self._current(session, ticket_id)
        row.status = workflow.outsource("reject", row.status)
        row.reason = reason
        await unlock_suspended(session, ticket.id)
        await self._emit(session, OutsourceRejected(link_id=row.link_id, reason=reason), row.link_id)
        await add_system_note(session, ticket.id, *wording.rejected(row.partner_name, reason))
        return row

    async def finish(self, session: AsyncSession, ticket_id: str, action: str,
                     statement_sha256: str | None = None) -> Outsourcing:
        """Approve (from Waiting Approval, naming the statement approved) or Complete at any time (which
        freezes a statement of what had crossed by then): otherwise the results are the same."""
        ticket, row = await self._current(session, ticket_id)
        row.status = workflow.outsource(action, row.status)
        approved = action == "approve"
        ending = await self._statement_ended_with(session, ticket, row, approved, statement_sha256)
        hours = await self._partner_hours_charge(session, ticket, row)  # before this link's items are released
        await unlock_suspended(session, ticket.id)  # the lead's own items are its own again; edits stay local
        await release_partner_items(session, ticket.id)
        row.approved = approved
        await self._emit(session, OutsourceCompleted(
            link_id=row.link_id, approved=approved, statement_version=ending.version if ending else None,
            statement_sha256=ending.sha256 if ending else None, statement=None if approved else ending.body,
        ), row.link_id)
        await add_system_note(
            session, ticket.id, *wording.complete_note(row.partner_name, row.partner_ticket_number, approved, hours))
        notify(session, "outsourcing.complete", self.settings.notify_email,
               *wording.complete_mail(ticket.number, ticket.title, row.partner_name, row.partner_ticket_number,
                                      approved, hours), ticket.id)
        return row

    async def _statement_ended_with(self, session: AsyncSession, ticket: Ticket, row: Outsourcing, approved: bool,
                                    statement_sha256: str | None) -> statements.Statement | None:
        """The statement the link ends with, settled: the one waiting, when the approval names it; or one
        the lead freezes itself at Complete from the partner's items that had crossed."""
        held = await statements.all_of(session, row.link_id)
        waiting = held[-1] if held and held[-1].version == row.rounds and row.rounds else None
        if approved:
            ending = statements.approvable(waiting, statement_sha256, held, row.rounds)
            if ending is not None:
                statements.settle(ending, statements.APPROVED)
            return ending
        version = (held[-1].version if held else 0) + 1
        ending = await statements.freeze(session, row.link_id, ticket.id, row.terms, version, crossed=True)
        statements.settle(ending, statements.COMPLETED)
        return ending

    async def _partner_hours_charge(self, session: AsyncSession, ticket: Ticket, row: Outsourcing) -> Decimal:
        """The partner's time entries, summed into one non-billable charge on the lead ticket."""
        entries = await session.scalars(
            select(TicketItem.fields).where(
                TicketItem.ticket_id == ticket.id,
                TicketItem.kind == ItemKind.TIME_ENTRY,
                TicketItem.origin == Origin.PARTNER,
                # This outsourcing's partner: not one that left the hub (its link Canceled) nor one
                # counted by an earlier outsourcing of this ticket.
                TicketItem.link_id == row.link_id,
                TicketItem.released.is_(False),
            )
        )
        hours = sum((Decimal(str(f["hours"])) for f in entries.all()), Decimal(0))
        if hours > 0:
            terms = row.terms or {}
            rate = Decimal(str(terms.get("rate", 0))) if terms.get("rate_type") == "hourly" else Decimal(0)
            name, description = wording.partner_labor(row.partner_name, row.partner_ticket_number)
            session.add(
                TicketItem(
                    ticket_id=ticket.id,
                    kind=ItemKind.CHARGE,
                    origin=Origin.SYSTEM,
                    internal=True,
                    fields={"name": name, "description": description, "quantity": str(hours),
                            "unit_price": str(rate), "billable": False},
                )
            )
        return hours

    async def dashboard(self, session: AsyncSession, status: OutsourceStatus | None, limit: int = paging.PAGE_MAX,
                        cursor: str | None = None) -> tuple[list[tuple[Outsourcing, Ticket, datetime]], str | None]:
        """A page of outsourcings, newest first, each with its ticket and its last activity: the latest
        change of the outsourcing, the ticket or any of its items."""
        newest_item = select(func.max(TicketItem.updated_at)).where(TicketItem.ticket_id == Ticket.id).scalar_subquery()
        last_activity = func.greatest(Outsourcing.updated_at, Ticket.updated_at, newest_item)
        query = select(Outsourcing, Ticket, last_activity).join(Ticket, Ticket.id == Outsourcing.ticket_id)
        if status:
            query = query.where(Outsourcing.status == status)
        query = paging.after(query, Outsourcing.created_at, Outsourcing.link_id, cursor, newest_first=True)
        rows = [tuple(row) for row in (await session.execute(query.limit(limit + 1))).all()]
        return paging.page(rows, limit, lambda row: row[0].created_at, lambda row: row[0].link_id)

    # --- what the bridge tells the lead (one handler per message) --------------------------------

    async def _linked(self, session: AsyncSession, link_id: str) -> tuple[Ticket, Outsourcing]:
        """The outsourcing of `link_id` and its ticket, ticket locked first (the order every writer uses)."""
        ticket_id = await self.links.ticket_for_link(session, link_id)
        if ticket_id is None:
            raise Rejected(f"no outsourcing has link {link_id}")
        ticket = await get_ticket(session, ticket_id)  # locked by ticket_for_link
        return ticket, await session.get(Outsourcing, link_id, with_for_update=True)

    async def on_waiting_approval(self, session: AsyncSession, payload: WorkWaitingApproval) -> None:
        ticket, row = await self._linked(session, payload.link_id)
        if payload.round == row.rounds and payload.statement and row.status == OutsourceStatus.WAITING_APPROVAL:
            # Sent again by reconciliation: this side lacked the statement the request came with.
            if await statements.of_version(session, row.link_id, payload.round) is None:
                await self._keep_waiting(session, ticket, row, payload)
                return
        if payload.round <= row.rounds:
            raise Ignored(f"Insource Complete {payload.round} of link {row.link_id} was already applied")
        row.status = workflow.outsource("link.waiting_approval", row.status)
        row.rounds = payload.round
        if payload.statement is not None:
            await self._keep_waiting(session, ticket, row, payload)
        await lock_shared_items(session, ticket.id)
        await add_system_note(session, ticket.id, *wording.waiting_approval_note(row.partner_name))
        notify(session, "approval.requested", self.settings.notify_email,
               *wording.waiting_approval_mail(ticket.number, ticket.title, row.partner_name, row.partner_ticket_number),
               ticket.id)

    async def _keep_waiting(self, session: AsyncSession, ticket: Ticket, row: Outsourcing,
                            payload: WorkWaitingApproval) -> None:
        """The statement an Insource Complete asks approval of, checked first: a statement its terms and
        its own lines could not have made is not kept, and the ticket says why (Complete stays possible)."""
        try:
            body = billing.checked(payload.statement, version=payload.round, terms=row.terms)
        except billing.BadStatement as exc:
            log.warning("link %s: the statement of Insource Complete %d was refused: %s", row.link_id, payload.round, exc)
            await add_system_note(session, ticket.id, *wording.statement_refused(row.partner_name, str(exc)))
            return
        await statements.keep(session, row.link_id, body)

    async def on_accepted(self, session: AsyncSession, payload: WorkAccepted) -> None:
        ticket, row = await self._linked(session, payload.link_id)
        cancel_too_late = row.status == OutsourceStatus.CANCELED
        latest = await self.links.latest(session, ticket.id)
        if cancel_too_late and latest.link_id != row.link_id:
            # The ticket was outsourced again meanwhile: this older link is ended instead.
            row.partner_ticket_number = payload.partner_ticket_number
            await self._emit(session, OutsourceCompleted(link_id=row.link_id, approved=False), row.link_id)
            await add_system_note(
                session, ticket.id, *wording.accepted_too_late_and_ended(row.partner_name, payload.partner_ticket_number))
            return
        row.status = workflow.outsource("link.accepted", row.status)
        row.partner_ticket_number = payload.partner_ticket_number
        await add_system_note(
            session, ticket.id, *wording.accepted_note(row.partner_name, payload.partner_ticket_number, cancel_too_late))
        notify(session, "work.accepted", self.settings.notify_email,
               *wording.accepted_mail(ticket.number, ticket.title, row.partner_name, payload.partner_ticket_number),
               ticket.id)

    async def on_link_unknown(self, session: AsyncSession, payload: LinkUnknown) -> None:
        """The bridge never got this outsourcing's request (the broker lost it): send it again."""
        ticket, row = await self._linked(session, payload.link_id)
        if row.status != OutsourceStatus.ASSIGNED:
            raise Ignored(f"the bridge does not know link {row.link_id}, which is {row.status} here")
        await self._emit(session, self._request(ticket, row), row.link_id)

    async def on_declined(self, session: AsyncSession, payload: WorkDeclined) -> None:
        ticket, row = await self._linked(session, payload.link_id)
        row.status = workflow.outsource("link.declined", row.status)
        row.reason = payload.reason
        await add_system_note(session, ticket.id, *wording.declined_note(row.partner_name, payload.reason))
        notify(session, "work.declined", self.settings.notify_email,
               *wording.declined_mail(ticket.number, ticket.title, row.partner_name, payload.reason), ticket.id)

    async def on_partner_left(self, session: AsyncSession, payload: PartnerLeft) -> None:
        """The hub removed the insourcing partner: the outsourcing is Canceled (the ticket may be
        outsourced again). The lead's own items are its own again, as after a completion; what the
        partner wrote stays, read-only for good."""
        ticket, row = await self._linked(session, payload.link_id)
        row.status = workflow.outsource("link.partner_left", row.status)
        await unlock_suspended(session, ticket.id)
        await lock_partner_items(session, ticket.id, row.link_id)
        await self.sync.partner_left(session, ticket.id, row.link_id, payload.partner_name)
        await add_system_note(session, ticket.id, *wording.partner_left_note(payload.partner_name, payload.partner_id))
        notify(session, "partner.left", self.settings.notify_email,
               *wording.partner_left_mail(ticket.number, ticket.title, payload.partner_name, payload.partner_id,
                                          row.partner_ticket_number), ticket.id)

    async def on_invoiced(self, session: AsyncSession, payload: WorkInvoiced) -> None:
        """The partner invoiced the statement the link ended with: the lead sees the number beside it.
        Only that statement: the one settled here, or (none settled: a completion that reached this lead
        before it kept statements) the one the invoice carries, checked."""
        ticket, row = await self._linked(session, payload.link_id)
        if row.status != OutsourceStatus.COMPLETE:
            raise Rejected(f"outsourcing {row.link_id} is {row.status}: there is nothing to invoice yet")
        held = await statements.settled(session, row.link_id)
        if held is None and payload.statement is not None:
            try:
                body = billing.checked(payload.statement, version=payload.statement_version, terms=row.terms)
            except billing.BadStatement as exc:
                raise Rejected(f"the invoice's statement is refused: {exc}") from exc
            if await statements.of_version(session, row.link_id, payload.statement_version) is None:
                held = await statements.keep(session, row.link_id, body)  # the copy it never received
                statements.settle(held, statements.APPROVED if row.approved else statements.COMPLETED)
        if held is None or (held.version, held.sha256) != (payload.statement_version, payload.statement_sha256):
            raise Rejected(f"the invoice names statement version {payload.statement_version}"
                           f" (SHA-256 {payload.statement_sha256}), which is not the one this outsourcing ended with")
        held = await statements.of_version(session, row.link_id, held.version)  # locked
        if held.invoice_number == payload.invoice_number:
            raise Ignored(f"invoice {payload.invoice_number} of link {row.link_id} was already recorded")
        if held.invoice_number is not None:
            raise Rejected(f"statement version {held.version} of link {row.link_id} was invoiced already, as"
                           f" {held.invoice_number}")
        held.invoice_number, held.invoiced_at = payload.invoice_number, utcnow()
        await add_system_note(session, ticket.id, *wording.invoiced_note(
            row.partner_name, payload.invoice_number, held.body["totals"]["total"], held.body.get("currency")))
