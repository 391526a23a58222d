"""The statement a link ends with, handler by handler on real databases (SPEC section 12): the lead
approves the one waiting by its hash and no other (the stale-approval race: a reject crossing a new
Insource Complete), its Complete freezes one of what had crossed, the insourcing partner settles the
same one, invoices it once, and the bridge passes the invoice to the lead of a completed link only."""
import uuid

import pytest

from services.lead_partner.models import Outsourcing
from services.sync_bridge.models import Link
from services.sync_bridge.reconciliation import missed_decision, missed_events
from shared.contracts.messages import (
    InsourceCompletionRequested,
    InsourceInvoiced,
    MirrorUpsert,
    OutsourceCompleted,
    SideStatus,
    WorkAccepted,
    WorkCompleted,
    WorkInvoiced,
    WorkWaitingApproval,
)
from shared.domain import billing, statements
from shared.platform.errors import Conflict, Unprocessable
from shared.platform.inbox import Rejected
from tests.handlers.sides import (
    IN_LEAD,
    LEAD,
    PARTNER,
    Side,
    accepted_work,
    active_link,
    from_partner,
    items_on,
    outsourced,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
TERMS = {"rate_type": "hourly", "rate": "95.00", "currency": "EUR"}
ENTRY = {"resource": "Ana", "date_worked": "2026-12-07", "summary": "Swapped the fuser", "billable": True}


def statement_of(version: int, *hours: str) -> dict:
    """A statement as the partner freezes it: a time entry per figure of hours at 95.00 EUR."""
    entries = [billing.BilledItem(str(uuid.uuid4()), "time_entry", {**ENTRY, "hours": h}) for h in hours]
    return billing.statement(TERMS, entries, version)


async def held_on(side: Side, link_id: str) -> list[statements.Statement]:
    async with side.sessions() as session:
        return await statements.all_of(session, link_id)


async def waiting_on_lead(lead: Side, *rounds: dict) -> tuple[str, str]:
    """A lead ticket whose partner asked approval once per statement given, the lead rejecting each but the last."""
    ticket_id, link_id = await outsourced(lead)
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-7"))
    for number, body in enumerate(rounds, start=1):
        await lead.receive(WorkWaitingApproval(link_id=link_id, round=number, statement=body))
        if number < len(rounds):
            await lead.call(lead.service.reject, ticket_id, "one more check")
    return ticket_id, link_id


# --- the lead --------------------------------------------------------------------------------------

async def test_lead_approves_only_the_statement_waiting_a_stale_one_after_a_reject_is_409(lead):
    first, second = statement_of(1, "2.50"), statement_of(2, "2.50", "1.00")
    # The agent read version 1; meanwhile the lead rejected it and the partner's version 2 arrived.
    ticket_id, link_id = await waiting_on_lead(lead, first, second)
    with pytest.raises(Conflict, match="version 1 was superseded: the current one is version 2"):
        await lead.call(lead.service.finish, ticket_id, "approve", billing.sha256(first))
    with pytest.raises(Conflict, match="no statement of this link has SHA-256"):
        await lead.call(lead.service.finish, ticket_id, "approve", "0" * 64)
    with pytest.raises(Unprocessable, match="statement_sha256 is required"):
        await lead.call(lead.service.finish, ticket_id, "approve", None)
    assert [s.settled for s in await held_on(lead, link_id)] == [None, None]  # nothing half-written

    await lead.call(lead.service.finish, ticket_id, "approve", billing.sha256(second).upper())
    assert [(s.version, s.settled) for s in await held_on(lead, link_id)] == [(1, None), (2, "approved")]
    sent = await lead.last_staged(link_id)
    assert isinstance(sent, OutsourceCompleted) and sent.approved
    assert (sent.statement_version, sent.statement_sha256, sent.statement) == (2, billing.sha256(second), None)


async def test_lead_approves_a_partner_of_release_1_0_0_which_sends_no_statement_without_a_hash(lead):
    ticket_id, link_id = await waiting_on_lead(lead, None)
    with pytest.raises(Conflict, match="there is no statement to approve"):
        await lead.call(lead.service.finish, ticket_id, "approve", "a" * 64)
    await lead.call(lead.service.finish, ticket_id, "approve", None)
    sent = await lead.last_staged(link_id)
    assert (sent.approved, sent.statement_version, sent.statement_sha256) == (True, None, None)


async def test_lead_complete_at_any_time_freezes_a_statement_of_what_had_crossed(lead):
    ticket_id, link_id = await outsourced(lead)
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-8"))
    async with lead.sessions() as session, session.begin():
        (await session.get(Outsourcing, link_id)).terms = TERMS
    await lead.receive(MirrorUpsert(link_id=link_id, mirror_id=str(uuid.uuid4()), kind="time_entry",
                                    fields={**ENTRY, "hours": "1.50"}))
    await lead.receive(MirrorUpsert(link_id=link_id, mirror_id=str(uuid.uuid4()), kind="charge",
                                    fields={"name": "Fuser", "quantity": "1", "unit_price": "80.00", "billable": True}))
    await lead.call(lead.service.finish, ticket_id, "complete")
    [frozen] = await held_on(lead, link_id)
    assert (frozen.version, frozen.settled, frozen.body["totals"]["total"]) == (1, "completed", "222.50")  # 142.50 + 80
    sent = await lead.last_staged(link_id)
    assert (sent.approved, sent.statement_version, sent.statement_sha256) == (False, 1, frozen.sha256)
    assert billing.sha256(sent.statement) == frozen.sha256


async def test_lead_records_the_invoice_of_the_statement_it_holds_and_refuses_another(lead):
    body = statement_of(1, "3.00")
    ticket_id, link_id = await waiting_on_lead(lead, body)
    await lead.call(lead.service.finish, ticket_id, "approve", billing.sha256(body))
    with pytest.raises(Rejected, match="not the one this outsourcing ended with"):
        await lead.receive(WorkInvoiced(link_id=link_id, statement_version=1, statement_sha256="b" * 64,
                                        invoice_number="INV-9"))
    await lead.receive(WorkInvoiced(link_id=link_id, statement_version=1, statement_sha256=billing.sha256(body),
                                    invoice_number="INV-9"))
    [held] = await held_on(lead, link_id)
    assert (held.invoice_number, held.invoiced_at is not None) == ("INV-9", True)


# --- the insourcing partner ------------------------------------------------------------------------

async def test_insourcing_settles_the_approved_statement_and_invoices_it_once(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    with pytest.raises(Conflict, match="only work the lead approved or completed can be invoiced"):
        await insourcing.call(insourcing.service.invoice, link_id, "INV-1")
    await insourcing.call(insourcing.service.request_approval, ticket_id)
    [mine] = await held_on(insourcing, link_id)
    await insourcing.receive(WorkCompleted(link_id=link_id, approved=True, statement_version=1,
                                           statement_sha256=mine.sha256))
    [mine] = await held_on(insourcing, link_id)
    assert mine.settled == "approved"

    await insourcing.call(insourcing.service.invoice, link_id, "INV-1")
    sent = await insourcing.last_staged(link_id)
    assert isinstance(sent, InsourceInvoiced)
    assert (sent.invoice_number, sent.statement_version, sent.statement_sha256) == ("INV-1", 1, mine.sha256)
    again = await insourcing.call(insourcing.service.invoice, link_id, "INV-1")  # a retry: the same answer
    assert again.invoice_number == "INV-1"
    assert [t for _, t in await insourcing.staged(link_id)].count("insource.invoiced") == 1
    with pytest.raises(Conflict, match="invoiced already, as INV-1"):
        await insourcing.call(insourcing.service.invoice, link_id, "INV-2")


async def test_insourcing_its_insource_complete_overtaken_by_the_leads_complete_ends_with_the_leads_statement(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    await insourcing.call(insourcing.service.request_approval, ticket_id)  # its version 1, never approved
    leads = statement_of(1, "4.00")  # the lead completed first, with what had crossed
    await insourcing.receive(WorkCompleted(link_id=link_id, approved=False, statement_version=1,
                                           statement_sha256=billing.sha256(leads), statement=leads))
    [ended] = await held_on(insourcing, link_id)
    assert (ended.settled, ended.sha256, ended.body) == ("completed", billing.sha256(leads), leads)


async def test_insourcing_a_lead_of_release_1_0_0_completing_leaves_a_statement_frozen_here(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    await insourcing.receive(WorkCompleted(link_id=link_id, approved=False))  # no statement named
    [ended] = await held_on(insourcing, link_id)
    assert (ended.version, ended.settled) == (1, "completed")


# --- the bridge ------------------------------------------------------------------------------------

async def test_bridge_passes_an_invoice_to_the_lead_of_a_completed_link_only(bridge):
    link_id = await active_link(bridge)
    invoice = InsourceInvoiced(link_id=link_id, statement_version=1, statement_sha256="c" * 64, invoice_number="INV-3")
    with pytest.raises(Rejected, match="did not complete"):
        await from_partner(bridge, PARTNER, invoice)
    await from_partner(bridge, PARTNER, InsourceCompletionRequested(link_id=link_id, statement=statement_of(1, "1.00")))
    await from_partner(bridge, LEAD, OutsourceCompleted(link_id=link_id, approved=True, statement_version=1,
                                                        statement_sha256="c" * 64))
    await from_partner(bridge, PARTNER, invoice)
    assert (await bridge.get(Link, link_id)).state == "terminated"
    assert (await bridge.staged(link_id))[-1] == (IN_LEAD, "link.invoiced")
    passed = await bridge.last_staged(link_id)
    assert isinstance(passed, WorkInvoiced) and passed.invoice_number == "INV-3"
    with pytest.raises(Rejected, match="may not send insource.invoiced"):
        await from_partner(bridge, LEAD, invoice)


# --- reconciliation: a lead that lacks the statement waiting for its approval gets it again ---------

async def test_reconciliation_sends_the_waiting_statement_again_to_a_lead_that_lacks_it(bridge, lead):
    body = statement_of(1, "2.00")
    link_id = await active_link(bridge)
    await from_partner(bridge, PARTNER, InsourceCompletionRequested(link_id=link_id, statement=body))
    link = await bridge.get(Link, link_id)
    partner = SideStatus(status="Waiting Approval", rounds=1, keeps_statements=True, statement_version=1,
                         statement_sha256=billing.sha256(body))
    lacking = SideStatus(status="Waiting Approval", rounds=1, keeps_statements=True)
    [(to, resent)] = missed_events(link, lacking, partner)
    assert (to, resent.round, resent.statement) == (LEAD, 1, body)
    holding = lacking.model_copy(update={"statement_version": 1, "statement_sha256": billing.sha256(body)})
    assert missed_events(link, holding, partner) == []
    older_release = SideStatus(status="Waiting Approval", rounds=1)  # a lead of 1.0.0 keeps no statement
    assert missed_events(link, older_release, partner) == []

    # The lead keeps the statement of the round it already applied, and nothing else changes.
    ticket_id, lead_link = await waiting_on_lead(lead, None)
    await lead.receive(WorkWaitingApproval(link_id=lead_link, round=1, statement=body))
    assert [(s.version, s.sha256) for s in await held_on(lead, lead_link)] == [(1, billing.sha256(body))]
    await lead.call(lead.service.finish, ticket_id, "approve", billing.sha256(body))


# --- what the other company sends is checked, and reconciliation carries the statement ---------------

def forged(body: dict, **totals) -> dict:
    """A statement whose totals its lines do not make."""
    return {**body, "totals": {**body["totals"], **totals}}


async def test_lead_refuses_a_statement_its_lines_or_terms_could_not_make_and_approve_waits_for_one(lead):
    body = statement_of(1, "2.00")
    ticket_id, link_id = await waiting_on_lead(lead, forged(body, total="0.01"))
    assert await held_on(lead, link_id) == []
    notes = [i.fields["body"] for i in await items_on(lead, ticket_id) if i.fields.get("title") == "Statement refused"]
    assert "totals.total is 0.01, but its lines make 190.00" in notes[0]
    # A partner that sends statements and whose latest did not arrive: approve waits, naming why.
    second_ticket, second_link = await waiting_on_lead(lead, statement_of(1, "1.00"), forged(body, total="9.99"))
    with pytest.raises(Conflict, match="does not hold the statement of Insource Complete 2 yet"):
        await lead.call(lead.service.finish, second_ticket, "approve", None)
    for wrong in ({**body, "version": 0}, {**body, "currency": "USD"}, {**body, "rate": "1.00"}, "not a statement"):
        with pytest.raises(billing.BadStatement):
            billing.checked(wrong, version=1, terms=TERMS)


async def test_lead_records_an_invoice_only_for_the_statement_the_outsourcing_ended_with(lead):
    body = statement_of(1, "3.00")
    ticket_id, link_id = await waiting_on_lead(lead, body)
    invoice = WorkInvoiced(link_id=link_id, statement_version=1, statement_sha256=billing.sha256(body),
                           invoice_number="INV-7")
    with pytest.raises(Rejected, match="nothing to invoice yet"):
        await lead.receive(invoice)
    await lead.call(lead.service.finish, ticket_id, "approve", billing.sha256(body))
    other = statement_of(2, "30.00")  # a second statement offered with an invoice: never settled beside the first
    with pytest.raises(Rejected, match="not the one this outsourcing ended with"):
        await lead.receive(WorkInvoiced(link_id=link_id, statement_version=2, statement_sha256=billing.sha256(other),
                                        invoice_number="INV-7", statement=other))
    await lead.receive(invoice)
    with pytest.raises(Rejected, match="invoiced already, as INV-7"):
        await lead.receive(invoice.model_copy(update={"invoice_number": "INV-8"}))
    assert [(s.version, s.settled, s.invoice_number) for s in await held_on(lead, link_id)] == [(1, "approved", "INV-7")]


async def test_insourcing_refuses_a_lead_statement_whose_totals_its_lines_do_not_make_and_says_the_sides_differ(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    bad = forged(statement_of(1, "4.00"), total="1.00")
    await insourcing.receive(WorkCompleted(link_id=link_id, approved=False, statement_version=1,
                                           statement_sha256=billing.sha256(bad), statement=bad))
    [ended] = await held_on(insourcing, link_id)
    assert ended.settled == "completed" and ended.body != bad  # its own, frozen now
    titles = [i.fields.get("title") for i in await items_on(insourcing, ticket_id)]
    assert "Statements differ" in titles


async def test_reconciliation_sends_a_lost_completion_with_the_statement_the_lead_froze(bridge):
    link_id = await active_link(bridge)
    leads = statement_of(1, "1.25")
    lead_side = SideStatus(status="Complete", rounds=0, approved=False, keeps_statements=True, statement_version=1,
                           statement_sha256=billing.sha256(leads), statement=leads)
    partner_side = SideStatus(status="In Progress", rounds=0, keeps_statements=True, ticket_id="t")
    decision = missed_decision(await bridge.get(Link, link_id), lead_side, partner_side)
    assert (decision.statement_version, decision.statement_sha256, decision.statement) == \
        (1, billing.sha256(leads), leads)
    await from_partner(bridge, LEAD, decision)  # as reconciliation applies it
    passed = await bridge.last_staged(link_id)
    assert isinstance(passed, WorkCompleted) and passed.statement == leads
    # The partner never got that link.completed either: the one sent again carries the statement too.
    [(_, again)] = missed_events(await bridge.get(Link, link_id), lead_side, partner_side)
    assert isinstance(again, WorkCompleted) and (again.statement_version, again.statement) == (1, leads)
