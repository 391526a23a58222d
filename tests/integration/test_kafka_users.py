"""Onboarding and removing a partner's Kafka user at run time (shared/platform/kafka_users.py), on the
real Apache Kafka: who can log in with which password, and what its grants let it write."""
import asyncio
import logging
import secrets

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from shared.platform.kafka import (
    Grant,
    KafkaAccess,
    Operation,
    Replication,
    Resource,
    create_acls,
    ensure_topics,
    list_topics,
)
from shared.platform.kafka_users import delete_acls_of, set_scram_password, user_exists
from tests.harness import eventually, kafka_write

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def hub(infrastructure) -> KafkaAccess:
    """The hub's super user. This machine runs Apache Kafka with users: a broker without them is a
    broken setup here, not a reason to skip."""
    assert infrastructure.acls, f"the broker from {infrastructure.kafka_source} has no users or ACLs"
    return infrastructure.kafka_admin


def new_name(kind: str) -> str:
    return f"test-{kind}-{secrets.token_hex(4)}"


async def logs_in(access: KafkaAccess) -> bool:
    try:
        await asyncio.wait_for(list_topics(access), 15)
    except (KafkaConnectionError, KafkaError, asyncio.TimeoutError):
        return False
    return True


async def refused(access: KafkaAccess) -> bool:
    return not await logs_in(access)


async def writes(access: KafkaAccess, topic: str) -> bool:
    try:
        await kafka_write(access, topic)
    except TopicAuthorizationFailedError:
        return False
    return True


async def cannot_write(access: KafkaAccess, topic: str) -> bool:
    return not await writes(access, topic)


def grants_to_write(user: str, topic: str) -> list[Grant]:
    principal = f"User:{user}"
    return [Grant(principal, Resource.TOPIC, topic, Operation.WRITE),
            Grant(principal, Resource.TOPIC, topic, Operation.DESCRIBE)]


async def test_a_new_partner_user_logs_in_with_its_password_and_writes_where_it_is_granted(hub):
    user, topic = new_name("partner"), new_name("topic")
    partner = hub.as_user(user, secrets.token_urlsafe(24))
    assert await refused(partner)
    assert not await user_exists(hub, user)

    await set_scram_password(hub, user, partner.password)
    await ensure_topics(hub, [topic], partitions=1)
    await create_acls(hub, grants_to_write(user, topic))

    assert await user_exists(hub, user)
    await eventually(lambda: logs_in(partner))
    await eventually(lambda: writes(partner, topic))


async def test_a_new_password_replaces_the_old_one_at_login(hub):
    user = new_name("partner")
    old = hub.as_user(user, secrets.token_urlsafe(24))
    new = hub.as_user(user, secrets.token_urlsafe(24))
    await set_scram_password(hub, user, old.password)
    await eventually(lambda: logs_in(old))

    await set_scram_password(hub, user, new.password)
    await eventually(lambda: logs_in(new))
    assert await refused(old)


async def test_deleting_a_partners_acls_takes_back_its_grants_and_leaves_the_others(hub):
    user, neighbour, topic = new_name("partner"), new_name("neighbour"), new_name("topic")
    partner = hub.as_user(user, secrets.token_urlsafe(24))
    other = hub.as_user(neighbour, secrets.token_urlsafe(24))
    await ensure_topics(hub, [topic], partitions=1)
    for access in (partner, other):
        await set_scram_password(hub, access.username, access.password)
        await create_acls(hub, grants_to_write(access.username, topic))
    await eventually(lambda: writes(partner, topic))

    assert await delete_acls_of(hub, f"User:{user}") == 2
    await eventually(lambda: cannot_write(partner, topic))
    assert await logs_in(partner)  # its grants are gone, not its login
    await eventually(lambda: writes(other, topic))
    assert await delete_acls_of(hub, f"User:{user}") == 0


async def test_a_credential_the_broker_refuses_is_an_error_naming_the_user(hub):
    user = new_name("partner")
    with pytest.raises(KafkaError, match=user):
        await set_scram_password(hub, user, "too-few-iterations", iterations=1024)
    assert not await user_exists(hub, user)


async def test_a_topic_with_fewer_replicas_than_configured_is_named_at_start(hub, caplog):
    """SPEC section 13: a service given KAFKA_REPLICATION_FACTOR=3 finds its topic made with one replica
    (on this one-broker hub), and says so with what to do: creating it again would not add replicas."""
    topic = new_name("topic")
    await ensure_topics(hub, [topic], partitions=1)
    with caplog.at_level(logging.WARNING, logger="shared.platform.kafka"):
        await ensure_topics(hub, [topic], partitions=1, replication=Replication(factor=3, min_insync=2))
    [said] = [r.getMessage() for r in caplog.records if topic in r.getMessage() and r.levelno >= logging.WARNING]
    assert "has 1 replica(s), fewer than KAFKA_REPLICATION_FACTOR=3" in said and "kafka-reassign-partitions" in said
