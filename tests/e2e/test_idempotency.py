"""Idempotency-Key (issue 28): a create cut off by the network can be sent again. The same key and the
same request answer the first result and write nothing more, even sent at the same moment; the same key
with another request is 422; without a key every POST writes, as before."""
import asyncio
import uuid

import asyncpg
import pytest

from shared.platform.db import asyncpg_dsn
from tests.e2e.flows import items, new_ticket, received
from tests.e2e.test_web_ui import signed_in

pytestmark = pytest.mark.asyncio(loop_scope="session")


def key() -> dict:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def test_a_note_sent_again_with_its_key_is_written_once_and_answered_as_the_first_time(lead):
    ticket = await new_ticket(lead, "Idempotent notes")
    headers = key()
    first = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "sent twice"}, headers=headers)
    again = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "sent twice"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json() and again.headers.get("idempotency-replayed") == "true"
    assert "idempotency-replayed" not in first.headers
    assert [n["body"] for n in await items(lead, ticket["id"], "notes") if n["origin"] == "local"] == ["sent twice"]

    other = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "another note"}, headers=headers)
    assert other.status_code == 422 and "was used with another request" in other.json()["detail"]
    elsewhere = await new_ticket(lead, "Idempotent notes, another ticket")
    moved = await lead.post(f"/api/tickets/{elsewhere['id']}/notes", json={"body": "sent twice"}, headers=headers)
    assert moved.status_code == 422
    bad = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "x"}, headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 422  # a key is printable ASCII without spaces

    # Without a key, every POST writes, as before.
    for _ in range(2):
        assert (await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "no key"})).status_code == 201
    assert len([n for n in await items(lead, ticket["id"], "notes") if n["body"] == "no key"]) == 2


async def test_duplicates_sent_at_the_same_moment_write_one_ticket_and_all_answer_it(insourcing):
    headers, title = key(), f"Concurrent create {uuid.uuid4().hex[:8]}"
    answers = await asyncio.gather(*(insourcing.post("/api/tickets", json={"title": title}, headers=headers)
                                     for _ in range(6)))
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotency-replayed") == "true" for a in answers) == 5
    found = (await insourcing.get("/api/tickets", params={"q": title})).json()["items"]
    assert len(found) == 1


async def test_an_attachment_and_an_outsourcing_sent_again_are_written_once(lead):
    ticket = await new_ticket(lead, "Idempotent upload and outsourcing")
    headers = key()
    upload = {"file": ("scan.txt", b"the same bytes", "text/plain")}
    first = await lead.post(f"/api/tickets/{ticket['id']}/attachments", files=upload, headers=headers)
    again = await lead.post(f"/api/tickets/{ticket['id']}/attachments", files=upload, headers=headers)
    assert first.status_code == 201 and again.json()["id"] == first.json()["id"]
    changed = await lead.post(f"/api/tickets/{ticket['id']}/attachments",
                              files={"file": ("scan.txt", b"other bytes", "text/plain")}, headers=headers)
    assert changed.status_code == 422
    assert len(await items(lead, ticket["id"], "attachments")) == 1

    headers = key()
    body = {"partner_id": "insourcing-partner", "instructions": "once"}
    outsourced = [await lead.post(f"/api/tickets/{ticket['id']}/outsource", json=body, headers=headers) for _ in range(2)]
    assert [o.status_code for o in outsourced] == [202, 202]
    assert outsourced[0].json()["link_id"] == outsourced[1].json()["link_id"]
    # Without the key, the second would have been refused: the ticket is outsourced already.
    assert (await lead.post(f"/api/tickets/{ticket['id']}/outsource", json=body)).status_code == 409


async def test_the_key_is_in_the_openapi_document_of_every_create(lead):
    paths = (await lead.get("/openapi.json")).json()["paths"]
    for path in ("/api/tickets", "/api/tickets/{ticket_id}/notes", "/api/tickets/{ticket_id}/attachments",
                 "/api/tickets/{ticket_id}/outsource"):
        header = [p for p in paths[path]["post"]["parameters"] if p["in"] == "header"]
        assert [p["name"] for p in header] == ["Idempotency-Key"], path
        assert "24 hours" in header[0]["description"]


async def test_a_page_form_sent_twice_writes_once_and_each_drawing_of_the_form_has_its_own_key(browser, services, lead):
    ticket = await new_ticket(lead, "Sent twice from the page")
    page = await signed_in(browser, services["lead_partner"])
    await page.goto(f"{services['lead_partner'].url}/tickets/{ticket['id']}")
    form = page.locator("form[action$='/items/note']")
    first_key = await form.locator("input[name=idempotency_key]").input_value()
    await form.get_by_label("Body").fill("clicked twice")
    # A second click, or the browser resending the form: the same form data, key included, twice.
    statuses = await page.evaluate("""async () => {
        const form = document.querySelector("form[action$='/items/note']");
        const data = new FormData(form);
        const sent = [await fetch(form.action, {method: "POST", body: data}), await fetch(form.action, {method: "POST", body: data})];
        return sent.map(answer => answer.status);
    }""")
    assert statuses == [200, 200]  # each redirected to the ticket page
    assert [n["body"] for n in await items(lead, ticket["id"], "notes") if n["body"] == "clicked twice"] == ["clicked twice"]
    await page.reload()
    assert await form.locator("input[name=idempotency_key]").input_value() != first_key


async def test_an_onboarding_sent_again_with_its_key_answers_the_same_bundle_kept_encrypted(bridge, databases):
    pid, headers = f"retry-{uuid.uuid4().hex[:6]}", key()
    body = {"id": pid, "name": "Retry Co", "role": "insourcing"}
    first = await bridge.post("/api/partners", json=body, headers=headers)
    again = await bridge.post("/api/partners", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json() and again.headers.get("idempotency-replayed") == "true"
    # Without the key the same request is refused: onboarded once.
    assert (await bridge.post("/api/partners", json=body)).status_code == 409
    other = await bridge.post("/api/partners", json={**body, "name": "Another Co"}, headers=headers)
    assert other.status_code == 422
    # The answer kept holds the partner's secrets: encrypted at rest.
    conn = await asyncpg.connect(asyncpg_dsn(databases["sync_bridge"]))
    try:
        kept = await conn.fetchval("SELECT answer FROM idempotency_keys WHERE key = $1", headers["Idempotency-Key"])
    finally:
        await conn.close()
    assert kept and first.json()["bundle"]["password"].encode() not in kept
    assert first.json()["bundle"]["signing_key"].encode() not in kept


async def test_accepting_work_again_with_its_key_answers_the_same_ticket(lead, insourcing):
    ticket = await new_ticket(lead, "Accepted twice")
    link_id = (await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": "insourcing-partner"})).json()["link_id"]
    await received(insourcing, link_id, "Pending")
    headers = key()
    first = await insourcing.post(f"/api/received-work/{link_id}/accept", headers=headers)
    again = await insourcing.post(f"/api/received-work/{link_id}/accept", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert again.json()["ticket_id"] == first.json()["ticket_id"] and again.headers.get("idempotency-replayed") == "true"
    # Without the key the answer a lost one would have given is gone: 409, already accepted.
    assert (await insourcing.post(f"/api/received-work/{link_id}/accept")).status_code == 409


async def test_a_key_past_its_24_hours_names_a_new_request(lead, databases):
    ticket = await new_ticket(lead, "A key reused the next day")
    headers = key()
    first = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "yesterday"}, headers=headers)
    assert first.status_code == 201
    conn = await asyncpg.connect(asyncpg_dsn(databases["lead_partner"]))
    try:
        await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = $1",
                           headers["Idempotency-Key"])
    finally:
        await conn.close()
    today = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "today"}, headers=headers)
    assert today.status_code == 201 and "idempotency-replayed" not in today.headers
    assert today.json()["id"] != first.json()["id"]
    again = await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "today"}, headers=headers)
    assert again.json()["id"] == today.json()["id"]  # the key names today's request now
