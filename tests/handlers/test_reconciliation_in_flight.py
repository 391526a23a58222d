"""A reconciliation round against writes still crossing (issue 11: under a steady stream of notes,
every round took the notes passed on after its questions for lost ones and had them sent again, a
third of the traffic). What the bridge passed on after a round's questions is in flight for that
round, not a difference; what it passed on before them and the partner does not hold is."""
import uuid

import pytest
from sqlalchemy import select

from services.sync_bridge.models import ItemMirror, Link
from services.sync_bridge.reconciliation import start_round
from shared.contracts.envelope import parse
from shared.contracts.messages import Manifest, ManifestItem, ManifestMirror, MirrorApplied, SideHealth, SideStatus
from shared.platform.outbox import OutboxMessage
from shared.domain.tickets.rules import content_hash
from tests.handlers.sides import LEAD, PARTNER, active_link, from_partner, note

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def staged(bridge, link_id: str, type_: str) -> list:
    """The messages of one type the bridge staged for the link, as their receivers will read them."""
    async with bridge.sessions() as session:
        values = await session.scalars(select(OutboxMessage.value).where(OutboxMessage.key == link_id,
                                                                         OutboxMessage.type == type_))
        return [parse(value)[1] for value in values]


async def begin_round(bridge, link_id: str) -> str:
    async with bridge.sessions() as session, session.begin():
        return await start_round(session, await session.get(Link, link_id, with_for_update=True))


def shared_note(item_id: str, body: str, delivery: str = "pending") -> ManifestItem:
    return ManifestItem(item_id=item_id, version=1, hash=content_hash("note", {"title": "", "body": body}), delivery=delivery)


async def answer(bridge, link_id: str, round_id: str, lead_items: list[ManifestItem], partner_mirrors=()) -> None:
    await from_partner(bridge, LEAD, Manifest(link_id=link_id, round_id=round_id, part=0, parts=1,
                                              side=SideStatus(status="In Progress"), health=SideHealth(),
                                              items=lead_items))
    await from_partner(bridge, PARTNER, Manifest(link_id=link_id, round_id=round_id, part=0, parts=1,
                                                 side=SideStatus(status="In Progress", ticket_id="t"),
                                                 health=SideHealth(), mirrors=list(partner_mirrors)))


async def test_a_note_passed_on_after_the_rounds_questions_is_in_flight_not_missing(bridge):
    link_id = await active_link(bridge)
    round_id = await begin_round(bridge, link_id)
    crossing = str(uuid.uuid4())
    await from_partner(bridge, LEAD, note(link_id, crossing, "written during the round"))  # after the questions

    # The lead lists it (pending), the partner cannot hold it yet: its question came first.
    await answer(bridge, link_id, round_id, [shared_note(crossing, "written during the round")])

    link = await bridge.get(Link, link_id)
    assert link.round_id is None and link.in_sync is True and link.repairs == 0
    assert await staged(bridge, link_id, "sync.resend_requested") == []  # nothing asked again
    assert await staged(bridge, link_id, "item.delivered") == []


async def test_a_note_passed_on_before_the_rounds_questions_and_not_held_is_sent_again(bridge):
    link_id = await active_link(bridge)
    lost, arrived = str(uuid.uuid4()), str(uuid.uuid4())
    await from_partner(bridge, LEAD, note(link_id, lost, "lost on the way"))
    await from_partner(bridge, LEAD, note(link_id, arrived, "arrived"))
    round_id = await begin_round(bridge, link_id)
    mirror_id = (await bridge.get(ItemMirror, (link_id, arrived))).mirror_id

    await answer(bridge, link_id, round_id,
                 [shared_note(lost, "lost on the way"), shared_note(arrived, "arrived", delivery="delivered")],
                 [ManifestMirror(mirror_id=mirror_id, source_version=1,
                                 source_hash=content_hash("note", {"title": "", "body": "arrived"}))])

    link = await bridge.get(Link, link_id)
    assert link.in_sync is False and link.repairs == 1
    [resend] = await staged(bridge, link_id, "sync.resend_requested")
    assert resend.item_ids == [lost]


async def test_a_note_in_flight_in_one_round_is_compared_in_the_next(bridge):
    link_id = await active_link(bridge)
    first_round = await begin_round(bridge, link_id)
    item_id = str(uuid.uuid4())
    await from_partner(bridge, LEAD, note(link_id, item_id, "crossing, then lost"))
    await answer(bridge, link_id, first_round, [shared_note(item_id, "crossing, then lost")])
    assert await staged(bridge, link_id, "sync.resend_requested") == []

    # Its mirror never reached the partner; the lead, still without a receipt, asks again.
    second_round = await begin_round(bridge, link_id)
    await answer(bridge, link_id, second_round, [shared_note(item_id, "crossing, then lost")])

    [resend] = await staged(bridge, link_id, "sync.resend_requested")
    assert resend.item_ids == [item_id]
    assert (await bridge.get(Link, link_id)).in_sync is False


async def test_a_receipt_passed_on_after_the_rounds_questions_is_in_flight_and_one_before_them_lost(bridge):
    """Issue 28: the partner holds the mirror, the lead's answer still says pending: its receipt was
    passed on after the round's questions (in flight, nothing to repair), or before them (lost: sent again)."""
    link_id = await active_link(bridge)
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    for item_id in (early, late):
        await from_partner(bridge, LEAD, note(link_id, item_id, item_id))
    mirrors = {item_id: (await bridge.get(ItemMirror, (link_id, item_id))).mirror_id for item_id in (early, late)}
    await from_partner(bridge, PARTNER, MirrorApplied(link_id=link_id, mirror_id=mirrors[early], source_version=1))
    round_id = await begin_round(bridge, link_id)
    await from_partner(bridge, PARTNER, MirrorApplied(link_id=link_id, mirror_id=mirrors[late], source_version=1))
    held = [ManifestMirror(mirror_id=mirrors[i], source_version=1, source_hash=content_hash("note", {"title": "", "body": i}))
            for i in (early, late)]
    await answer(bridge, link_id, round_id, [shared_note(early, early), shared_note(late, late)], held)

    link = await bridge.get(Link, link_id)
    assert link.repairs == 1  # the early one: its receipt was passed on before the questions
    delivered = [m.item_id for m in await staged(bridge, link_id, "item.delivered")]
    assert delivered == [early, late, early]  # each passed on once; the early one sent again
