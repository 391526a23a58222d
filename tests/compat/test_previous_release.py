"""Mixed versions, end to end (SPEC section 11): a partner built from the previous release (a git
worktree of tests/compat/previous-release, its own virtualenv) works with today's bridge and today's
other partner, in both roles: outsource, accept, notes both ways, Insource Complete, reject, approve."""
import asyncio

import httpx
import pytest

from shared.platform.bundle import Bundle
from tests.e2e.flows import approve, arrived, insource_status, new_ticket, outsource_status, received
from tests.e2e.test_partner_directory import fresh_id
from tests.harness import ServiceProcess, wait_for_directory

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def onboard(bridge: httpx.AsyncClient, role: str) -> Bundle:
    pid = fresh_id("oldglobex" if role == "insourcing" else "oldacme")
    answer = await bridge.post("/api/partners", json={"id": pid, "name": f"{pid} (previous release)", "role": role})
    assert answer.status_code == 201, answer.text
    return Bundle.model_validate(answer.json()["bundle"])


async def seed_flow(lead: httpx.AsyncClient, insourcing: httpx.AsyncClient, partner_id: str) -> None:
    """The seed's flow across the two companies, each step checked on the other side."""
    ticket = await new_ticket(lead, "Printer offline at the front desk")
    answer = await lead.post(f"/api/tickets/{ticket['id']}/outsource",
                             json={"partner_id": partner_id, "instructions": "Please go on site today"})
    assert answer.status_code == 202, answer.text
    link_id = answer.json()["link_id"]
    work = await received(insourcing, link_id, "Pending", timeout=30)
    assert work["title"] == "Printer offline at the front desk"
    accepted = await insourcing.post(f"/api/received-work/{link_id}/accept")
    assert accepted.status_code == 200, accepted.text
    insourced_id = accepted.json()["ticket_id"]
    await outsource_status(lead, ticket["id"], "In Progress", timeout=30)

    # Notes both ways.
    sent = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "The printer is on the 2nd floor"})
    assert sent.status_code == 201, sent.text
    await arrived(insourcing, insourced_id, "notes", lambda n: n["body"] == "The printer is on the 2nd floor", timeout=30)
    back = await insourcing.post(f"/api/tickets/{insourced_id}/notes", json={"body": "Toner replaced, testing"})
    assert back.status_code == 201, back.text
    await arrived(lead, ticket["id"], "notes", lambda n: n["body"] == "Toner replaced, testing", timeout=30)

    # Insource Complete, rejected: synchronization resumes.
    done = await insourcing.post(f"/api/tickets/{insourced_id}/insource/complete")
    assert done.status_code == 200, done.text
    await outsource_status(lead, ticket["id"], "Waiting Approval", timeout=30)
    rejected = await lead.post(f"/api/tickets/{ticket['id']}/outsource/reject", json={"reason": "Still jams on tray 2"})
    assert rejected.status_code == 200, rejected.text
    await insource_status(insourcing, insourced_id, "In Progress")
    await arrived(insourcing, insourced_id, "notes", lambda n: "Still jams on tray 2" in n["body"], timeout=30)

    # Insource Complete again, approved: the link ends on both sides.
    again = await insourcing.post(f"/api/tickets/{insourced_id}/insource/complete")
    assert again.status_code == 200, again.text
    await outsource_status(lead, ticket["id"], "Waiting Approval", timeout=30)
    approved = await approve(lead, ticket["id"])
    assert approved.status_code == 200, approved.text
    await insource_status(insourcing, insourced_id, "Complete")
    assert (await lead.get(f"/api/tickets/{ticket['id']}")).json()["outsource"]["status"] == "Complete"


async def test_an_insourcing_partner_of_the_previous_release_works_with_todays_lead_and_bridge(
        bridge, lead, services, release_partners, previous):
    bundle = await onboard(bridge, "insourcing")
    old: ServiceProcess = await asyncio.to_thread(release_partners, bundle)
    await asyncio.to_thread(wait_for_directory, services["lead_partner"], bundle.partner_id)
    async with old.client() as insourcing:
        await seed_flow(lead, insourcing, bundle.partner_id)


async def test_a_lead_of_the_previous_release_works_with_todays_insourcing_partner_and_bridge(
        bridge, insourcing, services, release_partners, previous):
    bundle = await onboard(bridge, "lead")
    old: ServiceProcess = await asyncio.to_thread(release_partners, bundle)
    await asyncio.to_thread(wait_for_directory, old, "insourcing-partner")
    async with old.client() as lead:
        await seed_flow(lead, insourcing, "insourcing-partner")
