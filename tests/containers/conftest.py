"""The deployed system for the container tests (SPEC section 10): deploy/hub/ and three deploy/partner/
projects (one lead, two insourcing partners) as four compose projects on this checkout's private Docker
engine, each with the .env `python -m devstack.deploy_env` writes (under the ignored var/containers/).
The partners are onboarded through the hub's bridge API, their bundles written to files, and started
from them; the four projects' networks share nothing, and the partners reach the hub only by its
published Kafka TLS port, under a name that resolves to the Docker host. Images and projects are made
once per session. No engine is an error, never a skip."""
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from devstack import containers, deploy_env, infra
from devstack.hub import Bridge
from tests.containers.deployment import (
    FIRST,
    HUB_KAFKA_HOST,
    LEAD,
    PARTNERS,
    PREFIX,
    SECOND,
    WORK,
    Hub,
    Partner,
    Project,
    wait_ready,
)
from tests.harness import LOGS

_ran: dict[str, str] = {}


def _fresh(name: str, kind: str, folder: Path, write_env) -> Project:
    """A project whose earlier run (an interrupted session's) is gone, volumes too, with a new .env."""
    if (folder / ".env").exists():
        Project(name, kind, folder / ".env").compose("down", "--volumes", "--remove-orphans", check=False)
    shutil.rmtree(folder, ignore_errors=True)
    write_env()
    return Project(name, kind, folder / ".env")


def _append(env_file: Path, values: dict[str, str]) -> None:
    """Settings beyond what deploy_env writes (an operator adds them the same way)."""
    with open(env_file, "a") as out:
        out.write("".join(f"{name}={value}\n" for name, value in values.items()))


def _free_ports(count: int) -> str:
    """`count` distinct free ports, comma-separated (one per Kafka broker)."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(infra.free_port())
    return ",".join(map(str, sorted(ports)))


def _two_free_ports() -> str:
    """Two consecutive free ports, one per bridge replica."""
    while True:
        first = infra.free_port()
        if not infra.port_answers("127.0.0.1", first + 1):
            return f"{first}-{first + 1}"


@pytest.fixture(scope="session")
def engine():
    """This checkout's private Docker engine with the images built; the exact error when it cannot be had."""
    try:
        containers.start_engine()
    except containers.EngineUnavailable as exc:
        _ran["engine"] = f"no Docker engine: BLOCKED ({str(exc).splitlines()[-1]})"
        pytest.fail(f"BLOCKED: no Docker engine could be started here: {exc}", pytrace=False)
    started = time.monotonic()
    containers.build_images()
    _ran["images"] = f"images built or found in the cache in {time.monotonic() - started:.0f} s"
    # For testcontainers (tests/harness.py) and the docker client: this process only, never the
    # machine's default engine.
    os.environ.update(containers.engine_env())
    version = containers.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    _ran["engine"] = f"Docker {version} on {containers.SOCKET}"


@pytest.fixture(scope="session")
def hub(engine):
    """deploy/hub/ up: three Kafka brokers, kafka-setup, the bridge and its database."""
    folder = WORK / "hub"

    def write_env():
        deploy_env.main(["hub", "--dir", str(folder), "--kafka-host", HUB_KAFKA_HOST,
                         "--kafka-ports", _free_ports(3), "--bridge-ports", _two_free_ports()])
        _append(folder / ".env", {"RECONCILE_INTERVAL_S": "10"})

    project = _fresh(f"{PREFIX}-hub", "hub", folder, write_env)
    started = time.monotonic()
    try:
        project.compose("up", "--detach")
        running = Hub(project)
        wait_ready(running.bridge_urls()[0], project)
        _ran["hub"] = f"deploy/hub up and ready in {time.monotonic() - started:.0f} s"
        yield running
    finally:
        _save_logs(project)
        project.compose("down", "--volumes", check=False)


@pytest.fixture(scope="session")
def partners(hub) -> dict[str, Partner]:
    """One lead and two insourcing partners, each onboarded through the bridge's API (its bundle written to
    a file), then deploy/partner/ up from its own .env; the lead knows both insourcing partners."""
    bridge = Bridge.at(hub.bridge_urls()[0], hub.token)
    made = {}
    for partner_id, (role, name) in PARTNERS.items():
        folder = WORK / partner_id
        bundle = WORK / "bundles" / f"{partner_id}.json"

        def write_env(folder=folder, bundle=bundle, partner_id=partner_id, role=role, name=name):
            bundle.unlink(missing_ok=True)
            bridge.bundle_for(partner_id, role, name, bundle)
            deploy_env.main(["partner", "--dir", str(folder), "--bundle", str(bundle),
                             "--port", str(infra.free_port()), "--hub-address", "host-gateway"])
            _append(folder / ".env", {"PARTNER_PUBLISHED_ADDRESS": "127.0.0.1", "RECONCILE_INTERVAL_S": "10"})

        made[partner_id] = Partner(partner_id, role, name, _fresh(f"{PREFIX}-{partner_id}", "partner", folder, write_env),
                                   bundle)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(lambda p: p.project.compose("up", "--detach"), made.values()))
        for partner in made.values():
            wait_ready(partner.url, partner.project)
        hub.reads_partners_without_a_restart = _bridge_reads_partners(hub)
        _wait_for_directory(made[LEAD], [FIRST, SECOND])
        _ran["partners"] = (f"{len(made)} deploy/partner projects onboarded, up and ready in "
                            f"{time.monotonic() - started:.0f} s")
        yield made
    finally:
        for partner in made.values():
            _save_logs(partner.project)
            partner.project.compose("down", "--volumes", check=False)


def _bridge_reads_partners(hub: Hub, timeout: float = 20.0) -> bool:
    """Whether the bridge's consumer reads the partners' topics (its backlog lists their partitions)."""
    headers = {"Authorization": f"Bearer {hub.token}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{hub.bridge_urls()[0]}/api/backlog", headers=headers, timeout=10).json()["partitions"]:
            return True
        time.sleep(0.5)
    return False


def _wait_for_directory(lead: Partner, expected: list[str], timeout: float = 60.0) -> None:
    """The lead lists the insourcing partners the hub's directory sent it."""
    headers = {"Authorization": f"Bearer {lead.project.env['PARTNER_API_TOKEN']}"}
    deadline = time.monotonic() + timeout
    while {p["id"] for p in httpx.get(f"{lead.url}/api/partners", headers=headers, timeout=10).json()} < set(expected):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the lead's directory lacks {expected} after {timeout:.0f} s")
        time.sleep(0.5)


def _save_logs(project: Project) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "containers.log", "a") as out:
        out.write(f"===== {project.name} ({project.kind}) =====\n{project.logs()}\n")


@pytest.fixture(scope="session", autouse=True)
def _fresh_container_log():
    (LOGS / "containers.log").unlink(missing_ok=True)


@pytest_asyncio.fixture(loop_scope="session")
async def lead(partners):
    async with partners[LEAD].client() as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def insourcing(partners):
    """The first insourcing partner, Globex."""
    async with partners[FIRST].client() as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def bridge(hub):
    async with hub.client() as client:
        yield client


def pytest_terminal_summary(terminalreporter, exitstatus):
    """`make test` prints summary.txt last: this line says whether the container tests ran, and where."""
    counts = {k: len(terminalreporter.stats.get(k, []))
              for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing ran"
    where = "; ".join(_ran[k] for k in ("engine", "images", "hub", "partners") if k in _ran) or "nothing: no test asked for the engine"
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "summary.txt", "a") as out:
        out.write(f"{summary}: container tests (tests/containers) on {where}\n")
