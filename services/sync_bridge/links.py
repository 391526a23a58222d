"""The bridge's link events: a partner asks for, cancels, accepts, declines, completes or rejects
work, the link's state moves as shared/domain/workflow.py says, and the other partner is told. The first
event the bridge reads wins a race; one that no longer applies is ignored (and logged)."""
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync_bridge.directory import Directory
from services.sync_bridge.models import Link, LinkFacts, Partner
from shared.contracts.envelope import Payload
from shared.contracts.messages import (
    InsourceAccepted,
    InsourceCompletionRequested,
    InsourceDeclined,
    InsourceInvoiced,
    OutsourceCanceled,
    OutsourceCompleted,
    OutsourceRejected,
    OutsourceRequested,
    WorkAccepted,
    WorkCanceled,
    WorkCompleted,
    WorkDeclined,
    WorkInvoiced,
    WorkRejected,
    WorkRequested,
    WorkWaitingApproval,
)
from shared.domain import workflow
from shared.domain.money import on_the_wire
from shared.platform.db import utcnow
from shared.platform.inbox import Rejected
from shared.platform.messagebus import Ignored
from shared.platform.kafka import inbound_topic
from shared.platform.outbox import Publisher


@dataclass(frozen=True)
class LinkEvent:
    """A partner's event about an existing link, its sender known by the topic it came on."""

    link: Link | LinkFacts  # LinkFacts for an item passing through (services/sync_bridge/bridge.py)
    sender: str
    payload: Payload

    @property
    def from_lead(self) -> bool:
        return self.sender == self.link.lead_partner_id

    @property
    def other_partner(self) -> str:
        return self.link.insourcing_partner_id if self.from_lead else self.link.lead_partner_id

    def require(self, from_lead: bool) -> None:
        if self.from_lead != from_lead:
            raise Rejected(f"{self.sender} may not send {self.payload.type} on this link")


SETTLED = {"statement_version", "statement_sha256", "statement"}  # what a completion says of the statement


def send(session: AsyncSession, partner_id: str, payload: Payload, link_id: str) -> None:
    """Stage a message to a partner, on its inbound topic."""
    Publisher(inbound_topic(partner_id), "bridge").emit(session, payload, link_id)


def move(event: LinkEvent) -> None:
    """The link's new state after the event (shared/domain/workflow.py decides; Ignored if it no longer applies)."""
    event.link.state = workflow.link(event.payload.type, event.link.state)


async def requested(session: AsyncSession, sender: str, link: Link | None, payload: OutsourceRequested,
                    directory: Directory) -> None:
    """A new link: the only event that arrives before its link exists."""
    if link is not None and link.lead_partner_id == sender and link.lead_ticket_id == payload.lead_ticket_id:
        raise Ignored(f"link {payload.link_id} is known already (its request was sent again)")
    if link is not None:
        raise Rejected(f"link {payload.link_id} exists already")
    target = payload.insourcing_partner_id
    lead, partner = directory.get(sender), directory.get(target)
    if lead is None or not lead.may("lead"):
        raise Rejected(f"{sender} is not a lead partner of this hub: it cannot outsource")
    # The rows of both, shared-locked: a removal (which locks its row to update it) waits for this link,
    # then ends it; or this one reads the removal, however fresh this replica's directory is.
    removed = set(await session.scalars(
        select(Partner.id).where(Partner.id.in_([sender, target]), Partner.membership == "removed").with_for_update(read=True)))
    if sender in removed:
        raise Rejected(f"partner removed: {sender} was removed from the hub")
    if partner is None or not partner.may("insourcing") or target == sender or target in removed:
        # Told as a decline, which the lead understands (a refusal would leave its outsourcing waiting).
        send(session, sender, WorkDeclined(link_id=payload.link_id, reason=f"{target} is not an insourcing partner "
                                           "this hub serves (removed, or never onboarded)"), payload.link_id)
        return
    request = WorkRequested(
        # The name the hub knows the lead by, not the one it gives itself: leads are strangers to each other.
        link_id=payload.link_id, lead_partner_id=sender, lead_partner_name=lead.name,
        lead_ticket_number=payload.lead_ticket_number, title=payload.title, description=payload.description,
        instructions=payload.instructions, terms=on_the_wire(payload.terms.model_dump() if payload.terms else None),
    )
    session.add(Link(id=payload.link_id, state=workflow.REQUESTED, lead_partner_id=sender,
                     lead_ticket_id=payload.lead_ticket_id, lead_ticket_number=payload.lead_ticket_number,
                     insourcing_partner_id=target, last_event_at=utcnow(),
                     request=request.model_dump(mode="json")))
    send(session, target, request, payload.link_id)


async def canceled(session: AsyncSession, event: LinkEvent) -> None:
    event.require(from_lead=True)
    move(event)
    event.link.outcome = "canceled"
    send(session, event.other_partner, WorkCanceled(link_id=event.link.id), event.link.id)


async def accepted(session: AsyncSession, event: LinkEvent) -> None:
    event.require(from_lead=False)
    payload: InsourceAccepted = event.payload
    move(event)
    event.link.insourcing_ticket_id = payload.insourcing_ticket_id
    event.link.insourcing_ticket_number = payload.insourcing_ticket_number
    send(session, event.other_partner,
         WorkAccepted(link_id=event.link.id, partner_ticket_number=payload.insourcing_ticket_number), event.link.id)


async def declined(session: AsyncSession, event: LinkEvent) -> None:
    event.require(from_lead=False)
    payload: InsourceDeclined = event.payload
    move(event)
    event.link.outcome, event.link.reason = "declined", payload.reason
    send(session, event.other_partner, WorkDeclined(link_id=event.link.id, reason=payload.reason), event.link.id)


async def completion_requested(session: AsyncSession, event: LinkEvent) -> None:
    """Insource Complete: from here on, items of either side stay on their side."""
    event.require(from_lead=False)
    move(event)
    event.link.rounds += 1
    payload: InsourceCompletionRequested = event.payload
    event.link.statement = payload.statement
    send(session, event.other_partner, WorkWaitingApproval(link_id=event.link.id, round=event.link.rounds,
                                                           statement=payload.statement), event.link.id)


async def rejected(session: AsyncSession, event: LinkEvent) -> None:
    event.require(from_lead=True)
    payload: OutsourceRejected = event.payload
    move(event)
    event.link.reason = payload.reason
    send(session, event.other_partner,
         WorkRejected(link_id=event.link.id, reason=payload.reason, round=event.link.rounds), event.link.id)


async def completed(session: AsyncSession, event: LinkEvent) -> None:
    event.require(from_lead=True)
    payload: OutsourceCompleted = event.payload
    move(event)
    event.link.outcome, event.link.approved = "completed", payload.approved
    event.link.completion = payload.model_dump(include=SETTLED, exclude_none=True) or None
    send(session, event.other_partner,
         WorkCompleted(link_id=event.link.id, approved=payload.approved, **(event.link.completion or {})), event.link.id)


async def invoiced(session: AsyncSession, event: LinkEvent) -> None:
    """The partner invoiced the statement the link ended with: the lead hears it (the link stays ended)."""
    event.require(from_lead=False)
    payload: InsourceInvoiced = event.payload
    if event.link.outcome != "completed":
        raise Rejected(f"link {event.link.id} did not complete (it is {event.link.state}): there is nothing to invoice")
    send(session, event.other_partner, WorkInvoiced(**payload.model_dump()), event.link.id)


HANDLERS = {
    OutsourceCanceled: canceled,
    InsourceAccepted: accepted,
    InsourceDeclined: declined,
    InsourceCompletionRequested: completion_requested,
    OutsourceRejected: rejected,
    OutsourceCompleted: completed,
    InsourceInvoiced: invoiced,
}
