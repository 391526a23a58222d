"""One source for the schema: each service's migrations, applied to an empty database, build exactly
the tables its models describe (Alembic's autogenerate comparison finds nothing to do)."""
import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from devstack import infra
from services.insourcing_partner.models import metadata as insourcing_metadata
from services.lead_partner.models import metadata as lead_metadata
from services.sync_bridge.models import metadata as bridge_metadata
from shared.platform.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]


async def differences(url: str, metadata) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service, metadata", [
    ("lead_partner", lead_metadata), ("insourcing_partner", insourcing_metadata), ("sync_bridge", bridge_metadata),
])
def test_the_migrations_build_exactly_the_tables_the_models_describe(infrastructure, service, metadata):
    name = f"schema_{service}"
    [url] = infra.create_databases(infrastructure.postgres_admin_url, [name], drop_first=True).values()
    try:
        upgrade(ROOT / "services" / service / "migrations", url)
        assert asyncio.run(differences(url, metadata)) == []
    finally:
        infra.drop_databases(infrastructure.postgres_admin_url, [name])
