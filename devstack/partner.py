"""`make partner ROLE=insourcing ID=globex NAME="Globex" PORT=8012 [TOKEN=...]`: one more partner company
beside a running `make run` (SPEC section 10). It is onboarded through the bridge's API, gets its own
embedded PostgreSQL under var/partners/<id>/, starts from its bundle alone, prints its URL and token,
and stops (its database too) on Ctrl-C. It finds the running `make run` by var/run.json."""
import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devstack import infra
from devstack.hub import Bridge
from devstack.run import ROOT, VAR

MODULES = {"lead": ("lead_partner", "LEAD", "lp"), "insourcing": ("insourcing_partner", "INSOURCING", "ip")}


def running_stack() -> dict:
    path = VAR / "run.json"
    if not path.exists():
        raise SystemExit(f"no make run found ({path} is missing): start `make run` first, then `make partner` "
                         "in another terminal")
    run = json.loads(path.read_text())
    if not _alive(run["pid"]):
        raise SystemExit(f"the make run that wrote {path} (pid {run['pid']}) is not running: start `make run` first")
    return run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make partner", description=__doc__)
    parser.add_argument("--role", required=True, choices=sorted(MODULES))
    parser.add_argument("--id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--token", default="")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}[a-z0-9]", args.id):
        raise SystemExit(f"ID={args.id!r}: a partner id is 2-64 lowercase letters, digits and inner hyphens")
    if infra.port_answers("127.0.0.1", args.port):
        raise SystemExit(f"PORT={args.port} is taken: choose another")
    run = running_stack()
    signal.signal(signal.SIGINT, _stop)  # installed explicitly: a shell starts background jobs with SIGINT ignored
    signal.signal(signal.SIGTERM, _stop)
    module, prefix, token_prefix = MODULES[args.role]
    home = VAR / "partners" / args.id
    (home / "logs").mkdir(parents=True, exist_ok=True)
    bundle = Bridge.at(run["bridge_url"], run["bridge_token"]).bundle_for(args.id, args.role, args.name,
                                                                         home / "bundle.json", rotate_missing=False)
    token = args.token or _kept_token(home / "token", token_prefix)

    server, admin_url = infra.start_embedded_postgres(home / "pg")
    proc = None
    try:
        database = infra.create_databases(admin_url, [module])[module]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KAFKA_", "LEAD_", "INSOURCING_", "BRIDGE_", "SMTP_", "PARTNER_"))}
        env |= {"PARTNER_BUNDLE_FILE": str(bundle), f"{prefix}_DATABASE_URL": database,
                f"{prefix}_PORT": str(args.port), f"{prefix}_API_TOKEN": token, f"{prefix}_PARTNER_NAME": args.name,
                "SMTP_HOST": run["smtp_host"], "SMTP_PORT": run["smtp_port"],
                f"{prefix}_NOTIFY_EMAIL": f"desk@{args.id}.example", "KAFKA_SESSION_TIMEOUT_MS": "6000"}
        migrated = subprocess.run([sys.executable, "-m", f"services.{module}", "migrate"], env=env, cwd=ROOT,
                                  capture_output=True, text=True)
        if migrated.returncode != 0:
            raise SystemExit(f"migrating {args.id}'s database failed:\n{migrated.stderr[-3000:]}")
        log = home / "logs" / f"{module}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", f"services.{module}", "serve"], env=env, cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(f"http://127.0.0.1:{args.port}", proc, log)
        print(f"\n{args.name} ({args.id}, {args.role} partner) is running:\n"
              f"  http://127.0.0.1:{args.port}  (web UI /, API docs /docs)  token: {token}\n"
              f"  its bundle {bundle}, its database {home / 'pg'}, its log {log}\n"
              "Ctrl-C stops it (the hub keeps it onboarded; `make partner` with the same ID starts it again).",
              flush=True)
        while proc.poll() is None:
            time.sleep(0.5)
        raise SystemExit(f"{args.id} exited with {proc.returncode}; see {log}")
    except KeyboardInterrupt:
        print(f"\nstopping {args.id}...", flush=True)
    finally:
        if proc is not None:
            infra.stop_process(proc)
        infra.stop_embedded_postgres(server)


def _kept_token(path: Path, prefix: str) -> str:
    if path.exists():
        return path.read_text().strip()
    token = f"{prefix}_{secrets.token_urlsafe(24)}"
    infra.write_private(path, token + "\n")
    return token


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the partner service exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the partner service was not ready after {timeout:.0f}s; see {log}")


if __name__ == "__main__":
    main()
