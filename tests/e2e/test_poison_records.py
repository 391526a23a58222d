"""No record on any topic can stop the sync (issue 23): records with a NUL in the key, a NUL or
non-UTF-8 bytes in a header's name, or no value, written to every service's input topics as the
broker's super user (and one by the lead's own Kafka user, as any partner could), are parked, listed
escaped, discardable, and notes keep crossing both ways; every service stays ready."""
import base64
import re
import uuid

import asyncpg
import pytest

from shared.platform.db import asyncpg_dsn
from shared.platform.kafka import KafkaAccess, inbound_topic, make_producer, outbound_topic
from tests.e2e.flows import arrived, linked_tickets
from tests.harness import eventually
from tests.integration.test_poison_records import hostile_producer  # noqa: F401
from tests.raw_records import RawName

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEAD, PARTNER = "lead-partner", "insourcing-partner"
READERS = {"sync_bridge": [outbound_topic(LEAD), outbound_topic(PARTNER)],
           "lead_partner": [inbound_topic(LEAD)], "insourcing_partner": [inbound_topic(PARTNER)]}


def poison(marker: bytes) -> list[tuple[bytes, bytes | None, list]]:
    return [(b"\x00" + marker + b"-key", b"{}", []),
            (b"\x00" + marker + b"-header", b"x", [("\x00", b"\x00")]),
            (b"\x00" + marker + b"-utf8", b"x", [(RawName(b"\xff\xfe"), b"v")]),
            (b"\x00" + marker + b"-null", None, [])]


async def write(access: KafkaAccess, topic: str, records) -> None:
    producer = make_producer(access)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_poison_records_on_every_input_topic_are_parked_and_notes_keep_crossing_both_ways(
        services, lead, insourcing, bridge, infrastructure, base_env, hostile_producer):
    clients = {"sync_bridge": bridge, "lead_partner": lead, "insourcing_partner": insourcing}
    restarted = {service: await restarts(client) for service, client in clients.items()}
    marker = uuid.uuid4().hex[:8].encode()
    for topics in READERS.values():
        for topic in topics:
            await write(infrastructure.kafka_admin, topic, poison(marker))
    if infrastructure.acls:  # a partner's own user, on its own outbound topic
        own = infrastructure.kafka_admin.as_user(base_env["LEAD_KAFKA_USERNAME"], base_env["LEAD_KAFKA_PASSWORD"])
        await write(own, outbound_topic(LEAD), [(b"\x00" + marker + b"-own", b"\x00", [("\x00", None)])])

    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing, timeout=60)
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "after the poison, from the lead"})
    await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "after the poison, from the partner"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "after the poison, from the lead",
                  timeout=60)
    await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "after the poison, from the partner",
                  timeout=60)

    for service, topics in READERS.items():
        client = clients[service]
        expected = {base64.b64encode(key).decode(): key for key, _, _ in poison(marker)}

        async def parked():
            found = [d for d in (await client.get("/api/dead-letters", params={"limit": 1000})).json()
                     if d["key_base64"] in expected]
            return found if len(found) == len(expected) * len(topics) else None

        found = await eventually(parked, timeout=30)
        shown = {d["key"] for d in found}
        assert shown == {"\\x00" + key[1:].decode() for key in expected.values()}, shown
        assert {tuple(d["header_names"]) for d in found} >= {("\\x00",), ("\\xff\\xfe",)}
        discarded = await client.post(f"/api/dead-letters/{found[0]['id']}/discard")
        assert discarded.status_code == 200 and discarded.json()["outcome"] == "discarded"
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert await restarts(client) == restarted[service], f"the {service} consumer restarted"


async def restarts(client) -> float:
    """The service's consumer restarts so far, from its metrics."""
    return await metric(client, "inbox_consumer_restarts_total")


async def metric(client, name: str) -> float:
    metrics = (await client.get("/metrics")).text
    [value] = re.findall(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    return float(value)


async def test_readyz_names_a_partition_held_at_a_record_the_database_will_not_park_until_it_does(
        services, lead, infrastructure, databases):
    conn = await asyncpg.connect(asyncpg_dsn(databases["lead_partner"]))
    marker = uuid.uuid4().hex[:8]
    try:
        await conn.execute(
            "CREATE OR REPLACE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF position(convert_to('{marker}', 'UTF8') IN NEW.key) > 0 THEN "
            "RAISE EXCEPTION 'disk full (test)'; END IF; RETURN NEW; END $$")
        await conn.execute("CREATE TRIGGER refuse_marked BEFORE INSERT ON dead_letters "
                           "FOR EACH ROW EXECUTE FUNCTION refuse_marked()")
        await write(infrastructure.kafka_admin, inbound_topic(LEAD), [(b"\x00" + marker.encode(), b"x", [])])

        async def not_ready():
            answer = await lead.get("/readyz")
            return answer if answer.status_code == 503 else None

        answer = await eventually(not_ready, timeout=30)
        [problem] = answer.json()["problems"]
        assert f"the lead_partner consumer holds {inbound_topic(LEAD)}[" in problem and "disk full (test)" in problem
        assert "inbox_held_partitions 1.0" in (await lead.get("/metrics")).text
    finally:
        await conn.execute("DROP TRIGGER IF EXISTS refuse_marked ON dead_letters")
        await conn.close()

    async def ready_and_parked():
        if (await lead.get("/readyz")).status_code != 200:
            return None
        letters = (await lead.get("/api/dead-letters")).json()
        return [d for d in letters if d["key"] == "\\x00" + marker]

    assert len(await eventually(ready_and_parked, timeout=90)) == 1

    async def counted():  # the metric counts the unresolved letters every 15 s
        conn = await asyncpg.connect(asyncpg_dsn(databases["lead_partner"]))
        try:
            stored = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL")
        finally:
            await conn.close()
        return await metric(lead, "dead_letters_unresolved") == stored

    await eventually(counted, timeout=30, interval=1.0)
