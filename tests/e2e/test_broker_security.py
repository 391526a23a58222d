"""Who may write what (SPEC section 2): on Apache Kafka each service's user is refused every topic
and group that is not its own, a stranger gets nothing, and whatever reaches a partner's inbound
topic without the bridge's signature is parked unapplied, even when the broker's super user wrote it."""
import asyncio
import struct
import uuid
from dataclasses import replace

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from shared.contracts.envelope import envelope
from shared.contracts.messages import MirrorUpsert, WorkCompleted
from shared.platform.db import asyncpg_dsn
from shared.platform.kafka import KafkaAccess, inbound_topic, make_producer, outbound_topic, partner_group
from shared.platform.signing import KeyRing, Signatures
from devstack import tls
from tests.e2e.flows import arrived, insource_status, items, linked_tickets
from tests.harness import eventually, kafka_read, kafka_write

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEAD, PARTNER = "lead-partner", "insourcing-partner"


@pytest.fixture
def acl_broker(infrastructure):
    """The ACL tests need a broker with users; the local Apache Kafka (this machine's path) has them."""
    assert infrastructure.acls, f"the broker from {infrastructure.kafka_source} has no users or ACLs"
    return infrastructure


def access_of(infrastructure, prefix: str) -> KafkaAccess:
    env = infrastructure.kafka_service_env
    return infrastructure.kafka_admin.as_user(env[f"{prefix}_KAFKA_USERNAME"], env[f"{prefix}_KAFKA_PASSWORD"])


@pytest.mark.parametrize("prefix,own,group,other,other_group", [
    ("LEAD", LEAD, partner_group(LEAD), PARTNER, partner_group(PARTNER)),
    ("INSOURCING", PARTNER, partner_group(PARTNER), LEAD, partner_group(LEAD)),
])
async def test_a_partners_kafka_user_may_use_only_its_own_topics_and_group(acl_broker, prefix, own, group, other,
                                                                           other_group):
    me = access_of(acl_broker, prefix)
    await kafka_write(me, outbound_topic(own))  # its own door: allowed
    for topic in (outbound_topic(other), inbound_topic(other), inbound_topic(own)):
        with pytest.raises(TopicAuthorizationFailedError):
            await kafka_write(me, topic)  # only the bridge writes an inbound topic; nobody writes the other's
    with pytest.raises(TopicAuthorizationFailedError):
        await kafka_read(me, inbound_topic(other), group)
    with pytest.raises(TopicAuthorizationFailedError):
        await kafka_read(me, outbound_topic(other), group)
    for foreign_group in (other_group, "sync_bridge"):
        with pytest.raises(GroupAuthorizationFailedError):
            await kafka_read(me, inbound_topic(own), foreign_group)


async def test_a_client_without_valid_credentials_gets_nothing(acl_broker):
    infrastructure = acl_broker
    stranger = KafkaAccess(infrastructure.kafka_bootstrap)  # no SASL at all
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        await kafka_write(stranger, outbound_topic(LEAD))
    env = infrastructure.kafka_service_env
    wrong = infrastructure.kafka_admin.as_user(env["LEAD_KAFKA_USERNAME"], "not-the-password")
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        await kafka_write(wrong, outbound_topic(LEAD))


async def test_the_client_port_speaks_only_tls_with_the_hub_operators_certificate(acl_broker, tmp_path):
    """Across the internet every login and note is encrypted: a client that does not speak TLS gets
    nothing even with the right password, and a client that trusts another CA does not trust this broker."""
    infrastructure = acl_broker
    assert infrastructure.kafka_admin.tls, f"the broker from {infrastructure.kafka_source} has no TLS"
    env = infrastructure.kafka_service_env
    lead = infrastructure.kafka_admin.as_user(env["LEAD_KAFKA_USERNAME"], env["LEAD_KAFKA_PASSWORD"])
    await kafka_write(lead, outbound_topic(LEAD))  # over TLS, verified against the hub's CA: allowed
    in_clear = replace(lead, tls=False, ssl_cafile=None)
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        await kafka_write(in_clear, outbound_topic(LEAD))
    another_ca = tls.ensure(tmp_path / "another-hub", ["127.0.0.1", "localhost"]).ca
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        await kafka_write(replace(lead, ssl_cafile=str(another_ca)), outbound_topic(LEAD))
    host, _, port = infrastructure.kafka_bootstrap.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:  # Kafka's ApiVersions request in clear: no Kafka answer comes back, only a closed connection
        request = struct.pack(">hhih", 18, 0, 1, 5) + b"probe"  # ApiVersions v0, correlation id 1
        writer.write(struct.pack(">i", len(request)) + request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(64), 15)
    except (ConnectionError, asyncio.TimeoutError):
        answer = b""
    finally:
        writer.close()
    assert answer[4:8] != bytes.fromhex("00000001"), "the broker answered a plaintext request"


async def inbound_records(infrastructure, partner: str) -> list:
    """Everything on a partner's inbound topic, read by the super user without a group."""
    consumer = AIOKafkaConsumer(**infrastructure.kafka_admin.options(), enable_auto_commit=False)
    await consumer.start()
    try:
        topic = inbound_topic(partner)
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or
                      await _partitions(consumer, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records += batch
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic)


async def parked_on(database_url: str, event_id: str) -> str | None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetchval("SELECT reason FROM dead_letters WHERE event_id = $1", event_id)
    finally:
        await conn.close()


async def test_forged_and_tampered_messages_on_a_partners_inbound_topic_are_parked_and_change_nothing(
        lead, insourcing, infrastructure, databases):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "original words"})
    [mirror] = await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "original words")

    [real] = [r for r in await inbound_records(infrastructure, PARTNER)
              if b"original words" in r.value and link_id.encode() in r.value]
    tampered = real.value.replace(b"original words", b"rewritten words")
    planted = envelope(MirrorUpsert(link_id=link_id, mirror_id=str(uuid.uuid4()), kind="note",
                                    fields={"title": "", "body": "planted by a stranger"}), source="sync-bridge",
                       link_id=link_id)
    completed = envelope(WorkCompleted(link_id=link_id, approved=True), source="sync-bridge", link_id=link_id)
    not_the_key = Signatures({inbound_topic(PARTNER): KeyRing.parse(KeyRing.generate())})

    producer = make_producer(infrastructure.kafka_admin)  # the broker's super user: past every ACL
    await producer.start()
    try:
        topic = inbound_topic(PARTNER)
        await producer.send_and_wait(topic, tampered, key=real.key, headers=list(real.headers))
        await producer.send_and_wait(topic, planted.to_bytes(), key=link_id.encode())
        await producer.send_and_wait(topic, completed.to_bytes(), key=link_id.encode(),
                                     headers=not_the_key.sign(topic, completed.to_bytes()))
    finally:
        await producer.stop()

    url = databases["insourcing_partner"]
    tampered_id = mirror_event_id(real.value)  # a copy claims the real one's event id
    planted_reason = await eventually(lambda: parked_on(url, str(planted.event_id)), timeout=30)
    completed_reason = await eventually(lambda: parked_on(url, str(completed.event_id)), timeout=30)
    assert planted_reason == "not authenticated: unsigned message"
    assert completed_reason.startswith("not authenticated: signature does not match")
    assert await _parked_count(url, tampered_id) == 1

    # The ticket is as the real messages left it: the note unchanged, nothing planted, still In Progress.
    notes = [n["body"] for n in await items(insourcing, insourced["id"], "notes")]
    assert "original words" in notes and "rewritten words" not in notes and "planted by a stranger" not in notes
    await insource_status(insourcing, insourced["id"], "In Progress")
    # ...and the link still works.
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "still linked after the forgeries"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "still linked after the forgeries")


def mirror_event_id(value: bytes) -> str:
    import json

    return json.loads(value)["event_id"]


async def _parked_count(database_url: str, event_id: str) -> int:
    async def check():
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM dead_letters WHERE event_id = $1 AND reason LIKE 'not authenticated%'", event_id)
        finally:
            await conn.close()

    return await eventually(check, timeout=30)
