"""What the container tests do as users of the deployed partners: over their published ports only."""
import asyncio
from collections import Counter

import httpx

from tests.e2e.flows import items, new_ticket, outsource_status, received
from tests.harness import eventually

CONVERGE_S = 120.0  # Kafka clients cut off for 30 s back off before reconnecting


async def linked(lead: httpx.AsyncClient, insourcing: httpx.AsyncClient, partner_id: str, title: str) -> tuple[dict, dict, str]:
    """A lead ticket outsourced to `partner_id` and accepted there: (lead ticket, insourced ticket, link id)."""
    lead_ticket = await new_ticket(lead, title)
    answer = await lead.post(f"/api/tickets/{lead_ticket['id']}/outsource",
                             json={"partner_id": partner_id, "instructions": "Please look today",
                                   "terms": {"rate_type": "hourly", "rate": 95, "authorized_hours": 6}})
    assert answer.status_code == 202, answer.text
    link_id = answer.json()["link_id"]
    await received(insourcing, link_id, "Pending", timeout=60)
    accepted = await insourcing.post(f"/api/received-work/{link_id}/accept")
    assert accepted.status_code == 200, accepted.text
    await outsource_status(lead, lead_ticket["id"], "In Progress", timeout=60)
    insourced = (await insourcing.get(f"/api/tickets/{accepted.json()['ticket_id']}")).json()
    return lead_ticket, insourced, link_id


async def add(client: httpx.AsyncClient, ticket_id: str, kind: str, body: dict) -> dict:
    answer = await client.post(f"/api/tickets/{ticket_id}/{kind}", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def note(client: httpx.AsyncClient, ticket_id: str, body: str) -> None:
    await add(client, ticket_id, "notes", {"body": body})


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

    await eventually(check, timeout=CONVERGE_S, interval=1)
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
