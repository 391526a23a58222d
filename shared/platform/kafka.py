"""Kafka plumbing: topic names, how a service reaches the broker (address and its own SASL user),
what the broker can do (probed at start), producers and consumers tuned to it, topics, and the ACLs
that keep each partner to its own topics."""
import asyncio
import logging
from dataclasses import dataclass, field, replace
from enum import IntEnum

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code
from aiokafka.protocol.admin import CreateAclsRequest

from shared.platform import records

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_000_000  # stay under Kafka's default 1 MiB message limit
MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES + 64_000  # the most a producer of ours sends in one message


def outbound_topic(partner_id: str) -> str:
    """What a partner writes: its own events. Only the bridge reads it."""
    return f"psa.{partner_id}.outbound"


def inbound_topic(partner_id: str) -> str:
    """What a partner reads: the bridge's messages to it."""
    return f"psa.{partner_id}.inbound"


def partner_group(partner_id: str) -> str:
    """The consumer group a partner reads its inbound topic in: its own, like its topics."""
    return f"psa.{partner_id}"


@dataclass(frozen=True)
class KafkaAccess:
    """Where the broker is and who this client is: with a username, SASL/SCRAM-SHA-256 (Apache Kafka
    with ACLs), over TLS when `tls` is set (the hub's Kafka across the internet: the broker's certificate
    verified against `ssl_cafile`, the hub operator's CA, or the system's bundle); without, an open
    listener (Tansu, which has no TLS, or a broker without auth)."""

    bootstrap: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    mechanism: str = "SCRAM-SHA-256"
    tls: bool = False
    ssl_cafile: str | None = None
    ssl_cadata: str | None = field(default=None, repr=False)  # the CA as PEM text, instead of a file

    def options(self) -> dict:
        options: dict = {"bootstrap_servers": self.bootstrap}
        if self.tls:
            context = create_ssl_context(cafile=self.ssl_cafile, cadata=self.ssl_cadata)
            options |= {"security_protocol": "SSL", "ssl_context": context}
        if self.username:
            options |= {
                "security_protocol": "SASL_SSL" if self.tls else "SASL_PLAINTEXT",
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return options

    def as_user(self, username: str | None, password: str | None) -> "KafkaAccess":
        """The same broker, reached the same way, as another user."""
        return replace(self, username=username, password=password)


@dataclass(frozen=True)
class BrokerProfile:
    """What the broker can do, found by asking it (ApiVersions) rather than by a flag."""

    name: str
    idempotent: bool
    fetch_max_wait_ms: int


# Apache Kafka answers a waiting fetch as soon as data arrives, so the wait is not a latency floor;
# but aiokafka leaves a partition whose records it just handed over out of the fetch already in
# flight, so a next message there waits up to this long. Measured idle (three services, 2 cores):
# 25 ms costs the broker 34 % of a core, 100 ms 20 %, 500 ms 10 %; 100 ms bounds that wait cheaply.
# Tansu answers only when the wait expires, and its idempotent producer fails (SPEC section 7).
APACHE_KAFKA = BrokerProfile("Apache Kafka", idempotent=True, fetch_max_wait_ms=100)
FALLBACK = BrokerProfile("Kafka-compatible broker without transactions (e.g. Tansu)", idempotent=False,
                         fetch_max_wait_ms=10)
# The replication and transaction APIs an idempotent producer relies on in a real broker
# (OffsetForLeaderEpoch, WriteTxnMarkers): Tansu does not list them.
_FULL_KAFKA_APIS = {23, 27}


async def probe_broker(access: KafkaAccess, timeout: float = 10.0) -> BrokerProfile:
    """What the brokers of `access` are, asked of the first that answers: on a cluster with one broker
    lost, a service still starts (SPEC section 13)."""
    options = {k: v for k, v in access.options().items() if k != "bootstrap_servers"}
    addresses = bootstrap_addresses(access.bootstrap)
    for n, address in enumerate(addresses):
        host, _, port = address.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **options),
                                          timeout if len(addresses) == 1 else min(timeout, 3.0))
        except Exception:
            if n == len(addresses) - 1:
                raise
            continue
        try:
            apis = set(conn._versions)  # filled by aiokafka's ApiVersions exchange on connect
        finally:
            conn.close()
        return APACHE_KAFKA if _FULL_KAFKA_APIS <= apis else FALLBACK
    raise ValueError(f"no broker address in {access.bootstrap!r}")


def bootstrap_addresses(bootstrap: str) -> list[str]:
    return [address.strip() for address in bootstrap.split(",") if address.strip()]


def make_producer(access: KafkaAccess, profile: BrokerProfile = FALLBACK) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **access.options(),
        acks="all",
        enable_idempotence=profile.idempotent,
        linger_ms=0,  # a burst from the relay still batches: send() queues before the sender runs
        max_request_size=MAX_REQUEST_BYTES,
        # A send to a broker that stopped answering (frozen, cut off) is given up and sent again to the
        # partition's new leader: the brokers fence a silent one in 4 s (deploy/kafka/server.properties),
        # and the producer asks for the cluster's metadata at least as often (not every 5 minutes).
        request_timeout_ms=4_000,
        metadata_max_age_ms=5_000,
    )


def make_consumer(access: KafkaAccess, group_id: str, topics: list[str], session_timeout_ms: int,
                  profile: BrokerProfile = FALLBACK, listener=None) -> AIOKafkaConsumer:
    """A consumer of `topics`; with `listener` (a ConsumerRebalanceListener) it hears each rebalance.
    It reads any record a broker holds, header names that are not UTF-8 included (records.py)."""
    records.install()
    consumer = AIOKafkaConsumer(
        *([] if listener else topics),
        **access.options(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(300, session_timeout_ms // 5),
        fetch_max_wait_ms=profile.fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * MAX_MESSAGE_BYTES,
        fetch_max_bytes=16 * MAX_MESSAGE_BYTES,
        metadata_max_age_ms=5_000,
        # Not aiokafka's 40 s: a request sent as a restarted broker accepted connections before it
        # served them hung the coordinator lookup, and with it every commit, for that long. A join
        # may wait out the rebalance (the session timeout), so a request gets that and 2 s more; a
        # fetch from a broker that stopped answering (frozen, on a cluster) is given up as soon, and
        # its partitions are read from their new leader (issue 29: it was 5 s more).
        request_timeout_ms=session_timeout_ms + 2_000,
    )
    if listener is not None:
        consumer.subscribe(topics, listener=listener)
    return consumer


def tear_down(consumer: AIOKafkaConsumer) -> None:
    """The last resort for a consumer whose stop() did not return (seen after a broker lost its data:
    the coordinator lookup never finished, and stop() waits for it): close its connections, which fails
    every request it still waits on, and cancel its background tasks, so nothing of it spins on
    (its heartbeat otherwise retried every 100 ms for as long as the process lived). aiokafka has no
    public call for this; the attributes are those of aiokafka 0.14."""
    client = consumer._client
    coordinator = getattr(consumer, "_coordinator", None)
    fetcher = getattr(consumer, "_fetcher", None)
    for owner, task_name in ((coordinator, "_heartbeat_task"), (coordinator, "_commit_refresh_task"),
                             (coordinator, "_coordination_task"), (fetcher, "_fetch_task"),
                             (client, "_sync_task")):
        task = getattr(owner, task_name, None)
        if task is not None and not task.done():
            task.cancel()
    for conn in list(getattr(client, "_conns", {}).values()):
        conn.close()


def _admin(access: KafkaAccess) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**access.options(), request_timeout_ms=10_000)


async def list_topics(access: KafkaAccess) -> list[str]:
    """The topics this client may see (with ACLs: only those it has a grant on)."""
    admin = _admin(access)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


@dataclass(frozen=True)
class Replication:
    """How many brokers hold each topic this service creates, and how many must have a write before it
    is acknowledged (SPEC section 13). None leaves it to the broker's own defaults (`make run`'s
    cluster: 3, and 2 in sync)."""

    factor: int | None = None
    min_insync: int | None = None

    def new_topic(self, name: str, partitions: int) -> NewTopic:
        configs = {"min.insync.replicas": str(self.min_insync)} if self.min_insync else {}
        if self.factor:
            return NewTopic(name, partitions, self.factor, topic_configs=configs)
        # -1: the broker's default.replication.factor (aiokafka wants an assignment beside it: none).
        return NewTopic(name, partitions, -1, replica_assignments={}, topic_configs=configs)


async def ensure_topics(access: KafkaAccess, topics: list[str], partitions: int, skip_refused: bool = False,
                        replication: Replication = Replication()) -> None:
    """Create the topics explicitly (idempotent): auto-creation would pick its own partition count.
    With ACLs the operator creates them (make run does); a service then finds them and creates none.
    `skip_refused`: a topic this user may not create is logged and left, the others made. An existing
    topic with fewer replicas than `replication` asks for is logged: creating it again would not help."""
    admin = _admin(access)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if replication.factor and (present := [t for t in topics if t in existing]):
            _say_under_replicated(await admin.describe_topics(present), replication.factor)
        if missing:
            try:
                response = await admin.create_topics([replication.new_topic(t, partitions) for t in missing])
            except TopicAlreadyExistsError:
                return
            refused = []
            for topic, code, *rest in response.topic_errors:
                if code and for_code(code) is TopicAuthorizationFailedError and skip_refused:
                    refused.append(topic)
                elif code and for_code(code) is not TopicAlreadyExistsError:
                    raise for_code(code)(f"creating {topic}: {rest[0] if rest else ''}")
            if refused:
                log.warning("not allowed to create topics %s: the hub operator must make them again", refused)
            if made := [t for t in missing if t not in refused]:
                log.info("created topics %s", made)
    finally:
        await admin.close()


def _say_under_replicated(described: list[dict], factor: int) -> None:
    for topic in described:
        held = min((len(p["replicas"]) for p in topic.get("partitions") or []), default=factor)
        if held < factor:
            log.warning("topic %s has %d replica(s), fewer than KAFKA_REPLICATION_FACTOR=%d: a broker lost takes"
                        " what only it holds; add replicas with kafka-reassign-partitions (docs/operations.md,"
                        " \"The hub on a Kafka cluster\")", topic["topic"], held, factor)


async def partition_replicas(access: KafkaAccess, topics: list[str] | None = None) -> list[dict]:
    """Every partition of `topics` (default: every topic this client may see, Kafka's own included):
    topic, partition, leader (-1 when it has none), replicas and isr (the node ids in sync with the leader)."""
    admin = _admin(access)
    await admin.start()
    try:
        described = await admin.describe_topics(topics if topics is not None else await admin.list_topics())
        return sorted(({"topic": t["topic"], "partition": p["partition"], "leader": p["leader"],
                        "replicas": sorted(p["replicas"]), "isr": sorted(p["isr"])}
                       for t in described for p in t["partitions"]), key=lambda p: (p["topic"], p["partition"]))
    finally:
        await admin.close()


async def cluster_brokers(access: KafkaAccess) -> list[dict]:
    """The brokers the cluster's metadata lists (node_id, host, port)."""
    admin = _admin(access)
    await admin.start()
    try:
        return (await admin.describe_cluster())["brokers"]
    finally:
        await admin.close()


async def broker_reachable(address: str, timeout: float = 2.0, ssl=None) -> bool:
    """Does the broker at `address` (host:port) answer: a TCP connection, and with `ssl` (an SSL context)
    a TLS handshake too, which a frozen broker does not complete (its kernel still accepts the TCP)."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=ssl), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except (OSError, asyncio.TimeoutError):
        pass
    return True


def probe_context(access: KafkaAccess):
    """The TLS context `unreachable_brokers` shakes hands with (None: plaintext), made once per service."""
    if not access.tls:
        return None
    context = create_ssl_context(cafile=access.ssl_cafile, cadata=access.ssl_cadata)
    context.check_hostname = False  # only whether it answers: the clients check who it is
    return context


async def unreachable_brokers(access: KafkaAccess, ssl=None, timeout: float = 2.0) -> list[str]:
    """The addresses of `access.bootstrap` that do not answer, each asked at once."""
    addresses = bootstrap_addresses(access.bootstrap)
    answers = await asyncio.gather(*(broker_reachable(a, timeout, ssl) for a in addresses))
    return [address for address, answered in zip(addresses, answers) if not answered]


# --- ACLs (Apache Kafka's StandardAuthorizer) ----------------------------------------------------

class Resource(IntEnum):
    TOPIC = 2
    GROUP = 3


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


@dataclass(frozen=True)
class Grant:
    principal: str  # e.g. "User:lead-partner-svc"
    resource: Resource
    name: str
    operation: Operation


def partner_grants(user: str, partner_id: str, group: str) -> list[Grant]:
    """A partner writes only its outbound topic and reads only its inbound one, in its own group.
    It may create those two again if the broker lost them (nothing else)."""
    principal = f"User:{user}"
    out, inbound = outbound_topic(partner_id), inbound_topic(partner_id)
    return [
        Grant(principal, Resource.TOPIC, out, Operation.WRITE),
        Grant(principal, Resource.TOPIC, out, Operation.DESCRIBE),
        Grant(principal, Resource.TOPIC, out, Operation.CREATE),
        Grant(principal, Resource.TOPIC, inbound, Operation.READ),
        Grant(principal, Resource.TOPIC, inbound, Operation.DESCRIBE),
        Grant(principal, Resource.TOPIC, inbound, Operation.CREATE),
        Grant(principal, Resource.GROUP, group, Operation.READ),
    ]


def bridge_grants(user: str, partner_ids: list[str], group: str) -> list[Grant]:
    """The bridge reads every partner's outbound topic and writes every partner's inbound one."""
    principal = f"User:{user}"
    grants = [Grant(principal, Resource.GROUP, group, Operation.READ)]
    for partner in partner_ids:
        grants += [
            Grant(principal, Resource.TOPIC, outbound_topic(partner), Operation.READ),
            Grant(principal, Resource.TOPIC, outbound_topic(partner), Operation.DESCRIBE),
            Grant(principal, Resource.TOPIC, outbound_topic(partner), Operation.CREATE),
            Grant(principal, Resource.TOPIC, inbound_topic(partner), Operation.WRITE),
            Grant(principal, Resource.TOPIC, inbound_topic(partner), Operation.DESCRIBE),
            Grant(principal, Resource.TOPIC, inbound_topic(partner), Operation.CREATE),
        ]
    return grants


async def create_acls(admin_access: KafkaAccess, grants: list[Grant]) -> None:
    """Adds ALLOW ACLs (literal names, any host). Creating an existing ACL is a no-op in Kafka."""
    admin = _admin(admin_access)
    await admin.start()
    try:
        for grant in grants:
            # CreateAcls v1: resource type, name, pattern LITERAL(3), principal, host, operation, ALLOW(3)
            request = CreateAclsRequest(grant.resource, grant.name, 3, grant.principal, "*", grant.operation, 3)
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code:
                    raise for_code(code)(f"ACL {grant}: {message}")
    finally:
        await admin.close()
