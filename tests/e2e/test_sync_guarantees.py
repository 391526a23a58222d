"""SPEC section 9 as the agents and operators of both companies see it: every shared item carries
its delivery receipt, each side shows its link's health, and after the broker loses messages —
its data, its topics, a status message — reconciliation makes the two tickets agree again, with
nobody calling anything, nothing duplicated and nothing the rules keep local sent."""
import asyncio
import base64
import shutil
import signal
import time

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text

from devstack import infra, kafka_broker
from shared.platform.db import make_engine
from shared.platform.kafka import inbound_topic, list_topics, outbound_topic
from tests.e2e.flows import approve, arrived, items, linked_tickets, outsource_status, received, waiting_approval
from tests.e2e.test_partner_directory import access_of, onboard
from tests.e2e.test_resilience import write_notes
from tests.harness import LOGS, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEAD, PARTNER = "lead-partner", "insourcing-partner"
TOPICS = [f(p) for p in (LEAD, PARTNER) for f in (outbound_topic, inbound_topic)]
RECONCILE_INTERVAL_S = 10  # tests/conftest.py


async def delivery(client: httpx.AsyncClient, ticket_id: str, kind: str, item_id: str, status: str,
                   timeout: float = 15.0) -> dict:
    async def check():
        item = next((i for i in await items(client, ticket_id, kind) if i["id"] == item_id), None)
        return item if item and item["delivery"] and item["delivery"]["status"] == status else None

    return await eventually(check, timeout=timeout)


async def health(client: httpx.AsyncClient, ticket_id: str) -> dict:
    answer = await client.get(f"/api/tickets/{ticket_id}/sync")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def in_sync(client: httpx.AsyncClient, ticket_id: str, timeout: float) -> dict:
    async def check():
        seen = await health(client, ticket_id)
        return seen if seen["in_sync"] and seen["pending"] == 0 else None

    return await eventually(check, timeout=timeout, interval=0.5)


async def shared_set(client: httpx.AsyncClient, ticket_id: str) -> dict[str, list]:
    """What a ticket holds that the partner should see: every kind, content, attachment bytes."""
    held: dict[str, list] = {}
    for kind in ("notes", "time-entries", "charges", "attachments"):
        rows = await items(client, ticket_id, kind)
        for row in rows:
            if kind == "attachments":
                content = await client.get(f"/api/tickets/{ticket_id}/attachments/{row['id']}/content")
                row["bytes"] = base64.b64encode(content.content).decode()
        held[kind] = rows
    return held


def _content(row: dict, *names: str) -> tuple:
    return tuple(row.get(name) for name in names)


async def assert_tickets_agree(lead, insourcing, lead_ticket_id: str, insourced_id: str, timeout: float) -> None:
    """Both tickets hold the same shared items (once each), and both sides say they are in sync."""

    async def agree():
        lead_has, partner_has = await shared_set(lead, lead_ticket_id), await shared_set(insourcing, insourced_id)
        # The lead's shared notes, charges and attachments appear once each on the insourcing ticket...
        expected = sorted(_content(n, "title", "body") for n in lead_has["notes"] if n["origin"] == "local" and n["shared"])
        mirrored = sorted(_content(n, "title", "body") for n in partner_has["notes"] if n["origin"] == "partner")
        # ... and the insourcing partner's on the lead ticket.
        back = sorted(_content(n, "title", "body") for n in partner_has["notes"] if n["origin"] == "local" and n["shared"])
        came = sorted(_content(n, "title", "body") for n in lead_has["notes"] if n["origin"] == "partner")
        files = sorted(_content(a, "filename", "sha256", "bytes") for a in lead_has["attachments"] if a["shared"] and a["origin"] == "local")
        got_files = sorted(_content(a, "filename", "sha256", "bytes") for a in partner_has["attachments"] if a["origin"] == "partner")
        if (expected, back, files) == (mirrored, came, got_files):
            return expected, back
        return None

    expected, back = await eventually(agree, timeout=timeout, interval=1.0)
    assert len(set(expected)) == len(expected) and len(set(back)) == len(back)  # nothing duplicated
    await in_sync(lead, lead_ticket_id, timeout=timeout)
    await in_sync(insourcing, insourced_id, timeout=timeout)


# --- receipts and health ---------------------------------------------------------------------------


async def lag_per_partition(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    """`inbox_lag_messages` from a service's /metrics: {(topic, partition): records not applied yet}."""
    lags = {}
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("inbox_lag_messages{"):
            labels, value = line[len("inbox_lag_messages{"):].split("} ")
            named = dict(pair.split("=") for pair in labels.split(","))
            lags[(named["topic"].strip('"'), named["partition"].strip('"'))] = float(value)
    return lags


@pytest.mark.broker
async def test_each_service_shows_its_lag_per_partition_and_it_drains_to_zero(lead, insourcing, bridge):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    for n in range(5):
        await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": f"lag {n}"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"].startswith("lag "), count=5)
    for client, topics in ((lead, {inbound_topic(LEAD)}), (insourcing, {inbound_topic(PARTNER)}),
                           (bridge, {outbound_topic(LEAD), outbound_topic(PARTNER)})):
        async def drained():
            lags = await lag_per_partition(client)
            # The bridge reads partners other tests onboarded too (SPEC section 10): these at least.
            return lags if {topic for topic, _ in lags} >= topics and not any(lags.values()) else None

        lags = await eventually(drained, timeout=15, interval=0.5)
        assert len(lags) >= len(topics)  # a line per partition this replica reads


@pytest.mark.broker
async def test_a_note_is_pending_then_delivered_and_each_side_sees_its_health(lead, insourcing):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    note = (await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "Replaced the fan"})).json()
    assert note["delivery"]["status"] in ("pending", "delivered")
    delivered = await delivery(lead, lead_ticket["id"], "notes", note["id"], "delivered", timeout=10)
    assert delivered["delivery"]["reason"] is None
    # What is not shared carries no receipt: an internal note, and the mirror on the other side.
    internal = (await lead.post(f"/api/tickets/{lead_ticket['id']}/notes",
                                json={"body": "margin is thin", "internal": True})).json()
    assert internal["delivery"] is None
    [mirror] = await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "Replaced the fan")
    assert mirror["delivery"] is None

    # An edit is pending again until its own receipt; a charge from the other side is delivered too.
    edited = await lead.patch(f"/api/tickets/{lead_ticket['id']}/notes/{note['id']}", json={"body": "Replaced both fans"})
    assert edited.status_code == 200
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "Replaced both fans")
    await delivery(lead, lead_ticket["id"], "notes", note["id"], "delivered")
    charge = (await insourcing.post(f"/api/tickets/{insourced['id']}/charges",
                                    json={"name": "Fan", "quantity": 2, "unit_price": 19.5})).json()
    await delivery(insourcing, insourced["id"], "charges", charge["id"], "delivered")

    # A deletion is pending until the mirror is gone, then nothing waits.
    kept = (await lead.post(f"/api/tickets/{lead_ticket['id']}/time-entries", json={
        "resource": "Ana", "date_worked": "2026-11-27", "hours": 1.5, "summary": "fans"})).json()
    await delivery(lead, lead_ticket["id"], "time-entries", kept["id"], "delivered")
    assert (await lead.delete(f"/api/tickets/{lead_ticket['id']}/notes/{note['id']}")).status_code == 204
    await eventually(lambda: _none_left(insourcing, insourced["id"], "Replaced both fans"))
    seen = await in_sync(lead, lead_ticket["id"], timeout=15)
    assert seen["link_id"] == link_id and seen["link_state"] == "active" and seen["status"] == "In Progress" and seen["partner_id"] == PARTNER
    assert seen["delivered"] == 1 and seen["refused"] == 0 and seen["oldest_pending_at"] is None
    assert seen["last_sent_at"] and seen["last_received_at"]
    other = await in_sync(insourcing, insourced["id"], timeout=15)
    assert other["link_state"] == "active" and other["status"] == "In Progress" and other["partner_id"] == LEAD and other["delivered"] == 1

    unlinked = (await lead.post("/api/tickets", json={"title": "never outsourced"})).json()
    answer = await lead.get(f"/api/tickets/{unlinked['id']}/sync")
    assert answer.status_code == 404 and "never linked" in answer.json()["detail"]


async def _none_left(client, ticket_id: str, body: str) -> bool:
    return not [n for n in await items(client, ticket_id, "notes") if n["body"] == body]


@pytest.mark.broker
async def test_an_item_that_meets_a_suspended_link_is_refused_with_the_reason(lead, insourcing, services):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    bridge = services["sync_bridge"]
    bridge.kill(signal.SIGKILL)  # the lead writes before it can know the partner pressed Insource Complete
    try:
        done = await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
        assert done.status_code == 200
        note = (await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "one more thing"})).json()
        assert note["delivery"]["status"] == "pending"
    finally:
        bridge.start()
        await asyncio.to_thread(bridge.wait_ready)
    refused = await delivery(lead, lead_ticket["id"], "notes", note["id"], "refused", timeout=60)
    assert "suspended" in refused["delivery"]["reason"] and refused["shared"] is False
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval", timeout=60)
    assert await _none_left(insourcing, insourced["id"], "one more thing")
    seen = await health(lead, lead_ticket["id"])
    assert seen["refused"] == 1 and seen["pending"] == 0


# --- reconciliation after the broker lost messages ---------------------------------------------------


async def delete_topics(infrastructure, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(**infrastructure.kafka_admin.options(), request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def test_the_four_topics_deleted_mid_stream_are_made_again_and_the_tickets_converge(lead, insourcing, infrastructure):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)

    async def delete_midway():
        await asyncio.sleep(1.0)
        await delete_topics(infrastructure, TOPICS)
        return time.monotonic()

    accepted_lead, accepted_partner, deleted_at = await asyncio.gather(
        write_notes(lead, lead_ticket["id"], "topics-lead", 40),
        write_notes(insourcing, insourced["id"], "topics-partner", 40),
        delete_midway(),
    )
    assert len(accepted_lead) == 40 and len(accepted_partner) == 40  # the outbox takes every write
    await assert_tickets_agree(lead, insourcing, lead_ticket["id"], insourced["id"],
                               timeout=RECONCILE_INTERVAL_S + 60)
    print(f"converged {time.monotonic() - deleted_at:.1f}s after the topics were deleted")


async def test_an_approval_lost_with_its_topic_still_ends_both_sides_complete(lead, insourcing, services, infrastructure, mailbox):
    lead_ticket, insourced, link_id = await waiting_approval(lead, insourcing)
    bridge = services["sync_bridge"]
    bridge.kill(signal.SIGKILL)
    try:
        approved = await approve(lead, lead_ticket["id"])
        assert approved.status_code == 200
        await asyncio.sleep(2.0)  # published to the lead's topic, which the bridge will never read
        await delete_topics(infrastructure, [outbound_topic(LEAD)])
    finally:
        bridge.start()
        await asyncio.to_thread(bridge.wait_ready)
    ticket = await eventually(lambda: _insource_is(insourcing, insourced["id"], "Complete"),
                              timeout=RECONCILE_INTERVAL_S + 30, interval=0.5)
    assert ticket["insource"]["status"] == "Complete"
    assert (await lead.get(f"/api/tickets/{lead_ticket['id']}")).json()["outsource"]["status"] == "Complete"
    # The partner learned it the way it always does: a note on its ticket, and its items read-only.
    notes = await items(insourcing, insourced["id"], "notes")
    assert any("approved" in n["body"].lower() for n in notes if n["origin"] == "system")
    async with services["sync_bridge"].client() as bridge_api:
        seen = (await bridge_api.get(f"/api/links/{link_id}/health")).json()
    assert seen["link_state"] == "terminated"
    assert seen["repairs"]["count"] >= 1
    assert any("outsource.completed" in r["what"] for r in seen["repairs"]["recent"])


async def test_an_insource_complete_lost_with_its_topic_still_reaches_the_lead(lead, insourcing, services, infrastructure):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    bridge = services["sync_bridge"]
    bridge.kill(signal.SIGKILL)
    try:
        done = await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
        assert done.status_code == 200
        await asyncio.sleep(2.0)
        await delete_topics(infrastructure, [outbound_topic(PARTNER)])
    finally:
        bridge.start()
        await asyncio.to_thread(bridge.wait_ready)
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval", timeout=RECONCILE_INTERVAL_S + 30)
    # The lead decides, and both sides end where it decided.
    rejected = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/reject", json={"reason": "not fixed yet"})
    assert rejected.status_code == 200
    ticket = await eventually(lambda: _insource_is(insourcing, insourced["id"], "In Progress"), timeout=30)
    assert ticket["insource"]["status"] == "In Progress"


async def test_a_work_request_lost_before_the_bridge_saw_it_is_sent_again(lead, insourcing, services, infrastructure):
    lead_ticket = (await lead.post("/api/tickets", json={"title": "Printer offline"})).json()
    bridge = services["sync_bridge"]
    bridge.kill(signal.SIGKILL)
    try:
        answer = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource", json={"partner_id": PARTNER})
        assert answer.status_code == 202
        link_id = answer.json()["link_id"]
        await asyncio.sleep(2.0)
        await delete_topics(infrastructure, [outbound_topic(LEAD)])
    finally:
        bridge.start()
        await asyncio.to_thread(bridge.wait_ready)
    # The lead asks about the unconfirmed outsourcing, the bridge knows no such link, the lead sends it again.
    work = await received(insourcing, link_id, "Pending", timeout=RECONCILE_INTERVAL_S + 30)
    assert work["lead_ticket_number"] == lead_ticket["number"] and work["title"] == "Printer offline"


async def _insource_is(client, ticket_id: str, status: str) -> dict | None:
    ticket = (await client.get(f"/api/tickets/{ticket_id}")).json()
    return ticket if ticket["insource"]["status"] == status else None


@pytest.mark.broker
async def test_a_broker_that_loses_all_its_data_mid_stream_is_caught_up_by_reconciliation(lead, insourcing, bridge,
                                                                                         infrastructure):
    """On Apache Kafka by wiping its data; on Tansu (TEST_BROKER=tansu) by a restart, after which it
    refuses writes for 10-20 s (a write conflict in its storage, each retry getting a little further),
    loses some it acknowledged and forgets the groups' members. What keeps Tansu within the bound: a
    consumer whose commit was refused carries on and rejoins by itself, refused sends go again in 0.2 s
    with the same producer, and a partition that shows a loss again restarts the rounds under way."""
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    onboarded = await onboard(bridge, "insourcing")  # a partner the hub made at run time, user and all
    attachment = await lead.post(f"/api/tickets/{lead_ticket['id']}/attachments",
                                 files={"file": ("wiring.pdf", b"%PDF" + bytes(range(256)) * 300, "application/pdf")})
    assert attachment.status_code == 201

    async def lose_everything_midway() -> float:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(lose_all_broker_data, infrastructure)
        return time.monotonic()

    accepted_lead, accepted_partner, back_at = await asyncio.gather(
        write_notes(lead, lead_ticket["id"], "amnesia-lead", 40),
        write_notes(insourcing, insourced["id"], "amnesia-partner", 40),
        lose_everything_midway(),
    )
    assert len(accepted_lead) == 40 and len(accepted_partner) == 40
    await assert_tickets_agree(lead, insourcing, lead_ticket["id"], insourced["id"],
                               timeout=RECONCILE_INTERVAL_S + 30 + (time.monotonic() - back_at))
    print(f"converged {time.monotonic() - back_at:.1f}s after the broker was back")
    # New work flows again too, within the same bound: outsourced, accepted, In Progress on the lead.
    await linked_tickets(lead, insourcing, timeout=RECONCILE_INTERVAL_S + 30)
    print(f"a new outsourcing crossed both ways {time.monotonic() - back_at:.1f}s after the broker was back")
    if not infrastructure.acls:
        return  # Tansu has no users to give back; a partner service makes its own topics again
    # The onboarded partner comes back too: the bridge gave the broker its user, topics and ACLs again.
    mine, own = access_of(onboarded), {onboarded.outbound_topic, onboarded.inbound_topic}

    async def served_again():
        try:
            return own <= set(await list_topics(mine))
        except Exception:  # its login refused, until the bridge gives its user back
            return False

    await eventually(served_again, timeout=30, interval=1.0)


def lose_all_broker_data(infrastructure) -> None:
    """SIGKILL the broker and start it again with nothing: no topics, no offsets, no messages."""
    if infrastructure.tansu is not None:
        infrastructure.tansu.send_signal(signal.SIGKILL)
        infrastructure.tansu.wait(30)
        infrastructure.tansu = infra.start_tansu(infrastructure.tansu_port, LOGS / "broker.log")
        return
    broker = infrastructure.broker
    assert broker is not None, f"this test needs a broker of its own, not {infrastructure.kafka_source}"
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait(30)
    shutil.rmtree(broker.log_dir)
    broker.start(LOGS / "broker.log")
    broker.wait_ready(90)
    # Its users come back with the new storage; the ACLs are the operator's to provision again.
    kafka_broker.provision(infrastructure.kafka_admin, with_acls=infrastructure.acls)


@pytest.mark.broker
async def test_the_bridge_shows_what_waits_for_it_per_partition_and_it_drains(lead, insourcing, bridge, databases):
    """Backpressure an operator can see (issue 11): while the bridge is held up (here: its database
    rows of two links locked, so its consumer waits in its first transaction), what the lead wrote
    waits on the bridge's partitions; GET /api/backlog says so, and it drains."""
    first, _, first_link = await linked_tickets(lead, insourcing)
    second, second_insourced, second_link = await linked_tickets(lead, insourcing)
    engine = make_engine(databases["sync_bridge"])
    try:
        async with engine.connect() as holder:
            transaction = await holder.begin()
            await holder.execute(text("SELECT id FROM links WHERE id IN (:a, :b) FOR UPDATE"),
                                 {"a": first_link, "b": second_link})
            for n in range(20):
                ticket = first if n % 2 else second
                assert (await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": f"held {n}"})).status_code == 201

            async def waiting():
                backlog = (await bridge.get("/api/backlog")).json()
                held = sum(p["waiting"] for p in backlog["partitions"] if p["topic"] == outbound_topic(LEAD))
                return backlog if held >= 1 else None

            seen = await eventually(waiting, timeout=20, interval=0.1)
            assert seen["waiting"] >= 1
            await transaction.rollback()
    finally:
        await engine.dispose()

    async def drained():
        backlog = (await bridge.get("/api/backlog")).json()
        return backlog if backlog["waiting"] == 0 else None

    backlog = await eventually(drained, timeout=30, interval=0.2)
    # Every partner's topic the bridge reads, those other tests onboarded too (SPEC section 10).
    assert {p["topic"] for p in backlog["partitions"]} >= {outbound_topic(LEAD), outbound_topic(PARTNER)}
    await arrived(insourcing, second_insourced["id"], "notes", lambda n: n["body"].startswith("held "), count=10)
