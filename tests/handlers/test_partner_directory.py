"""The lead's insourcing partners follow the hub's directory (SPEC section 10): the latest
`directory.partners` is kept (never an older one), served by GET /api/partners and the Outsource form,
and it alone says to whom the lead may outsource; the lead asks for it at each start. The lead's real
routes run over ASGI on the handler tests' database (no Kafka)."""
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from devstack import infra
from services.lead_partner.app import create_app
from services.lead_partner.models import Outsourcing, PartnerDirectory
from services.lead_partner.outsourcing import LeadOutsourcing
from services.lead_partner.settings import LeadSettings
from shared.contracts.envelope import parse
from shared.contracts.messages import DirectoryChanged, DirectoryEntry
from shared.domain.tickets.service import create_ticket
from shared.platform.auth import Permission, TokenCache, create_token
from shared.platform.inbox import Rejected
from shared.platform.migrations import upgrade
from shared.platform.outbox import OutboxMessage
from tests.handlers.sides import PARTNER, Side, directory

pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parents[2]

GLOBEX = DirectoryEntry(id="globex", name="Globex")
INITECH = DirectoryEntry(id="initech", name="Initech")


async def held(lead: Side) -> int:
    """The version of the directory the lead holds."""
    return (await lead.get(PartnerDirectory, 1)).version


@asynccontextmanager
async def http(side: Side, url: str):
    """The lead's HTTP app (API and pages) over ASGI on `side`'s database, with an operator token;
    the state its lifespan would set is the handler tests' own (no Kafka is started)."""
    app = create_app(LeadSettings(database_url=url, signing_keys="k1:" + "s" * 32))
    app.state.sessions, app.state.token_cache = side.sessions, TokenCache()
    app.state.outsourcing, app.state.sync_policy = side.service, side.service.mirroring
    async with side.sessions() as session, session.begin():
        _, token = await create_token(session, "operator", [Permission.TICKETS, Permission.OUTSOURCING], "lp")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lead",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        client.token = token
        yield client


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def lead_api(lead, handler_databases):
    async with http(lead, handler_databases["lead_partner"]) as client:
        yield client


@pytest.fixture(scope="module")
def fresh_lead_database(infrastructure):
    """A lead database just made: the hub has not answered it yet."""
    name = f"h{secrets.token_hex(4)}_fresh_lead"
    [url] = infra.create_databases(infrastructure.postgres_admin_url, [name]).values()
    upgrade(ROOT / "services" / "lead_partner" / "migrations", url)
    yield url
    infra.drop_databases(infrastructure.postgres_admin_url, [name])


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def fresh_lead(fresh_lead_database):
    service = LeadOutsourcing(LeadSettings(database_url=fresh_lead_database))
    side = Side(fresh_lead_database, service.handle)
    side.service = service
    async with http(side, fresh_lead_database) as client:
        yield side, client
    await side.engine.dispose()


async def new_ticket(lead: Side) -> str:
    async with lead.sessions() as session, session.begin():
        return (await create_ticket(session, "Badge reader")).id


async def test_get_api_partners_lists_the_directory_the_hub_sent_in_its_order(lead, lead_api):
    await lead.receive(directory(await held(lead) + 1, GLOBEX, INITECH))
    answer = await lead_api.get("/api/partners")
    assert answer.status_code == 200
    assert answer.json() == [{"id": PARTNER, "name": "Insourcing Partner"}, {"id": "globex", "name": "Globex"},
                             {"id": "initech", "name": "Initech"}]


async def test_a_partner_the_hub_removed_is_gone_from_the_list_at_the_next_version(lead, lead_api):
    await lead.receive(directory(await held(lead) + 1, GLOBEX))
    await lead.receive(directory(await held(lead) + 1))
    assert [p["id"] for p in (await lead_api.get("/api/partners")).json()] == [PARTNER]


async def test_an_older_or_equal_directory_version_arriving_late_changes_nothing(lead, lead_api):
    version = await held(lead) + 5
    await lead.receive(directory(version, GLOBEX))
    await lead.receive(directory(version - 1, INITECH))  # older: it was overtaken
    await lead.receive(directory(version, INITECH))  # the same version again
    assert await held(lead) == version
    assert [p["id"] for p in (await lead_api.get("/api/partners")).json()] == [PARTNER, "globex"]


async def test_the_lead_outsources_to_a_partner_of_the_directory_under_the_name_the_hub_gave(lead, lead_api):
    await lead.receive(directory(await held(lead) + 1, GLOBEX))
    ticket_id = await new_ticket(lead)
    answer = await lead_api.post(f"/api/tickets/{ticket_id}/outsource", json={"partner_id": "globex"})
    assert answer.status_code == 202, answer.text
    assert (answer.json()["partner_id"], answer.json()["partner_name"], answer.json()["status"]) == (
        "globex", "Globex", "Assigned")
    assert (await lead.get(Outsourcing, answer.json()["link_id"])).partner_name == "Globex"


async def test_outsourcing_to_a_partner_not_in_the_directory_is_refused_naming_those_it_may_choose(lead, lead_api):
    await lead.receive(directory(await held(lead) + 1, GLOBEX))
    await lead.receive(directory(await held(lead) + 1))  # the hub removed Globex
    ticket_id = await new_ticket(lead)
    for stranger in ("globex", "initech"):
        answer = await lead_api.post(f"/api/tickets/{ticket_id}/outsource", json={"partner_id": stranger})
        assert answer.status_code == 404
        assert answer.json()["detail"] == f"unknown partner {stranger!r}; this lead partner may outsource to: {PARTNER}"
    assert (await lead_api.get(f"/api/tickets/{ticket_id}")).json()["outsource"] is None


async def test_the_outsource_form_offers_the_directorys_partners(lead, lead_api):
    await lead.receive(directory(await held(lead) + 1, GLOBEX))
    ticket_id = await new_ticket(lead)
    signed_in = await lead_api.post("/signin", data={"token": lead_api.token, "next": f"/tickets/{ticket_id}"})
    assert signed_in.status_code == 303
    page = await lead_api.get(f"/tickets/{ticket_id}")
    assert page.status_code == 200
    assert '<option value="insourcing-partner">Insourcing Partner</option>' in page.text
    assert '<option value="globex">Globex</option>' in page.text
    assert "has not sent any insourcing partner" not in page.text


async def test_a_lead_with_a_fresh_database_lists_no_partner_and_says_so_on_the_form(fresh_lead):
    side, client = fresh_lead
    assert (await client.get("/api/partners")).json() == []
    ticket_id = await new_ticket(side)
    answer = await client.post(f"/api/tickets/{ticket_id}/outsource", json={"partner_id": PARTNER})
    assert answer.status_code == 404
    assert "the hub has not sent any insourcing partner yet" in answer.json()["detail"]
    await client.post("/signin", data={"token": client.token})
    page = (await client.get(f"/tickets/{ticket_id}")).text
    assert "The hub has not sent any insourcing partner yet" in page
    assert 'name="partner_id"' not in page  # no empty list to choose from
    await side.receive(directory(1))  # the hub answers
    assert '<option value="insourcing-partner">Insourcing Partner</option>' in (await client.get(f"/tickets/{ticket_id}")).text


async def test_the_lead_asks_the_hub_for_its_directory_at_start_on_its_outbound_topic(lead):
    async def asked() -> list[bytes]:
        async with lead.sessions() as session:
            return list(await session.scalars(select(OutboxMessage.value).where(
                OutboxMessage.type == "directory.requested", OutboxMessage.topic == "psa.lead-partner.outbound",
                OutboxMessage.key.is_(None))))

    before = len(await asked())
    await lead.service.directory.ask_at_start(lead.sessions)
    requests = await asked()
    assert len(requests) == before + 1
    env, _ = parse(requests[-1])
    assert (env.type, env.source, env.link_id) == ("directory.requested", "lead-partner", None)


async def test_the_insourcing_partner_refuses_a_directory_it_is_never_sent(insourcing):
    with pytest.raises(Rejected, match="directory.partners is not for the insourcing partner"):
        await insourcing.receive(DirectoryChanged(version=1, partners=[GLOBEX]))
