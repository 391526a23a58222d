"""The handler tests' services: a freshly migrated database per service for the session, and each
service's message handler on it, built as its composition root builds it (no Kafka, no HTTP)."""
import secrets
from pathlib import Path

import pytest
import pytest_asyncio

from devstack import infra
from services.insourcing_partner.received_work import Insourcing
from services.insourcing_partner.settings import InsourcingSettings
from services.lead_partner.outsourcing import LeadOutsourcing
from services.lead_partner.settings import LeadSettings
from services.sync_bridge.bridge import Bridge
from services.sync_bridge.directory import Directory
from shared.platform.migrations import upgrade
from tests.handlers.sides import LEAD, PARTNER, Side, directory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def handler_databases(infrastructure):
    run = secrets.token_hex(4)
    names = {s: f"h{run}_{s}" for s in ("lead_partner", "insourcing_partner", "sync_bridge")}
    urls = infra.create_databases(infrastructure.postgres_admin_url, list(names.values()))
    for service, name in names.items():
        upgrade(ROOT / "services" / service / "migrations", urls[name])
    yield {s: urls[n] for s, n in names.items()}
    infra.drop_databases(infrastructure.postgres_admin_url, list(names.values()))


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def lead(handler_databases):
    outsourcing = LeadOutsourcing(LeadSettings(database_url=handler_databases["lead_partner"]))
    side = Side(handler_databases["lead_partner"], outsourcing.handle)
    side.service = outsourcing
    await side.receive(directory(1))  # as the bridge answers the lead's directory.requested
    yield side
    await side.engine.dispose()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def insourcing(handler_databases):
    service = Insourcing(InsourcingSettings(database_url=handler_databases["insourcing_partner"]))
    side = Side(handler_databases["insourcing_partner"], service.handle)
    side.service = service
    yield side
    await side.engine.dispose()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def bridge(handler_databases):
    service = Bridge(Directory.of({LEAD: "lead", PARTNER: "insourcing"}))
    side = Side(handler_databases["sync_bridge"], service.handle)
    side.service = service
    yield side
    await side.engine.dispose()
