"""The hub removed a partner (SPEC section 10): the other party of each open link hears
`link.partner_left`. Both partners' handlers on a real database: the outsourcing or received work is
Canceled from any unfinished status and stays as it was when already finished, a note and a mail name
who left, nothing crosses any more, and what crossed is read-only."""
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from services.insourcing_partner.models import ReceivedWork
from services.lead_partner.models import Outsourcing
from shared.contracts.messages import (
    MirrorUpsert,
    PartnerLeft,
    WorkAccepted,
    WorkCompleted,
    WorkDeclined,
    WorkWaitingApproval,
)
from shared.domain.partner_sync import SyncWatch
from shared.domain.tickets.models import TicketItem
from shared.domain.tickets.rules import ItemKind, Origin
from shared.domain.tickets.service import add_item, update_item
from shared.platform.errors import Conflict
from tests.handlers.sides import PARTNER, Side, accepted_work, items_on, outsourced, received_work

pytestmark = pytest.mark.asyncio(loop_scope="session")

LEAD_OUT, PARTNER_OUT = "psa.lead-partner.outbound", "psa.insourcing-partner.outbound"
TIME_ENTRY = {"resource": "Bo", "date_worked": "2026-11-26", "hours": 3, "summary": "Rewired the rack"}


def left(link_id: str, partner_id: str = PARTNER, name: str = "Insourcing Partner") -> PartnerLeft:
    return PartnerLeft(link_id=link_id, partner_id=partner_id, partner_name=name)


async def system_notes(side: Side, ticket_id: str) -> list[tuple[str, str]]:
    return [(i.fields["title"], i.fields["body"]) for i in await items_on(side, ticket_id) if i.origin == Origin.SYSTEM]


async def note(side: Side, ticket_id: str, body: str) -> str:
    item = await side.call(add_item, side.service.mirroring, ticket_id, ItemKind.NOTE, {"title": "", "body": body}, False)
    return item.id


async def edit(side: Side, ticket_id: str, kind: ItemKind, item_id: str, changes: dict) -> None:
    await side.call(update_item, side.service.mirroring, ticket_id, kind, item_id, changes)


async def mirror(side: Side, link_id: str, kind: str, fields: dict) -> str:
    mirror_id = str(uuid.uuid4())
    await side.receive(MirrorUpsert(link_id=link_id, mirror_id=mirror_id, kind=kind, fields=fields))
    return mirror_id


# --- the lead partner: its insourcing partner left ---------------------------------------------------

async def in_progress(lead: Side) -> tuple[str, str]:
    ticket_id, link_id = await outsourced(lead)
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-21"))
    return ticket_id, link_id


async def test_lead_partner_left_cancels_the_outsourcing_and_says_who_left_on_the_ticket_and_by_mail(lead):
    ticket_id, link_id = await in_progress(lead)
    await lead.receive(left(link_id, "globex", "Globex"))
    assert (await lead.get(Outsourcing, link_id)).status == "Canceled"
    [(title, body)] = [n for n in await system_notes(lead, ticket_id) if "left the hub" in n[1]]
    assert title == "Insourcing partner left"
    assert body.startswith("Globex (globex) left the hub: this outsourcing is canceled and nothing synchronizes")
    [mail] = [m for m in await lead.mails("partner.left") if m.ticket_id == ticket_id]
    assert mail.subject.startswith("Outsourcing canceled: T")
    assert "Globex (globex) left the hub" in mail.body and "I-21" in mail.body and "is Canceled" in mail.body


async def test_lead_partner_left_the_partners_items_stay_read_only_and_the_leads_own_stay_its_own_and_local(lead):
    ticket_id, link_id = await in_progress(lead)
    own = await note(lead, ticket_id, "shared before")
    theirs = await mirror(lead, link_id, "note", {"title": "", "body": "from the partner"})
    await lead.receive(left(link_id))

    with pytest.raises(Conflict, match="the partner left the hub"):
        await edit(lead, ticket_id, ItemKind.NOTE, theirs, {"body": "mine now"})
    before = await lead.staged(link_id)
    await edit(lead, ticket_id, ItemKind.NOTE, own, {"body": "edited after"})
    added = await note(lead, ticket_id, "written after")
    assert await lead.staged(link_id) == before  # nothing crosses any more
    assert (await lead.get(TicketItem, own)).fields["body"] == "edited after"
    assert not (await lead.get(TicketItem, added)).shared
    # The note that never got its receipt says why; the link's health no longer waits for it.
    shared = await lead.get(TicketItem, own)
    assert (shared.delivery_status, shared.delivery_reason) == ("refused", "Insourcing Partner left the hub before confirming it")
    async with lead.sessions() as session:
        health = await lead.service.sync.health(session, ticket_id)
    assert (health["link_state"], health["status"], health["pending"]) == ("terminated", "Canceled", 0)


async def test_lead_partner_left_while_waiting_approval_gives_the_lead_its_locked_items_back(lead):
    ticket_id, link_id = await in_progress(lead)
    own = await note(lead, ticket_id, "shared before")
    await lead.receive(WorkWaitingApproval(link_id=link_id))
    with pytest.raises(Conflict, match="suspended"):
        await edit(lead, ticket_id, ItemKind.NOTE, own, {"body": "while waiting"})
    await lead.receive(left(link_id))
    assert (await lead.get(Outsourcing, link_id)).status == "Canceled"
    await edit(lead, ticket_id, ItemKind.NOTE, own, {"body": "after the partner left"})
    assert (await lead.get(TicketItem, own)).fields["body"] == "after the partner left"


async def test_lead_partner_left_before_accepting_cancels_the_assigned_outsourcing(lead):
    ticket_id, link_id = await outsourced(lead)
    await lead.receive(left(link_id))
    assert (await lead.get(Outsourcing, link_id)).status == "Canceled"
    assert any("left the hub" in body for _, body in await system_notes(lead, ticket_id))


@pytest.mark.parametrize("finished", ["Complete", "Declined"])
async def test_lead_partner_left_after_the_outsourcing_finished_changes_nothing(lead, finished):
    ticket_id, link_id = await in_progress(lead) if finished == "Complete" else await outsourced(lead)
    if finished == "Complete":
        await lead.call(lead.service.finish, ticket_id, "complete")
    else:
        await lead.receive(WorkDeclined(link_id=link_id, reason="no technician"))
    notes = await system_notes(lead, ticket_id)
    await lead.receive(left(link_id))
    assert (await lead.get(Outsourcing, link_id)).status == finished
    assert await system_notes(lead, ticket_id) == notes
    assert not [m for m in await lead.mails("partner.left") if m.ticket_id == ticket_id]


async def test_lead_a_ticket_whose_partner_left_is_outsourced_again_and_bills_only_the_new_partners_hours(lead):
    ticket_id, first = await in_progress(lead)
    await mirror(lead, first, "time_entry", TIME_ENTRY)  # 3 h by the partner that leaves
    await lead.receive(left(first))
    async with lead.sessions() as session, session.begin():
        second = (await lead.service.outsource(session, ticket_id, PARTNER, "again", None)).link_id
    assert (await lead.get(Outsourcing, second)).status == "Assigned"
    await lead.receive(WorkAccepted(link_id=second, partner_ticket_number="I-22"))
    await mirror(lead, second, "time_entry", {**TIME_ENTRY, "hours": 1})
    await lead.call(lead.service.finish, ticket_id, "complete")
    [charge] = [i for i in await items_on(lead, ticket_id) if i.kind == ItemKind.CHARGE]
    assert Decimal(charge.fields["quantity"]) == 1


async def test_lead_partner_left_a_link_is_no_longer_reconciled_while_another_open_one_is(lead):
    _, gone = await in_progress(lead)
    _, open_link = await in_progress(lead)
    await lead.receive(left(gone))
    watch = SyncWatch(lead.service.sync, interval=30, grace=0).attach(lead.sessions)
    await watch.tick()
    assert (LEAD_OUT, "sync.reconcile_requested") in await lead.staged(open_link)
    assert (LEAD_OUT, "sync.reconcile_requested") not in await lead.staged(gone)


# --- the insourcing partner: the lead partner left ---------------------------------------------------

async def test_insourcing_lead_left_cancels_the_work_in_progress_notes_and_mails_who_left(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    await insourcing.receive(left(link_id, "lead-partner", "Lead Co"))
    assert (await insourcing.get(ReceivedWork, link_id)).status == "Canceled"
    [(title, body)] = [n for n in await system_notes(insourcing, ticket_id) if "left the hub" in n[1]]
    assert title == "Lead partner left"
    assert body.startswith("Lead Co (lead-partner) left the hub: this work is canceled and nothing synchronizes")
    [mail] = [m for m in await insourcing.mails("partner.left") if m.ticket_id == ticket_id]
    assert "Lead Co (lead-partner) left the hub" in mail.body and "T-42" in mail.subject


async def test_insourcing_lead_left_everything_on_the_ticket_is_read_only_and_nothing_crosses(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    own = await note(insourcing, ticket_id, "shared before")
    entry = await insourcing.call(add_item, insourcing.service.mirroring, ticket_id, ItemKind.TIME_ENTRY,
                                  TIME_ENTRY, False)
    theirs = await mirror(insourcing, link_id, "note", {"title": "", "body": "from the lead"})
    await insourcing.receive(left(link_id, "lead-partner", "Lead Co"))

    for kind, item_id in ((ItemKind.NOTE, own), (ItemKind.TIME_ENTRY, entry.id), (ItemKind.NOTE, theirs)):
        with pytest.raises(Conflict, match="the partner left the hub"):
            await edit(insourcing, ticket_id, kind, item_id, {"summary" if kind == ItemKind.TIME_ENTRY else "body": "x"})
    before = await insourcing.staged(link_id)
    added = await note(insourcing, ticket_id, "written after")
    late = await mirror(insourcing, link_id, "note", {"title": "", "body": "too late"})
    assert not (await insourcing.get(TicketItem, added)).shared
    assert late not in {i.id for i in await items_on(insourcing, ticket_id)}
    assert [t for t in (await insourcing.staged(link_id))[len(before):] if t[1] != "mirror.refused"] == []


async def test_insourcing_lead_left_while_waiting_approval_cancels_the_work(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    await insourcing.call(insourcing.service.request_approval, ticket_id)
    await insourcing.receive(left(link_id, "lead-partner", "Lead Co"))
    assert (await insourcing.get(ReceivedWork, link_id)).status == "Canceled"


async def test_insourcing_lead_left_before_acceptance_cancels_the_pending_work_and_mails_it(insourcing):
    link_id = await received_work(insourcing)
    await insourcing.receive(left(link_id, "lead-partner", "Lead Co"))
    assert (await insourcing.get(ReceivedWork, link_id)).status == "Canceled"
    assert any("T-42" in m.subject for m in await insourcing.mails("partner.left"))


async def test_insourcing_lead_left_after_completion_changes_nothing(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    await note(insourcing, ticket_id, "before")
    await insourcing.receive(WorkCompleted(link_id=link_id, approved=True))
    notes = await system_notes(insourcing, ticket_id)
    await insourcing.receive(left(link_id, "lead-partner", "Lead Co"))
    assert (await insourcing.get(ReceivedWork, link_id)).status == "Complete"
    assert await system_notes(insourcing, ticket_id) == notes
    async with insourcing.sessions() as session:
        locks = set(await session.scalars(select(TicketItem.lock).where(TicketItem.ticket_id == ticket_id,
                                                                         TicketItem.origin != Origin.SYSTEM)))
    assert locks == {"completion"}
