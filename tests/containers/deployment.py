"""The deployed projects the container tests drive: a compose project of deploy/ (hub or partner) under a
name of its own with its own .env, the hub's bridge and each partner's published service."""
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack import containers
from tests.harness import ROOT

WORK = ROOT / "var" / "containers"
PREFIX = "pts-ct"  # the projects' names: pts-ct-hub, pts-ct-<partner id>
# The name partners reach the hub's Kafka by: in the broker's certificate and every bundle; each project
# resolves it to the Docker host, where the hub publishes Kafka's TLS port.
HUB_KAFKA_HOST = "kafka.hub.test"
LEAD, FIRST, SECOND = "northwind", "globex", "initech"
PARTNERS = {LEAD: ("lead", "Northwind"), FIRST: ("insourcing", "Globex"), SECOND: ("insourcing", "Initech")}


class Project:
    """One compose project of deploy/ (hub or partner) under its own name, with its own .env."""

    def __init__(self, name: str, kind: str, env_file: Path):
        self.name, self.kind, self.env_file = name, kind, env_file
        self.env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)

    def command(self, *args: str) -> list[str]:
        return [str(containers.compose_binary()), "-p", self.name, "-f", str(ROOT / "deploy" / self.kind / "compose.yaml"),
                "--env-file", str(self.env_file), *args]

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **containers.engine_env()})
        assert not check or done.returncode == 0, f"{self.name}: docker compose {' '.join(args)}: {done.stderr[-3000:]}"
        return done

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "--quiet", service).stdout.split()

    def inspect(self, container: str) -> dict:
        return json.loads(containers.docker("inspect", container).stdout)[0]

    def published(self, container: str, port: str) -> int:
        return int(self.inspect(container)["NetworkSettings"]["Ports"][port][0]["HostPort"])

    def networks(self) -> dict[str, set[str]]:
        """Every container of the project (stopped ones too) -> the networks it is on."""
        ids = self.compose("ps", "--all", "--quiet").stdout.split()
        return {self.inspect(c)["Name"].lstrip("/"): set(self.inspect(c)["NetworkSettings"]["Networks"]) for c in ids}

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--timestamps", check=False).stdout


@dataclass
class Partner:
    id: str
    role: str
    name: str
    project: Project
    bundle: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.project.env['PARTNER_PUBLISHED_PORT']}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.project.env['PARTNER_API_TOKEN']}"})

    def container(self) -> str:
        return self.project.container_ids("partner")[0]


BROKERS = ("kafka-1", "kafka-2", "kafka-3")


class Hub:
    def __init__(self, project: Project):
        self.project = project
        self.token = project.env["BRIDGE_API_TOKEN"]
        self.reads_partners_without_a_restart: bool | None = None

    def kafka_ports(self) -> list[str]:
        """The brokers' published TLS ports, the hub's doors for partners."""
        return [self.project.env[f"KAFKA_{n}_PUBLISHED_PORT"] for n in range(1, len(BROKERS) + 1)]

    def replication(self) -> tuple[bool, list[dict]]:
        """As the operator asks it (`python -m devstack.kafka_broker replication` in kafka-setup's
        container): whether every partition has all its replicas in sync, and each one's leader and sets."""
        done = self.project.compose("run", "--rm", "--no-deps", "kafka-setup", "python", "-m",
                                    "devstack.kafka_broker", "replication", "--json", timeout=60, check=False)
        assert done.returncode in (0, 1, 2), f"replication: exit {done.returncode}: {done.stderr[-2000:]}"
        if done.returncode == 2:  # the cluster did not answer (a broker restarting): not in sync, as far as known
            return False, []
        answer = done.stdout.strip().splitlines()
        assert answer, f"replication: exit {done.returncode} and no answer: {done.stderr[-2000:]}"
        return done.returncode == 0, json.loads(answer[-1])

    def bridge_urls(self) -> list[str]:
        """One URL per running bridge replica, from the port Docker published for each."""
        return [f"http://127.0.0.1:{self.project.published(c, '8003/tcp')}" for c in self.project.container_ids("sync-bridge")]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.bridge_urls()[0], timeout=60,
                                 headers={"Authorization": f"Bearer {self.token}"})


def wait_ready(url: str, project: Project, timeout: float = 180.0) -> None:
    """Ready when /readyz says the service reaches its database and Kafka."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout:.0f} s:\n{project.compose('logs', '--tail', '40').stdout}")
        time.sleep(0.5)
