"""A complete `.env` with fresh secrets for each compose project of deploy/ (SPEC section 10), so that
nobody types a secret by hand:

    python -m devstack.deploy_env hub --kafka-host kafka.hub.example.com   # deploy/hub/.env and deploy/hub/tls/
    python -m devstack.deploy_env partner --bundle globex.json --port 8012  # deploy/partner/.env

`hub` writes the hub operator's: Kafka's cluster id, super user and the three brokers' published ports,
the bridge's tokens, database password, Kafka user and secret key, and the brokers' TLS key and
certificate (naming the public names and the nodes' names inside the project), issued by the hub's CA in
`tls/` beside the file (made once; `ca.pem` is what every bundle carries, `ca.key` signs the brokers'
next certificate: keep both). `partner` writes one partner company's: its own operator token, database password, port,
role and the path of the bundle the hub gave it; nothing of the hub's.

Either file is made readable by its owner only (0600) and never replaced: the volumes of a project
remember the .env they were first started with. To start a project afresh, `docker compose down -v`
(which deletes its volumes), remove the file, and run this again."""
import argparse
import json
import re
import secrets
import stat
import sys
from pathlib import Path

from devstack import infra, tls

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ROLES = {"lead": "lp", "insourcing": "ip"}  # a partner's role -> the prefix of its token
# A hub on the partner's own Docker host is reached by this name (Docker Desktop knows it; on Linux the
# partner's .env maps it to the host, as the hub's compose file does for the bridge).
SAME_HOST = "host.docker.internal"


def _secret() -> str:
    return secrets.token_urlsafe(24)


BROKERS = 3  # deploy/hub's Kafka nodes (SPEC section 13)
# The names the nodes reach each other's controller port by, inside the hub's project (compose's default
# KAFKA_CONTROLLER_QUORUM_VOTERS): the brokers' certificate names them beside the public names.
CONTROLLER_NAMES = [f"kafka-{n}" for n in range(1, BROKERS + 1)]


def hub_values(folder: Path, kafka_hosts: list[str], kafka_ports: list[int], bridge_ports: str) -> dict[str, str]:
    """Every value deploy/hub/compose.yaml asks for, freshly generated; the hub's TLS files in folder/tls.
    `kafka_hosts` holds one public name for the three brokers, or one per broker (each on its own host)."""
    from cryptography.fernet import Fernet

    from devstack.kafka_broker import new_cluster_id

    hub_tls = tls.ensure(folder / "tls", list(dict.fromkeys([*kafka_hosts, *CONTROLLER_NAMES])))
    broker = hub_tls.config_values()
    values = {"KAFKA_PUBLIC_HOST": kafka_hosts[0]}
    if len(kafka_hosts) > 1:
        values |= {f"KAFKA_{n}_PUBLIC_HOST": host for n, host in enumerate(kafka_hosts, 1)}
    values |= {f"KAFKA_{n}_PUBLISHED_PORT": str(port) for n, port in enumerate(kafka_ports, 1)}
    values |= {
        "KAFKA_CLUSTER_ID": new_cluster_id(),
        "KAFKA_ADMIN_PASSWORD": _secret(),
        "KAFKA_TLS_KEY": broker["SSL_KEY"],
        "KAFKA_TLS_CERTIFICATE_CHAIN": broker["SSL_CERTIFICATE_CHAIN"],
        "BRIDGE_API_TOKEN": f"sb_{_secret()}",
        "BRIDGE_POSTGRES_PASSWORD": _secret(),
        "BRIDGE_KAFKA_PASSWORD": _secret(),
        "BRIDGE_SECRET_KEY": Fernet.generate_key().decode(),
        "BRIDGE_UI_SECRET": _secret(),  # bridge replicas share sessions
        "BRIDGE_PUBLISHED_PORTS": bridge_ports,
    }
    if folder.resolve() != (DEPLOY / "hub").resolve():  # compose reads ./tls beside its own file
        values["HUB_TLS_DIR"] = str((folder / "tls").resolve())
    return values


def partner_values(bundle_file: Path, port: int, hub_address: str | None, notify_email: str | None) -> dict[str, str]:
    """What deploy/partner/compose.yaml asks for, for the partner whose bundle this is."""
    from shared.platform.bundle import Bundle

    try:
        bundle = Bundle.model_validate(json.loads(bundle_file.read_text()))
    except (OSError, ValueError) as exc:
        sys.exit(f"{bundle_file}: not an onboarding bundle the hub gave ({exc})")
    hosts = {address.strip().rsplit(":", 1)[0] for address in bundle.bootstrap_servers.split(",")}
    host = bundle.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]
    if hub_address is not None and len(hosts) > 1:
        sys.exit(f"the hub's brokers have {len(hosts)} names ({', '.join(sorted(hosts))}): --hub-address maps one "
                 f"name only; they must resolve in DNS (leave --hub-address out)")
    if hub_address is None and host == SAME_HOST:
        hub_address = "host-gateway"
    values = {
        # One project per partner, so that two partners on one Docker host never share a container or volume.
        "COMPOSE_PROJECT_NAME": f"partner-ticket-sync-{bundle.partner_id}",
        "PARTNER_ROLE": bundle.role,
        "PARTNER_BUNDLE_FILE": str(bundle_file.resolve()),
        "PARTNER_BUNDLE_GID": str(bundle_file.stat().st_gid),
        "PARTNER_API_TOKEN": f"{ROLES[bundle.role]}_{_secret()}",
        "PARTNER_POSTGRES_PASSWORD": _secret(),
        "PARTNER_UI_SECRET": _secret(),
        "PARTNER_PUBLISHED_PORT": str(port),
        "PARTNER_NOTIFY_EMAIL": notify_email or f"service-desk@{bundle.partner_id}.example",
    }
    if hub_address:
        values |= {"HUB_KAFKA_HOST": host, "HUB_KAFKA_ADDRESS": hub_address}
    return values


def _readable_by_its_group(bundle_file: Path) -> None:
    """The partner's container joins the bundle file's group (PARTNER_BUNDLE_GID): the file needs group
    read, never world read (it holds the partner's Kafka password and signing key)."""
    mode = stat.S_IMODE(bundle_file.stat().st_mode)
    if mode & 0o007:
        sys.exit(f"{bundle_file} is readable by anyone (mode {mode:o}): it holds a Kafka password and a "
                 f"signing key. `chmod 640 {bundle_file}` and run this again")
    if not mode & 0o040:
        bundle_file.chmod(mode | 0o040)
        print(f"{bundle_file}: made readable by its group (mode {mode | 0o040:o}), which the partner's "
              f"container joins")


def env_text(values: dict[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def _refuse_to_replace(env_file: Path) -> None:
    if env_file.exists():
        sys.exit(f"{env_file} exists already and is kept: the project's volumes were made with it (Kafka's "
                 f"super user, the databases' passwords). To start afresh, run `docker compose down -v` for "
                 f"that project (it deletes its volumes), remove {env_file}, and run this again.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.deploy_env", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    projects = parser.add_subparsers(dest="project", required=True)
    hub = projects.add_parser("hub", help="the hub operator's .env (Kafka and the bridge) and TLS files")
    hub.add_argument("--dir", type=Path, default=DEPLOY / "hub",
                     help="where .env and tls/ go (default deploy/hub; elsewhere, the .env names its tls/)")
    hub.add_argument("--kafka-host", action="append",
                     help="the name (or address) partners reach Kafka by: the brokers' certificate names it and "
                          f"it is in every bundle (default {SAME_HOST}: partners on this same machine only); "
                          f"given {BROKERS} times, one per broker, for brokers on hosts of their own")
    hub.add_argument("--kafka-ports",
                     help=f"the {BROKERS} brokers' published TLS ports, comma-separated (default 9092,9093,9094 "
                          f"on one host; 9092,9092,9092 for brokers on hosts of their own)")
    hub.add_argument("--bridge-ports", default="8003-8004",
                     help="the bridge's published port(s), a range for replicas (default 8003-8004)")
    partner = projects.add_parser("partner", help="one partner company's .env, from the bundle the hub gave it")
    partner.add_argument("--bundle", type=Path, required=True, help="the onboarding bundle (JSON) the hub answered")
    partner.add_argument("--dir", type=Path, default=DEPLOY / "partner", help="where .env goes (default deploy/partner)")
    partner.add_argument("--port", type=int, default=8000, help="the service's published port (default 8000)")
    partner.add_argument("--hub-address", help="where the hub's Kafka name resolves when DNS does not know it: an "
                                               f"address, or host-gateway for a hub on this machine (the default "
                                               f"when the bundle names {SAME_HOST})")
    partner.add_argument("--notify-email", help="where the partner's notifications go (default service-desk@<id>.example)")
    args = parser.parse_args(argv)

    env_file = args.dir / ".env"
    _refuse_to_replace(env_file)
    if args.project == "hub":
        if not re.fullmatch(r"\d+(-\d+)?", args.bridge_ports):
            sys.exit(f"--bridge-ports {args.bridge_ports!r}: a port or a range such as 8003-8004")
        hosts = args.kafka_host or [SAME_HOST]
        if len(hosts) not in (1, BROKERS):
            sys.exit(f"--kafka-host given {len(hosts)} times: once (one name for the {BROKERS} brokers) or "
                     f"{BROKERS} times (one per broker)")
        ports = (args.kafka_ports or ("9092,9093,9094" if len(hosts) == 1 else "9092,9092,9092")).split(",")
        if len(ports) != BROKERS or not all(p.strip().isdigit() for p in ports):
            sys.exit(f"--kafka-ports {args.kafka_ports!r}: {BROKERS} ports, comma-separated, one per broker")
        if len(set(zip(hosts * BROKERS if len(hosts) == 1 else hosts, ports))) != BROKERS:
            sys.exit(f"--kafka-ports {','.join(ports)}: brokers on one host need a port each")
        values = hub_values(args.dir, hosts, [int(p) for p in ports], args.bridge_ports)
        infra.write_private(env_file, env_text(values))
        print(f"wrote {env_file} ({len(values)} values, readable by you only) and the hub's CA and brokers' "
              f"certificate (for {', '.join(dict.fromkeys(hosts))}) in {args.dir / 'tls'}; Kafka's three brokers "
              f"on ports {', '.join(ports)}; the bridge's token is BRIDGE_API_TOKEN in the file")
        return
    values = partner_values(args.bundle, args.port, args.hub_address, args.notify_email)
    _readable_by_its_group(args.bundle)
    infra.write_private(env_file, env_text(values))
    print(f"wrote {env_file} for {values['COMPOSE_PROJECT_NAME']} ({values['PARTNER_ROLE']} partner, port "
          f"{args.port}; readable by you only); its token is PARTNER_API_TOKEN in the file")


if __name__ == "__main__":
    main()
