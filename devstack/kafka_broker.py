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
from dataclasses import asdict, dataclass
from pathlib import Path

from devstack import infra

KAFKA_VERSION = "4.1.1"  # keep in step with deploy/compose.yaml and deploy/kafka.Dockerfile
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(creds)))
        path.chmod(0o600)
        return creds

    def for_service(self, service: str) -> tuple[str, str]:
        user = SERVICE_USERS[service]
        return user, self.services[user]


class KafkaBroker:
    """One KRaft node (broker and controller) with its data and credentials in `data_dir`."""

    def __init__(self, data_dir: Path, port: int, controller_port: int | None = None,
                 admin_username: str | None = None, admin_password: str | None = None):
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port or infra.free_port()
        self.credentials = Credentials.load_or_create(data_dir / "credentials.json", admin_username, admin_password)
        self.proc: subprocess.Popen | None = None
        self.bootstrap = f"127.0.0.1:{port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    def _config(self) -> Path:
        admin, password = self.credentials.admin_username, self.credentials.admin_password
        plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{admin}" '
                 f'password="{password}" user_{admin}="{password}";')
        scram = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{admin}" password="{password}";'
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"CLIENT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "CLIENT",
            "controller.listener.names": "CONTROLLER",
            # Clients authenticate with SCRAM (users live in the cluster metadata); the controller
            # listener, which no client uses, with a static PLAIN login for the admin only.
            "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.client.scram-sha-256.sasl.jaas.config": scram,
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{admin}",
            "allow.everyone.if.no.acl.found": "false",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.dirs": str(self.log_dir),
            "log.retention.hours": "168",
            "message.max.bytes": str(1_100_000),
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        path.chmod(0o600)
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
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        users = [(self.credentials.admin_username, self.credentials.admin_password), *self.credentials.services.items()]
        scram = [arg for name, pw in users for arg in ("--add-scram", f"SCRAM-SHA-256=[name={name},password={pw}]")]
        done = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                                         *scram),
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self, log_file: Path | None = None) -> subprocess.Popen:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.format_if_new()
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready when the admin can list topics through the client listener (SASL and all)."""
        import asyncio

        from shared.kafka import KafkaAccess, list_topics

        access = KafkaAccess(self.bootstrap, self.credentials.admin_username, self.credentials.admin_password)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"Apache Kafka exited with {self.proc.returncode}")
            try:
                asyncio.run(asyncio.wait_for(list_topics(access), 5))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Apache Kafka not ready on {self.bootstrap} after {timeout:.0f}s")
                time.sleep(0.3)

    def admin_access(self):
        from shared.kafka import KafkaAccess

        return KafkaAccess(self.bootstrap, self.credentials.admin_username, self.credentials.admin_password)

    def service_access(self, service: str):
        from shared.kafka import KafkaAccess

        user, password = self.credentials.for_service(service)
        return KafkaAccess(self.bootstrap, user, password)


# (module, env prefix) of each service: its Kafka user goes in <PREFIX>_KAFKA_USERNAME/PASSWORD.
PREFIXES = {"lead_partner": "LEAD", "insourcing_partner": "INSOURCING", "sync_bridge": "BRIDGE"}


def service_env(credentials: Credentials) -> dict[str, str]:
    env = {}
    for service, prefix in PREFIXES.items():
        user, password = credentials.for_service(service)
        env[f"{prefix}_KAFKA_USERNAME"], env[f"{prefix}_KAFKA_PASSWORD"] = user, password
    return env


def grants(lead_id: str, insourcing_id: str) -> list:
    """What each service's Kafka user may do (SPEC section 2): its group is its service name."""
    from shared.kafka import bridge_grants, partner_grants

    return [*partner_grants(SERVICE_USERS["lead_partner"], lead_id, "lead_partner"),
            *partner_grants(SERVICE_USERS["insourcing_partner"], insourcing_id, "insourcing_partner"),
            *bridge_grants(SERVICE_USERS["sync_bridge"], [lead_id, insourcing_id], "sync_bridge")]


def provision(admin, lead_id: str = "lead-partner", insourcing_id: str = "insourcing-partner",
              partitions: int = 4, with_acls: bool = True) -> None:
    """Creates the four topics with the partition count the code relies on, and the ACLs."""
    import asyncio

    from shared.kafka import create_acls, ensure_topics, inbound_topic, outbound_topic

    async def run() -> None:
        topics = [f(p) for p in (lead_id, insourcing_id) for f in (outbound_topic, inbound_topic)]
        await ensure_topics(admin, topics, partitions)
        if with_acls:
            await create_acls(admin, grants(lead_id, insourcing_id))

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("var/kafka"))
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    args = parser.parse_args()
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
        print(f"Apache Kafka {KAFKA_VERSION} on {broker.bootstrap} (SASL/SCRAM-SHA-256); users and their "
              f"passwords in {broker.data_dir / 'credentials.json'}", flush=True)
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        infra.stop_process(broker.proc, timeout=30)


if __name__ == "__main__":
    main()
