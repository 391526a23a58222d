"""Every message handler of the three services called directly, without Kafka: a session on a real
(migrated) PostgreSQL database and the message the other side would send; the assertions are the
state it leaves and the messages it stages in the outbox. The two races the end-to-end tests cannot
order (a cancel crossing an acceptance, the lead's Complete crossing an Insource Complete) run here
in both orders."""
import base64
import hashlib
import uuid

import pytest
from sqlalchemy import select

from services.insourcing_partner.models import ReceivedWork
from services.lead_partner.models import Outsourcing
from services.sync_bridge.models import ItemMirror, Link
from shared.contracts.envelope import Envelope, envelope
from shared.contracts.messages import (
    AttachmentChunk,
    InsourceAccepted,
    InsourceCompletionRequested,
    ItemCreated,
    ItemDeleted,
    ItemUnshared,
    ItemUpdated,
    MirrorChunk,
    MirrorDelete,
    MirrorRefused,
    MirrorUpsert,
    OutsourceCanceled,
    OutsourceCompleted,
    OutsourceRejected,
    OutsourceRequestedV2,
    ReconcileRequested,
    TermsV2,
    WorkAccepted,
    WorkCanceled,
    WorkCompleted,
    WorkDeclined,
    WorkRejected,
    WorkRequested,
    WorkRequestedV2,
    WorkWaitingApproval,
)
from shared.domain.tickets.models import AttachmentContent, TicketItem
from shared.domain.tickets.rules import ItemKind
from shared.domain.tickets.service import add_item
from shared.platform.errors import Conflict
from shared.platform.inbox import Rejected
from tests.handlers.sides import (
    IN_LEAD,
    IN_PARTNER,
    LEAD,
    PARTNER,
    Side,
    accepted_work,
    active_link,
    from_partner,
    items_on,
    note,
    outsourced,
    pending_link,
    received_work,
    requested,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


# --- the bridge: link events ---------------------------------------------------------------------

async def test_bridge_outsource_requested_opens_a_pending_link_and_asks_the_partner(bridge):
    link_id = await pending_link(bridge)
    assert (await bridge.get(Link, link_id)).state == "pending"
    assert await bridge.staged(link_id) == [(IN_PARTNER, "link.requested")]


async def test_bridge_refuses_a_link_to_a_partner_it_does_not_serve_and_a_second_request(bridge):
    link_id = await pending_link(bridge)
    with pytest.raises(Rejected, match="exists already"):
        await from_partner(bridge, LEAD, requested(link_id))
    # To a partner the hub does not serve: no link, and the lead is told as a decline it understands.
    stranger = requested(str(uuid.uuid4())).model_copy(update={"insourcing_partner_id": "nobody"})
    await from_partner(bridge, LEAD, stranger)
    assert await bridge.get(Link, stranger.link_id) is None
    assert await bridge.staged(stranger.link_id) == [(IN_LEAD, "link.declined")]


async def test_bridge_asks_a_lead_to_resend_a_link_it_never_heard_of_and_tells_an_insourcing_partner_nothing(bridge):
    # The lead's outsource.requested was lost: its reconciliation request is answered with link_unknown.
    lost = str(uuid.uuid4())
    await from_partner(bridge, LEAD, ReconcileRequested(link_id=lost, reason="waiting for a receipt"))
    assert await bridge.staged(lost) == [(IN_LEAD, "sync.link_unknown")]
    # An insourcing partner has nothing to resend (only a lead's request makes a link), nor a handler for it.
    other = str(uuid.uuid4())
    await from_partner(bridge, PARTNER, ReconcileRequested(link_id=other, reason="waiting for a receipt"))
    assert await bridge.get(Link, other) is None and await bridge.staged(other) == []


async def test_bridge_acceptance_activates_the_link_and_tells_the_lead(bridge):
    link_id = await active_link(bridge)
    assert (await bridge.get(Link, link_id)).state == "active"
    assert (await bridge.staged(link_id))[-1] == (IN_LEAD, "link.accepted")


async def test_bridge_decline_ends_the_link_and_tells_the_lead(bridge):
    from shared.contracts.messages import InsourceDeclined

    link_id = await pending_link(bridge)
    await from_partner(bridge, PARTNER, InsourceDeclined(link_id=link_id, reason="busy"))
    assert (await bridge.get(Link, link_id)).state == "terminated"
    assert (await bridge.staged(link_id))[-1] == (IN_LEAD, "link.declined")


async def test_bridge_insource_complete_suspends_and_reject_resumes(bridge):
    link_id = await active_link(bridge)
    await from_partner(bridge, PARTNER, InsourceCompletionRequested(link_id=link_id))
    assert (await bridge.get(Link, link_id)).state == "suspended"
    await from_partner(bridge, LEAD, OutsourceRejected(link_id=link_id, reason="still jams"))
    assert (await bridge.get(Link, link_id)).state == "active"
    assert (await bridge.staged(link_id))[-2:] == [(IN_LEAD, "link.waiting_approval"), (IN_PARTNER, "link.rejected")]


async def test_bridge_refuses_an_event_its_sender_may_not_send(bridge):
    link_id = await active_link(bridge)
    with pytest.raises(Rejected, match="may not send outsource.completed"):
        await from_partner(bridge, PARTNER, OutsourceCompleted(link_id=link_id, approved=True))
    with pytest.raises(Rejected, match="may not send insource.completion_requested"):
        await from_partner(bridge, LEAD, InsourceCompletionRequested(link_id=link_id))
    assert (await bridge.get(Link, link_id)).state == "active"


@pytest.mark.parametrize("first", ["cancel", "accept"])
async def test_bridge_race_a_cancel_crossing_an_acceptance_the_first_read_wins(bridge, first):
    link_id = await pending_link(bridge)
    cancel = (LEAD, OutsourceCanceled(link_id=link_id))
    accept = (PARTNER, InsourceAccepted(link_id=link_id, insourcing_ticket_id=str(uuid.uuid4()),
                                        insourcing_ticket_number="I-9"))
    for sender, payload in ([cancel, accept] if first == "cancel" else [accept, cancel]):
        await from_partner(bridge, sender, payload)
    staged = (await bridge.staged(link_id))[1:]
    if first == "cancel":
        assert (await bridge.get(Link, link_id)).state == "terminated"
        assert staged == [(IN_PARTNER, "link.canceled")]  # the acceptance is ignored: no link.accepted
    else:
        assert (await bridge.get(Link, link_id)).state == "active"
        assert staged == [(IN_LEAD, "link.accepted")]  # the cancel is ignored: the lead adopts the acceptance


@pytest.mark.parametrize("first", ["complete", "insource complete"])
async def test_bridge_race_the_leads_complete_crossing_an_insource_complete(bridge, first):
    link_id = await active_link(bridge)
    complete = (LEAD, OutsourceCompleted(link_id=link_id, approved=False))
    insource_complete = (PARTNER, InsourceCompletionRequested(link_id=link_id))
    for sender, payload in ([complete, insource_complete] if first == "complete" else [insource_complete, complete]):
        await from_partner(bridge, sender, payload)
    assert (await bridge.get(Link, link_id)).state == "terminated"
    staged = (await bridge.staged(link_id))[2:]
    if first == "complete":
        assert staged == [(IN_PARTNER, "link.completed")]  # nothing waits for approval any more
    else:
        assert staged == [(IN_LEAD, "link.waiting_approval"), (IN_PARTNER, "link.completed")]


# --- the bridge: item mirroring ------------------------------------------------------------------

async def test_bridge_mirrors_a_note_under_its_own_id_and_follows_its_edit_and_delete(bridge):
    link_id = await active_link(bridge)
    item_id = str(uuid.uuid4())
    await from_partner(bridge, PARTNER, note(link_id, item_id, "hello"))
    mapping = await bridge.get(ItemMirror, (link_id, item_id))
    assert mapping.mirror_id != item_id and mapping.source_partner_id == PARTNER
    await from_partner(bridge, PARTNER, ItemUpdated(link_id=link_id, item_id=item_id, kind="note",
                                                    fields={"title": "", "body": "hello again"}))
    await from_partner(bridge, PARTNER, ItemDeleted(link_id=link_id, item_id=item_id, kind="note"))
    assert (await bridge.staged(link_id))[-3:] == [(IN_LEAD, "mirror.upsert")] * 2 + [(IN_LEAD, "mirror.delete")]
    assert (await bridge.get(ItemMirror, (link_id, item_id))).deleted


async def test_bridge_keeps_an_item_written_while_suspended_on_its_side_and_tells_its_creator(bridge):
    link_id = await active_link(bridge)
    await from_partner(bridge, PARTNER, InsourceCompletionRequested(link_id=link_id))
    await from_partner(bridge, LEAD, note(link_id, str(uuid.uuid4()), "while waiting"))
    assert (await bridge.staged(link_id))[-1] == (IN_LEAD, "item.unshared")


async def test_bridge_refuses_an_edit_of_another_partners_item(bridge):
    link_id = await active_link(bridge)
    item_id = str(uuid.uuid4())
    await from_partner(bridge, LEAD, note(link_id, item_id, "mine"))
    with pytest.raises(Rejected, match="did not create item"):
        await from_partner(bridge, PARTNER, ItemUpdated(link_id=link_id, item_id=item_id, kind="note",
                                                        fields={"title": "", "body": "yours now"}))


async def test_bridge_a_refused_mirror_is_unshared_on_its_creators_side(bridge):
    link_id = await active_link(bridge)
    item_id = str(uuid.uuid4())
    await from_partner(bridge, LEAD, note(link_id, item_id, "late"))
    mapping = await bridge.get(ItemMirror, (link_id, item_id))
    await from_partner(bridge, PARTNER, MirrorRefused(link_id=link_id, mirror_id=mapping.mirror_id))
    assert (await bridge.staged(link_id))[-1] == (IN_LEAD, "item.unshared")


# --- the lead partner ----------------------------------------------------------------------------

async def status_on_lead(lead: Side, link_id: str) -> str:
    return (await lead.get(Outsourcing, link_id)).status


async def test_lead_outsource_stages_the_request_and_is_assigned(lead):
    _, link_id = await outsourced(lead)
    assert await status_on_lead(lead, link_id) == "Assigned"
    assert await lead.staged(link_id) == [("psa.lead-partner.outbound", "outsource.requested")]


async def test_lead_accepted_is_in_progress_and_mails_the_lead(lead):
    _, link_id = await outsourced(lead)
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-7"))
    row = await lead.get(Outsourcing, link_id)
    assert (row.status, row.partner_ticket_number) == ("In Progress", "I-7")
    assert any("I-7" in m.body for m in await lead.mails("work.accepted"))


async def test_lead_declined_keeps_the_reason_and_mails_it(lead):
    _, link_id = await outsourced(lead)
    await lead.receive(WorkDeclined(link_id=link_id, reason="no technician free"))
    row = await lead.get(Outsourcing, link_id)
    assert (row.status, row.reason) == ("Declined", "no technician free")
    assert any("no technician free" in m.body for m in await lead.mails("work.declined"))


async def test_lead_waiting_approval_locks_its_shared_items_and_asks_for_approval(lead):
    ticket_id, link_id = await outsourced(lead)
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-8"))
    await lead.receive(WorkWaitingApproval(link_id=link_id))
    assert await status_on_lead(lead, link_id) == "Waiting Approval"
    assert await lead.mails("approval.requested")


@pytest.mark.parametrize("first", ["cancel", "accepted"])
async def test_lead_race_a_cancel_crossing_an_acceptance(lead, first):
    ticket_id, link_id = await outsourced(lead)
    accepted = WorkAccepted(link_id=link_id, partner_ticket_number="I-3")
    if first == "cancel":
        await lead.call(lead.service.cancel, ticket_id)
        await lead.receive(accepted)  # the bridge read the acceptance first: it stands
        assert await status_on_lead(lead, link_id) == "In Progress"
        assert (await lead.staged(link_id))[-1] == ("psa.lead-partner.outbound", "outsource.canceled")
    else:
        await lead.receive(accepted)
        with pytest.raises(Conflict, match="the status is In Progress"):
            await lead.call(lead.service.cancel, ticket_id)
        assert await status_on_lead(lead, link_id) == "In Progress"


async def test_lead_an_acceptance_of_a_link_canceled_and_outsourced_again_ends_the_old_link(lead):
    ticket_id, old = await outsourced(lead)
    await lead.call(lead.service.cancel, ticket_id)
    async with lead.sessions() as session, session.begin():
        new = (await lead.service.outsource(session, ticket_id, PARTNER, "again", None)).link_id
    await lead.receive(WorkAccepted(link_id=old, partner_ticket_number="I-4"))
    assert await status_on_lead(lead, old) == "Canceled" and await status_on_lead(lead, new) == "Assigned"
    assert (await lead.staged(old))[-1] == ("psa.lead-partner.outbound", "outsource.completed")


@pytest.mark.parametrize("first", ["complete", "waiting approval"])
async def test_lead_race_its_complete_crossing_an_insource_complete(lead, first):
    ticket_id, link_id = await outsourced(lead)
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-5"))
    if first == "complete":
        await lead.call(lead.service.finish, ticket_id, "complete")
        await lead.receive(WorkWaitingApproval(link_id=link_id))  # nothing waits for approval any more
    else:
        await lead.receive(WorkWaitingApproval(link_id=link_id))
        await lead.call(lead.service.finish, ticket_id, "complete")
    assert await status_on_lead(lead, link_id) == "Complete"
    assert (await lead.staged(link_id))[-1] == ("psa.lead-partner.outbound", "outsource.completed")


async def test_lead_refuses_a_message_that_is_not_for_it(lead):
    with pytest.raises(Rejected, match="link.requested is not for the lead partner"):
        await lead.receive(WorkRequested(link_id=str(uuid.uuid4()), lead_partner_id=LEAD, lead_partner_name="L",
                                         lead_ticket_number="T", title="t", description="", instructions="", terms=None))


# --- the insourcing partner ----------------------------------------------------------------------

async def status_on_partner(insourcing: Side, link_id: str) -> str:
    return (await insourcing.get(ReceivedWork, link_id)).status


async def test_insourcing_requested_work_is_pending_and_mailed(insourcing):
    link_id = await received_work(insourcing)
    assert await status_on_partner(insourcing, link_id) == "Pending"
    assert any("T-42" in m.subject for m in await insourcing.mails("work.requested"))


async def test_insourcing_accept_creates_the_ticket_and_tells_the_bridge(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    assert ticket_id and await status_on_partner(insourcing, link_id) == "In Progress"
    assert await insourcing.staged(link_id) == [("psa.insourcing-partner.outbound", "insource.accepted")]


async def test_insourcing_canceled_before_acceptance_is_canceled_and_mailed(insourcing):
    link_id = await received_work(insourcing)
    await insourcing.receive(WorkCanceled(link_id=link_id))
    assert await status_on_partner(insourcing, link_id) == "Canceled"
    assert await insourcing.mails("work.canceled")


async def test_insourcing_rejected_resumes_and_completed_locks_everything(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    await insourcing.call(insourcing.service.request_approval, ticket_id)
    await insourcing.receive(WorkRejected(link_id=link_id, reason="still jams"))
    assert await status_on_partner(insourcing, link_id) == "In Progress"
    await insourcing.receive(WorkCompleted(link_id=link_id, approved=True))
    assert await status_on_partner(insourcing, link_id) == "Complete"
    async with insourcing.sessions() as session:
        items = (await session.execute(select(TicketItem.lock, TicketItem.fields)
                                       .where(TicketItem.ticket_id == ticket_id))).all()
    # Everything written before the completion is read-only; only the note recording it comes after.
    assert [f["title"] for lock, f in items if lock != "completion"] == ["Insource Complete: approved"]
    assert len(items) >= 4


@pytest.mark.parametrize("first", ["accept", "canceled"])
async def test_insourcing_race_a_cancel_crossing_its_acceptance(insourcing, first):
    link_id = await received_work(insourcing)
    if first == "accept":
        await insourcing.call(insourcing.service.accept, link_id)
        await insourcing.receive(WorkCanceled(link_id=link_id))  # the bridge read the cancel first: it wins
        assert await status_on_partner(insourcing, link_id) == "Canceled"
    else:
        await insourcing.receive(WorkCanceled(link_id=link_id))
        with pytest.raises(Conflict, match="the status is Canceled"):
            await insourcing.call(insourcing.service.accept, link_id)


@pytest.mark.parametrize("first", ["insource complete", "completed"])
async def test_insourcing_race_its_insource_complete_crossing_the_leads_complete(insourcing, first):
    link_id, ticket_id = await accepted_work(insourcing)
    if first == "insource complete":
        await insourcing.call(insourcing.service.request_approval, ticket_id)
        await insourcing.receive(WorkCompleted(link_id=link_id, approved=False))
    else:
        await insourcing.receive(WorkCompleted(link_id=link_id, approved=False))
        with pytest.raises(Conflict, match="the status is Complete"):
            await insourcing.call(insourcing.service.request_approval, ticket_id)
    assert await status_on_partner(insourcing, link_id) == "Complete"


async def test_insourcing_a_late_rejection_or_completion_changes_nothing(insourcing):
    link_id = await received_work(insourcing)
    await insourcing.receive(WorkCanceled(link_id=link_id))
    await insourcing.receive(WorkRejected(link_id=link_id, reason="late"))
    await insourcing.receive(WorkCompleted(link_id=link_id, approved=True))
    assert await status_on_partner(insourcing, link_id) == "Canceled"
    assert len([m for m in await insourcing.mails("work.canceled") if m.body.find("T-42") >= 0]) >= 1


# --- a partner applying mirrors (the same code on both partners) ---------------------------------

async def test_partner_mirror_upsert_creates_then_updates_a_read_only_mirror_and_mirror_delete_removes_it(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    mirror_id = str(uuid.uuid4())
    await insourcing.receive(MirrorUpsert(link_id=link_id, mirror_id=mirror_id, kind="note",
                                          fields={"title": "", "body": "from the lead"}))
    await insourcing.receive(MirrorUpsert(link_id=link_id, mirror_id=mirror_id, kind="note",
                                          fields={"title": "", "body": "edited by the lead"}))
    [mirror] = [i for i in await items_on(insourcing, ticket_id) if i.id == mirror_id]
    assert (mirror.origin, mirror.fields["body"]) == ("partner", "edited by the lead")
    await insourcing.receive(MirrorDelete(link_id=link_id, mirror_id=mirror_id))
    assert mirror_id not in {i.id for i in await items_on(insourcing, ticket_id)}


async def test_partner_mirror_chunks_become_an_attachment_once_all_have_arrived_and_match(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    content = b"0123456789" * 100
    mirror_id = str(uuid.uuid4())
    fields = {"filename": "log.txt", "content_type": "text/plain", "size": len(content),
              "sha256": hashlib.sha256(content).hexdigest()}
    await insourcing.receive(MirrorUpsert(link_id=link_id, mirror_id=mirror_id, kind="attachment", fields=fields,
                                          chunk_count=2))
    halves = [content[:500], content[500:]]
    await insourcing.receive(MirrorChunk(link_id=link_id, mirror_id=mirror_id, index=1, count=2,
                                         data=base64.b64encode(halves[1]).decode()))
    assert mirror_id not in {i.id for i in await items_on(insourcing, ticket_id)}  # not complete yet
    await insourcing.receive(MirrorChunk(link_id=link_id, mirror_id=mirror_id, index=0, count=2,
                                         data=base64.b64encode(halves[0]).decode()))
    async with insourcing.sessions() as session:
        stored = await session.get(AttachmentContent, mirror_id)
    assert stored.content == content


async def test_partner_refuses_a_mirror_that_arrives_after_it_suspended_synchronization(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    await insourcing.call(insourcing.service.request_approval, ticket_id)
    mirror_id = str(uuid.uuid4())
    await insourcing.receive(MirrorUpsert(link_id=link_id, mirror_id=mirror_id, kind="note",
                                          fields={"title": "", "body": "too late"}))
    assert mirror_id not in {i.id for i in await items_on(insourcing, ticket_id)}
    assert (await insourcing.staged(link_id))[-1] == ("psa.insourcing-partner.outbound", "mirror.refused")


async def test_partner_item_unshared_marks_its_own_item_as_not_shared(insourcing):
    link_id, ticket_id = await accepted_work(insourcing)
    async with insourcing.sessions() as session, session.begin():
        item = await add_item(session, insourcing.service.mirroring, ticket_id, ItemKind.NOTE,
                              {"title": "", "body": "mine"}, False)
        item_id = item.id
    assert (await insourcing.get(TicketItem, item_id)).shared
    await insourcing.receive(ItemUnshared(link_id=link_id, item_id=item_id))
    assert not (await insourcing.get(TicketItem, item_id)).shared


async def test_bridge_forwards_the_chunks_of_an_attachment_whose_first_part_crossed(bridge):
    link_id = await active_link(bridge)
    item_id = str(uuid.uuid4())
    fields = {"filename": "a.bin", "content_type": "application/octet-stream", "size": 3, "sha256": "0" * 64}
    await from_partner(bridge, LEAD, ItemCreated(link_id=link_id, item_id=item_id, kind="attachment", fields=fields,
                                                 chunk_count=1))
    await from_partner(bridge, LEAD, AttachmentChunk(link_id=link_id, item_id=item_id, index=0, count=1,
                                                     data=base64.b64encode(b"abc").decode()))
    assert (await bridge.staged(link_id))[-2:] == [(IN_PARTNER, "mirror.upsert"), (IN_PARTNER, "mirror.chunk")]
    # A chunk of an item that never crossed goes nowhere.
    await from_partner(bridge, LEAD, AttachmentChunk(link_id=link_id, item_id=str(uuid.uuid4()), index=0, count=1,
                                                     data=""))
    assert (await bridge.staged(link_id))[-1] == (IN_PARTNER, "mirror.chunk")
    assert len(await bridge.staged(link_id)) == 4


# --- exact money, version 2 of the work request (SPEC sections 11 and 12) -------------------------------

async def _as_next_release(side, payload, source: str, topic: str) -> None:
    """A version this release reads but does not send yet, as the next release's service writes it."""
    env = Envelope(type=payload.type, schema_version=payload.schema_version, source=source,
                   link_id=payload.link_id, payload=payload.model_dump(mode="json"))
    async with side.sessions() as session, session.begin():
        await side.handle(session, env, payload, topic)


async def test_version_2_of_a_work_request_is_read_and_its_exact_money_kept_and_not_sent_yet(bridge, insourcing):
    exact = TermsV2(rate_type="hourly", rate="1250.10", authorized_hours="6.25", currency="EUR")
    with pytest.raises(RuntimeError, match="read but not sent yet"):
        envelope(WorkRequestedV2(**_work(str(uuid.uuid4())), terms=exact), source="bridge", link_id=None)
    # The bridge reads a lead's version 2 and passes it on as version 1, which every partner reads today.
    link_id = str(uuid.uuid4())
    v2 = OutsourceRequestedV2(**{**requested(link_id).model_dump(), "terms": exact.model_dump()})
    await _as_next_release(bridge, v2, LEAD, "psa.lead-partner.outbound")
    passed_on = await bridge.last_staged(link_id)
    assert isinstance(passed_on, WorkRequested) and passed_on.schema_version == 1
    assert (passed_on.terms.rate, passed_on.terms.authorized_hours, passed_on.terms.currency) == (1250.1, 6.25, "EUR")
    # A partner reads version 2 and keeps the amounts exact, as it answers them.
    other = str(uuid.uuid4())
    await _as_next_release(insourcing, WorkRequestedV2(**_work(other), terms=exact), "bridge", IN_PARTNER)
    work = await insourcing.get(ReceivedWork, other)
    assert work.terms == {"rate_type": "hourly", "rate": "1250.10", "authorized_hours": "6.25",
                          "authorized_charge": None, "currency": "EUR"}


def _work(link_id: str) -> dict:
    return {"link_id": link_id, "lead_partner_id": LEAD, "lead_partner_name": "Lead Co", "lead_ticket_number": "T-9",
            "title": "Switch", "description": "", "instructions": ""}
