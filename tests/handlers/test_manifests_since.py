"""A reconciliation round of a busy link costs what changed (issue 28): the bridge keeps each side's
last answer, asks only for what changed after it, and compares the whole; a kept answer that does not
add up to the digest the side computed is dropped and that side asked for everything."""
import hashlib
import uuid

import pytest
from sqlalchemy import select, text

from services.sync_bridge.kept_manifests import Counts
from services.sync_bridge.mirroring import MIRROR_NAMESPACE
from services.sync_bridge.models import Link
from services.sync_bridge.reconciliation import start_round
from shared.contracts.messages import (
    InsourceAccepted,
    Manifest,
    ManifestMirror,
    ManifestRequested,
    ResendRequested,
    SideHealth,
    SideStatus,
    WorkAccepted,
)
from shared.contracts.envelope import parse
from shared.domain import manifests
from shared.domain.tickets import service
from shared.domain.tickets.rules import ItemKind
from shared.platform.db import plain_sql
from shared.platform.outbox import OutboxMessage
from tests.handlers.sides import IN_LEAD, LEAD, PARTNER, from_partner, outsourced, requested

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def busy_link(lead, bridge, notes: int) -> tuple[str, str, list[str]]:
    """A lead ticket outsourced and accepted, with `notes` shared notes the bridge passed on."""
    ticket_id, link_id = await outsourced(lead)
    await from_partner(bridge, LEAD, requested(link_id))
    await from_partner(bridge, PARTNER, InsourceAccepted(link_id=link_id, insourcing_ticket_id=str(uuid.uuid4()),
                                                          insourcing_ticket_number="I-9"))
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-9"))
    return ticket_id, link_id, [await write_note(lead, bridge, ticket_id, link_id, f"note {n}") for n in range(notes)]


async def write_note(lead, bridge, ticket_id: str, link_id: str, body: str) -> str:
    item = await lead.call(service.add_item, lead.service.mirroring, ticket_id, ItemKind.NOTE,
                           {"title": "", "body": body}, False)
    await from_partner(bridge, LEAD, await lead.last_staged(link_id))
    return item.id


async def round_trip(lead, bridge, link_id: str, partner_mirrors: list[ManifestMirror]) -> tuple[ManifestRequested, Manifest]:
    """One round: the bridge's question to the lead, the lead's real answer, the partner's (a 1.0.0
    partner's: it describes everything and nothing of it is kept)."""
    async with bridge.sessions() as session, session.begin():
        round_id = await start_round(session, await session.get(Link, link_id, with_for_update=True))
    question = next(m for m in reversed(await bridge_staged(bridge, link_id)) if isinstance(m, ManifestRequested)
                    and m.round_id == round_id)
    await lead.receive(question)
    answer = await lead.last_staged(link_id)
    await from_partner(bridge, LEAD, answer)
    await from_partner(bridge, PARTNER, Manifest(link_id=link_id, round_id=round_id, part=0, parts=1,
                                                 side=SideStatus(status="In Progress", ticket_id="t"),
                                                 health=SideHealth(), mirrors=partner_mirrors))
    return question, answer


async def bridge_staged(bridge, link_id: str) -> list:
    """The questions and resend requests the bridge staged for the lead on the link, in order."""
    async with bridge.sessions() as session:
        values = await session.scalars(
            select(OutboxMessage.value).where(OutboxMessage.key == link_id, OutboxMessage.topic == IN_LEAD,
                                              OutboxMessage.type.in_(
                ["sync.manifest_requested", "sync.resend_requested"])).order_by(OutboxMessage.id))
        return [parse(value)[1] for value in values]


def mirrors_of(answer: Manifest, link_id: str) -> list[ManifestMirror]:
    """What a partner holding every item of the lead's answer lists."""
    return [ManifestMirror(mirror_id=str(uuid.uuid5(MIRROR_NAMESPACE, f"{link_id}:{i.item_id}")),
                           source_version=i.version, source_hash=i.hash) for i in answer.items]


async def test_the_second_round_asks_only_for_what_changed_and_compares_the_whole(lead, bridge):
    ticket_id, link_id, notes = await busy_link(lead, bridge, 30)
    first_question, first = await round_trip(lead, bridge, link_id, [])
    assert first_question.since is None and first.since is None
    assert [i.item_id for i in first.items] == notes
    # The partner's digest, computed by PostgreSQL, is the bridge's, computed in Python.
    assert first.digest == manifests.digest(map(manifests.item_entry, first.items)) != manifests.digest([])
    held = mirrors_of(first, link_id)

    added = await write_note(lead, bridge, ticket_id, link_id, "one more")
    before = Counts.incremental
    question, answer = await round_trip(lead, bridge, link_id, held)

    assert question.since == first.as_of and answer.since == first.as_of and answer.as_of > first.as_of
    assert [i.item_id for i in answer.items] == [added] and answer.removed == []
    assert Counts.incremental == before + 1
    # Compared against the whole: the 30 held notes are not asked again, the new one (not held yet) is.
    resend = [m for m in await bridge_staged(bridge, link_id) if isinstance(m, ResendRequested)][-1]
    assert resend.item_ids == [added]


async def test_a_deleted_note_leaves_the_kept_answer(lead, bridge):
    ticket_id, link_id, notes = await busy_link(lead, bridge, 3)
    _, first = await round_trip(lead, bridge, link_id, [])
    await lead.call(service.delete_item, lead.service.mirroring, ticket_id, ItemKind.NOTE, notes[1])

    _, answer = await round_trip(lead, bridge, link_id, mirrors_of(first, link_id))

    assert answer.items == [] and answer.removed == [notes[1]]
    _, later = await round_trip(lead, bridge, link_id, [])
    assert later.since == answer.as_of and later.items == [] and later.removed == []  # told once, then forgotten
    link = await bridge.get(Link, link_id)
    assert link.round_id is None  # both rounds compared, nothing asked again for everything


async def test_a_kept_answer_that_does_not_add_up_is_dropped_and_everything_asked_again(lead, bridge):
    ticket_id, link_id, notes = await busy_link(lead, bridge, 4)
    await round_trip(lead, bridge, link_id, [])
    async with lead.sessions() as session, session.begin():
        # Behind the change points' back, as a restore from an older backup would.
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(text("DELETE FROM ticket_items WHERE id = :id"), {"id": notes[0]})
    dropped = Counts.dropped

    question, answer = await round_trip(lead, bridge, link_id, [])

    assert question.since is not None and answer.removed == []  # the lead itself does not know
    assert Counts.dropped == dropped + 1
    again = (await bridge_staged(bridge, link_id))[-1]
    assert isinstance(again, ManifestRequested) and again.round_id != question.round_id and again.since is None
    async with bridge.sessions() as session:  # both sides are asked for everything: that round compares
        assert await session.scalar(text("SELECT count(*) FROM kept_manifests WHERE link_id = :l"), {"l": link_id}) == 0
    await lead.receive(again)
    whole = await lead.last_staged(link_id)
    assert whole.since is None and [i.item_id for i in whole.items] == notes[1:]


def crafted_id() -> str:
    """An item id whose digest entry, as a pending note of version 1, is a multiple of 10,000: a sum of
    it alone ends in four zeros (PostgreSQL's numeric then reached Python as 1.2E+17, issue 28)."""
    while True:
        item_id = str(uuid.uuid4())
        if int(hashlib.md5(f"i:{item_id}:1:pending".encode()).hexdigest()[:15], 16) % 10_000 == 0:
            return item_id


async def test_the_partners_digest_is_the_bridges_whatever_the_sum(lead):
    ticket_id, link_id = await outsourced(lead)
    await lead.receive(WorkAccepted(link_id=link_id, partner_ticket_number="I-10"))
    item_id = crafted_id()
    async with lead.sessions() as session, session.begin():
        await session.execute(text(
            "INSERT INTO ticket_items (id, ticket_id, kind, origin, internal, shared, released, fields, link_id,"
            " version, delivery_status) VALUES (:id, :ticket, 'note', 'local', false, true, false,"
            " '{\"title\": \"\", \"body\": \"x\"}', :link, 1, 'pending')"),
            {"id": item_id, "ticket": ticket_id, "link": link_id})
        answer = await manifests.describe(await plain_sql(session), ticket_id, link_id, None)

    assert [i.item_id for i in answer.items] == [item_id]
    assert answer.digest == manifests.digest(map(manifests.item_entry, answer.items))
    assert answer.digest.endswith("0000") and "E" not in answer.digest
