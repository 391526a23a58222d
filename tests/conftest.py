"""Session-wide test stack: real PostgreSQL, a real Kafka-protocol broker, a real SMTP server on
loopback, and the three services as real processes."""
import logging
import secrets

import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from devstack import infra
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.signing import KeyRing, Signatures
from tests.harness import LOGS, Infrastructure, Mailbox, resolve_infrastructure, start_services, stop_services

LEAD_EMAIL = "dispatch@lead.example"
KEY_GRACE_S = 15
INSOURCING_EMAIL = "desk@insourcing.example"

_resolved: dict[str, str] = {}
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns what matters


@pytest.fixture(scope="session")
def infrastructure():
    resolved = resolve_infrastructure()
    _resolved.update(postgres=resolved.postgres_source, kafka=resolved.kafka_source)
    yield resolved
    resolved.close()


@pytest.fixture(scope="session")
def databases(infrastructure: Infrastructure):
    """A fresh database per service for this test session, dropped at the end."""
    run = secrets.token_hex(4)
    names = {name: f"t{run}_{name}" for name in ("lead_partner", "insourcing_partner", "sync_bridge", "plumbing")}
    urls = infra.create_databases(infrastructure.postgres_admin_url, list(names.values()))
    yield {name: urls[db] for name, db in names.items()}
    infra.drop_databases(infrastructure.postgres_admin_url, list(names.values()))


@pytest.fixture(scope="session")
def signing_keys() -> dict[str, str]:
    """This session's message signing keys, as the services read them from the environment."""
    return infra.signing_env()


@pytest.fixture(scope="session")
def signatures(signing_keys) -> Signatures:
    """Signs a message as the partner (or the bridge) holding the key of that topic would."""
    lead, insourcing = KeyRing.parse(signing_keys["LEAD_SIGNING_KEYS"]), KeyRing.parse(signing_keys["INSOURCING_SIGNING_KEYS"])
    return Signatures({outbound_topic("lead-partner"): lead, inbound_topic("lead-partner"): lead,
                       outbound_topic("insourcing-partner"): insourcing, inbound_topic("insourcing-partner"): insourcing})


@pytest.fixture(scope="session")
def base_env(infrastructure: Infrastructure, databases, signing_keys):
    import os

    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
        **infrastructure.kafka_service_env,
        **signing_keys,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LEAD_DATABASE_URL": databases["lead_partner"],
        "INSOURCING_DATABASE_URL": databases["insourcing_partner"],
        "BRIDGE_DATABASE_URL": databases["sync_bridge"],
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(infra.free_port()),
        "LEAD_NOTIFY_EMAIL": LEAD_EMAIL,
        "INSOURCING_NOTIFY_EMAIL": INSOURCING_EMAIL,
        "LOG_LEVEL": "INFO",
        # Shorter than the default 30, so that the tests see reconciliation run without waiting long.
        "RECONCILE_INTERVAL_S": "10",
        # The partner directory (SPEC section 10): the bridge onboards partners as the hub's super user,
        # keeps their keys encrypted with this, and a rotated key verifies this long (days in production).
        "BRIDGE_SECRET_KEY": Fernet.generate_key().decode(),
        **({"BRIDGE_KAFKA_ADMIN_USERNAME": infrastructure.kafka_admin.username,
            "BRIDGE_KAFKA_ADMIN_PASSWORD": infrastructure.kafka_admin.password} if infrastructure.acls else {}),
        "KEY_GRACE_S": str(KEY_GRACE_S),
    }


@pytest.fixture(scope="session")
def mailbox(base_env):
    box = Mailbox(int(base_env["SMTP_PORT"]))
    box.start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def services(base_env, mailbox):
    procs = start_services(base_env)
    try:
        yield procs
    finally:
        stop_services(procs)


@pytest_asyncio.fixture(loop_scope="session")
async def lead(services):
    async with services["lead_partner"].client() as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def insourcing(services):
    async with services["insourcing_partner"].client() as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def bridge(services):
    async with services["sync_bridge"].client() as client:
        yield client


def pytest_terminal_summary(terminalreporter, exitstatus):
    if _resolved:
        line = f"PostgreSQL from {_resolved['postgres']}; Kafka from {_resolved['kafka']}"
        terminalreporter.write_line(f"test infrastructure: {line}")
        # `make test` runs pytest twice (Apache Kafka, then Tansu) and prints these lines last.
        counts = {k: len(terminalreporter.stats.get(k, [])) for k in ("passed", "failed", "error", "skipped")}
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing ran"
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / "summary.txt", "a") as out:
            out.write(f"{summary}: {line}\n")

