"""Who gets in: bearer tokens, permissions, one partner's token at the other, revocation."""
import httpx
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_no_token_or_a_wrong_token_is_401(services):
    url = services["lead_partner"].url
    async with httpx.AsyncClient(base_url=url) as anonymous:
        answer = await anonymous.get("/api/tickets/x")
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        forged = await anonymous.post("/api/tickets", json={"title": "x"}, headers={"Authorization": "Bearer guess"})
        assert forged.status_code == 401


async def test_a_call_without_a_valid_token_is_401_whatever_its_body(services):
    """The caller is known before the body is read: a malformed body is nobody's business but a
    token holder's (SPEC section 5)."""
    lead = services["lead_partner"]
    async with httpx.AsyncClient(base_url=lead.url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer guess"}):
            malformed = await anonymous.post("/api/tickets", content=b'{"title": ', headers={
                **headers, "Content-Type": "application/json"})
            assert malformed.status_code == 401 and malformed.headers["www-authenticate"] == "Bearer"
            garbled = await anonymous.post("/api/tickets/x/attachments", content=b"--nothing", headers={
                **headers, "Content-Type": "multipart/form-data; boundary=b"})
            assert garbled.status_code == 401
    async with lead.client() as holder:
        malformed = await holder.post("/api/tickets", content=b'{"title": ', headers={"Content-Type": "application/json"})
        assert malformed.status_code == 422 and malformed.json()["errors"][0]["type"] == "json_invalid"


async def test_a_method_the_path_does_not_have_is_405_naming_every_method_it_has(lead):
    answer = await lead.request("OPTIONS", "/api/tickets/x")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, PATCH"


async def test_one_partners_token_is_unknown_to_the_other(services):
    lead_token = services["lead_partner"].token
    async with services["insourcing_partner"].client(token=lead_token) as wrong:
        assert (await wrong.post("/api/tickets", json={"title": "x"})).status_code == 401
    async with services["sync_bridge"].client(token=lead_token) as wrong:
        assert (await wrong.get("/api/links")).status_code == 401


async def test_a_token_without_ticket_access_gets_403_and_a_revoked_token_401(services):
    lead = services["lead_partner"]
    created = lead.cli("tokens", "create", "--name", "dashboard only", "--permission", "outsourcing")
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(": ", 1) for line in created.stdout.strip().splitlines())
    async with lead.client(token=fields["token"]) as limited:
        answer = await limited.post("/api/tickets", json={"title": "x"})
        assert answer.status_code == 403 and "tickets" in answer.json()["detail"]
        assert lead.cli("tokens", "revoke", fields["id"]).returncode == 0
        assert (await limited.post("/api/tickets", json={"title": "x"})).status_code == 401
    listed = lead.cli("tokens", "list").stdout
    assert fields["id"] in listed and "revoked" in listed and fields["token"] not in listed


async def test_a_new_ticket_access_token_works_and_is_stored_only_as_a_hash(services):
    lead = services["lead_partner"]
    created = lead.cli("tokens", "create", "--name", "technician", "--permission", "tickets")
    token = dict(line.split(": ", 1) for line in created.stdout.strip().splitlines())["token"]
    async with lead.client(token=token) as technician:
        assert (await technician.post("/api/tickets", json={"title": "x"})).status_code == 201
    import asyncpg

    from shared.platform.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(lead.env["LEAD_DATABASE_URL"]))
    try:
        stored = await conn.fetch("SELECT token_sha256 FROM api_tokens")
    finally:
        await conn.close()
    assert all(token not in row["token_sha256"] for row in stored)


async def test_health_readiness_and_metrics_need_no_token(services):
    for proc in services.values():
        async with httpx.AsyncClient(base_url=proc.url) as anonymous:
            assert (await anonymous.get("/healthz")).json()["status"] == "ok"
            ready = await anonymous.get("/readyz")
            assert ready.status_code == 200 and ready.json()["problems"] == []
            metrics = await anonymous.get("/metrics")
            assert "http_requests_total" in metrics.text and "outbox_relay_leader" in metrics.text


async def test_openapi_documents_every_call_of_the_spec(services):
    async with httpx.AsyncClient(base_url=services["lead_partner"].url) as anonymous:
        paths = (await anonymous.get("/openapi.json")).json()["paths"]
    for kind in ("notes", "time-entries", "charges", "attachments"):
        assert {"get", "post"} <= set(paths[f"/api/tickets/{{ticket_id}}/{kind}"])
        assert {"patch", "delete"} <= set(paths[f"/api/tickets/{{ticket_id}}/{kind}/{{item_id}}"])
    assert {"get", "patch"} <= set(paths["/api/tickets/{ticket_id}"])
    assert "/api/tickets/{ticket_id}/attachments/{item_id}/content" in paths
    async with httpx.AsyncClient(base_url=services["sync_bridge"].url) as anonymous:
        bridge_paths = (await anonymous.get("/openapi.json")).json()["paths"]
    assert "/api/links" in bridge_paths and "/api/links/{link_id}" in bridge_paths
