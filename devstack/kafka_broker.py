"""A local Apache Kafka: its jars resolved from Maven Central (devstack/kafka/pom.xml) into a cache
outside the checkout, one combined broker+controller in KRaft mode, SASL/SCRAM on the client
listener, the StandardAuthorizer, and a Kafka user per service allowed only its own topics.

Run it on its own with `python -m devstack.kafka_broker --data var/kafka --port 9092`."""
import argparse
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from devstack import infra, tls

KAFKA_VERSION = "4.1.1"  # deploy/hub/compose.yaml runs the same version (tests/integration/test_deploy.py checks)
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
# One broker configuration for make run and deploy/hub/compose.yaml alike.
SERVER_PROPERTIES = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "server.properties"
CACHE = Path(os.environ.get("PARTNER_SYNC_CACHE", Path.home() / ".cache" / "partner-ticket-sync"))
HEAP = "-Xmx512m -Xms128m"

# The Kafka user of each service (its principal is User:<name>); the ACLs below name them.
SERVICE_USERS = {"lead_partner": "lead-partner-svc", "insourcing_partner": "insourcing-partner-svc",
                 "sync_bridge": "sync-bridge-svc"}


def jars_dir(version: str = KAFKA_VERSION) -> Path:
    return CACHE / f"kafka-{version}" / "libs"


def java_major() -> int | None:
    java = shutil.which("java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def unavailable_reason() -> str | None:
    """Why Apache Kafka cannot run here (None when it can, its jars maybe still to be resolved)."""
    major = java_major()
    if major is None:
        return "no java on the PATH"
    if major < 17:
        return f"java {major} is older than 17"
    if not (jars_dir() / ".complete").exists() and not shutil.which("mvn"):
        return "no mvn on the PATH to resolve the Kafka jars"
    return None


def resolve_jars(say=print) -> Path | None:
    """The broker's jars, resolved by Maven on first use (progress shown), then from the cache.
    None when Maven cannot reach them (e.g. no route to Maven Central)."""
    target = jars_dir()
    if (target / ".complete").exists():
        return target
    say(f"resolving Apache Kafka {KAFKA_VERSION} from Maven Central into {target} (first time only)...")
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mvn", "-B", "-f", str(POM), f"-Dkafka.version={KAFKA_VERSION}", "dependency:copy-dependencies",
           f"-DoutputDirectory={target}", "-DincludeScope=runtime"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    downloaded = 0
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        if "Downloaded from" in line:
            downloaded += 1
            if downloaded % 10 == 0:
                say(f"  ... {downloaded} artifacts downloaded")
    if proc.wait() != 0:
        say("Maven could not resolve Apache Kafka:\n    " + "\n    ".join(tail[-6:]))
        return None
    (target / ".complete").write_text(KAFKA_VERSION)
    say(f"Apache Kafka {KAFKA_VERSION}: {len(list(target.glob('*.jar')))} jars cached")
    return target


def wait_until_serving(access, deadline: float, what: str, exited=None) -> None:
    """Until `access` (the broker's super user) can list topics, SASL and all, or `deadline` (a
    time.monotonic() value) passes; `exited` says why the broker is gone, if it is."""
    import asyncio

    from shared.platform.kafka import list_topics

    while True:
        if exited is not None and (why := exited()):
            raise RuntimeError(why)
        try:
            asyncio.run(asyncio.wait_for(list_topics(access), 5))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready on {access.bootstrap}")
            time.sleep(0.3)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, never starting with "-" (the storage
    tool would read such an id as an option and refuse to format: seen once in 64 starts, as Kafka's
    own Uuid.randomUuid avoids)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class Credentials:
    """The super user and one SCRAM user per service, generated once and kept beside the data."""

    admin_username: str
    admin_password: str
    services: dict[str, str]  # service user -> password

    @classmethod
    def load_or_create(cls, path: Path, admin_username: str | None, admin_password: str | None) -> "Credentials":
        if path.exists():
            saved = cls(**json.loads(path.read_text()))
            if admin_username and (admin_username, admin_password) != (saved.admin_username, saved.admin_password):
                raise SystemExit(f"KAFKA_ADMIN_USERNAME/PASSWORD differ from those the local broker was created with "
                                 f"({path}); unset them or remove {path.parent} to start afresh")
            return saved
        creds = cls(admin_username or "admin", admin_password or secrets.token_urlsafe(24),
                    {user: secrets.token_urlsafe(24) for user in SERVICE_USERS.values()})
        infra.write_private(path, json.dumps(asdict(creds)))
        return creds

    def for_service(self, service: str) -> tuple[str, str]:
        user = SERVICE_USERS[service]
        return user, self.services[user]


# Fencing and in-sync timings (deploy/kafka/server.properties): on a cluster a lost broker costs seconds
# (SPEC section 13); a node alone keeps Kafka's own, as deploy/kafka/start.sh does by default.
CLUSTER_TIMINGS = {"BROKER_HEARTBEAT_INTERVAL_MS": "1000", "BROKER_SESSION_TIMEOUT_MS": "4000",
                   "REPLICA_LAG_TIME_MAX_MS": "8000"}
ALONE_TIMINGS = {"BROKER_HEARTBEAT_INTERVAL_MS": "2000", "BROKER_SESSION_TIMEOUT_MS": "9000",
                 "REPLICA_LAG_TIME_MAX_MS": "30000"}


@dataclass(frozen=True)
class Place:
    """Where a node sits in its cluster: its id, the controller quorum, and the replication the
    cluster gives every topic (SPEC section 13). The default is a node alone."""

    node_id: int = 1
    voters: str = ""  # "1@127.0.0.1:9093,2@...": the controllers; "" is this node alone
    controller: bool = True
    replication_factor: int = 1
    min_insync_replicas: int = 1


class KafkaBroker:
    """One KRaft node (broker, and controller unless its place says otherwise): its credentials and
    TLS files in `home`, its data in `data_dir` (the same folder for a node alone)."""

    def __init__(self, data_dir: Path, port: int, controller_port: int | None = None,
                 admin_username: str | None = None, admin_password: str | None = None,
                 place: Place = Place(), home: Path | None = None, cluster_id: str | None = None):
        self.home = home or data_dir
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port or infra.free_port()
        self.place = place
        self.cluster_id = cluster_id
        self.credentials = Credentials.load_or_create(self.home / "credentials.json", admin_username, admin_password)
        self.proc: subprocess.Popen | None = None
        self.bootstrap = f"127.0.0.1:{port}"
        # The hub operator's CA and the broker's certificate, beside the data (var/kafka/ca.pem for make run).
        self.tls = tls.ensure(self.home, ["127.0.0.1", "localhost"])

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    def _config(self) -> Path:
        place = self.place
        listeners = f"CLIENT://127.0.0.1:{self.port}"
        if place.controller:
            listeners += f",CONTROLLER://127.0.0.1:{self.controller_port}"
        values = {
            "PROCESS_ROLES": "broker,controller" if place.controller else "broker",
            "NODE_ID": str(place.node_id),
            "CONTROLLER_QUORUM_VOTERS": place.voters or f"{place.node_id}@127.0.0.1:{self.controller_port}",
            "LISTENERS": listeners,
            "REPLICATION_FACTOR": str(place.replication_factor),
            "MIN_INSYNC_REPLICAS": str(place.min_insync_replicas),
            **(CLUSTER_TIMINGS if place.voters else ALONE_TIMINGS),
            "CLIENT_ADVERTISED": f"127.0.0.1:{self.port}",
            "ADMIN_USERNAME": self.credentials.admin_username,
            "ADMIN_PASSWORD": self.credentials.admin_password,
            "LOG_DIRS": str(self.log_dir),
            **self.tls.config_values(),
        }
        text = SERVER_PROPERTIES.read_text()
        for name, value in values.items():
            text = text.replace(f"@{name}@", value)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "server.properties"
        infra.write_private(path, text)
        return path

    def command(self) -> list[str]:
        """The broker's command line (after `format_if_new`), for a supervisor to run and rerun."""
        return self._java("kafka.Kafka", str(self.data_dir / "server.properties"))

    def _java(self, main: str, *args: str) -> list[str]:
        libs = jars_dir()
        log4j = Path(__file__).resolve().parent / "kafka" / "log4j2.properties"
        return ["java", *HEAP.split(), "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*", main, *args]

    def format_if_new(self) -> None:
        """KRaft storage is formatted once, with the SCRAM users bootstrapped into the metadata."""
        config = self._config()
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or new_cluster_id()
        users = [(self.credentials.admin_username, self.credentials.admin_password), *self.credentials.services.items()]
        # The users go into the metadata the controllers hold; a broker-only node learns them from them.
        scram = [arg for name, pw in users for arg in ("--add-scram", f"SCRAM-SHA-256=[name={name},password={pw}]")
                 if self.place.controller]
        done = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                                         *scram),
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self, log_file: Path | None = None) -> subprocess.Popen:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.format_if_new()
        with open(log_file, "ab") if log_file else open(os.devnull, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready when the admin can list topics through the client listener (SASL and all)."""
        deadline = time.monotonic() + timeout
        self.until_listening(deadline)
        wait_until_serving(self.admin_access(), deadline, "Apache Kafka", self._exited)

    def until_listening(self, deadline: float) -> None:
        """Until the client port accepts connections, quietly (before a client logs refusals)."""
        while not infra.port_answers("127.0.0.1", self.port):
            if why := self._exited():
                raise RuntimeError(f"Kafka node {self.place.node_id}: {why}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka node {self.place.node_id} not listening on {self.bootstrap}")
            time.sleep(0.2)

    def _exited(self) -> str | None:
        if self.proc and self.proc.poll() is not None:
            return f"Apache Kafka exited with {self.proc.returncode}"
        return None

    def admin_access(self):
        from shared.platform.kafka import KafkaAccess

        return KafkaAccess(self.bootstrap, self.credentials.admin_username, self.credentials.admin_password,
                           tls=True, ssl_cafile=str(self.tls.ca))

    def service_access(self, service: str):
        return self.admin_access().as_user(*self.credentials.for_service(service))


class KafkaCluster:
    """`size` (3 or more) nodes of one cluster on this machine (make run with KAFKA_BROKERS=N, the
    cluster tests): the first on `port`, the others on ports chosen once and kept (`home`/cluster.json),
    so a restart finds the same cluster where the services remember it. The first three are the
    controller quorum; every topic is on three brokers, two in sync. Each node's data is in
    `home`/node-<id>/; the users and TLS files in `home`, for all of them."""

    def __init__(self, home: Path, size: int, port: int, admin_username: str | None = None,
                 admin_password: str | None = None):
        if size < 3:
            # Two nodes have one controller between them (two voters could lose neither): the one that
            # is not could be lost, the other not, which is no cluster to offer.
            raise SystemExit(f"KAFKA_BROKERS={size}: a cluster needs at least 3 nodes (a quorum of three"
                             " controllers, any one of which may be lost); use 1 or 3 or more")
        self.home = home
        layout = self._layout(size, port)
        controllers = factor = 3
        self.replication_factor, self.min_insync_replicas = factor, 2
        voters = ",".join(f"{node}@127.0.0.1:{ports[1]}" for node, ports in enumerate(layout["nodes"][:controllers], 1))
        self.nodes = [
            KafkaBroker(home / f"node-{node}", client, controller, admin_username, admin_password,
                        Place(node, voters, node <= controllers, factor, self.min_insync_replicas),
                        home=home, cluster_id=layout["cluster_id"])
            for node, (client, controller) in enumerate(layout["nodes"], 1)]
        self.bootstrap = ",".join(node.bootstrap for node in self.nodes)
        self.credentials, self.tls = self.nodes[0].credentials, self.nodes[0].tls

    def _layout(self, size: int, port: int) -> dict:
        path = self.home / "cluster.json"
        if path.exists():
            layout = json.loads(path.read_text())
            if len(layout["nodes"]) != size:
                raise SystemExit(f"{self.home} holds a Kafka cluster of {len(layout['nodes'])} nodes, not {size}: set"
                                 f" KAFKA_BROKERS={len(layout['nodes'])}, or remove {self.home}/node-* and"
                                 f" {path} to start afresh (every message on it is lost)")
            return layout
        layout = {"cluster_id": new_cluster_id(),
                  "nodes": [[port, infra.free_port()], *([infra.free_port(), infra.free_port()] for _ in range(size - 1))]}
        self.home.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(layout))
        return layout

    def format_if_new(self) -> None:
        for node in self.nodes:
            node.format_if_new()

    def start(self, log_dir: Path | None = None) -> None:
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.start(log_dir / f"kafka-node-{node.place.node_id}.log" if log_dir else None)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Every node listening, and the cluster serving its super user with every broker registered."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.until_listening(deadline)
        wait_until_serving(self.admin_access(), deadline, "the Kafka cluster")
        wait_for_brokers(self.admin_access(), len(self.nodes), deadline)

    def admin_access(self):
        """The super user, as a node reaches it, with every node in the bootstrap list."""
        return replace(self.nodes[0].admin_access(), bootstrap=self.bootstrap)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc:
                infra.stop_process(node.proc, timeout=30)


def wait_for_brokers(access, count: int, deadline: float) -> None:
    """Until the cluster's metadata lists `count` brokers (a node that listens may not have registered)."""
    import asyncio

    from shared.platform.kafka import cluster_brokers

    while True:
        try:
            if len(asyncio.run(asyncio.wait_for(cluster_brokers(access), 5))) >= count:
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} Kafka brokers registered at {access.bootstrap}")
        time.sleep(0.3)


# (module, env prefix) of each service: its Kafka user goes in <PREFIX>_KAFKA_USERNAME/PASSWORD.
PREFIXES = {"lead_partner": "LEAD", "insourcing_partner": "INSOURCING", "sync_bridge": "BRIDGE"}


def service_env(credentials: Credentials, ssl_cafile: Path | None = None) -> dict[str, str]:
    """Each service's Kafka user, and the CA its broker's certificate is verified against."""
    env = {"KAFKA_SSL_CAFILE": str(ssl_cafile)} if ssl_cafile else {}
    for service, prefix in PREFIXES.items():
        user, password = credentials.for_service(service)
        env[f"{prefix}_KAFKA_USERNAME"], env[f"{prefix}_KAFKA_PASSWORD"] = user, password
    return env


def grants(lead_id: str, insourcing_id: str) -> list:
    """What each service's Kafka user may do (SPEC section 2): a partner's group is its own (psa.<id>)."""
    from shared.platform.kafka import bridge_grants, partner_grants, partner_group

    return [*partner_grants(SERVICE_USERS["lead_partner"], lead_id, partner_group(lead_id)),
            *partner_grants(SERVICE_USERS["insourcing_partner"], insourcing_id, partner_group(insourcing_id)),
            *bridge_grants(SERVICE_USERS["sync_bridge"], [lead_id, insourcing_id], "sync_bridge")]


def provision(admin, lead_id: str = "lead-partner", insourcing_id: str = "insourcing-partner",
              partitions: int = 4, with_acls: bool = True) -> None:
    """Creates the four topics with the partition count the code relies on, and the ACLs."""
    import asyncio

    from shared.platform.kafka import create_acls, ensure_topics, inbound_topic, outbound_topic

    async def run() -> None:
        topics = [f(p) for p in (lead_id, insourcing_id) for f in (outbound_topic, inbound_topic)]
        await ensure_topics(admin, topics, partitions)
        if with_acls:
            await create_acls(admin, grants(lead_id, insourcing_id))

    asyncio.run(run())


def provision_hub(admin, bridge_user: str | None, bridge_password: str | None = None) -> None:
    """On a hub whose partners are onboarded through the bridge (make run, deploy/hub): the bridge's group
    only; the bridge grants itself each partner's topics as it onboards it. With `bridge_password`, the
    bridge's user is made (or given that password) first, as deploy/hub's kafka-setup does at each start."""
    import asyncio

    from shared.platform.kafka import bridge_grants, create_acls
    from shared.platform.kafka_users import set_scram_password

    if bridge_user and bridge_password:
        asyncio.run(set_scram_password(admin, bridge_user, bridge_password))
    if bridge_user:
        asyncio.run(create_acls(admin, bridge_grants(bridge_user, [], "sync_bridge")))


def replication_report(partitions: list[dict]) -> tuple[bool, str]:
    """Whether every partition has a leader and all its replicas in sync, and what to tell the operator:
    one line when it does, else one line per partition that does not (a rolling restart waits for the
    first before it stops the next broker)."""
    behind = [p for p in partitions if p["leader"] < 0 or p["isr"] != p["replicas"]]
    topics = {p["topic"] for p in partitions}
    brokers = sorted({node for p in partitions for node in p["replicas"]})
    if not partitions:
        return False, "no partition is visible: no topic yet, or the user may not describe any"
    if not behind:
        return True, (f"all {len(partitions)} partitions of {len(topics)} topics in sync, on brokers "
                      f"{', '.join(map(str, brokers))}")
    lines = [f"{len(behind)} of {len(partitions)} partitions not fully in sync:"]
    lines += [f"  {p['topic']}-{p['partition']}: leader {p['leader'] if p['leader'] >= 0 else 'none'}, "
              f"replicas {p['replicas']}, in sync {p['isr']}" for p in behind]
    return False, "\n".join(lines)


def admin_from_env():
    """The broker named by KAFKA_BOOTSTRAP_SERVERS as KAFKA_ADMIN_USERNAME/PASSWORD, over TLS with KAFKA_SSL_CAFILE."""
    from shared.platform.kafka import KafkaAccess

    env = os.environ
    return KafkaAccess(env["KAFKA_BOOTSTRAP_SERVERS"], env.get("KAFKA_ADMIN_USERNAME"), env.get("KAFKA_ADMIN_PASSWORD"),
                       tls=bool(env.get("KAFKA_SSL_CAFILE")), ssl_cafile=env.get("KAFKA_SSL_CAFILE"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="resolve, format (first time) and run the local broker")
    serve.add_argument("--data", type=Path, default=Path("var/kafka"))
    serve.add_argument("--port", type=int, default=9092)
    serve.add_argument("--controller-port", type=int, default=9093)
    commands.add_parser("provision", help="create the topics and ACLs on the broker named by "
                                          "KAFKA_BOOTSTRAP_SERVERS, as KAFKA_ADMIN_USERNAME/PASSWORD")
    replication = commands.add_parser(
        "replication", help="whether every partition of the cluster named by KAFKA_BOOTSTRAP_SERVERS has all its "
                            "replicas in sync (exit 0) or which do not (exit 1; 2 when it does not answer), as "
                            "KAFKA_ADMIN_USERNAME/PASSWORD")
    replication.add_argument("--json", action="store_true", help="every partition's leader, replicas and in-sync set")
    commands.add_parser("provision-hub", help="on a hub whose partners are onboarded through the bridge: the "
                                              "bridge's user (BRIDGE_KAFKA_USERNAME/PASSWORD) and its group's ACL")
    args = parser.parse_args()
    if args.command == "replication":
        import asyncio

        from shared.platform.kafka import partition_replicas

        try:
            admin = admin_from_env()
            partitions = asyncio.run(asyncio.wait_for(partition_replicas(admin), 30))
        except Exception as exc:  # exit 2: the cluster could not say (1 is its answer "not in sync")
            print(f"the cluster at {os.environ.get('KAFKA_BOOTSTRAP_SERVERS')} did not answer: {exc!r}", file=sys.stderr)
            sys.exit(2)
        in_sync, report = replication_report(partitions)
        print(json.dumps(partitions) if args.json else report)
        sys.exit(0 if in_sync else 1)
    if args.command == "provision-hub":
        env = os.environ
        admin = admin_from_env()
        wait_until_serving(admin, time.monotonic() + 120, f"Kafka at {admin.bootstrap}")
        provision_hub(admin, env["BRIDGE_KAFKA_USERNAME"], env["BRIDGE_KAFKA_PASSWORD"])
        print(f"the bridge's Kafka user {env['BRIDGE_KAFKA_USERNAME']} and its group's ACL in place on {admin.bootstrap}")
        return
    if args.command == "provision":
        env = os.environ
        admin = admin_from_env()
        provision(admin, env.get("LEAD_PARTNER_ID", "lead-partner"),
                  env.get("INSOURCING_PARTNER_ID", "insourcing-partner"),
                  int(env.get("KAFKA_TOPIC_PARTITIONS", "4")), with_acls=bool(admin.username))
        print(f"topics{' and ACLs' if admin.username else ''} in place on {admin.bootstrap}")
        return
    if args.command is None:
        args = parser.parse_args(["serve"])
    if reason := unavailable_reason():
        sys.exit(f"Apache Kafka cannot run here: {reason}")
    if resolve_jars() is None:
        sys.exit("the Apache Kafka jars could not be resolved")
    broker = KafkaBroker(args.data, args.port, args.controller_port,
                         os.environ.get("KAFKA_ADMIN_USERNAME"), os.environ.get("KAFKA_ADMIN_PASSWORD"))
    broker.start()
    try:
        broker.wait_ready()
        provision(broker.admin_access())
        print(f"Apache Kafka {KAFKA_VERSION} on {broker.bootstrap} (SASL/SCRAM-SHA-256 over TLS, CA "
              f"{broker.tls.ca}); users and their passwords in {broker.data_dir / 'credentials.json'}", flush=True)
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        infra.stop_process(broker.proc, timeout=30)


if __name__ == "__main__":
    main()
