"""What an operator does with a parked message (SPEC: dead letters on every service): a message that
came too early is replayed once its time has come and applied exactly once, a forged one is
discarded, and each resolution is on record with the token's name (or the command line's user) and the time;
an oversized message is kept as a bounded prefix with its size and hash, and cannot be replayed."""
import getpass
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select

from shared.contracts.envelope import Envelope, envelope
from shared.contracts.messages import ItemCreated, WorkCanceled, WorkRequested
from shared.platform.db import make_engine, make_sessionmaker
from shared.platform.inbox import MAX_KEPT_BYTES, DeadLetter, InboxConsumer
from shared.platform.kafka import inbound_topic, make_producer, outbound_topic
from shared.platform.signing import KeyRing, Signatures
from tests.e2e.flows import every, received
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEAD, PARTNER = "lead-partner", "insourcing-partner"
OPERATOR = "operator (from environment)"  # the name the services give the token from *_API_TOKEN


async def produce(infrastructure, topic: str, message: Envelope, signatures: Signatures | None) -> None:
    """Writes straight to a topic as the broker's super user, signed as the holder of that topic's
    key would sign it (the bridge, for a partner's inbound topic), or not at all."""
    value = message.to_bytes()
    producer = make_producer(infrastructure.kafka_admin)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=(message.link_id or "").encode(),
                                     headers=signatures.sign(topic, value) if signatures else None)
    finally:
        await producer.stop()


def from_bridge(payload) -> Envelope:
    return envelope(payload, source="bridge", link_id=payload.link_id)


def work_requested(link_id: str, title: str) -> WorkRequested:
    return WorkRequested(link_id=link_id, lead_partner_id=LEAD, lead_partner_name="Lead Partner",
                         lead_ticket_number="L-4711", title=title, description="It is 35 degrees in there",
                         instructions="Please look today", terms=None)


async def parked(client: httpx.AsyncClient, event_id, **params) -> dict:
    """Waits until the service lists the message with that event id among its dead letters."""

    async def check():
        answer = await client.get("/api/dead-letters", params=params)
        assert answer.status_code == 200, answer.text
        return next((d for d in answer.json() if d["event_id"] == str(event_id)), None)

    return await eventually(check, timeout=30)


async def listed(client: httpx.AsyncClient, letter_id: int, **params) -> dict | None:
    answer = await client.get("/api/dead-letters", params=params)
    assert answer.status_code == 200, answer.text
    return next((d for d in answer.json() if d["id"] == letter_id), None)


def just_now(timestamp: str) -> bool:
    return datetime.now(UTC) - datetime.fromisoformat(timestamp) < timedelta(minutes=1)


async def canceled_mails(insourcing: httpx.AsyncClient, title: str) -> int:
    sent = (await insourcing.get("/api/notifications")).json()
    return len([n for n in sent if n["kind"] == "work.canceled" and title in n["subject"]])


async def test_a_cancellation_that_came_before_its_request_is_parked_then_replayed_once(
        insourcing, infrastructure, signatures):
    topic, link_id, title = inbound_topic(PARTNER), str(uuid.uuid4()), f"Too early {uuid.uuid4().hex[:6]}"
    canceled = from_bridge(WorkCanceled(link_id=link_id))
    await produce(infrastructure, topic, canceled, signatures)

    letter = await parked(insourcing, canceled.event_id)
    # The insourcing partner has no such work yet: the handler fails on every attempt.
    assert letter["reason"].startswith("failed 5 times: NotFound") and link_id in letter["reason"]
    assert (letter["topic"], letter["type"], letter["key"]) == (topic, "link.canceled", link_id)
    assert letter["resolved_at"] is None and just_now(letter["parked_at"])

    await produce(infrastructure, topic, from_bridge(work_requested(link_id, title)), signatures)
    await received(insourcing, link_id, "Pending")

    replayed = await insourcing.post(f"/api/dead-letters/{letter['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    answer = replayed.json()
    assert (answer["id"], answer["outcome"], answer["resolved_by"]) == (letter["id"], "applied", OPERATOR)
    assert just_now(answer["resolved_at"])
    await received(insourcing, link_id, "Canceled")
    assert await canceled_mails(insourcing, title) == 1

    again = await insourcing.post(f"/api/dead-letters/{letter['id']}/replay")
    assert again.status_code == 409
    assert f"dead letter {letter['id']} is resolved already: applied (by {OPERATOR}" in again.json()["detail"]
    assert await listed(insourcing, letter["id"]) is None
    resolved = await listed(insourcing, letter["id"], include_resolved="true")
    assert (resolved["resolution"], resolved["resolved_by"], resolved["resolved_at"]) == (
        "applied", OPERATOR, answer["resolved_at"])
    assert await canceled_mails(insourcing, title) == 1


async def test_a_replay_of_a_message_the_inbox_has_since_applied_changes_nothing(
        insourcing, infrastructure, signatures):
    topic, link_id, title = inbound_topic(PARTNER), str(uuid.uuid4()), f"Twice {uuid.uuid4().hex[:6]}"
    canceled = from_bridge(WorkCanceled(link_id=link_id))
    await produce(infrastructure, topic, canceled, signatures)
    letter = await parked(insourcing, canceled.event_id)
    await produce(infrastructure, topic, from_bridge(work_requested(link_id, title)), signatures)
    await received(insourcing, link_id, "Pending")
    await produce(infrastructure, topic, canceled, signatures)  # the same event again, now in order
    await received(insourcing, link_id, "Canceled")

    replayed = await insourcing.post(f"/api/dead-letters/{letter['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert (replayed.json()["outcome"], replayed.json()["resolved_by"]) == ("already applied", OPERATOR)
    assert await listed(insourcing, letter["id"]) is None
    assert await canceled_mails(insourcing, title) == 1  # canceled once, not twice


async def test_a_forged_message_is_discarded_on_record_and_changes_nothing(services, insourcing, infrastructure,
                                                                          signatures):
    topic, link_id = inbound_topic(PARTNER), str(uuid.uuid4())
    await produce(infrastructure, topic, from_bridge(work_requested(link_id, "Keep me")), signatures)
    await received(insourcing, link_id, "Pending")
    forged = from_bridge(WorkCanceled(link_id=link_id))
    await produce(infrastructure, topic, forged, None)  # unsigned: not the bridge
    letter = await parked(insourcing, forged.event_id)
    assert letter["reason"] == "not authenticated: unsigned message"

    proc = services["insourcing_partner"]
    created = proc.cli("tokens", "create", "--name", "night shift", "--permission", "outsourcing")
    assert created.returncode == 0, created.stderr
    token = dict(line.split(": ", 1) for line in created.stdout.strip().splitlines())["token"]
    async with proc.client(token=token) as night_shift:
        discarded = await night_shift.post(f"/api/dead-letters/{letter['id']}/discard")
        assert discarded.status_code == 200, discarded.text
        answer = discarded.json()
        assert (answer["outcome"], answer["resolved_by"]) == ("discarded", "night shift")
        assert just_now(answer["resolved_at"])
        again = await night_shift.post(f"/api/dead-letters/{letter['id']}/replay")
        assert again.status_code == 409 and "resolved already: discarded (by night shift" in again.json()["detail"]

    assert await listed(insourcing, letter["id"]) is None
    resolved = await listed(insourcing, letter["id"], include_resolved="true")
    assert (resolved["resolution"], resolved["resolved_by"], resolved["resolved_at"]) == (
        "discarded", "night shift", answer["resolved_at"])
    assert (await received(insourcing, link_id))["insource_status"] == "Pending"


async def test_a_replay_whose_signature_still_fails_leaves_it_parked(insourcing, infrastructure):
    topic, link_id = inbound_topic(PARTNER), str(uuid.uuid4())
    not_the_key = Signatures({topic: KeyRing.parse(KeyRing.generate("k9"))})
    forged = from_bridge(work_requested(link_id, "Planted"))
    await produce(infrastructure, topic, forged, not_the_key)
    letter = await parked(insourcing, forged.event_id)
    assert letter["reason"] == "not authenticated: signed with unknown key id 'k9'"

    replayed = await insourcing.post(f"/api/dead-letters/{letter['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    answer = replayed.json()
    assert answer["outcome"] == "parked again: not authenticated: signed with unknown key id 'k9'"
    assert answer["resolved_at"] is None and answer["resolved_by"] is None
    still = await listed(insourcing, letter["id"])
    assert still["resolved_at"] is None and still["reason"] == letter["reason"]
    work = await every(insourcing, "/api/received-work")
    assert link_id not in [w["link_id"] for w in work]


async def test_dead_letters_need_the_services_operator_permission(services):
    proc = services["lead_partner"]
    async with proc.client() as lead:
        unknown = await lead.post("/api/dead-letters/987654321/replay")
        assert unknown.status_code == 404 and unknown.json()["detail"] == "dead letter 987654321 not found"
        assert (await lead.post("/api/dead-letters/987654321/discard")).status_code == 404
    created = proc.cli("tokens", "create", "--name", "technician", "--permission", "tickets")
    token = dict(line.split(": ", 1) for line in created.stdout.strip().splitlines())["token"]
    async with proc.client(token=token) as technician:
        refused = await technician.get("/api/dead-letters")
        assert refused.status_code == 403 and "outsourcing" in refused.json()["detail"]
        assert (await technician.post("/api/dead-letters/1/discard")).status_code == 403
    async with httpx.AsyncClient(base_url=proc.url) as anonymous:
        assert (await anonymous.get("/api/dead-letters")).status_code == 401
        assert (await anonymous.post("/api/dead-letters/1/replay")).status_code == 401
    async with services["sync_bridge"].client(token=services["insourcing_partner"].token) as stranger:
        assert (await stranger.get("/api/dead-letters")).status_code == 401


async def test_the_command_line_lists_replays_and_discards_the_bridges_dead_letters(services, bridge, infrastructure):
    link_id = str(uuid.uuid4())
    stray = envelope(ItemCreated(link_id=link_id, item_id=str(uuid.uuid4()), kind="note",
                                 fields={"title": "", "body": "unsigned"}), source=LEAD, link_id=link_id)
    await produce(infrastructure, outbound_topic(LEAD), stray, None)
    letter = await parked(bridge, stray.event_id)
    proc, me = services["sync_bridge"], f"command line ({getpass.getuser()})"

    listing = proc.cli("dead-letters", "list")
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if str(stray.event_id) in line]
    assert line.startswith(f"{letter['id']}  ") and "item.created" in line
    assert line.endswith("not authenticated: unsigned message")

    replayed = proc.cli("dead-letters", "replay", str(letter["id"]))
    assert replayed.returncode == 1
    assert f"dead letter {letter['id']}: parked again: not authenticated: unsigned message" in replayed.stderr
    assert str(stray.event_id) in proc.cli("dead-letters", "list").stdout

    discarded = proc.cli("dead-letters", "discard", str(letter["id"]))
    assert discarded.returncode == 0, discarded.stderr
    assert discarded.stdout.strip() == f"dead letter {letter['id']}: discarded"
    assert str(stray.event_id) not in proc.cli("dead-letters", "list").stdout
    [line] = [line for line in proc.cli("dead-letters", "list", "--all").stdout.splitlines()
              if str(stray.event_id) in line]
    assert f"(discarded by {me} at " in line
    resolved = await listed(bridge, letter["id"], include_resolved="true")
    assert (resolved["resolution"], resolved["resolved_by"]) == ("discarded", me) and just_now(resolved["resolved_at"])

    again = proc.cli("dead-letters", "discard", str(letter["id"]))
    assert again.returncode == 1 and f"dead letter {letter['id']} is resolved already: discarded" in again.stderr
    missing = proc.cli("dead-letters", "replay", "987654321")
    assert missing.returncode == 1 and "dead letter 987654321 not found" in missing.stderr


async def test_an_oversized_message_is_parked_as_a_bounded_prefix_with_its_size_and_hash_and_cannot_be_replayed(
        services, bridge, databases, signatures):
    """A 20 MB message, handed to the bridge's own inbox path as its consumer would hand it over (the
    test broker, Apache Kafka with its default limit, refuses a message over 1 MiB; Tansu and a broker
    configured for larger ones let it through)."""
    value = b'{"type": "' + b"x" * 20_000_000 + b'"}'
    record = ConsumerRecord(topic=outbound_topic(LEAD), partition=0, offset=10**12 + uuid.uuid4().int % 10**9,
                            timestamp=0, timestamp_type=0, key=b"k" * 1_000, value=value, checksum=None,
                            serialized_key_size=1_000, serialized_value_size=len(value), headers=[])
    engine = make_engine(databases["sync_bridge"], pool_size=1)
    try:
        await InboxConsumer(make_sessionmaker(engine), None, None, name="bridge", signatures=signatures).handle(record)
        async with make_sessionmaker(engine)() as session:
            row = await session.scalar(select(DeadLetter).where(DeadLetter.offset == record.offset))
            assert (len(row.value), row.key) == (MAX_KEPT_BYTES, b"k" * 1_000)  # a key is kept up to 4 KiB
    finally:
        await engine.dispose()

    letter = await listed(bridge, row.id)
    assert (letter["size"], letter["sha256"], letter["truncated"]) == (
        len(value), hashlib.sha256(value).hexdigest(), True)
    replayed = await bridge.post(f"/api/dead-letters/{row.id}/replay")
    assert replayed.status_code == 409
    assert replayed.json()["detail"] == (
        f"dead letter {row.id} cannot be replayed: the message was {len(value)} bytes and only its first "
        f"{MAX_KEPT_BYTES} were kept (SHA-256 {letter['sha256']}); discard it")
    proc = services["sync_bridge"]
    [line] = [line for line in proc.cli("dead-letters", "list").stdout.splitlines() if line.startswith(f"{row.id}  ")]
    assert f"{len(value)} bytes (truncated: cannot be replayed) sha256:{letter['sha256']}" in line
    again = proc.cli("dead-letters", "replay", str(row.id))
    assert again.returncode == 1 and f"dead letter {row.id} cannot be replayed" in again.stderr
    assert (await bridge.post(f"/api/dead-letters/{row.id}/discard")).json()["outcome"] == "discarded"
