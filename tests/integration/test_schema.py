"""One source for the schema: each service's migrations, applied to an empty database, build exactly
the tables its models describe (Alembic's autogenerate comparison finds nothing to do)."""
import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from devstack import infra
from services.insourcing_partner.models import metadata as insourcing_metadata
from services.lead_partner.models import metadata as lead_metadata
from services.sync_bridge.models import metadata as bridge_metadata
from shared.platform.db import asyncpg_dsn
from shared.platform.migrations import alembic_config, upgrade
from shared.platform.records import unpack_headers

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


def test_dead_letters_parked_before_keep_their_key_and_headers_as_bytes_across_the_upgrade_and_back(infrastructure):
    """Migration 0006 of a partner (0009 of the bridge): a key stored as text becomes its UTF-8 bytes,
    headers stored as JSON (base64 values) become packed bytes a replay verifies; and back."""
    name = "schema_dead_letters"
    [url] = infra.create_databases(infrastructure.postgres_admin_url, [name], drop_first=True).values()
    migrations = ROOT / "services" / "lead_partner" / "migrations"
    try:
        command.upgrade(alembic_config(migrations, url), "0005")
        run(url, "INSERT INTO dead_letters (topic, partition, \"offset\", key, reason, headers) VALUES "
                 "('t', 0, 7, 'link-ü', 'old', '[[\"signature\", \"YWJj\"], [\"empty\", \"\"]]')")
        upgrade(migrations, url)
        [(key, headers)] = run(url, "SELECT key, headers FROM dead_letters")
        assert key == "link-ü".encode() and unpack_headers(headers) == [("signature", b"abc"), ("empty", b"")]
        command.downgrade(alembic_config(migrations, url), "0005")
        assert run(url, "SELECT key, headers FROM dead_letters") == [("link-ü", [["signature", "YWJj"], ["empty", ""]])]
    finally:
        infra.drop_databases(infrastructure.postgres_admin_url, [name])


def run(url: str, sql: str) -> list[tuple]:
    async def go():
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(go())
