"""Workers beside the API (issue 30): a service run as `serve --api-only` and a `worker` beside it, each a
process of its own on the one database. The API answers a POST whatever its worker is doing (frozen
here), the worker publishes what the API wrote (a NOTIFY crosses processes), and the pair syncs as the
one process did. The suite's lead is run so for this module, on its own database and Kafka user."""
import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.flows import arrived, items, linked_tickets
from tests.harness import LOGS, ROOT, ServiceProcess, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def split_lead(services, base_env):
    """The suite's lead stopped, and started again as an API process and a worker; the usual one back after."""
    usual = services["lead_partner"]
    usual.stop()
    split = ServiceProcess("lead_partner", base_env, workers=True)
    split.log_path = LOGS / "lead_partner-workers.log"
    try:
        split.start()
        split.wait_ready()
        yield split
    finally:
        split.stop()
        usual.start()
        usual.wait_ready()


async def test_a_lead_run_as_an_api_and_a_worker_syncs_both_ways(split_lead, insourcing):
    async with split_lead.client() as lead:
        lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
        await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "from the API process"})
        await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": "to the worker"})
        await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "from the API process")
        await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "to the worker")

        async def delivered():
            notes = await items(lead, lead_ticket["id"], "notes")
            return any(n["body"] == "from the API process" and n["delivery"]["status"] == "delivered" for n in notes)

        await eventually(delivered, timeout=30)  # the receipt came back, through the worker


async def test_the_api_answers_a_post_while_its_worker_is_frozen_and_the_note_crosses_after(split_lead, insourcing):
    async with split_lead.client() as lead:
        lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
        split_lead.worker_proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            answer = await lead.post(f"/api/tickets/{lead_ticket['id']}/notes", json={"body": "while frozen"})
            answered = time.monotonic() - started
            assert answer.status_code == 201, answer.text
            assert (await lead.get("/readyz")).status_code == 200  # the API needs its database only
            await asyncio.sleep(2)
            assert "while frozen" not in {n["body"] for n in await items(insourcing, insourced["id"], "notes")}
        finally:
            split_lead.worker_proc.send_signal(signal.SIGCONT)
        print(f"\nthe API answered a POST in {answered * 1000:.0f} ms with its worker frozen")
        await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "while frozen", timeout=30)


async def test_a_worker_answers_only_the_operators_probes(split_lead):
    async with httpx.AsyncClient(base_url=split_lead.worker_url, timeout=10) as worker:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await worker.get(path)).status_code == 200, path
        refused = await worker.get("/api/tickets", headers={"Authorization": f"Bearer {split_lead.token}"})
        assert refused.status_code == 404 and "serve --api-only" in refused.json()["detail"]
        # Its metrics are the messaging's: what it published and applied, more than nothing by now.
        metrics = (await worker.get("/metrics")).text
    published = [line for line in metrics.splitlines() if line.startswith("outbox_published_total ")]
    assert published and float(published[0].split()[-1]) > 0, published
    # The API process's are its own: its pool, none of the messaging's (they would read 0 there).
    api = httpx.get(f"{split_lead.url}/metrics", timeout=10).text
    assert "db_pool_connections_peak" in api and "outbox_published_total" not in api


@pytest.mark.parametrize("command", [["worker"], ["serve", "--api-only"]])
async def test_the_bridge_refuses_to_split_saying_why(base_env, command):
    done = subprocess.run([sys.executable, "-m", "services.sync_bridge", *command], env=base_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "runs as one process" in done.stderr, done.stderr[-2000:]
