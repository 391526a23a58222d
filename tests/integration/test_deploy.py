"""deploy/ as production would run it, checked without a Docker engine: the compose file by the real
Docker Compose v2 binary (`config`), the Dockerfiles by hadolint, the topology (each partner with its
own database on its own network), and the broker it runs is the same Apache Kafka, configured the same
way, as the one `make run` and the tests use. tests/containers runs it for real."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import containers, kafka_broker
from tests.harness import ROOT

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = containers.compose_binary()
DOCKERFILES = sorted(str(ROOT / d) for d in containers.IMAGES.values())
SECRETS = ["LEAD_POSTGRES_PASSWORD", "INSOURCING_POSTGRES_PASSWORD", "BRIDGE_POSTGRES_PASSWORD", "LEAD_API_TOKEN", "INSOURCING_API_TOKEN", "BRIDGE_API_TOKEN",
           "KAFKA_CLUSTER_ID", "KAFKA_ADMIN_PASSWORD", "LEAD_KAFKA_PASSWORD", "INSOURCING_KAFKA_PASSWORD",
           "BRIDGE_KAFKA_PASSWORD", "LEAD_SIGNING_KEYS", "INSOURCING_SIGNING_KEYS", "KAFKA_TLS_KEY",
           "KAFKA_TLS_CERTIFICATE_CHAIN"]


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMPOSE), "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(env_file), *args],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture
def env_file(tmp_path) -> Path:
    """What an operator's deploy/.env holds (deploy/env.example lists the same names)."""
    path = tmp_path / "deploy.env"
    path.write_text("".join(f"{name}=k1:value-of-{name.lower()}-0123456789\n" for name in SECRETS))
    return path


def test_the_env_example_lists_every_secret_compose_requires():
    listed = {line.split("=")[0] for line in (DEPLOY / "env.example").read_text().splitlines()
              if line and not line.startswith("#")}
    assert listed == set(SECRETS)


def test_compose_file_is_valid_for_docker_compose(env_file):
    done = compose(env_file, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_compose_refuses_to_start_without_a_secret(env_file, tmp_path):
    # The same check fails when it should: without the Kafka admin password nothing starts.
    partial = tmp_path / "partial.env"
    partial.write_text("".join(l + "\n" for l in env_file.read_text().splitlines() if "KAFKA_ADMIN_PASSWORD" not in l))
    done = compose(partial, "config", "-q")
    assert done.returncode != 0 and "KAFKA_ADMIN_PASSWORD" in done.stderr


def test_compose_runs_the_same_kafka_with_the_same_users_as_make_run(env_file):
    config = json.loads(compose(env_file, "config", "--format", "json").stdout)
    services = config["services"]
    assert services["kafka"]["image"] == f"partner-ticket-sync/kafka:{kafka_broker.KAFKA_VERSION}"
    assert f"partner-ticket-sync/kafka:{kafka_broker.KAFKA_VERSION}" in containers.IMAGES
    mounted = {Path(v["source"]).resolve() for v in services["kafka"]["volumes"] if v["type"] == "bind"}
    assert kafka_broker.SERVER_PROPERTIES.resolve() in mounted  # the very file the local broker renders
    for service, prefix in kafka_broker.PREFIXES.items():
        name = service.replace("_", "-")
        assert services[name]["environment"][f"{prefix}_KAFKA_USERNAME"] == kafka_broker.SERVICE_USERS[service]
        assert f"name={kafka_broker.SERVICE_USERS[service]}," in (DEPLOY / "kafka" / "start.sh").read_text()
    keys = json.loads(services["sync-bridge"]["environment"]["BRIDGE_SIGNING_KEYS"])
    assert keys == {"lead-partner": services["lead-partner"]["environment"]["LEAD_SIGNING_KEYS"],
                    "insourcing-partner": services["insourcing-partner"]["environment"]["INSOURCING_SIGNING_KEYS"]}


def test_every_service_verifies_the_broker_against_the_hubs_ca_and_the_broker_serves_tls(env_file):
    services = json.loads(compose(env_file, "config", "--format", "json").stdout)["services"]
    for name in ("lead-partner", "insourcing-partner", "sync-bridge", "kafka-setup"):
        assert services[name]["environment"]["KAFKA_SSL_CAFILE"] == "/opt/tls/ca.pem", name
    for name in ("lead-partner", "insourcing-partner", "sync-bridge", "kafka-setup", "kafka"):
        mounts = {v["target"]: v for v in services[name]["volumes"] if v["type"] == "bind"}
        assert mounts["/opt/tls/ca.pem"]["source"].endswith("/tls/ca.pem") and mounts["/opt/tls/ca.pem"]["read_only"]
    assert "/opt/tls/broker.key" not in {v["target"] for s in services.values() for v in s.get("volumes", [])}
    assert "CLIENT:SASL_SSL" in kafka_broker.SERVER_PROPERTIES.read_text()


def test_each_partner_reaches_only_its_own_database_and_kafka(env_file):
    services = json.loads(compose(env_file, "config", "--format", "json").stdout)["services"]
    networks = {name: set(service["networks"]) for name, service in services.items()}
    assert networks["lead-partner"] == {"lead", "kafka", "mail"} and networks["lead-db"] == {"lead"}
    assert networks["insourcing-partner"] == {"insourcing", "kafka", "mail"} and networks["insourcing-db"] == {"insourcing"}
    assert networks["sync-bridge"] == {"bridge", "kafka"} and networks["bridge-db"] == {"bridge"}
    assert networks["kafka"] == {"kafka"}


def test_every_image_builds_on_a_base_given_as_an_argument(env_file):
    # So that where a registry answers the official images serve instead of the debootstrapped one.
    services = json.loads(compose(env_file, "config", "--format", "json").stdout)["services"]
    built = {s["image"]: s["build"] for s in services.values() if "build" in s}
    assert set(built) == set(containers.IMAGES)
    for image, build in built.items():
        assert build["args"]["BASE_IMAGE"] == containers.BASE_IMAGE
        assert "ARG BASE_IMAGE" in (ROOT / containers.IMAGES[image]).read_text()


def test_dockerfiles_pass_hadolint():
    done = subprocess.run([str(BIN / "hadolint"), *DOCKERFILES], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_command_writes_a_complete_env_file_compose_accepts_and_never_replaces_it(tmp_path):
    out, tls_dir = tmp_path / "deploy.env", tmp_path / "tls"
    command = [sys.executable, "-m", "devstack.deploy_env", "--out", str(out), "--tls-dir", str(tls_dir),
               "--host", "hub.example.com"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert set(SECRETS) <= set(values) and all(values[name] for name in SECRETS)
    assert out.stat().st_mode & 0o777 == 0o600 and (tls_dir / "broker.key").stat().st_mode & 0o777 == 0o600
    assert values["KAFKA_TLS_DIR"] == str(tls_dir) and (tls_dir / "ca.pem").exists()
    assert compose(out, "config", "-q").returncode == 0
    written = out.read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert again.returncode != 0 and "down -v" in again.stderr
    assert out.read_text() == written
