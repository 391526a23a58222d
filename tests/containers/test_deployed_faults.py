"""Faults of the deployed system (deploy/hub and deploy/partner run apart, tests/containers/conftest.py):
an insourcing partner cut off from the hub's Kafka, a rolling restart of the bridge's replicas, a
partner's database restarted. Nothing is lost and nothing arrives twice."""
import asyncio
import shutil
import subprocess
import time

import httpx
import pytest

from devstack import containers
from tests.containers.deployment import FIRST, LEAD, Partner, wait_ready
from tests.containers.steps import bodies, each_exactly_once, linked, note, note_when_the_database_answers

pytestmark = pytest.mark.containers


def _firewall(partner: Partner, action: str, kafka_ports: list[str]) -> None:
    """Adds (-I) or removes (-D) rules in the partner container's own network namespace that cut it off
    from every one of the hub's Kafka ports both ways, as a cut line would (one way only, the answer to a
    fetch sent just before the cut still came in): its published port and database still answer."""
    for tool in ("nsenter", "iptables"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is needed to cut a container off (util-linux, iptables)", pytrace=False)
    pid = partner.project.inspect(partner.container())["State"]["Pid"]
    ports = ",".join(kafka_ports)
    for rule in (["OUTPUT", "-p", "tcp", "-m", "multiport", "--dports", ports, "-j", "REJECT"],
                 ["INPUT", "-p", "tcp", "-m", "multiport", "--sports", ports, "-j", "DROP"]):
        subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "iptables", action, *rule], check=True,
                       capture_output=True, timeout=30)


async def test_an_insourcing_partner_cut_off_from_the_hubs_kafka_for_30_s_converges_exactly_once(
        hub, partners, lead, insourcing):
    lead_ticket, insourced, _ = await linked(lead, insourcing, FIRST, "Switch down")
    from_lead = [f"lead note {i} during the partition" for i in range(10)]
    from_insourcing = [f"insourcing note {i} during the partition" for i in range(10)]
    kafka_ports = hub.kafka_ports()

    _firewall(partners[FIRST], "-I", kafka_ports)
    try:
        cut_at = time.monotonic()
        for i, (lead_body, insourcing_body) in enumerate(zip(from_lead, from_insourcing)):
            await note(lead, lead_ticket["id"], lead_body)
            await note(insourcing, insourced["id"], insourcing_body)  # its own database still answers
            await asyncio.sleep(max(0.0, cut_at + 3 * (i + 1) - time.monotonic()))  # a pair every 3 s for 30 s
        # Cut off, the insourcing partner has heard nothing of what the lead wrote.
        heard = set(from_lead) & set(await bodies(insourcing, insourced["id"]))
        assert not heard, f"heard while cut off: {sorted(heard)}"
    finally:
        _firewall(partners[FIRST], "-D", kafka_ports)

    await each_exactly_once(insourcing, insourced["id"], from_lead)
    await each_exactly_once(lead, lead_ticket["id"], from_insourcing)


async def test_a_rolling_restart_of_two_bridge_replicas_loses_and_duplicates_nothing(hub, lead, insourcing):
    hub.project.compose("up", "--detach", "--no-recreate", "--scale", "sync-bridge=2", "sync-bridge")
    replicas = hub.project.container_ids("sync-bridge")
    assert len(replicas) == 2
    for url in hub.bridge_urls():
        wait_ready(url, hub.project)
    lead_ticket, insourced, _ = await linked(lead, insourcing, FIRST, "VPN flaps")
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
            port = hub.project.published(replica, "8003/tcp")
            await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", hub.project)
    finally:
        restarting.set()
        await writer

    assert len(written["lead"]) >= 10
    await each_exactly_once(insourcing, insourced["id"], written["lead"])
    await each_exactly_once(lead, lead_ticket["id"], written["insourcing"])


async def test_a_partner_database_restarted_loses_nothing_from_either_side(partners, lead, insourcing):
    lead_ticket, insourced, _ = await linked(lead, insourcing, FIRST, "Backup failed")
    project = partners[LEAD].project
    await asyncio.to_thread(project.compose, "stop", "db")
    try:
        down = httpx.get(f"{partners[LEAD].url}/readyz", timeout=10)
        assert down.status_code == 503  # the lead's service says its database is away
        await note(insourcing, insourced["id"], "written while the lead's database was down")
    finally:
        await asyncio.to_thread(project.compose, "start", "db")

    await note_when_the_database_answers(lead, lead_ticket["id"], "written after the lead's database came back")
    await each_exactly_once(lead, lead_ticket["id"], ["written while the lead's database was down"])
    await each_exactly_once(insourcing, insourced["id"], ["written after the lead's database came back"])
