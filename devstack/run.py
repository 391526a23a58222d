"""`make run`: the whole system on one machine, supervised. Starts what is not given by the
environment (broker, embedded PostgreSQL, mail sink), migrates, starts the three services, prints
their URLs and tokens, restarts a component that dies, and stops everything on Ctrl-C or SIGTERM."""
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devstack import infra

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
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

    def start(self) -> None:
        out = open(self.log, "ab")
        # Its own session: a terminal's Ctrl-C reaches only the supervisor, which stops the
        # components in order instead of racing them (and restarting one that already exited).
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)


class Stack:
    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.broker: subprocess.Popen | None = None
        self.postgres = None
        self.components: list[Component] = []
        self.stopping = False

    def say(self, text: str) -> None:
        print(f"[make run] {text}", flush=True)

    # --- infrastructure -------------------------------------------------------------------------

    def start_broker(self) -> None:
        if self.env.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.say(f"using Kafka at {self.env['KAFKA_BOOTSTRAP_SERVERS']}")
            return
        port = int(self.env.get("DEVSTACK_KAFKA_PORT", "9092"))
        if infra.port_answers("127.0.0.1", port):
            sys.exit(f"port {port} is taken; set DEVSTACK_KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS")
        self.broker = infra.start_tansu(port, VAR / "logs" / "broker.log")
        self.env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
        self.say(f"Tansu broker (memory storage) on 127.0.0.1:{port}")

    def start_databases(self) -> None:
        missing = [prefix for _, prefix, _, _ in SERVICES if not self.env.get(f"{prefix}_DATABASE_URL")]
        if not missing:
            self.say("using the databases named by *_DATABASE_URL")
            return
        self.postgres, admin = infra.start_embedded_postgres(VAR / "pg")
        names = {prefix: module for module, prefix, _, _ in SERVICES if prefix in missing}
        urls = infra.create_databases(admin, list(names.values()))
        for prefix, module in names.items():
            self.env[f"{prefix}_DATABASE_URL"] = urls[module]
        self.say(f"embedded PostgreSQL, data in {VAR / 'pg'}")

    def tokens(self) -> None:
        """Operator tokens: from the environment, else the ones generated on an earlier run (kept
        in the ignored var/ folder), else new random ones."""
        path = VAR / "tokens.env"
        saved = {}
        if path.exists():
            saved = dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)
        for _, prefix, _, token_prefix in SERVICES:
            key = f"{prefix}_API_TOKEN"
            if not self.env.get(key):
                self.env[key] = saved.get(key) or f"{token_prefix}_{secrets.token_urlsafe(24)}"
                saved[key] = self.env[key]
        path.write_text("".join(f"{k}={v}\n" for k, v in saved.items()))
        path.chmod(0o600)

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
                Component(module, [sys.executable, "-m", f"services.{module}", "serve"], self.env,
                          VAR / "logs" / f"{module}.log")
            )

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
            lines.append(f"  {module:<19} http://127.0.0.1:{port}  (docs /docs)  token: {self.env[f'{prefix}_API_TOKEN']}")
        lines.append(f"  Kafka               {self.env['KAFKA_BOOTSTRAP_SERVERS']}")
        sink = any(c.name == "mail sink" for c in self.components)
        lines.append(f"  mail                {self.env['SMTP_HOST']}:{self.env['SMTP_PORT']}"
                     + (f"  (local sink, kept in {VAR / 'mail'})" if sink else ""))
        lines.append(f"  logs                {VAR / 'logs'}")
        lines.append("Example:")
        lines.append(f"  curl -H 'Authorization: Bearer {self.env['LEAD_API_TOKEN']}' -H 'Content-Type: application/json' "
                     f"-d '{json.dumps({'title': 'Printer offline'})}' http://127.0.0.1:{self.env['LEAD_PORT']}/api/tickets")
        lines.append("Ctrl-C stops everything.")
        print("\n".join(lines), flush=True)

    # --- supervision ----------------------------------------------------------------------------

    def supervise(self) -> None:
        while not self.stopping:
            for c in self.components:
                if c.proc and c.proc.poll() is not None and not self.stopping:
                    now = time.monotonic()
                    c.restarts = [t for t in c.restarts if now - t < 60] + [now]
                    self.say(f"{c.name} exited with {c.proc.returncode}; restarting (log: {c.log})")
                    if len(c.restarts) > 10:
                        self.say(f"{c.name} keeps dying; waiting 5s before the next try")
                        time.sleep(5)
                    c.start()
            time.sleep(0.5)

    def stop(self, *_: object) -> None:
        if self.stopping:
            return
        self.stopping = True
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
        if self.broker:
            infra.stop_process(self.broker)
        if self.postgres:
            infra.stop_embedded_postgres(self.postgres)
        self.say("stopped")

    def run(self) -> None:
        (VAR / "logs").mkdir(parents=True, exist_ok=True)
        # Installed explicitly: a shell starts background jobs with SIGINT ignored.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            self.start_broker()
            self.start_databases()
            self.tokens()
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
