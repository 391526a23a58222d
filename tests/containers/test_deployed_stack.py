"""deploy/compose.yaml run for real: each partner in its own container with its own PostgreSQL on its own
network, Kafka with per-service users and ACLs on a network the three services join, a mail sink; driven
only through the published ports, with the network cut, the bridge restarted and a database restarted."""
import asyncio
import json
import time
from collections import Counter

import httpx
import pytest

from devstack import containers
from tests.e2e.flows import arrived, items, linked_tickets, outsource_status
from tests.harness import eventually

pytestmark = pytest.mark.containers
CONVERGE_S = 120.0  # Kafka clients cut off for 30 s back off before reconnecting


async def note(client: httpx.AsyncClient, ticket_id: str, body: str) -> None:
    answer = await client.post(f"/api/tickets/{ticket_id}/notes", json={"body": body})
    assert answer.status_code == 201, answer.text


async def note_when_the_database_answers(client: httpx.AsyncClient, ticket_id: str, body: str) -> None:
    """Writes a note as a user would after a database restart: a 503 means come back a moment later."""

    async def written():
        answer = await client.post(f"/api/tickets/{ticket_id}/notes", json={"body": body})
        assert answer.status_code in (201, 503), answer.text
        return answer.status_code == 201

    await eventually(written, timeout=60, interval=1)


async def bodies(client: httpx.AsyncClient, ticket_id: str) -> Counter:
    return Counter(n["body"] for n in await items(client, ticket_id, "notes"))


async def each_exactly_once(client: httpx.AsyncClient, ticket_id: str, expected: list[str]) -> Counter:
    """Waits until every expected note is on the ticket; then none may be there twice."""

    async def check():
        found = await bodies(client, ticket_id)
        return found if all(found[b] for b in expected) else None

    found = await eventually(check, timeout=CONVERGE_S, interval=1)
    await asyncio.sleep(3)  # a duplicate would arrive right behind the original
    found = await bodies(client, ticket_id)
    assert {b: found[b] for b in expected} == {b: 1 for b in expected}
    return found


async def delivered(client: httpx.AsyncClient, ticket_id: str, kinds: set[str]) -> None:
    """Waits until the partner's notifications of these kinds about the ticket were sent."""

    async def check():
        sent = [n for n in (await client.get("/api/notifications")).json() if n["ticket_id"] == ticket_id]
        return {n["kind"] for n in sent if n["sent_at"]} >= kinds or None

    await eventually(check, timeout=60, interval=1)


async def test_the_whole_workflow_runs_through_the_published_ports(lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing, timeout=60, title="Printer offline")
    await note(lead, lead_ticket["id"], "Toner ordered")
    await note(insourcing, insourced["id"], "Fuser replaced")
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "Toner ordered", timeout=60)
    await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "Fuser replaced", timeout=60)

    completed = await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    assert completed.status_code == 200, completed.text
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval", timeout=60)
    approved = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource/approve")
    assert approved.status_code == 200, approved.text

    async def insource_complete():
        ticket = (await insourcing.get(f"/api/tickets/{insourced['id']}")).json()
        return ticket["insource"]["status"] == "Complete"

    await eventually(insource_complete, timeout=60)

    # The mail sink, on a network of its own, took each partner's notifications of this ticket.
    await delivered(lead, lead_ticket["id"], {"approval.requested", "outsourcing.complete"})
    await delivered(insourcing, insourced["id"], {"insource.complete"})


async def test_an_insourcing_partner_cut_off_from_kafka_for_30_s_converges_exactly_once(stack, lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing, timeout=60, title="Switch down")
    container = stack.container_ids("insourcing-partner")[0]
    from_lead = [f"lead note {i} during the partition" for i in range(10)]
    from_insourcing = [f"insourcing note {i} during the partition" for i in range(10)]

    containers.docker("network", "disconnect", stack.network("kafka"), container)
    try:
        cut_at = time.monotonic()
        for i, (lead_body, insourcing_body) in enumerate(zip(from_lead, from_insourcing)):
            await note(lead, lead_ticket["id"], lead_body)
            await note(insourcing, insourced["id"], insourcing_body)  # its own database still answers
            await asyncio.sleep(max(0.0, cut_at + 3 * (i + 1) - time.monotonic()))  # a pair every 3 s for 30 s
        # Cut off, the insourcing partner has heard nothing of what the lead wrote.
        assert not set(from_lead) & set(await bodies(insourcing, insourced["id"]))
    finally:
        containers.docker("network", "connect", stack.network("kafka"), container)

    await each_exactly_once(insourcing, insourced["id"], from_lead)
    await each_exactly_once(lead, lead_ticket["id"], from_insourcing)


async def test_a_rolling_restart_of_two_bridge_replicas_loses_and_duplicates_nothing(stack, lead, insourcing):
    stack.compose("up", "--detach", "--no-recreate", "--scale", "sync-bridge=2", "sync-bridge")
    replicas = stack.container_ids("sync-bridge")
    assert len(replicas) == 2
    for url in stack.bridge_urls():
        stack.wait_ready(url)
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing, timeout=60, title="VPN flaps")
    written: dict[str, list[str]] = {"lead": [], "insourcing": []}
    restarting = asyncio.Event()

    async def write_until_restarted():
        i = 0
        while not restarting.is_set():
            written["lead"].append(f"lead note {i} during the rolling restart")
            await note(lead, lead_ticket["id"], written["lead"][-1])
            written["insourcing"].append(f"insourcing note {i} during the rolling restart")
            await note(insourcing, insourced["id"], written["insourcing"][-1])
            i += 1
            await asyncio.sleep(0.5)

    writer = asyncio.create_task(write_until_restarted())
    try:
        for replica in replicas:  # one after the other, as an operator rolls a new version out
            await asyncio.to_thread(containers.docker, "restart", "--time", "10", replica)
            port = json.loads(containers.docker("inspect", replica).stdout)[0]["NetworkSettings"]["Ports"]["8003/tcp"]
            await asyncio.to_thread(stack.wait_ready, f"http://127.0.0.1:{port[0]['HostPort']}")
    finally:
        restarting.set()
        await writer

    assert len(written["lead"]) >= 10
    await each_exactly_once(insourcing, insourced["id"], written["lead"])
    await each_exactly_once(lead, lead_ticket["id"], written["insourcing"])


async def test_a_partner_database_restarted_loses_nothing_from_either_side(stack, lead, insourcing):
    lead_ticket, insourced, _ = await linked_tickets(lead, insourcing, timeout=60, title="Backup failed")
    await asyncio.to_thread(stack.compose, "stop", "lead-db")
    try:
        down = httpx.get(f"{stack.lead_url}/readyz", timeout=10)
        assert down.status_code == 503  # the lead's service says its database is away
        await note(insourcing, insourced["id"], "written while the lead's database was down")
    finally:
        await asyncio.to_thread(stack.compose, "start", "lead-db")

    await note_when_the_database_answers(lead, lead_ticket["id"], "written after the lead's database came back")
    await each_exactly_once(lead, lead_ticket["id"], ["written while the lead's database was down"])
    await each_exactly_once(insourcing, insourced["id"], ["written after the lead's database came back"])
