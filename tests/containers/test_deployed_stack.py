"""deploy/ as an operator and three partner companies run it (SPEC section 10): deploy/hub/ and three
deploy/partner/ projects (one lead, two insourcing partners), whose networks share nothing, the partners
reaching the hub only by its published Kafka TLS port. Driven only through the published ports."""
import json

import pytest

from devstack import containers, deploy_env
from tests.containers.deployment import FIRST, HUB_KAFKA_HOST, LEAD, SECOND, Project
from tests.containers.steps import add, delivered, linked, note
from tests.e2e.flows import approve, arrived, items, outsource_status
from tests.harness import eventually

pytestmark = pytest.mark.containers

# Run inside the lead's container: what it can resolve and reach.
PROBE = """
import json, socket, ssl, sys
host, kafka_port, others = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
def resolves(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return None
def answers(port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False
bundle = json.load(open("/run/partner/bundle.json"))
context = ssl.create_default_context(cadata=bundle["ca_pem"])
with context.wrap_socket(socket.create_connection((host, kafka_port), timeout=5), server_hostname=host) as tls:
    subject = dict(x[0] for x in tls.getpeercert()["subject"])
print(json.dumps({"names": {n: resolves(n) for n in ("kafka-1", "kafka-2", "kafka-3", "sync-bridge", "bridge-db", "kafka-setup")},
                  "kafka_certificate": subject["commonName"], "others": [answers(p) for p in others]}))
"""


async def test_the_four_projects_share_no_network_and_a_partner_reaches_only_the_hubs_kafka_tls_port(hub, partners):
    projects = [hub.project, *(p.project for p in partners.values())]
    networks = {project.name: set().union(*project.networks().values()) for project in projects}
    for name, own in networks.items():
        assert own and all(network.startswith(f"{name}_") for network in own), (name, own)
    assert sum(len(own) for own in networks.values()) == len(set().union(*networks.values()))  # none shared
    # Inside a partner's project its service alone reaches its database, on a network with no way out.
    lead = partners[LEAD].project
    assert lead.networks()[f"{lead.name}-db-1"] == {f"{lead.name}_database"}
    assert json.loads(containers.docker("network", "inspect", f"{lead.name}_database").stdout)[0]["Internal"]

    # From the lead's container: no name of the hub's resolves; Kafka's published port answers TLS with a
    # certificate for the public name, signed by the CA in the lead's bundle; the bridge's port and the
    # other partners' ports, published on their own machine's loopback, do not answer.
    bridge_port = hub.project.published(hub.project.container_ids("sync-bridge")[0], "8003/tcp")
    other_ports = [bridge_port, *(int(partners[p].project.env["PARTNER_PUBLISHED_PORT"]) for p in (FIRST, SECOND))]
    probe = containers.docker("exec", partners[LEAD].container(), "python", "-c", PROBE, HUB_KAFKA_HOST,
                              hub.kafka_ports()[0], *map(str, other_ports))
    seen = json.loads(probe.stdout)
    assert set(seen["names"].values()) == {None}, seen["names"]
    assert seen["kafka_certificate"] == HUB_KAFKA_HOST
    assert seen["others"] == [False, False, False]


def test_a_hub_started_without_partners_reads_those_onboarded_without_a_restart(hub, partners):
    # SPEC section 10: onboarding starts serving the partner at once, nothing restarts. The hub's bridge
    # started with an empty directory; the partners were onboarded after it. (It once made no consumer
    # then, subscribing to no topic, and read nobody until restarted.)
    assert hub.reads_partners_without_a_restart


async def test_the_seed_flow_runs_between_a_lead_and_an_insourcing_partner_deployed_apart(lead, insourcing):
    lead_ticket, insourced, link_id = await linked(lead, insourcing, FIRST, "Printer offline")
    await note(lead, lead_ticket["id"], "Toner ordered")
    await note(insourcing, insourced["id"], "Fuser replaced")
    await add(insourcing, insourced["id"], "time-entries",
              {"resource": "Ana", "date_worked": "2026-11-25", "hours": 1.5, "summary": "Swapped the fuser"})
    await add(insourcing, insourced["id"], "charges", {"name": "Fuser unit", "quantity": 1, "unit_price": 80})
    await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "Toner ordered", timeout=60)
    await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "Fuser replaced", timeout=60)
    await arrived(lead, lead_ticket["id"], "time-entries", lambda e: e["summary"] == "Swapped the fuser", timeout=60)
    await arrived(lead, lead_ticket["id"], "charges", lambda c: c["name"] == "Fuser unit", timeout=60)

    completed = await insourcing.post(f"/api/tickets/{insourced['id']}/insource/complete")
    assert completed.status_code == 200, completed.text
    waiting = await outsource_status(lead, lead_ticket["id"], "Waiting Approval", timeout=60)
    assert waiting["outsource"]["partner_id"] == FIRST
    approved = await approve(lead, lead_ticket["id"])
    assert approved.status_code == 200, approved.text
    await outsource_status(lead, lead_ticket["id"], "Complete", timeout=60)

    async def insource_complete():
        ticket = (await insourcing.get(f"/api/tickets/{insourced['id']}")).json()
        return ticket["insource"]["status"] == "Complete"

    await eventually(insource_complete, timeout=60)
    # Each partner's own mail sink, on a network of its project, took its notifications of this ticket.
    await delivered(lead, lead_ticket["id"], {"approval.requested", "outsourcing.complete"})
    await delivered(insourcing, insourced["id"], {"insource.complete"})


async def test_a_partner_removed_at_run_time_cancels_the_leads_open_outsourcing_with_a_note_naming_it(
        partners, lead, bridge):
    async with partners[SECOND].client() as initech:
        lead_ticket, insourced, link_id = await linked(lead, initech, SECOND, "Firewall rules")
        await note(lead, lead_ticket["id"], "Port 443 only")
        await note(initech, insourced["id"], "Rules drafted")
        await arrived(initech, insourced["id"], "notes", lambda n: n["body"] == "Port 443 only", timeout=60)
        await arrived(lead, lead_ticket["id"], "notes", lambda n: n["body"] == "Rules drafted", timeout=60)

        removed = await bridge.delete(f"/api/partners/{SECOND}")
        assert removed.status_code == 200, removed.text
        assert removed.json()["status"] == "removed"

    await outsource_status(lead, lead_ticket["id"], "Canceled", timeout=60)
    notes = [n for n in await items(lead, lead_ticket["id"], "notes") if n["origin"] == "system"]
    assert any("Initech" in n["body"] and SECOND in n["body"] for n in notes), notes

    async def only_globex_listed():
        return [p["id"] for p in (await lead.get("/api/partners")).json()] == [FIRST]

    await eventually(only_globex_listed, timeout=30)


def test_a_new_env_on_the_hubs_volumes_stops_it_saying_to_run_down_v(hub, tmp_path):
    # An operator who wrote a new .env for a hub that already ran: Kafka's volume remembers its super user.
    other = tmp_path / "hub"
    deploy_env.main(["hub", "--dir", str(other), "--kafka-host", HUB_KAFKA_HOST])
    again = Project(hub.project.name, "hub", other / ".env")
    done = again.compose("run", "--rm", "--no-deps", "kafka-2-storage", check=False)
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert "formatted with another .env" in said and "docker compose down -v" in said, said
    # The hub itself runs on, untouched, on the .env it was made with.
    assert hub.project.container_ids("kafka-2") and hub.project.compose("run", "--rm", "--no-deps", "kafka-2-storage")
