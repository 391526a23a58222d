"""The bridge's backlog view (issue 11: backpressure you can see) against a real PostgreSQL: the
open links whose partners last reported items waiting for a receipt, most first, and the bridge's own
lag per partition, most first."""
import asyncio
from pathlib import Path
from types import SimpleNamespace

from aiokafka import TopicPartition

from devstack import infra
from services.sync_bridge.endpoints import backlog_of
from services.sync_bridge.models import Link
from shared.platform.db import make_engine, make_sessionmaker
from shared.platform.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]


def link(n: int, lead_pending: int | None, insourcing_pending: int | None, oldest: str | None = None,
         state: str = "active") -> Link:
    def health(pending):
        return None if pending is None else {"pending": pending, "delivered": 3, "refused": 0, "oldest_pending_at": oldest}
    return Link(id=f"link-{n}", state=state, lead_partner_id="lead", lead_ticket_id=f"t{n}",
                insourcing_partner_id="partner", lead_health=health(lead_pending),
                insourcing_health=health(insourcing_pending))


async def read_backlog(url: str, consumer) -> dict:
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        async with sessions() as session, session.begin():
            session.add_all([
                link(1, 2, 0, "2026-11-27T10:00:00+00:00"),
                link(2, None, None),  # never reconciled: nothing reported
                link(3, 0, 0),  # in step
                link(4, 40, 5, "2026-11-27T09:00:00+00:00"),
                link(5, None, 7),
                link(6, 90, 0, state="terminated"),  # ended: its last report stays as it was
            ])
        async with sessions() as session:
            return (await backlog_of(session, consumer)).model_dump()
    finally:
        await engine.dispose()


def test_the_links_with_receipts_outstanding_come_most_first_beside_the_lag_per_partition(infrastructure):
    name = "backlog_view"
    [url] = infra.create_databases(infrastructure.postgres_admin_url, [name], drop_first=True).values()
    try:
        upgrade(ROOT / "services" / "sync_bridge" / "migrations", url)
        consumer = SimpleNamespace(lag={TopicPartition("psa.lead.outbound", 0): 0, TopicPartition("psa.lead.outbound", 1): 12,
                                        TopicPartition("psa.partner.outbound", 0): 3})
        backlog = asyncio.run(read_backlog(url, consumer))
    finally:
        infra.drop_databases(infrastructure.postgres_admin_url, [name])

    assert backlog["waiting"] == 15
    assert [(p["topic"], p["partition"], p["waiting"]) for p in backlog["partitions"]] == [
        ("psa.lead.outbound", 1, 12), ("psa.partner.outbound", 0, 3), ("psa.lead.outbound", 0, 0)]
    assert [(l["link_id"], l["lead_pending"], l["insourcing_pending"]) for l in backlog["links"]] == [
        ("link-4", 40, 5), ("link-5", 0, 7), ("link-1", 2, 0)]
    assert backlog["links"][0]["oldest_pending_at"].isoformat() == "2026-11-27T09:00:00+00:00"
    assert backlog["links"][1]["oldest_pending_at"] is None
