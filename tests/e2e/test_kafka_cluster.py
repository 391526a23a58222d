"""The hub on a Kafka cluster (SPEC section 13, issue 29): three Apache Kafka nodes (KRaft, a quorum of
three controllers, SASL/SCRAM over TLS, ACLs), every topic on three brokers with two in sync, and the
three services on it. One broker frozen or killed costs seconds, not the sync; nothing is lost."""
import asyncio
import os
import shutil
import signal
import time

import pytest
import pytest_asyncio

from devstack import infra, kafka_broker
from devstack.kafka_broker import KafkaCluster
from shared.platform.kafka import _admin, inbound_topic, outbound_topic, partition_replicas
from tests.e2e.flows import arrived, items, linked_tickets
from tests.harness import LOGS, ROOT, eventually, start_services, stop_services

pytestmark = pytest.mark.asyncio(loop_scope="session")
TOPICS = [f(p) for p in ("lead-partner", "insourcing-partner") for f in (outbound_topic, inbound_topic)]
FAILOVER_S = 20  # SPEC section 13: a note crosses within this long of one broker's loss


@pytest.fixture(scope="module")
def cluster():
    assert kafka_broker.unavailable_reason() is None, "this machine has a JDK and Maven: the cluster must run here"
    home = ROOT / "var" / "test-kafka-cluster" / str(os.getpid())
    cluster = KafkaCluster(home, 3, infra.free_port())
    cluster.format_if_new()
    try:
        cluster.start(LOGS / "cluster")
        cluster.wait_ready()
        kafka_broker.provision(cluster.admin_access())
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_services(cluster, base_env, infrastructure, mailbox):
    names = {name: f"c{os.getpid()}_{name}" for name in ("lead_partner", "insourcing_partner", "sync_bridge")}
    urls = infra.create_databases(infrastructure.postgres_admin_url, list(names.values()), drop_first=True)
    admin = cluster.admin_access()
    env = {**base_env, "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap,
           **kafka_broker.service_env(cluster.credentials, cluster.tls.ca),
           "BRIDGE_KAFKA_ADMIN_USERNAME": admin.username, "BRIDGE_KAFKA_ADMIN_PASSWORD": admin.password,
           "KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2",
           **{f"{prefix}_DATABASE_URL": urls[names[name]] for name, prefix in
              (("lead_partner", "LEAD"), ("insourcing_partner", "INSOURCING"), ("sync_bridge", "BRIDGE"))}}
    try:
        procs = start_services(env, log_prefix="cluster-")
        try:
            yield procs
        finally:
            stop_services(procs)
    finally:
        infra.drop_databases(infrastructure.postgres_admin_url, list(names.values()))


@pytest_asyncio.fixture(loop_scope="session")
async def on_cluster(cluster_services):
    async with cluster_services["lead_partner"].client() as lead, \
            cluster_services["insourcing_partner"].client() as insourcing, \
            cluster_services["sync_bridge"].client() as bridge:
        yield lead, insourcing, bridge


async def partitions(cluster, topics: list[str]) -> list[dict]:
    return await partition_replicas(cluster.admin_access(), topics)


async def fully_in_sync(cluster, topics=TOPICS) -> bool:
    """Every partition's three replicas in sync (False while the cluster cannot say: a node restarting)."""
    try:
        return all(len(p["isr"]) == 3 for p in await partitions(cluster, topics))
    except Exception:
        return False


async def test_every_topic_is_on_three_brokers_with_two_in_sync(cluster, on_cluster):
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    found = await partitions(cluster, [*TOPICS, "__consumer_offsets"])
    assert {p["topic"] for p in found} == {*TOPICS, "__consumer_offsets"}
    assert all(len(p["replicas"]) == 3 and len(p["isr"]) == 3 for p in found), found
    admin = _admin(cluster.admin_access())
    await admin.start()
    try:
        [answer] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPICS[0])])
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for resource in answer.resources for entry in resource[4]}
    assert configs["min.insync.replicas"] == "2"  # Kafka's default is 1


def busiest_leader(cluster, found: list[dict]):
    """The node leading the most partitions of the partners' topics."""
    counts = {node.place.node_id: 0 for node in cluster.nodes}
    for p in found:
        counts[p["leader"]] += 1
    node_id = max(counts, key=counts.get)
    return next(node for node in cluster.nodes if node.place.node_id == node_id)


async def test_a_frozen_leader_costs_seconds_and_rejoins_when_thawed(cluster, on_cluster):
    lead, insourcing, bridge = on_cluster
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    frozen = busiest_leader(cluster, await partitions(cluster, TOPICS))
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        there = await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "while a broker is frozen"})
        back = await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "and back again"})
        assert there.status_code == 201 and back.status_code == 201  # the API does not wait on Kafka
        await asyncio.gather(
            arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "while a broker is frozen",
                    timeout=FAILOVER_S),
            arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "and back again", timeout=FAILOVER_S))
        crossed = time.monotonic() - started
        new_lead, new_insourced, _ = await linked_tickets(lead, insourcing)  # a new outsourcing, both ways
        outsourced = time.monotonic() - started
        ready = await lead.get("/readyz")  # still serving, and saying which broker does not answer
        assert ready.status_code == 200 and frozen.bootstrap in " ".join(ready.json()["degraded"]), ready.text
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    print(f"\nnode {frozen.place.node_id} frozen: notes crossed both ways {crossed:.1f} s after, a new outsourcing"
          f" was accepted {outsourced:.1f} s after")
    await eventually(lambda: fully_in_sync(cluster), timeout=60, interval=0.5)  # the thawed broker rejoined every ISR


async def test_each_broker_killed_in_turn_while_two_write_loses_and_duplicates_nothing(cluster, on_cluster):
    lead, insourcing, bridge = on_cluster
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    stop, written = asyncio.Event(), {"lead": [], "insourcing": []}

    async def writer(client, ticket, side: str) -> None:
        while not stop.is_set():
            body = f"{side} {len(written[side]):04d}"
            answer = await client.post(f"/api/tickets/{ticket['id']}/notes", json={"body": body})
            assert answer.status_code == 201, answer.text
            written[side].append(body)
            await asyncio.sleep(0.05)

    writers = [asyncio.create_task(writer(lead, lead_ticket, "lead")),
               asyncio.create_task(writer(insourcing, insourced, "insourcing"))]
    try:
        for node in cluster.nodes:
            await asyncio.sleep(2.0)
            node.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(node.proc.wait)
            await asyncio.sleep(3.0)
            node.start(LOGS / "cluster" / f"kafka-node-{node.place.node_id}.log")
            # Kafka's own offsets too: a commit needs two of its replicas in sync before the next kill.
            await eventually(lambda: fully_in_sync(cluster, [*TOPICS, "__consumer_offsets"]), timeout=90, interval=0.5)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    for client, ticket, side in ((insourcing, insourced, "lead"), (lead, lead_ticket, "insourcing")):
        await arrived(client, ticket["id"], "notes", lambda n, s=side: n["body"].startswith(s + " "),
                      count=len(written[side]), timeout=90)
        await asyncio.sleep(1.0)  # anything duplicated would show now
        found = [n["body"] for n in await items(client, ticket["id"], "notes") if n["body"].startswith(side + " ")]
        assert found == written[side]
    print(f"\neach of 3 brokers killed in turn: {len(written['lead'])} + {len(written['insourcing'])} notes crossed,"
          " each once, in order")
