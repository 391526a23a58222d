"""`make run` as a newcomer uses it: everything comes up ready, a component that dies is restarted,
and SIGTERM (like Ctrl-C) leaves no process behind."""
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from devstack import infra
from tests.harness import ROOT


@pytest.fixture
def stack_env(infrastructure):
    names = [f"devstack_{n}_{os.getpid()}" for n in ("lead", "insourcing", "bridge")]
    urls = infra.create_databases(infrastructure.postgres_admin_url, names, drop_first=True)
    ports = {k: infra.free_port() for k in ("LEAD_PORT", "INSOURCING_PORT", "BRIDGE_PORT", "DEVSTACK_SMTP_PORT")}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
        "LEAD_DATABASE_URL": urls[names[0]],
        "INSOURCING_DATABASE_URL": urls[names[1]],
        "BRIDGE_DATABASE_URL": urls[names[2]],
        **{k: str(v) for k, v in ports.items()},
    }
    env.pop("SMTP_HOST", None)
    yield env
    infra.drop_databases(infrastructure.postgres_admin_url, names)


def test_make_run_serves_restarts_a_dead_component_and_stops_cleanly(stack_env, tmp_path):
    log = tmp_path / "run.log"
    supervisor = subprocess.Popen([sys.executable, "-m", "devstack.run"], env=stack_env, cwd=ROOT,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in log.read_text():
            assert supervisor.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        banner = log.read_text()
        token = banner.split("lead_partner")[1].split("token: ")[1].split()[0]
        lead = f"http://127.0.0.1:{stack_env['LEAD_PORT']}"
        created = httpx.post(f"{lead}/api/tickets", json={"title": "via make run"},
                             headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201
        children = psutil.Process(supervisor.pid).children(recursive=True)
        [service] = [c for c in children if "services.insourcing_partner" in " ".join(c.cmdline())]
        service.kill()
        insourcing = f"http://127.0.0.1:{stack_env['INSOURCING_PORT']}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{insourcing}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the dead component was not restarted"
            time.sleep(0.2)
        assert "insourcing_partner exited" in log.read_text()
        children = psutil.Process(supervisor.pid).children(recursive=True)
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], [p.cmdline() for p in alive]
        assert "stopped" in log.read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
