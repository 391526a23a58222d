"""The reconciliation schedulers never wait on a row a consumer holds: after the broker lost data they
touch many links in one transaction, and waiting there closed deadlocks with a consumer's batch and an
API request (the request's caller got a 503, the bridge's scheduler lost 10 s). What is held is
skipped and done on the next tick."""
import asyncio

import pytest
from sqlalchemy import select

from services.sync_bridge.models import Link
from services.sync_bridge.reconciliation import Scheduler
from shared.domain.partner_sync import LinkSync, SyncWatch
from shared.platform.db import utcnow
from tests.handlers.sides import active_link, outsourced

pytestmark = pytest.mark.asyncio(loop_scope="session")

OUTBOUND = "psa.lead-partner.outbound"


async def test_the_bridge_skips_a_link_a_consumer_holds_after_a_loss_and_reconciles_it_next(bridge):
    free_link, held_link = await active_link(bridge), await active_link(bridge)
    scheduler = Scheduler(interval=30).attach(bridge.sessions)
    scheduler.broker_lost_data(OUTBOUND)
    async with bridge.sessions() as consumer, consumer.begin():
        await consumer.get(Link, held_link, with_for_update=True)  # a consumer applying an event of it
        await asyncio.wait_for(scheduler.tick(), 5)
        assert (await bridge.get(Link, free_link)).round_id is not None
        assert (await bridge.get(Link, held_link)).round_id is None
    await asyncio.wait_for(scheduler.tick(), 5)
    assert (await bridge.get(Link, held_link)).round_id is not None


async def test_a_partner_skips_a_link_whose_sync_row_is_held_after_a_loss_and_asks_about_it_next(lead):
    (_, free_link), (_, held_link) = await outsourced(lead), await outsourced(lead)  # each has its sync row
    watch = SyncWatch(lead.service.sync, interval=30).attach(lead.sessions)
    async with lead.sessions() as consumer, consumer.begin():
        await consumer.execute(select(LinkSync).where(LinkSync.link_id == held_link).with_for_update())
        await asyncio.wait_for(watch.tick(lost_since=utcnow()), 5)
        assert ("psa.lead-partner.outbound", "sync.reconcile_requested") in await lead.staged(free_link)
        assert ("psa.lead-partner.outbound", "sync.reconcile_requested") not in await lead.staged(held_link)
    await asyncio.wait_for(watch.tick(lost_since=watch._lost_since), 5)
    assert ("psa.lead-partner.outbound", "sync.reconcile_requested") in await lead.staged(held_link)
