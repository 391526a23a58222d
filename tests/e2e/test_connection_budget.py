"""The connection budget (issue 28): a replica opens at most DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW
+ 3 connections (15 by default), however many requests arrive at once, so six replicas and an operator
fit PostgreSQL's default max_connections of 100. A burst waits for a connection instead of opening more."""
import asyncio

import asyncpg
import pytest
from sqlalchemy import make_url

from shared.platform.config import CommonSettings
from shared.platform.db import asyncpg_dsn
from tests.e2e.flows import linked_tickets
from tests.e2e.test_poison_records import metric

pytestmark = pytest.mark.asyncio(loop_scope="session")
DEFAULTS = CommonSettings.model_fields
BUDGET = DEFAULTS["database_pool_size"].default + DEFAULTS["database_max_overflow"].default + 3


async def connections(admin_url: str, database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                                   make_url(database_url).database)
    finally:
        await conn.close()


async def test_a_burst_of_writes_stays_within_each_services_connection_budget(lead, insourcing, infrastructure,
                                                                            databases):
    lead_ticket, _, _ = await linked_tickets(lead, insourcing)
    seen = {name: 0 for name in ("lead_partner", "insourcing_partner", "sync_bridge")}

    async def watch():
        while True:
            for name in seen:
                seen[name] = max(seen[name], await connections(infrastructure.postgres_admin_url, databases[name]))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        answers = await asyncio.gather(*(lead.post(f"/api/tickets/{lead_ticket['id']}/notes",
                                                   json={"body": f"burst {n}"}) for n in range(60)))
    finally:
        watcher.cancel()
    assert [a.status_code for a in answers] == [201] * 60  # each waited for a connection, none was refused
    assert BUDGET == 15
    assert all(0 < count <= BUDGET for count in seen.values()), seen
    peak = await metric(lead, "db_pool_connections_peak")
    assert 1 <= peak <= BUDGET - 3
