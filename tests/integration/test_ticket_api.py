"""The ticket core over real HTTP against a running partner service and a real PostgreSQL."""
import asyncio
import hashlib
import re

import httpx
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIME_ENTRY = {"resource": "Ana", "date_worked": "2026-11-26", "hours": 1.5, "summary": "Replaced the fuser"}
CHARGE = {"name": "Toner", "quantity": 2, "unit_price": 19.99}


async def new_ticket(client: httpx.AsyncClient, **body) -> dict:
    answer = await client.post("/api/tickets", json={"title": "Printer offline", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_a_new_ticket_gets_a_readable_unique_number_and_no_outsourcing(lead):
    first, second = await new_ticket(lead), await new_ticket(lead, description="on floor 2")
    assert re.fullmatch(r"T\d{8}\.\d{4}", first["number"])
    assert first["number"] != second["number"]
    assert first["status"] == "New" and first["outsource"] is None
    read = (await lead.get(f"/api/tickets/{second['id']}")).json()
    assert read["description"] == "on floor 2" and read["number"] == second["number"]


async def test_the_insourcing_side_shows_insource_rather_than_outsource(insourcing):
    ticket = await new_ticket(insourcing)
    assert ticket["insource"] is None and "outsource" not in ticket


async def test_a_ticket_can_be_renamed_and_moved_through_statuses(lead):
    ticket = await new_ticket(lead)
    answer = await lead.patch(f"/api/tickets/{ticket['id']}", json={"title": "Printer fixed", "status": "In Progress"})
    assert answer.status_code == 200
    assert (await lead.get(f"/api/tickets/{ticket['id']}")).json()["title"] == "Printer fixed"
    bad = await lead.patch(f"/api/tickets/{ticket['id']}", json={"status": "Sleeping"})
    assert bad.status_code == 422 and "status" in bad.json()["detail"]


@pytest.mark.parametrize(
    "path, body, expected",
    [
        ("notes", {"title": "Call", "body": "Customer called"}, {"body": "Customer called", "title": "Call"}),
        ("time-entries", TIME_ENTRY, {"hours": 1.5, "billable": True, "resource": "Ana"}),
        ("charges", CHARGE, {"quantity": 2.0, "unit_price": 19.99, "billable": True}),
    ],
)
async def test_each_item_kind_is_added_listed_edited_and_deleted(lead, path, body, expected):
    ticket = await new_ticket(lead)
    created = await lead.post(f"/api/tickets/{ticket['id']}/{path}", json=body)
    assert created.status_code == 201, created.text
    item = created.json()
    assert {k: item[k] for k in expected} == expected
    assert item["origin"] == "local" and item["editable"] is True and item["shared"] is False

    listed = (await lead.get(f"/api/tickets/{ticket['id']}/{path}")).json()["items"]
    assert [i["id"] for i in listed] == [item["id"]]

    change = {"notes": {"body": "Edited"}, "time-entries": {"hours": 2}, "charges": {"quantity": 3}}[path]
    edited = await lead.patch(f"/api/tickets/{ticket['id']}/{path}/{item['id']}", json=change)
    assert edited.status_code == 200, edited.text
    field, value = next(iter(change.items()))
    assert (await lead.get(f"/api/tickets/{ticket['id']}/{path}")).json()["items"][0][field] == value

    assert (await lead.delete(f"/api/tickets/{ticket['id']}/{path}/{item['id']}")).status_code == 204
    assert (await lead.get(f"/api/tickets/{ticket['id']}/{path}")).json()["items"] == []


async def test_items_are_listed_oldest_first(lead):
    ticket = await new_ticket(lead)
    for n in range(5):
        await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": f"note {n}"})
    bodies = [n["body"] for n in (await lead.get(f"/api/tickets/{ticket['id']}/notes")).json()["items"]]
    assert bodies == [f"note {n}" for n in range(5)]


async def test_a_long_list_comes_a_page_at_a_time_with_a_cursor(lead):
    ticket = await new_ticket(lead)
    for n in range(7):
        await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": f"note {n}"})
    pages, cursor = [], None
    while True:
        answer = await lead.get(f"/api/tickets/{ticket['id']}/notes",
                                params={"limit": 3} | ({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        pages.append([n["body"] for n in answer.json()["items"]])
        if (cursor := answer.json()["next_cursor"]) is None:
            break
    assert pages == [["note 0", "note 1", "note 2"], ["note 3", "note 4", "note 5"], ["note 6"]]
    # A page that ends exactly at the last item says so: no empty page to fetch.
    six = (await lead.get(f"/api/tickets/{ticket['id']}/notes", params={"limit": 7})).json()
    assert len(six["items"]) == 7 and six["next_cursor"] is None


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "9" * 40}, "cursor"),
])
async def test_a_bad_page_request_is_a_422_naming_the_parameter(lead, params, field):
    ticket = await new_ticket(lead)
    answer = await lead.get(f"/api/tickets/{ticket['id']}/notes", params=params)
    assert answer.status_code == 422 and field in answer.text


async def test_an_attachment_keeps_its_bytes_and_checksum(lead):
    ticket = await new_ticket(lead)
    content = bytes(range(256)) * 4000
    answer = await lead.post(
        f"/api/tickets/{ticket['id']}/attachments",
        files={"file": ("log.bin", content, "application/octet-stream")},
        data={"internal": "true"},
    )
    assert answer.status_code == 201, answer.text
    item = answer.json()
    assert item["size"] == len(content) and item["sha256"] == hashlib.sha256(content).hexdigest()
    assert item["filename"] == "log.bin" and item["internal"] is True
    download = await lead.get(f"/api/tickets/{ticket['id']}/attachments/{item['id']}/content")
    assert download.content == content and download.headers["content-type"] == "application/octet-stream"
    renamed = await lead.patch(f"/api/tickets/{ticket['id']}/attachments/{item['id']}", json={"filename": "x.bin"})
    assert renamed.json()["filename"] == "x.bin"


async def test_an_attachment_over_10_mib_is_refused_with_413_and_nothing_is_stored(lead):
    ticket = await new_ticket(lead)
    exactly = b"a" * (10 * 1024 * 1024)
    ok = await lead.post(f"/api/tickets/{ticket['id']}/attachments", files={"file": ("max.txt", exactly, "text/plain")})
    assert ok.status_code == 201
    over = await lead.post(
        f"/api/tickets/{ticket['id']}/attachments", files={"file": ("big.txt", exactly + b"b", "text/plain")}
    )
    assert over.status_code == 413 and "10 MiB" in over.json()["detail"]
    names = [a["filename"] for a in (await lead.get(f"/api/tickets/{ticket['id']}/attachments")).json()["items"]]
    assert names == ["max.txt"]


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("", {"title": "x" * 256}, "title"),
        ("", {"title": ""}, "title"),
        ("", {"title": "ok", "description": "d" * 32_001}, "description"),
        ("/notes", {"body": "b" * 32_001}, "body"),
        ("/notes", {"body": ""}, "body"),
        ("/time-entries", {**TIME_ENTRY, "hours": 0}, "hours"),
        ("/time-entries", {**TIME_ENTRY, "hours": 24.01}, "hours"),
        ("/time-entries", {**TIME_ENTRY, "date_worked": "yesterday"}, "date_worked"),
        ("/charges", {**CHARGE, "quantity": 0}, "quantity"),
        ("/charges", {**CHARGE, "quantity": "many"}, "quantity"),
        ("/notes", {"body": "hi", "colour": "red"}, "colour"),
    ],
)
async def test_input_over_a_limit_gets_a_422_naming_the_field_and_stores_nothing(lead, path, body, field):
    ticket = await new_ticket(lead)
    url = f"/api/tickets/{ticket['id']}{path}" if path else "/api/tickets"
    answer = await lead.post(url, json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]
    if path:
        assert (await lead.get(f"/api/tickets/{ticket['id']}{path}")).json()["items"] == []


async def test_limits_hold_at_their_exact_edge(lead):
    ticket = await new_ticket(lead, title="t" * 255, description="d" * 32_000)
    assert (await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "b" * 32_000})).status_code == 201
    assert (await lead.post(f"/api/tickets/{ticket['id']}/time-entries", json={**TIME_ENTRY, "hours": 24})).status_code == 201


async def test_malformed_json_is_a_422_not_a_500(lead):
    answer = await lead.post("/api/tickets", content=b"{title:", headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and "JSON" in answer.json()["detail"]


async def test_text_the_database_cannot_store_is_a_4xx_not_a_500(lead):
    answer = await lead.post("/api/tickets", json={"title": "nul \u0000 byte"})
    assert 400 <= answer.status_code < 500


async def test_unknown_tickets_and_items_are_404(lead):
    assert (await lead.get("/api/tickets/nope")).status_code == 404
    assert (await lead.post("/api/tickets/nope/notes", json={"body": "x"})).status_code == 404
    # A list of an unknown ticket is a 404, first page or next; an existing ticket's empty list is not.
    for params in ({}, {"cursor": "5"}):
        unknown = await lead.get("/api/tickets/nope/notes", params=params)
        assert unknown.status_code == 404 and unknown.json()["detail"] == "ticket nope not found"
    ticket = await new_ticket(lead)
    for params in ({}, {"cursor": "5"}):
        empty = await lead.get(f"/api/tickets/{ticket['id']}/charges", params=params)
        assert empty.status_code == 200 and empty.json() == {"items": [], "next_cursor": None}
    missing = await lead.patch(f"/api/tickets/{ticket['id']}/notes/nope", json={"body": "x"})
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    note = (await lead.post(f"/api/tickets/{ticket['id']}/notes", json={"body": "x"})).json()
    # An item is only reachable through its own ticket and its own kind.
    other = await new_ticket(lead)
    assert (await lead.delete(f"/api/tickets/{other['id']}/notes/{note['id']}")).status_code == 404
    assert (await lead.delete(f"/api/tickets/{ticket['id']}/charges/{note['id']}")).status_code == 404


async def test_an_attachment_with_a_non_ascii_name_downloads_under_that_name(lead):
    ticket = await new_ticket(lead)
    item = (await lead.post(f"/api/tickets/{ticket['id']}/attachments",
                            files={"file": ("报告 \"final\".pdf", b"%PDF", "application/pdf")})).json()
    download = await lead.get(f"/api/tickets/{ticket['id']}/attachments/{item['id']}/content")
    assert download.status_code == 200 and download.content == b"%PDF"
    assert "filename*=UTF-8''%E6%8A%A5%E5%91%8A" in download.headers["content-disposition"]


async def test_an_attachment_name_holding_a_c1_control_character_is_a_422_naming_it_and_nothing_is_stored(lead):
    ticket = await new_ticket(lead)
    # Bytes ED A0 80 (not UTF-8: read as Latin-1, they end in U+0080) were once stored as "í\x80.txt".
    for name in (b"\xed\xa0\x80.txt", "report\u0085.txt".encode()):
        body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + name
                + b'"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n')
        answer = await lead.post(f"/api/tickets/{ticket['id']}/attachments", content=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "file.filename" and "control characters" in answer.json()["detail"]
    assert (await lead.get(f"/api/tickets/{ticket['id']}/attachments")).json()["items"] == []


async def test_an_idle_connection_outlives_a_clients_five_second_keep_alive(services):
    """A client keeps an idle connection 5 s (httpx's default); a server that closed it at the same
    moment failed the next request ("Server disconnected without sending a response", a CI run)."""
    host, port = services["lead_partner"].url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def healthz() -> bytes:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        return head

    try:
        assert (await healthz()).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(6)  # idle longer than the client's keep-alive
        assert (await healthz()).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
