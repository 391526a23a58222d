"""Steps of the outsourcing workflow as a user drives them over HTTP, shared by the end-to-end tests."""
import httpx

from tests.harness import eventually

PARTNER = "insourcing-partner"


async def new_ticket(client: httpx.AsyncClient, title: str = "Server room too hot", **body) -> dict:
    answer = await client.post("/api/tickets", json={"title": title, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def every(client: httpx.AsyncClient, path: str, **params) -> list[dict]:
    """Every row of a paged list (`{items, next_cursor}`), page after page; a partner of release 1.0.0
    (tests/compat) answers its dashboards as one plain list."""
    found, cursor = [], None
    while True:
        answer = await client.get(path, params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        if isinstance(page := answer.json(), list):
            return page
        found += page["items"]
        if (cursor := page["next_cursor"]) is None:
            return found


async def received(insourcing: httpx.AsyncClient, link_id: str, status: str | None = None, timeout: float = 15.0) -> dict:
    """Waits until the insourcing partner has the work (in `status`, when given) and returns it."""

    async def check():
        work = await every(insourcing, "/api/received-work")
        found = next((w for w in work if w["link_id"] == link_id), None)
        return found if found and (status is None or found["insource_status"] == status) else None

    return await eventually(check, timeout=timeout)


async def outsource_status(lead: httpx.AsyncClient, ticket_id: str, status: str, timeout: float = 15.0) -> dict:
    async def check():
        ticket = (await lead.get(f"/api/tickets/{ticket_id}")).json()
        return ticket if ticket["outsource"] and ticket["outsource"]["status"] == status else None

    return await eventually(check, timeout=timeout)


async def outsource(lead: httpx.AsyncClient, ticket_id: str, **body) -> dict:
    answer = await lead.post(f"/api/tickets/{ticket_id}/outsource", json={"partner_id": PARTNER, **body})
    assert answer.status_code == 202, answer.text
    return answer.json()


async def linked_tickets(
    lead: httpx.AsyncClient, insourcing: httpx.AsyncClient, timeout: float = 15.0, terms: dict | None = None, **ticket
) -> tuple[dict, dict, str]:
    """A lead ticket outsourced (on these terms, if any) and accepted: (lead ticket, insourced ticket, link id)."""
    lead_ticket = await new_ticket(lead, **ticket)
    link_id = (await outsource(lead, lead_ticket["id"], instructions="Please look today",
                               **({"terms": terms} if terms else {})))["link_id"]
    await received(insourcing, link_id, "Pending", timeout=timeout)
    accepted = await insourcing.post(f"/api/received-work/{link_id}/accept")
    assert accepted.status_code == 200, accepted.text
    await outsource_status(lead, lead_ticket["id"], "In Progress", timeout=timeout)
    insourced = (await insourcing.get(f"/api/tickets/{accepted.json()['ticket_id']}")).json()
    return lead_ticket, insourced, link_id


async def items(client: httpx.AsyncClient, ticket_id: str, kind: str) -> list[dict]:
    """Every item of `kind` on the ticket, oldest first, page after page."""
    found, cursor = [], None
    while True:
        params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        answer = await client.get(f"/api/tickets/{ticket_id}/{kind}", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found += page["items"]
        if (cursor := page["next_cursor"]) is None:
            return found


async def arrived(
    client: httpx.AsyncClient, ticket_id: str, kind: str, predicate, count: int = 1, timeout: float = 15.0
) -> list[dict]:
    """Waits until `count` items of `kind` matching `predicate` are on the ticket; returns them."""

    async def check():
        found = [i for i in await items(client, ticket_id, kind) if predicate(i)]
        return found if len(found) >= count else None

    return await eventually(check, timeout=timeout)


async def insource_status(insourcing: httpx.AsyncClient, ticket_id: str, status: str) -> dict:
    async def check():
        ticket = (await insourcing.get(f"/api/tickets/{ticket_id}")).json()
        return ticket if ticket["insource"] and ticket["insource"]["status"] == status else None

    return await eventually(check)


async def waiting_approval(lead, insourcing) -> tuple[dict, dict, str]:
    """Linked tickets whose insourcing partner has pressed Insource Complete, seen by both sides."""
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    answer = await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    assert answer.status_code == 200, answer.text
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")
    return lead_ticket, insourced, link_id


async def approve(lead, ticket_id: str) -> httpx.Response:
    """The lead approves the statement it holds (as its page does), or the work alone when the partner sent none."""
    statement = await lead.get(f"/api/tickets/{ticket_id}/statement")
    body = {"statement_sha256": statement.json()["sha256"]} if statement.status_code == 200 else None
    return await lead.post(f"/api/tickets/{ticket_id}/outsource/approve", json=body)


async def mail(mailbox, address: str, subject_contains: str, count: int = 1) -> list[dict]:
    async def check():
        found = mailbox.to(address, subject_contains)
        return found if len(found) >= count else None

    return await eventually(check, timeout=30)
