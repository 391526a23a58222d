"""The hub's partner directory (SPEC section 10), as a hub operator and the partners' companies meet it:
onboarding through the bridge's API and its command line, what an onboarded partner's Kafka user may do,
a lead outsourcing to two insourcing partners started from their bundles, rotation within and after
KEY_GRACE_S, removal with a link open, and the directory surviving a bridge restart."""
import asyncio
import json
import secrets

import httpx
import pytest
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from shared.contracts.envelope import envelope
from shared.contracts.messages import DirectoryRequested
from shared.platform.bundle import Bundle
from shared.platform.kafka import (
    KafkaAccess,
    inbound_topic,
    list_topics,
    outbound_topic,
    partner_group,
)
from shared.platform.signing import KeyRing
from tests.conftest import KEY_GRACE_S
from tests.e2e.flows import every, items, new_ticket, outsource_status, received
from tests.harness import PartnerServices, eventually, kafka_read, kafka_write, wait_for_directory

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEAD, PARTNER = "lead-partner", "insourcing-partner"


def fresh_id(word: str) -> str:
    return f"{word}-{secrets.token_hex(3)}"


async def onboard(bridge: httpx.AsyncClient, role: str, name: str | None = None) -> Bundle:
    pid = fresh_id("globex" if role == "insourcing" else "acme")
    answer = await bridge.post("/api/partners", json={"id": pid, "name": name or pid.title(), "role": role})
    assert answer.status_code == 201, answer.text
    assert answer.json()["partner"] == {**answer.json()["partner"], "id": pid, "role": role, "status": "active"}
    return Bundle.model_validate(answer.json()["bundle"])


def access_of(bundle: Bundle, password: str | None = None) -> KafkaAccess:
    return KafkaAccess(bundle.bootstrap_servers, bundle.username, password or bundle.password,
                       tls=bundle.ca_pem is not None, ssl_cadata=bundle.ca_pem)


def as_partner(bundle: Bundle, payload, key_id: str, key: str, link_id: str | None = None) -> tuple[bytes, list]:
    """A message as the partner's service writes it, signed with the key named."""
    value = envelope(payload, source=bundle.partner_id, link_id=link_id).to_bytes()
    return value, KeyRing({key_id: key.encode()}, key_id).sign(bundle.outbound_topic, value)


async def parked_reason(bridge: httpx.AsyncClient, topic: str, after: int = 0) -> str:
    async def check():
        letters = (await bridge.get("/api/dead-letters", params={"limit": 500})).json()
        found = [d for d in letters if d["topic"] == topic and d["id"] > after]
        return found[0]["reason"] if found else None

    return await eventually(check, timeout=30)


@pytest.fixture(scope="session")
def partner_services(base_env, infrastructure, tmp_path_factory):
    """Partner services started from their onboarding bundles, each with its own database, stopped at the end."""
    partners = PartnerServices(base_env, infrastructure.postgres_admin_url, tmp_path_factory.mktemp("bundles"))
    yield partners.start
    partners.stop()


# --- the onboarding API ------------------------------------------------------------------------


async def test_onboarding_answers_the_bundle_once_and_the_list_never_shows_a_secret(bridge, services, infrastructure):
    bundle = await onboard(bridge, "insourcing", "Globex Field Services")
    assert (bundle.outbound_topic, bundle.inbound_topic) == (outbound_topic(bundle.partner_id),
                                                             inbound_topic(bundle.partner_id))
    assert bundle.bootstrap_servers == infrastructure.kafka_bootstrap and "BEGIN CERTIFICATE" in bundle.ca_pem
    assert bundle.username and len(bundle.password) >= 32 and len(bundle.signing_key) >= 32
    assert bundle.partner_name == "Globex Field Services"

    listed = await bridge.get("/api/partners")
    assert listed.status_code == 200
    mine = [p for p in listed.json() if p["id"] == bundle.partner_id]
    assert mine == [{**mine[0], "name": "Globex Field Services", "role": "insourcing", "status": "active",
                     "source": "api", "removed_at": None}]
    for secret in (bundle.password, bundle.signing_key):
        assert secret not in listed.text
    # The configured partners are listed too, as such.
    assert {(p["id"], p["source"]) for p in listed.json()} >= {(LEAD, "configured"), (PARTNER, "configured")}

    # The bridge keeps the key encrypted: its database never holds it in clear.
    stored = services["sync_bridge"].cli("partners", "list")
    assert stored.returncode == 0 and bundle.partner_id in stored.stdout and bundle.signing_key not in stored.stdout


async def test_onboarding_refuses_a_taken_id_a_bad_one_and_a_token_without_the_permission(bridge, services):
    bundle = await onboard(bridge, "lead")
    again = await bridge.post("/api/partners", json={"id": bundle.partner_id, "name": "Other", "role": "lead"})
    assert again.status_code == 409 and "taken" in again.json()["detail"]
    configured = await bridge.post("/api/partners", json={"id": PARTNER, "name": "Other", "role": "insourcing"})
    assert configured.status_code == 409
    for body, problem in [({"id": "Bad_Id", "name": "X", "role": "lead"}, "lowercase"),
                          ({"id": "x", "name": "X", "role": "lead"}, "2-64"),
                          ({"id": "bridge", "name": "X", "role": "lead"}, "reserved"),
                          ({"id": fresh_id("ok"), "name": "X", "role": "admin"}, "role"),
                          ({"id": fresh_id("ok"), "name": "   ", "role": "lead"}, "name")]:
        answer = await bridge.post("/api/partners", json=body)
        assert answer.status_code == 422 and problem in answer.text, (body, answer.text)

    made = services["sync_bridge"].cli("tokens", "create", "--name", "links only", "--permission", "links")
    token = made.stdout.split("token: ")[1].strip()
    async with services["sync_bridge"].client(token) as links_only:
        for call in (links_only.get("/api/partners"),
                     links_only.post("/api/partners", json={"id": fresh_id("no"), "name": "X", "role": "lead"}),
                     links_only.delete(f"/api/partners/{bundle.partner_id}")):
            answer = await call
            assert answer.status_code == 403 and "partners" in answer.json()["detail"]
    assert (await bridge.delete("/api/partners/nobody-here")).status_code == 404


async def test_an_onboarded_partners_kafka_user_sees_and_touches_only_its_own(bridge, services, infrastructure):
    assert infrastructure.acls, f"the broker from {infrastructure.kafka_source} has no users"
    mine, other = await onboard(bridge, "insourcing"), await onboard(bridge, "insourcing")
    me = access_of(mine)
    await kafka_write(me, mine.outbound_topic)
    await kafka_read(me, mine.inbound_topic, partner_group(mine.partner_id))
    assert sorted(await list_topics(me)) == sorted([mine.outbound_topic, mine.inbound_topic])
    for topic in (other.outbound_topic, other.inbound_topic, outbound_topic(LEAD), mine.inbound_topic):
        with pytest.raises(TopicAuthorizationFailedError):
            await kafka_write(me, topic)
    for topic in (other.inbound_topic, other.outbound_topic):
        with pytest.raises(TopicAuthorizationFailedError):
            await kafka_read(me, topic, partner_group(mine.partner_id))
    for group in (partner_group(other.partner_id), partner_group(LEAD), "sync_bridge"):
        with pytest.raises(GroupAuthorizationFailedError):
            await kafka_read(me, mine.inbound_topic, group)


# --- many partners -----------------------------------------------------------------------------


@pytest.mark.broker  # also on Tansu: partners onboarded without users or TLS
async def test_a_lead_outsources_to_two_insourcing_partners_each_on_its_own_link(
        bridge, lead, insourcing, services, partner_services):
    bundle = await onboard(bridge, "insourcing", "Globex")
    globex_service = await asyncio.to_thread(partner_services, bundle)
    await asyncio.to_thread(wait_for_directory, services["lead_partner"], bundle.partner_id)
    names = {p["id"]: p["name"] for p in (await lead.get("/api/partners")).json()}
    assert names[bundle.partner_id] == "Globex" and names[PARTNER] == "Insourcing Partner"

    async with globex_service.client() as globex:
        links = {}
        for partner, client in ((PARTNER, insourcing), (bundle.partner_id, globex)):
            ticket = await new_ticket(lead, title=f"For {partner}")
            answer = await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": partner})
            assert answer.status_code == 202, answer.text
            link_id = answer.json()["link_id"]
            await received(client, link_id, "Pending")
            accepted = await client.post(f"/api/received-work/{link_id}/accept")
            assert accepted.status_code == 200, accepted.text
            await outsource_status(lead, ticket["id"], "In Progress")
            links[partner] = (ticket, link_id, accepted.json()["ticket_id"], client)

        for partner, (ticket, link_id, theirs, client) in links.items():
            note = f"Only for {partner}"
            answer = await client.post(f"/api/tickets/{theirs}/notes", json={"body": note})
            assert answer.status_code == 201, answer.text
            await eventually(lambda t=ticket, n=note: _has_note(lead, t["id"], n), timeout=20)
        # Neither insourcing partner sees the other's work.
        assert [w["link_id"] for w in await every(globex, "/api/received-work")] == [links[bundle.partner_id][1]]
        theirs = [w["link_id"] for w in await every(insourcing, "/api/received-work")]
        assert links[PARTNER][1] in theirs and links[bundle.partner_id][1] not in theirs


@pytest.mark.broker  # also on Tansu: partners onboarded without users or TLS
async def test_an_insourcing_partner_serves_two_leads_and_no_lead_hears_of_another(
        bridge, lead, insourcing, services, partner_services):
    bundle = await onboard(bridge, "lead", "Acme Managed IT")
    acme_service = await asyncio.to_thread(partner_services, bundle)
    await asyncio.to_thread(wait_for_directory, acme_service, PARTNER)
    roles = {p["id"]: p["role"] for p in (await bridge.get("/api/partners")).json()}
    async with acme_service.client() as acme:
        offered = [p["id"] for p in (await acme.get("/api/partners")).json()]
        assert PARTNER in offered and all(roles[pid] in ("insourcing", None) for pid in offered), offered
        assert LEAD not in offered and bundle.partner_id not in offered

        tickets = {}
        for client, who in ((lead, "Lead Partner"), (acme, "Acme Managed IT")):
            ticket = await new_ticket(client, title=f"From {who}")
            answer = await client.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": PARTNER})
            assert answer.status_code == 202, answer.text
            tickets[who] = (client, ticket, answer.json()["link_id"])
        for who, (client, ticket, link_id) in tickets.items():
            work = await received(insourcing, link_id, "Pending")
            assert work["lead_partner"] == who
            accepted = await insourcing.post(f"/api/received-work/{link_id}/accept")
            assert accepted.status_code == 200, accepted.text
            note = f"Answer for {who}"
            await insourcing.post(f"/api/tickets/{accepted.json()['ticket_id']}/notes", json={"body": note})
            await eventually(lambda c=client, t=ticket, n=note: _has_note(c, t["id"], n), timeout=20)
        # Each lead has its own answer only.
        assert not await _has_note(lead, tickets["Lead Partner"][1]["id"], "Answer for Acme Managed IT")
        assert not await _has_note(acme, tickets["Acme Managed IT"][1]["id"], "Answer for Lead Partner")


async def _has_note(client: httpx.AsyncClient, ticket_id: str, text: str) -> bool:
    return any(n["body"] == text for n in await items(client, ticket_id, "notes"))


# --- rotation and removal ------------------------------------------------------------------------


async def test_rotation_keeps_the_old_key_for_the_grace_and_the_old_password_for_nothing(
        bridge, services, infrastructure):
    bundle = await onboard(bridge, "lead")
    rotated = await bridge.post(f"/api/partners/{bundle.partner_id}/rotate")
    assert rotated.status_code == 200, rotated.text
    new = Bundle.model_validate(rotated.json()["bundle"])
    assert (new.signing_key_id, new.previous_signing_keys) == ("k2", {"k1": bundle.signing_key})
    assert new.password != bundle.password and new.signing_key != bundle.signing_key
    assert bundle.password not in (await bridge.get("/api/partners")).text

    me = access_of(new)

    async def answered(key_id: str, key: str) -> None:
        """The lead asks for the directory signed with this key; the bridge answers on its inbound topic
        (counted by the broker's super user, as an observer)."""
        before = await _count(infrastructure, new.inbound_topic)
        await kafka_write(me, new.outbound_topic, *as_partner(new, DirectoryRequested(), key_id, key))
        await eventually(lambda: _count_above(infrastructure, new.inbound_topic, before), timeout=20)

    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        await list_topics(access_of(bundle))  # the old password no longer logs in
    await answered("k1", bundle.signing_key)  # within the grace: the old key still verifies
    await answered("k2", new.signing_key)

    await asyncio.sleep(KEY_GRACE_S + 1)
    letters = (await bridge.get("/api/dead-letters", params={"limit": 500})).json()
    last = max((d["id"] for d in letters), default=0)
    await kafka_write(me, new.outbound_topic, *as_partner(new, DirectoryRequested(), "k1", bundle.signing_key))
    reason = await parked_reason(bridge, new.outbound_topic, after=last)
    assert "retired" in reason and "'k1'" in reason


async def _count(infrastructure, topic: str) -> int:
    return len(await kafka_read(infrastructure.kafka_admin, topic, fresh_id("observer"), timeout_ms=500))


async def _count_above(infrastructure, topic: str, before: int) -> bool:
    return await _count(infrastructure, topic) > before


async def test_removal_ends_the_open_link_tells_the_lead_and_parks_what_still_arrives(
        bridge, lead, services, partner_services, infrastructure):
    bundle = await onboard(bridge, "insourcing", "Initech")
    initech_service = await asyncio.to_thread(partner_services, bundle)
    await asyncio.to_thread(wait_for_directory, services["lead_partner"], bundle.partner_id)
    async with initech_service.client() as initech:
        ticket = await new_ticket(lead, title="Outsourced to a partner that leaves")
        answer = await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": bundle.partner_id})
        link_id = answer.json()["link_id"]
        await received(initech, link_id, "Pending")
        assert (await initech.post(f"/api/received-work/{link_id}/accept")).status_code == 200
        await outsource_status(lead, ticket["id"], "In Progress")

        removed = await bridge.delete(f"/api/partners/{bundle.partner_id}")
        assert removed.status_code == 200, removed.text
        assert removed.json()["status"] == "removed" and removed.json()["removed_at"]

        await outsource_status(lead, ticket["id"], "Canceled")
        notes = [n["body"] for n in await items(lead, ticket["id"], "notes")]
        assert any("Initech" in n and bundle.partner_id in n and "left the hub" in n for n in notes), notes
        await eventually(lambda: _not_listed(lead, bundle.partner_id), timeout=20)
        [link] = (await bridge.get("/api/links", params={"q": link_id})).json()["items"]
        assert link["state"] == "terminated"

    # Its user is gone: it cannot log in. What its key signed and still arrives is parked, with the reason.
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        await list_topics(access_of(bundle))
    letters = (await bridge.get("/api/dead-letters", params={"limit": 500})).json()
    last = max((d["id"] for d in letters), default=0)
    await kafka_write(infrastructure.kafka_admin, bundle.outbound_topic,
                *as_partner(bundle, DirectoryRequested(), bundle.signing_key_id, bundle.signing_key))
    assert "partner removed" in await parked_reason(bridge, bundle.outbound_topic, after=last)
    again = await bridge.delete(f"/api/partners/{bundle.partner_id}")
    assert again.status_code == 200  # removing twice only finishes what the first left
    taken = await bridge.post("/api/partners", json={"id": bundle.partner_id, "name": "New", "role": "lead"})
    assert taken.status_code == 409 and "never given again" in taken.json()["detail"]


async def _not_listed(lead: httpx.AsyncClient, partner_id: str) -> bool:
    return partner_id not in [p["id"] for p in (await lead.get("/api/partners")).json()]


async def test_the_command_line_onboards_lists_rotates_and_removes(services, tmp_path):
    bridge_cli = services["sync_bridge"].cli
    pid = fresh_id("cli")
    path = tmp_path / "bundle.json"
    added = bridge_cli("partners", "add", "--id", pid, "--name", "Command Line Co", "--role", "insourcing",
                       "--bundle-file", str(path))
    assert added.returncode == 0, added.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    bundle = Bundle.model_validate_json(path.read_text())
    assert bundle.partner_id == pid and bundle.password not in added.stdout
    listed = bridge_cli("partners", "list")
    assert f"{pid}  Command Line Co  insourcing  active  api" in listed.stdout
    assert bundle.password not in listed.stdout and bundle.signing_key not in listed.stdout
    rotated = bridge_cli("partners", "rotate", pid)
    assert rotated.returncode == 0 and json.loads(rotated.stdout)["signing_key_id"] == "k2"
    assert bridge_cli("partners", "remove", pid).returncode == 0
    assert f"{pid}  Command Line Co  insourcing  removed" in bridge_cli("partners", "list").stdout
    refused = bridge_cli("partners", "add", "--id", "Not Valid", "--name", "X", "--role", "lead")
    assert refused.returncode != 0 and "lowercase" in refused.stderr


async def test_the_directory_and_its_partners_survive_a_bridge_restart(bridge, services, infrastructure):
    bundle = await onboard(bridge, "lead")
    services["sync_bridge"].stop()
    services["sync_bridge"].start()
    services["sync_bridge"].wait_ready()
    listed = (await bridge.get("/api/partners")).json()
    assert [p["status"] for p in listed if p["id"] == bundle.partner_id] == ["active"]
    # Its key is still known: a request it signs is answered.
    before = await _count(infrastructure, bundle.inbound_topic)
    await kafka_write(access_of(bundle), bundle.outbound_topic,
                *as_partner(bundle, DirectoryRequested(), bundle.signing_key_id, bundle.signing_key))
    await eventually(lambda: _count_above(infrastructure, bundle.inbound_topic, before), timeout=30)
