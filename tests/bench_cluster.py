"""What replication costs (SPEC section 13, issue 29), in one run on this machine: the quiet note's p50
and the sustained rate on one Apache Kafka broker beside the same on a cluster of three (every topic on
three brokers, two in sync, acks=all), and the sustained rate on the cluster with one, two and three
bridge replicas sharing the work (the scale-out figure). Printed, never asserted; run by `make bench`."""
import asyncio
import os
import shutil
import statistics
import uuid

from devstack import infra, kafka_broker
from devstack.kafka_broker import KafkaCluster
from tests import bench
from tests.e2e.flows import linked_tickets
from tests.harness import LOGS, ROOT, ServiceProcess, resolve_infrastructure, start_services, stop_services

SAMPLES = int(os.environ.get("BENCH_CLUSTER_SAMPLES", 200))
LINKS = 20


async def figures(procs: dict[str, ServiceProcess], rate_only: bool = False) -> tuple[float | None, float]:
    """The quiet note's p50 (ms) lead -> insourcing, and the notes/s delivered of RATE_NOTES by 16 writers."""
    async with procs["lead_partner"].client() as lead, procs["insourcing_partner"].client() as insourcing, \
            procs["sync_bridge"].client() as bridge:
        pairs, link_ids = [], set()
        for _ in range(LINKS):
            lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing, timeout=60)
            pairs.append((lead_ticket["id"], insourced["id"]))
            link_ids.add(link_id)
        p50 = None
        if not rate_only:
            p50 = statistics.median(await bench.note_latency(lead, insourcing, pairs)) * 1000
        meter = {name: p.proc.pid for name, p in procs.items()}
        return p50, (await bench.sustained_rate(lead, bridge, pairs, link_ids, meter)).delivered


def on(bootstrap: str, service_env: dict[str, str], extra: dict[str, str], postgres_admin_url: str,
       bridges: int, rate_only: bool = False) -> tuple[float | None, float]:
    names = {n: f"benchc_{uuid.uuid4().hex[:6]}_{n}" for n in ("lead_partner", "insourcing_partner", "sync_bridge")}
    urls = infra.create_databases(postgres_admin_url, list(names.values()))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **service_env, **infra.signing_env(),
           "KAFKA_SESSION_TIMEOUT_MS": "6000", "LOG_LEVEL": "WARNING", **extra,
           "LEAD_DATABASE_URL": urls[names["lead_partner"]], "INSOURCING_DATABASE_URL": urls[names["insourcing_partner"]],
           "BRIDGE_DATABASE_URL": urls[names["sync_bridge"]]}
    try:
        procs = start_services(env, log_prefix="bench-cluster-", bridges=bridges)
        try:
            return asyncio.run(figures(procs, rate_only))
        finally:
            stop_services(procs)
    finally:
        infra.drop_databases(postgres_admin_url, list(names.values()))


def main() -> None:
    bench.SAMPLES = SAMPLES
    resolved = resolve_infrastructure()
    cluster = None
    try:
        one = on(resolved.kafka_bootstrap, resolved.kafka_service_env, {}, resolved.postgres_admin_url, 1)
        cluster = KafkaCluster(ROOT / "var" / "bench-kafka-cluster" / str(os.getpid()), 3, infra.free_port())
        cluster.format_if_new()
        cluster.start(LOGS / "bench-cluster")
        cluster.wait_ready()
        kafka_broker.provision(cluster.admin_access())
        service_env = kafka_broker.service_env(cluster.credentials, cluster.tls.ca)
        replicated = {"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2"}
        three = on(cluster.bootstrap, service_env, replicated, resolved.postgres_admin_url, 1)
        scale = [three[1]] + [on(cluster.bootstrap, service_env, replicated, resolved.postgres_admin_url, n,
                                 rate_only=True)[1] for n in (2, 3)]
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.home, ignore_errors=True)
        resolved.close()
    print("\n".join([
        "", "make bench: what replication costs (issue 29), the same run, Apache Kafka",
        f"  quiet note lead -> insourcing p50: one broker {one[0]:.1f} ms, a cluster of three {three[0]:.1f} ms"
        f" (ratio {three[0] / one[0]:.2f})",
        f"  sustained ({bench.RATE_NOTES} notes over {LINKS} links, 16 writers), delivered: one broker {one[1]:.0f}"
        f" notes/s, a cluster of three {three[1]:.0f} notes/s (ratio {three[1] / one[1]:.2f})",
        "  the same on the cluster with 1, 2, 3 bridge replicas: " + ", ".join(f"{r:.0f}" for r in scale)
        + " notes/s (2 cores in all: the replicas share the machine as well as the work)",
    ]), flush=True)


if __name__ == "__main__":
    main()
