"""A complete deploy/.env with fresh secrets, and the hub's CA and broker certificate beside it, so that
nobody types thirteen secrets by hand (issue 24).

    python -m devstack.deploy_env                      # writes deploy/.env and deploy/tls/
    python -m devstack.deploy_env --host hub.example.com --out other.env

It never replaces an existing file: Kafka's data volume is formatted with the cluster id and users of
the .env it first started with, and a new .env against the old volumes leaves Kafka refusing to start
("Invalid cluster.id"). To start afresh: `docker compose -f deploy/compose.yaml down -v` first (which
deletes every volume: tickets, messages, mail), then remove the old file."""
import argparse
import secrets
import sys
from pathlib import Path

from devstack import infra, kafka_broker, tls

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SIDES = ("LEAD", "INSOURCING", "BRIDGE")


def fresh(tls_dir: Path, hosts: list[str]) -> dict[str, str]:
    """Every value deploy/env.example lists, freshly generated, and KAFKA_TLS_DIR when not the default."""
    hub_tls = tls.ensure(tls_dir, ["kafka", *hosts])
    values = hub_tls.config_values()
    return {
        **{f"{side}_POSTGRES_PASSWORD": secrets.token_urlsafe(24) for side in SIDES},
        **{f"{side}_API_TOKEN": f"{prefix}_{secrets.token_urlsafe(24)}"
           for side, prefix in zip(SIDES, ("lp", "ip", "sb"))},
        "KAFKA_CLUSTER_ID": kafka_broker.new_cluster_id(),
        "KAFKA_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        **{f"{side}_KAFKA_PASSWORD": secrets.token_urlsafe(24) for side in SIDES},
        **{name: value for name, value in infra.signing_env().items() if name != "BRIDGE_SIGNING_KEYS"},
        "KAFKA_TLS_KEY": values["SSL_KEY"],
        "KAFKA_TLS_CERTIFICATE_CHAIN": values["SSL_CERTIFICATE_CHAIN"],
        **({} if tls_dir.resolve() == (DEPLOY / "tls").resolve() else {"KAFKA_TLS_DIR": str(tls_dir.resolve())}),
        "BRIDGE_UI_SECRET": secrets.token_urlsafe(24),  # bridge replicas share sessions
    }


def env_text(values: dict[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEPLOY / ".env", help="the env file to write (default deploy/.env)")
    parser.add_argument("--tls-dir", type=Path, default=DEPLOY / "tls",
                        help="where the hub's CA and the broker's certificate go (default deploy/tls)")
    parser.add_argument("--host", action="append", default=[],
                        help="another name or address the broker is reached by (repeatable; `kafka` is always one)")
    args = parser.parse_args(argv)
    if args.out.exists():
        sys.exit(f"{args.out} exists already and is kept: a new one against the old volumes would leave Kafka "
                 f"refusing to start. To start afresh, run `docker compose -f deploy/compose.yaml down -v` "
                 f"(it deletes every volume), remove {args.out}, and run this again.")
    values = fresh(args.tls_dir, args.host)
    infra.write_private(args.out, env_text(values))
    print(f"wrote {args.out} ({len(values)} values, readable by you only) and the hub's CA and broker "
          f"certificate in {args.tls_dir}; the API tokens are in the file (LEAD_API_TOKEN, ...)")


if __name__ == "__main__":
    main()
