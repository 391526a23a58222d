"""Kafka plumbing: topic names, and producers and consumers tuned for both Apache Kafka and the
local Tansu broker (no idempotent producer, short fetch waits, no linger: the relay sends in
bursts, which batch anyway)."""
import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_000_000  # stay under Kafka's default 1 MiB message limit


def outbound_topic(partner_id: str) -> str:
    """What a partner writes: its own events. Only the bridge reads it."""
    return f"psa.{partner_id}.outbound"


def inbound_topic(partner_id: str) -> str:
    """What a partner reads: the bridge's messages to it."""
    return f"psa.{partner_id}.inbound"


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,  # fails on Tansu; the inbox makes redelivery harmless
        linger_ms=0,  # a burst from the relay still batches: send() queues before the sender runs
        max_request_size=MAX_MESSAGE_BYTES + 64_000,
        request_timeout_ms=15_000,
    )


def make_consumer(bootstrap: str, group_id: str, topics: list[str], session_timeout_ms: int) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(300, session_timeout_ms // 5),
        fetch_max_wait_ms=10,  # Tansu answers a waiting fetch only when this expires
        max_partition_fetch_bytes=4 * MAX_MESSAGE_BYTES,
        fetch_max_bytes=16 * MAX_MESSAGE_BYTES,
        metadata_max_age_ms=5_000,
    )


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    """Create the topics explicitly (idempotent): auto-creation would pick its own partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", missing)
    finally:
        await admin.close()


async def broker_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True
