"""`make run` as a newcomer uses it: everything comes up ready, a component that dies is restarted
(the broker and the database included), and SIGTERM (like Ctrl-C) leaves no process behind."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from devstack import infra, kafka_broker
from tests.e2e.flows import arrived, linked_tickets
from tests.harness import ROOT, eventually


@pytest.fixture
def stack_env(infrastructure, base_env):
    names = [f"devstack_{n}_{os.getpid()}" for n in ("lead", "insourcing", "bridge")]
    urls = infra.create_databases(infrastructure.postgres_admin_url, names, drop_first=True)
    ports = {k: infra.free_port() for k in ("LEAD_PORT", "INSOURCING_PORT", "BRIDGE_PORT", "DEVSTACK_SMTP_PORT")}
    env = {
        **base_env,
        "LEAD_DATABASE_URL": urls[names[0]],
        "INSOURCING_DATABASE_URL": urls[names[1]],
        "BRIDGE_DATABASE_URL": urls[names[2]],
        **{k: str(v) for k, v in ports.items()},
        # Its own partners on the session's broker, apart from the session's own two.
        "LEAD_PARTNER_ID": f"devlead-{os.getpid()}", "INSOURCING_PARTNER_ID": f"devins-{os.getpid()}",
    }
    env.pop("SMTP_HOST", None)
    yield env
    infra.drop_databases(infrastructure.postgres_admin_url, names)


class MakeRun:
    """`python -m devstack.run` (what `make run` calls) with its output in a file."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc = subprocess.Popen([sys.executable, "-m", "devstack.run"], env=env, cwd=ROOT,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_banner(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops everything" not in self.output():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.3)
        return self.output()

    def token(self, service: str) -> str:
        return self.output().split(service)[1].split("token: ")[1].split()[0]

    def client(self, service: str, port_variable: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.env[port_variable]}", timeout=30,
                                 headers={"Authorization": f"Bearer {self.token(service)}"})

    def child(self, fragment: str) -> psutil.Process:
        children = psutil.Process(self.proc.pid).children(recursive=True)
        [found] = [c for c in children if fragment in " ".join(c.cmdline())]
        return found

    def stop_and_check_nothing_is_left(self) -> None:
        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(90)
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], [p.cmdline() for p in alive]
        assert "stopped" in self.output()

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_make_run_serves_restarts_a_dead_component_and_stops_cleanly(stack_env, tmp_path):
    stack = MakeRun({**stack_env, "DEVSTACK_VAR": str(tmp_path / "var")}, tmp_path / "run.log")
    try:
        stack.wait_for_banner()
        lead = f"http://127.0.0.1:{stack_env['LEAD_PORT']}"
        created = httpx.post(f"{lead}/api/tickets", json={"title": "via make run"},
                             headers={"Authorization": f"Bearer {stack.token('lead_partner')}"})
        assert created.status_code == 201
        stack.child("services.insourcing_partner").kill()
        insourcing = f"http://127.0.0.1:{stack_env['INSOURCING_PORT']}"
        deadline = time.monotonic() + 30
        while not ready(insourcing):
            assert time.monotonic() < deadline, "the dead component was not restarted"
            time.sleep(0.2)
        assert "insourcing_partner died; restarting" in stack.output()
        stack.stop_and_check_nothing_is_left()
    finally:
        stack.kill()


@pytest.fixture
def own_stack_env(tmp_path):
    """Nothing given: make run starts its own broker and database, as on a newcomer's machine."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "LEAD_", "INSOURCING_", "BRIDGE_", "SMTP_", "TEST_"))}
    ports = ("LEAD_PORT", "INSOURCING_PORT", "BRIDGE_PORT", "DEVSTACK_SMTP_PORT", "DEVSTACK_KAFKA_PORT",
             "DEVSTACK_KAFKA_CONTROLLER_PORT")
    return {**env, **{k: str(infra.free_port()) for k in ports}, "DEVSTACK_VAR": str(tmp_path / "var")}


def _each_partner_runs_from_its_bundle_alone(stack: MakeRun, var: Path) -> None:
    """make run hands each partner its onboarding bundle as the hub would (SPEC section 10) and no other
    Kafka or signing setting; no service is given another's settings or the broker's super user."""
    for module, partner_id, own, other in (("lead_partner", "lead-partner", "LEAD", "INSOURCING"),
                                           ("insourcing_partner", "insourcing-partner", "INSOURCING", "LEAD")):
        path = var / "bundles" / f"{partner_id}.json"
        given = json.loads(path.read_text())
        assert path.stat().st_mode & 0o777 == 0o600
        assert given["ca_pem"] == (var / "kafka" / "ca.pem").read_text() and given["username"]
        env = stack.child(f"services.{module} serve").environ()
        assert env["PARTNER_BUNDLE_FILE"] == str(path)
        leaked = [name for name in env if name.startswith(("KAFKA_ADMIN", f"{other}_", "BRIDGE_"))
                  or name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SSL_CAFILE", f"{own}_KAFKA_PASSWORD",
                              f"{own}_SIGNING_KEYS")]
        assert leaked == [], f"{module} was given {leaked}"


@pytest.mark.asyncio(loop_scope="session")
async def test_make_run_on_apache_kafka_restarts_a_killed_broker_and_database_and_loses_nothing(own_stack_env, tmp_path):
    assert kafka_broker.unavailable_reason() is None, "this machine has a JDK and Maven: make run must use Apache Kafka"
    stack = MakeRun(own_stack_env, tmp_path / "run.log")
    try:
        banner = await asyncio.to_thread(stack.wait_for_banner)
        assert f"Apache Kafka {kafka_broker.KAFKA_VERSION} (KRaft, SASL/SCRAM over TLS, ACLs)" in banner
        assert f"its CA {tmp_path / 'var' / 'kafka' / 'ca.pem'}" in banner
        async with stack.client("lead_partner", "LEAD_PORT") as lead, \
                stack.client("insourcing_partner", "INSOURCING_PORT") as insourcing:
            lead_ticket, insourced, _ = await linked_tickets(lead, insourcing, timeout=60)
            _each_partner_runs_from_its_bundle_alone(stack, Path(own_stack_env["DEVSTACK_VAR"]))
            await _make_partner_adds_a_company_that_takes_work(stack, own_stack_env, lead, tmp_path)

            stack.child("kafka.Kafka").kill()
            await eventually(lambda: _said(stack, "Apache Kafka died; restarting"), timeout=10)
            # Written while the broker is down or coming back: kept in the outbox, then delivered.
            assert (await lead.post(f"/api/tickets/{lead_ticket['id']}/notes",
                                    json={"body": "while the broker was away"})).status_code == 201
            await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "while the broker was away",
                          timeout=60)

            _postmaster(Path(own_stack_env["DEVSTACK_VAR"]) / "pg").kill()
            await eventually(lambda: _database_away_answer(lead, lead_ticket["id"]), timeout=10)
            await eventually(lambda: _said(stack, "embedded PostgreSQL died; restarting"), timeout=10)
            await eventually(lambda: _note_accepted(lead, lead_ticket["id"], "after the database came back"),
                             timeout=60)
            await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "after the database came back",
                          timeout=60)
        await asyncio.to_thread(stack.stop_and_check_nothing_is_left)
    finally:
        stack.kill()


async def _make_partner_adds_a_company_that_takes_work(stack: MakeRun, env: dict, lead: httpx.AsyncClient,
                                                      tmp_path: Path) -> None:
    """`make partner` beside the running make run (SPEC section 10): onboarded through the bridge, its own
    database under var/, its URL and token printed; the lead can outsource to it at once, notes cross,
    and Ctrl-C stops it and its database."""
    port = infra.free_port()
    log = tmp_path / "partner.log"
    partner = subprocess.Popen(["make", "--no-print-directory", "partner", "ROLE=insourcing", "ID=globex",
                                "NAME=Globex Field Services", f"PORT={port}", "TOKEN=ip_chosen_by_globex"],
                               env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        await eventually(lambda: _said_in(log, "Ctrl-C stops it"), timeout=120, interval=0.5)
        printed = log.read_text()
        assert f"http://127.0.0.1:{port}" in printed and "token: ip_chosen_by_globex" in printed, printed
        var = Path(env["DEVSTACK_VAR"])
        assert (var / "partners" / "globex" / "pg").is_dir()
        assert (var / "partners" / "globex" / "bundle.json").stat().st_mode & 0o777 == 0o600
        await eventually(lambda: _lists(lead, "globex"), timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": "Bearer ip_chosen_by_globex"}) as globex:
            ticket = (await lead.post("/api/tickets", json={"title": "For Globex"})).json()
            answer = await lead.post(f"/api/tickets/{ticket['id']}/outsource", json={"partner_id": "globex"})
            assert answer.status_code == 202, answer.text
            link_id = answer.json()["link_id"]
            work = await eventually(lambda: _received(globex, link_id), timeout=60)
            assert work["lead_partner"] == "Lead Partner"
            accepted = await globex.post(f"/api/received-work/{link_id}/accept")
            assert accepted.status_code == 200, accepted.text
            await globex.post(f"/api/tickets/{accepted.json()['ticket_id']}/notes", json={"body": "Globex on site"})
            await arrived(lead, ticket["id"], "notes", lambda n: n["body"] == "Globex on site", timeout=60)
    finally:
        os.killpg(partner.pid, signal.SIGINT)
        partner.wait(60)
    assert "stopping globex" in log.read_text()
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"]
                and str(Path(env["DEVSTACK_VAR"]) / "partners" / "globex") in " ".join(p.info["cmdline"])]


async def _said_in(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


async def _lists(lead: httpx.AsyncClient, partner_id: str) -> bool:
    return partner_id in [p["id"] for p in (await lead.get("/api/partners")).json()]


async def _received(client: httpx.AsyncClient, link_id: str) -> dict | None:
    return next((w for w in (await client.get("/api/received-work", params={"limit": 500})).json()["items"]
                 if w["link_id"] == link_id), None)


def _postmaster(data_dir: Path) -> psutil.Process:
    """pg_ctl detaches the server, so it is found by its data folder, not among make run's children."""
    [found] = [p for p in psutil.process_iter(["cmdline"])
               if p.info["cmdline"] and "-D" in p.info["cmdline"] and str(data_dir) in p.info["cmdline"]]
    return found


async def _said(stack: MakeRun, text: str) -> bool:
    return text in stack.output()


async def _database_away_answer(lead: httpx.AsyncClient, ticket_id: str) -> bool:
    """While the database is away: a 503 with Retry-After, never a 500, and /readyz says why."""
    answer = await lead.get(f"/api/tickets/{ticket_id}")
    if answer.status_code == 200:
        return False  # not noticed yet
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"]
    readyz = await lead.get("/readyz")
    assert readyz.status_code == 503 and "database unreachable" in readyz.text, readyz.text
    return True


async def _note_accepted(lead: httpx.AsyncClient, ticket_id: str, body: str) -> bool:
    answer = await lead.post(f"/api/tickets/{ticket_id}/notes", json={"body": body})
    assert answer.status_code in (201, 503), answer.text
    return answer.status_code == 201


@pytest.mark.asyncio(loop_scope="session")
async def test_kafka_brokers_3_make_run_serves_through_a_killed_node(own_stack_env, tmp_path):
    """SPEC section 13: `KAFKA_BROKERS=3 make run` starts a cluster of three, every topic on three brokers;
    a node killed is started again, and notes cross meanwhile."""
    stack = MakeRun({**own_stack_env, "KAFKA_BROKERS": "3"}, tmp_path / "run.log")
    try:
        banner = await asyncio.to_thread(stack.wait_for_banner, 240)
        assert "a cluster of 3 nodes" in banner and "every topic on 3 brokers, 2 in sync" in banner, banner
        var = Path(own_stack_env["DEVSTACK_VAR"])
        assert all((var / "kafka" / f"node-{n}" / "log" / "meta.properties").exists() for n in (1, 2, 3))
        async with stack.client("lead_partner", "LEAD_PORT") as lead, \
                stack.client("insourcing_partner", "INSOURCING_PORT") as insourcing:
            lead_ticket, insourced, _ = await linked_tickets(lead, insourcing, timeout=90)
            stack.child(str(var / "kafka" / "node-2" / "server.properties")).kill()
            await eventually(lambda: _said(stack, "Kafka node 2 died; restarting"), timeout=10)
            assert (await lead.post(f"/api/tickets/{lead_ticket['id']}/notes",
                                    json={"body": "while node 2 was away"})).status_code == 201
            await arrived(insourcing, insourced["id"], "notes", lambda n: n["body"] == "while node 2 was away",
                          timeout=30)
        await asyncio.to_thread(stack.stop_and_check_nothing_is_left)
    finally:
        stack.kill()
