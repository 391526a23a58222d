"""The deployed stack for the container tests: deploy/compose.yaml started by testcontainers' compose
support on this checkout's private Docker engine, with the images built locally (devstack/containers.py)
and secrets generated into the ignored var/ folder. No engine is an error, never a skip."""
import json
import os
import subprocess
import time

import httpx
import pytest
import pytest_asyncio

from devstack import containers, infra
from devstack import deploy_env as deploy_env_module
from tests.harness import LOGS, ROOT

PROJECT = "pts-container-tests"
ENV_FILE = ROOT / "var" / "containers" / "deploy.env"
_ran: dict[str, str] = {}


def deploy_env() -> dict[str, str]:
    """What `python -m devstack.deploy_env` writes to deploy/.env, plus ports free on this machine."""
    return {
        **deploy_env_module.fresh(ROOT / "var" / "containers" / "tls", ["localhost", "127.0.0.1"]),
        "LEAD_PUBLISHED_PORT": str(infra.free_port()),
        "INSOURCING_PUBLISHED_PORT": str(infra.free_port()),
        "BRIDGE_PUBLISHED_PORTS": _two_free_ports(),
        "RECONCILE_INTERVAL_S": "10",
    }


def _two_free_ports() -> str:
    """Two consecutive free ports, one per bridge replica."""
    while True:
        first = infra.free_port()
        if not infra.port_answers("127.0.0.1", first + 1):
            return f"{first}-{first + 1}"


class DeployedStack:
    """deploy/compose.yaml running under a project name of its own; `compose` runs any compose command."""

    def __init__(self, env: dict[str, str]):
        from testcontainers.compose import DockerCompose

        self.env = env
        self.lead_url = f"http://127.0.0.1:{env['LEAD_PUBLISHED_PORT']}"
        self.insourcing_url = f"http://127.0.0.1:{env['INSOURCING_PUBLISHED_PORT']}"
        self.compose_file = DockerCompose(ROOT / "deploy", compose_file_name="compose.yaml", env_file=str(ENV_FILE),
                                          wait=False)

    def compose(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([*self.compose_file.compose_command_property, *args], cwd=ROOT / "deploy",
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "--quiet", service).split()

    def network(self, name: str) -> str:
        return f"{PROJECT}_{name}"

    def bridge_urls(self) -> list[str]:
        """One URL per running bridge replica, from the ports Docker published for each."""
        urls = []
        for container in self.container_ids("sync-bridge"):
            inspected = json.loads(containers.docker("inspect", container).stdout)[0]
            port = inspected["NetworkSettings"]["Ports"]["8003/tcp"][0]["HostPort"]
            urls.append(f"http://127.0.0.1:{port}")
        return urls

    def client(self, url: str, token_variable: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {self.env[token_variable]}"},
                                 timeout=30)

    def wait_ready(self, url: str, timeout: float = 180.0) -> None:
        """Ready when /readyz says the service reaches its database and Kafka."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout:.0f} s:\n{self.compose('logs', '--tail', '40')}")
            time.sleep(0.5)

    def wait_all_ready(self) -> None:
        for url in (self.lead_url, self.insourcing_url, *self.bridge_urls()):
            self.wait_ready(url)


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
    # For testcontainers' compose support (it runs `docker compose`) and the docker client: this
    # process only, never the machine's default engine.
    os.environ.update({**containers.engine_env(), "COMPOSE_PROJECT_NAME": PROJECT})
    version = containers.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    _ran["engine"] = f"Docker {version} on {containers.SOCKET}"


@pytest.fixture(scope="session")
def stack(engine):
    env = deploy_env()
    infra.write_private(ENV_FILE, "".join(f"{name}={value}\n" for name, value in env.items()))
    deployed = DeployedStack(env)
    deployed.compose("down", "--volumes", "--remove-orphans")  # what an interrupted run left
    started = time.monotonic()
    deployed.compose_file.start()
    try:
        deployed.wait_all_ready()
        _ran["stack"] = f"deploy/compose.yaml up and ready in {time.monotonic() - started:.0f} s"
        yield deployed
    finally:
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / "containers.log").write_text(deployed.compose("logs", "--no-color", "--timestamps"))
        deployed.compose_file.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def lead(stack):
    async with stack.client(stack.lead_url, "LEAD_API_TOKEN") as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def insourcing(stack):
    async with stack.client(stack.insourcing_url, "INSOURCING_API_TOKEN") as client:
        yield client


def pytest_terminal_summary(terminalreporter, exitstatus):
    """`make test` prints summary.txt last: this line says whether the container tests ran, and where."""
    counts = {k: len(terminalreporter.stats.get(k, [])) for k in ("passed", "failed", "error", "skipped")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing ran"
    where = "; ".join(_ran[k] for k in ("engine", "images", "stack") if k in _ran) or "nothing: no test asked for the engine"
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "summary.txt", "a") as out:
        out.write(f"{summary}: container tests (tests/containers) on {where}\n")
