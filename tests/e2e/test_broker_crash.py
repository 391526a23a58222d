"""The broker of record dies mid-stream (SIGKILL) and comes back on its own data: every note a user
was told was saved arrives exactly once on the other side, in order, and new notes flow again soon.
Apache Kafka only: Tansu loses everything on restart, which reconciliation (issue 9) will repair."""
import asyncio
import signal
import time

import pytest

from tests.e2e.flows import arrived, linked_tickets
from tests.e2e.test_resilience import assert_all_arrived_once_in_order, settled, write_notes
from tests.harness import LOGS

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def kill_broker_and_restart(infrastructure, after: float, down_for: float) -> float:
    """SIGKILL the broker, start it again on the same data and ports; returns when it was back."""
    broker = infrastructure.broker
    # This machine runs the suite's own Apache Kafka: a broker the suite cannot kill is a broken setup here.
    assert broker is not None, f"the broker from {infrastructure.kafka_source} is not this suite's to kill"
    await asyncio.sleep(after)
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait(30)
    await asyncio.sleep(down_for)
    broker.start(LOGS / "broker.log")
    await asyncio.to_thread(broker.wait_ready, 90)
    return time.monotonic()


async def test_a_killed_broker_loses_and_duplicates_no_acknowledged_note_either_way(lead, insourcing, infrastructure):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
    accepted_lead, accepted_partner, back_at = await asyncio.gather(
        write_notes(lead, lead_ticket["id"], "crash-lead", 60),
        write_notes(insourcing, insourced["id"], "crash-partner", 60),
        kill_broker_and_restart(infrastructure, after=0.5, down_for=2.0),
    )
    # The outbox takes every write while the broker is away: nothing is refused.
    assert len(accepted_lead) == 60 and len(accepted_partner) == 60
    await assert_all_arrived_once_in_order(insourcing, insourced["id"], "crash-lead", accepted_lead)
    await assert_all_arrived_once_in_order(lead, lead_ticket["id"], "crash-partner", accepted_partner)

    # New notes flow again within 30 s of the broker being back.
    await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "after the crash"})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "after the crash",
                  timeout=max(1.0, 30 - (time.monotonic() - back_at)))
    await settled(lead, insourcing)
