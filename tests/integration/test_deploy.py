"""deploy/ as production would run it, checked without a Docker engine (SPEC section 10): the hub
(deploy/hub) and a partner (deploy/partner) are compose projects of their own, checked by the real Docker
Compose v2 binary (`config`), the Dockerfiles by hadolint; the hub runs the same Apache Kafka, configured
the same way, as `make run`; a partner's project holds nothing of the hub's but what its bundle says; and
`python -m devstack.deploy_env` writes a complete .env for each. tests/containers runs them for real."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import containers, kafka_broker, tls
from tests.harness import ROOT

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = containers.compose_binary()
DOCKERFILES = sorted(str(ROOT / d) for d in containers.IMAGES.values())
HUB_SECRETS = ["KAFKA_PUBLIC_HOST", "KAFKA_CLUSTER_ID", "KAFKA_ADMIN_PASSWORD", "KAFKA_TLS_KEY", "KAFKA_TLS_CERTIFICATE_CHAIN",
               "BRIDGE_API_TOKEN", "BRIDGE_POSTGRES_PASSWORD", "BRIDGE_KAFKA_PASSWORD", "BRIDGE_SECRET_KEY"]
PARTNER_SECRETS = ["PARTNER_ROLE", "PARTNER_BUNDLE_FILE", "PARTNER_BUNDLE_GID", "PARTNER_API_TOKEN",
                   "PARTNER_POSTGRES_PASSWORD", "PARTNER_NOTIFY_EMAIL"]


def compose(project: str, env_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMPOSE), "-f", str(DEPLOY / project / "compose.yaml"), "--env-file", str(env_file), *args],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def config(project: str, env_file: Path) -> dict:
    done = compose(project, env_file, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def hub_env(tmp_path) -> Path:
    """What an operator's deploy/hub/.env holds (deploy/hub/env.example lists the same names)."""
    path = tmp_path / "hub.env"
    path.write_text("".join(f"{name}=value-of-{name.lower()}-0123456789\n" for name in HUB_SECRETS)
                    + "KAFKA_PUBLIC_HOST=kafka.hub.example.com\nKAFKA_1_PUBLISHED_PORT=9192\n")
    return path


@pytest.fixture
def partner_env(tmp_path) -> Path:
    path = tmp_path / "partner.env"
    path.write_text("".join(f"{name}=value-of-{name.lower()}-0123456789\n" for name in PARTNER_SECRETS)
                    + f"PARTNER_ROLE=insourcing\nPARTNER_BUNDLE_FILE={tmp_path / 'bundle.json'}\nPARTNER_BUNDLE_GID=1000\n")
    return path


def listed(example: Path) -> set[str]:
    return {line.split("=")[0] for line in example.read_text().splitlines() if line and not line.startswith("#")}


def test_deploy_holds_the_hub_and_the_partner_as_two_projects_and_nothing_else_to_compose():
    assert sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("compose*.y*ml")) == [
        "hub/compose.yaml", "partner/compose.yaml"]
    assert not (DEPLOY / "env.example").exists()


def test_each_env_example_lists_every_secret_its_compose_file_requires(hub_env, partner_env):
    assert listed(DEPLOY / "hub" / "env.example") == set(HUB_SECRETS)
    assert listed(DEPLOY / "partner" / "env.example") == set(PARTNER_SECRETS)
    for project, env_file in (("hub", hub_env), ("partner", partner_env)):
        required = set(re.findall(r"\$\{(\w+):\?", (DEPLOY / project / "compose.yaml").read_text()))
        assert required == listed(DEPLOY / project / "env.example"), project
        assert compose(project, env_file, "config", "-q").returncode == 0


@pytest.mark.parametrize("project, missing", [("hub", "KAFKA_ADMIN_PASSWORD"), ("partner", "PARTNER_BUNDLE_FILE")])
def test_compose_refuses_to_start_a_project_without_a_secret(project, missing, hub_env, partner_env, tmp_path):
    env_file = {"hub": hub_env, "partner": partner_env}[project]
    partial = tmp_path / "partial.env"
    partial.write_text("".join(l + "\n" for l in env_file.read_text().splitlines() if not l.startswith(missing)))
    done = compose(project, partial, "config", "-q")
    assert done.returncode != 0 and missing in done.stderr


NODES = ("kafka-1", "kafka-2", "kafka-3")
KAFKA_SERVICES = (*NODES, *(f"{node}-storage" for node in NODES))


def test_the_hub_runs_the_same_kafka_as_make_run_with_only_the_super_user_made_at_format(hub_env):
    services = config("hub", hub_env)["services"]
    for name in KAFKA_SERVICES:
        assert services[name]["image"] == f"partner-ticket-sync/kafka:{kafka_broker.KAFKA_VERSION}"
        mounted = {Path(v["source"]).resolve() for v in services[name]["volumes"] if v["type"] == "bind"}
        assert kafka_broker.SERVER_PROPERTIES.resolve() in mounted  # the very file the local broker renders
    assert f"partner-ticket-sync/kafka:{kafka_broker.KAFKA_VERSION}" in containers.IMAGES
    # Each volume is formatted (or checked against this .env) by a one-shot before its broker starts.
    for node in NODES:
        storage = services[f"{node}-storage"]
        assert storage["entrypoint"][-1] == "format" and storage["restart"] == "no"
        assert services[node]["depends_on"][f"{node}-storage"]["condition"] == "service_completed_successfully"
    start = (DEPLOY / "kafka" / "start.sh").read_text()
    assert start.count("--add-scram") == 1 and "down -v" in start
    # Every other user is made at run time: the bridge's by kafka-setup, each partner's by onboarding.
    assert services["kafka-setup"]["command"][-1] == "provision-hub"
    bridge_user = kafka_broker.SERVICE_USERS["sync_bridge"]
    assert services["kafka-setup"]["environment"]["BRIDGE_KAFKA_USERNAME"] == bridge_user
    bridge = services["sync-bridge"]["environment"]
    assert bridge["BRIDGE_KAFKA_USERNAME"] == bridge_user and bridge["BRIDGE_PARTNERS"] == ""
    assert bridge["BRIDGE_KAFKA_ADMIN_PASSWORD"] == services["kafka-1"]["environment"]["KAFKA_ADMIN_PASSWORD"]
    assert bridge["BRIDGE_SECRET_KEY"]


def test_the_hub_runs_three_kafka_nodes_each_with_its_own_volume_one_cluster_and_every_topic_on_three(hub_env):
    services = config("hub", hub_env)["services"]
    environments = [services[node]["environment"] for node in NODES]
    assert [e["KAFKA_NODE_ID"] for e in environments] == ["1", "2", "3"]
    volumes = [{v["source"] for v in services[node]["volumes"] if v["type"] == "volume"} for node in NODES]
    assert volumes == [{"kafka-1"}, {"kafka-2"}, {"kafka-3"}]
    for node in NODES:  # a storage one-shot formats its own node's volume, as that node
        storage = services[f"{node}-storage"]
        assert {v["source"] for v in storage["volumes"] if v["type"] == "volume"} == {node}
        assert storage["environment"] == services[node]["environment"]
    for e in environments:
        assert e["KAFKA_CLUSTER_ID"] == "value-of-kafka_cluster_id-0123456789"
        assert e["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert e["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert (e["KAFKA_REPLICATION_FACTOR"], e["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
        # The fencing and in-sync timings of a cluster, as make run's (devstack/kafka_broker.py)
        assert {name: e[f"KAFKA_{name}"] for name in kafka_broker.CLUSTER_TIMINGS} == kafka_broker.CLUSTER_TIMINGS
    # start.sh renders what it is given: no placeholder of server.properties is left to its default.
    start = (DEPLOY / "kafka" / "start.sh").read_text()
    settings = [line for line in kafka_broker.SERVER_PROPERTIES.read_text().splitlines() if not line.startswith("#")]
    placeholders = set(re.findall(r"@(\w+)@", "\n".join(settings)))
    assert placeholders <= set(re.findall(r"s\|@(\w+)@\|", start))


def test_partners_and_the_bridge_reach_the_three_brokers_by_their_public_names_on_their_published_ports(hub_env):
    services = config("hub", hub_env)["services"]
    public = ["kafka.hub.example.com:9192", "kafka.hub.example.com:9093", "kafka.hub.example.com:9094"]
    assert [services[node]["environment"]["KAFKA_ADVERTISED_ADDRESS"] for node in NODES] == public
    assert [[(p["published"], p["target"]) for p in services[node]["ports"]] for node in NODES] == [
        [("9192", 9092)], [("9093", 9092)], [("9094", 9092)]]
    bridge = services["sync-bridge"]["environment"]
    assert bridge["BRIDGE_PUBLIC_BOOTSTRAP_SERVERS"] == ",".join(public)  # what every bundle names
    for name in ("sync-bridge", "kafka-setup", *NODES):  # the brokers replicate through the same addresses
        assert services[name]["extra_hosts"] == ["kafka.hub.example.com=host-gateway"]
    for name in ("sync-bridge", "kafka-setup"):
        assert services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == ",".join(public)
    assert set(services["kafka-setup"]["depends_on"]) == set(NODES)
    # The bridge's HTTP port is for the hub operator: on the hub's loopback unless told otherwise.
    assert {p["host_ip"] for p in services["sync-bridge"]["ports"]} == {"127.0.0.1"}


def test_every_hub_service_verifies_the_broker_against_the_hubs_ca_and_the_broker_serves_tls(hub_env):
    services = config("hub", hub_env)["services"]
    for name in ("sync-bridge", "kafka-setup"):
        assert services[name]["environment"]["KAFKA_SSL_CAFILE"] == "/opt/tls/ca.pem", name
    for name in ("sync-bridge", "kafka-setup", *KAFKA_SERVICES):
        mounts = {v["target"]: v for v in services[name]["volumes"] if v["type"] == "bind"}
        assert mounts["/opt/tls/ca.pem"]["source"].endswith("/tls/ca.pem") and mounts["/opt/tls/ca.pem"]["read_only"]
    assert "/opt/tls/broker.key" not in {v["target"] for s in services.values() for v in s.get("volumes", [])}
    assert "CLIENT:SASL_SSL,CONTROLLER:SASL_SSL" in kafka_broker.SERVER_PROPERTIES.read_text()  # the quorum too


def test_each_project_keeps_its_database_on_an_internal_network_and_shares_no_network_with_another(
        hub_env, partner_env):
    hub, partner = config("hub", hub_env), config("partner", partner_env)
    networks = {name: set(s.get("networks", {})) for name, s in hub["services"].items()}
    assert networks == {**{name: {"kafka"} for name in KAFKA_SERVICES}, "kafka-setup": {"bridge"},
                        "bridge-db": {"database"}, "sync-bridge": {"bridge", "database"}}
    assert hub["networks"]["database"]["internal"] and not hub["networks"]["kafka"].get("internal")
    networks = {name: set(s["networks"]) for name, s in partner["services"].items()}
    assert networks == {"partner": {"edge", "database", "mail"}, "db": {"database"}, "mailsink": {"mail"}}
    assert partner["networks"]["database"]["internal"] and partner["networks"]["mail"]["internal"]
    assert not {n["name"] for n in hub["networks"].values()} & {n["name"] for n in partner["networks"].values()}


def test_a_partner_is_configured_by_its_bundle_and_its_own_secrets_only(partner_env, tmp_path):
    service = config("partner", partner_env)["services"]["partner"]
    env = service["environment"]
    assert env["PARTNER_BUNDLE_FILE"] == "/run/partner/bundle.json"
    assert not [name for name in env if name.startswith(("KAFKA_", "BRIDGE_"))]  # Kafka and keys: the bundle's
    mount = next(v for v in service["volumes"] if v["target"] == "/run/partner/bundle.json")
    assert mount["source"] == str(tmp_path / "bundle.json") and mount["read_only"]
    assert service["group_add"] == ["1000"]
    # One file for either role: the service reads its own role's variables, and the command picks it.
    assert env["LEAD_API_TOKEN"] == env["INSOURCING_API_TOKEN"] == "value-of-partner_api_token-0123456789"
    assert "insourcing-partner migrate && exec insourcing-partner serve" in service["command"][-1]


def test_every_image_builds_on_a_base_given_as_an_argument(hub_env, partner_env):
    # So that where a registry answers the official images serve instead of the debootstrapped one.
    built = {}
    for project, env_file in (("hub", hub_env), ("partner", partner_env)):
        built |= {s["image"]: s["build"] for s in config(project, env_file)["services"].values() if "build" in s}
    assert set(built) == set(containers.IMAGES)
    for image, build in built.items():
        assert build["args"]["BASE_IMAGE"] == containers.BASE_IMAGE
        assert "ARG BASE_IMAGE" in (ROOT / containers.IMAGES[image]).read_text()


def test_dockerfiles_pass_hadolint():
    done = subprocess.run([str(BIN / "hadolint"), *DOCKERFILES], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def deploy_env(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devstack.deploy_env", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_one_command_writes_the_hubs_env_and_tls_files_compose_accepts_and_never_replaces_them(tmp_path):
    folder = tmp_path / "hub"
    command = ["hub", "--dir", str(folder), "--kafka-host", "kafka.hub.example.com"]
    done = deploy_env(*command)
    assert done.returncode == 0, done.stderr
    out = folder / ".env"
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert set(HUB_SECRETS) <= set(values) and all(values[name] for name in HUB_SECRETS)
    assert values["KAFKA_PUBLIC_HOST"] == "kafka.hub.example.com" and values["HUB_TLS_DIR"] == str(folder / "tls")
    assert [values[f"KAFKA_{n}_PUBLISHED_PORT"] for n in (1, 2, 3)] == ["9092", "9093", "9094"]
    # The public name for clients, and the nodes' names for the quorum inside the project.
    assert tls.BrokerTls(folder / "tls").broker_hosts() == {"kafka.hub.example.com", *NODES}
    assert out.stat().st_mode & 0o777 == 0o600 and (folder / "tls" / "broker.key").stat().st_mode & 0o777 == 0o600
    assert compose("hub", out, "config", "-q").returncode == 0
    written = out.read_text()
    again = deploy_env(*command)
    assert again.returncode != 0 and "down -v" in again.stderr
    assert out.read_text() == written


def test_brokers_on_hosts_of_their_own_each_advertise_their_own_name_which_the_certificate_holds(tmp_path):
    folder = tmp_path / "hub"
    hosts = ["kafka1.hub.example.com", "kafka2.hub.example.com", "kafka3.hub.example.com"]
    done = deploy_env("hub", "--dir", str(folder), *(a for h in hosts for a in ("--kafka-host", h)))
    assert done.returncode == 0, done.stderr
    assert tls.BrokerTls(folder / "tls").broker_hosts() == {*hosts, *NODES}
    services = config("hub", folder / ".env")["services"]
    assert [services[node]["environment"]["KAFKA_ADVERTISED_ADDRESS"] for node in NODES] == [f"{h}:9092" for h in hosts]
    assert services["sync-bridge"]["environment"]["BRIDGE_PUBLIC_BOOTSTRAP_SERVERS"] == ",".join(f"{h}:9092" for h in hosts)
    # On host 2, its own broker's name is the one that resolves to the host (the others' in DNS).
    on_host_2 = tmp_path / "host2.env"
    on_host_2.write_text((folder / ".env").read_text() + f"KAFKA_THIS_HOST={hosts[1]}\n")
    services = config("hub", on_host_2)["services"]
    assert {name: services[name]["extra_hosts"] for name in ("kafka-2", "sync-bridge")} == {
        name: [f"{hosts[1]}=host-gateway"] for name in ("kafka-2", "sync-bridge")}
    # Two names for three brokers, or three brokers on one host with one port, is a mistake, said as one.
    for args, said in ((["--kafka-host", "a.example.com", "--kafka-host", "b.example.com"], "--kafka-host given 2 times"),
                       (["--kafka-host", "a.example.com", "--kafka-ports", "9092,9092,9092"], "need a port each")):
        refused = deploy_env("hub", "--dir", str(tmp_path / "other"), *args)
        assert refused.returncode != 0 and said in refused.stderr, refused.stderr
        assert not (tmp_path / "other" / ".env").exists()


def _bundle(path: Path, role: str = "insourcing", mode: int = 0o600) -> Path:
    path.write_text(json.dumps({
        "partner_id": "globex", "partner_name": "Globex", "role": role, "bootstrap_servers": "host.docker.internal:9092",
        "ca_pem": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n", "username": "partner-globex",
        "password": "secret", "signing_key_id": "k1", "signing_key": "key", "outbound_topic": "psa.globex.outbound",
        "inbound_topic": "psa.globex.inbound"}))
    path.chmod(mode)
    return path


def test_one_command_writes_a_partners_env_from_its_bundle_with_nothing_of_the_hubs(tmp_path):
    bundle = _bundle(tmp_path / "globex.json")
    folder = tmp_path / "globex"
    command = ["partner", "--dir", str(folder), "--bundle", str(bundle), "--port", "8012"]
    done = deploy_env(*command)
    assert done.returncode == 0, done.stderr
    out = folder / ".env"
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert set(PARTNER_SECRETS) <= set(values) and all(values[name] for name in PARTNER_SECRETS)
    assert values["PARTNER_ROLE"] == "insourcing" and values["PARTNER_PUBLISHED_PORT"] == "8012"
    assert values["PARTNER_BUNDLE_FILE"] == str(bundle) and values["PARTNER_API_TOKEN"].startswith("ip_")
    assert values["COMPOSE_PROJECT_NAME"] == "partner-ticket-sync-globex"
    # A hub on this same machine (the bundle names host.docker.internal): reached through the host's gateway.
    assert (values["HUB_KAFKA_HOST"], values["HUB_KAFKA_ADDRESS"]) == ("host.docker.internal", "host-gateway")
    assert not [name for name in values if name.startswith(("KAFKA_", "BRIDGE_"))]
    assert "secret" not in out.read_text()  # the bundle's password stays in the bundle
    assert out.stat().st_mode & 0o777 == 0o600 and bundle.stat().st_mode & 0o777 == 0o640
    assert compose("partner", out, "config", "-q").returncode == 0
    written = out.read_text()
    again = deploy_env(*command)
    assert again.returncode != 0 and "down -v" in again.stderr
    assert out.read_text() == written


def test_a_partners_env_is_refused_for_a_bundle_anyone_may_read(tmp_path):
    bundle = _bundle(tmp_path / "globex.json", mode=0o644)
    done = deploy_env("partner", "--dir", str(tmp_path / "globex"), "--bundle", str(bundle))
    assert done.returncode != 0 and "readable by anyone" in done.stderr
    assert not (tmp_path / "globex" / ".env").exists()


def test_a_partners_env_does_not_map_one_address_for_brokers_of_several_names(tmp_path):
    bundle = _bundle(tmp_path / "globex.json")
    given = json.loads(bundle.read_text()) | {"bootstrap_servers": "kafka1.hub.test:9092,kafka2.hub.test:9092"}
    bundle.write_text(json.dumps(given))
    done = deploy_env("partner", "--dir", str(tmp_path / "globex"), "--bundle", str(bundle), "--hub-address", "10.0.0.5")
    assert done.returncode != 0 and "2 names" in done.stderr and "DNS" in done.stderr
    assert not (tmp_path / "globex" / ".env").exists()
