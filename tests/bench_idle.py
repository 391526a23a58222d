"""`make bench-idle`: what 10,000 idle, reconciled links cost (issue 9: under 5 % of a core). The
three services run with RECONCILE_INTERVAL_S=5 (six times the default rate, so a harsher figure);
their CPU time and the PostgreSQL server's are measured over a window with no links, then again
with 10,000 linked tickets on each side and 10,000 links at the bridge, all confirmed in sync."""
import asyncio
import os
import time
import uuid

import asyncpg
import psutil

from devstack import infra
from shared.platform.db import asyncpg_dsn
from tests.harness import ServiceProcess, resolve_infrastructure

LINKS = int(os.environ.get("BENCH_IDLE_LINKS", 10_000))
WINDOW = float(os.environ.get("BENCH_IDLE_SECONDS", 60))
INTERVAL = "5"
FLOOR = 5.0  # % of one core, the limit


def postgres_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure(procs: dict[str, ServiceProcess], seconds: float) -> dict[str, float]:
    """% of one core each service (and PostgreSQL, all its processes) used during `seconds`."""
    watched = {name: [psutil.Process(p.proc.pid)] for name, p in procs.items()}
    watched["postgresql"] = postgres_processes()
    before = {name: cpu_seconds(ps) for name, ps in watched.items()}
    time.sleep(seconds)
    watched["postgresql"] = postgres_processes()  # backends come and go; most CPU is in long-lived ones
    return {name: 100 * (cpu_seconds(ps) - before[name]) / seconds for name, ps in watched.items()}


async def seed(urls: dict[str, str]) -> None:
    """LINKS linked tickets, each side confirmed in sync, as reconciliation leaves them."""
    lead = await asyncpg.connect(asyncpg_dsn(urls["lead_partner"]))
    partner = await asyncpg.connect(asyncpg_dsn(urls["insourcing_partner"]))
    bridge = await asyncpg.connect(asyncpg_dsn(urls["sync_bridge"]))
    try:
        links = [str(uuid.uuid4()) for _ in range(LINKS)]
        lead_tickets = [str(uuid.uuid4()) for _ in range(LINKS)]
        partner_tickets = [str(uuid.uuid4()) for _ in range(LINKS)]
        for conn, tickets, prefix in ((lead, lead_tickets, "L"), (partner, partner_tickets, "I")):
            await conn.executemany(
                "INSERT INTO tickets (id, number, title, description, status) VALUES ($1, $2, 'idle', '', 'New')",
                [(t, f"{prefix}{n:07d}") for n, t in enumerate(tickets)])
            await conn.executemany(
                "INSERT INTO link_sync (link_id, changed_at, confirmed_through, manifest_as_of, last_reconciled_at, in_sync)"
                " VALUES ($1, now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour', now(), true)",
                [(link,) for link in links])
        await lead.executemany(
            "INSERT INTO outsourcings (link_id, ticket_id, partner_id, partner_name, status, instructions)"
            " VALUES ($1, $2, 'insourcing-partner', 'Insourcing Partner', 'In Progress', '')",
            list(zip(links, lead_tickets)))
        await partner.executemany(
            "INSERT INTO received_work (link_id, lead_partner_id, lead_partner_name, lead_ticket_number, title,"
            " description, instructions, status, ticket_id) VALUES ($1, 'lead-partner', 'Lead', 'L1', 'idle', '', '',"
            " 'In Progress', $2)",
            list(zip(links, partner_tickets)))
        await bridge.executemany(
            "INSERT INTO links (id, state, lead_partner_id, lead_ticket_id, insourcing_partner_id, insourcing_ticket_id,"
            " last_event_at, last_reconciled_at, in_sync) VALUES ($1, 'active', 'lead-partner', $2, 'insourcing-partner',"
            " $3, now() - interval '1 hour', now(), true)",
            list(zip(links, lead_tickets, partner_tickets)))
        for conn in (lead, partner, bridge):
            await conn.execute("ANALYZE")
    finally:
        for conn in (lead, partner, bridge):
            await conn.close()


def table(title: str, used: dict[str, float]) -> str:
    rows = [f"  {name:<20} {percent:6.2f} % of a core" for name, percent in used.items()]
    return "\n".join([title, *rows, f"  {'total':<20} {sum(used.values()):6.2f} % of a core"])


def main() -> None:
    resolved = resolve_infrastructure(None)
    names = {n: f"bench_{uuid.uuid4().hex[:6]}_{n}" for n in ("lead_partner", "insourcing_partner", "sync_bridge")}
    urls = infra.create_databases(resolved.postgres_admin_url, list(names.values()))
    try:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": resolved.kafka_bootstrap,
            **resolved.kafka_service_env,
            **infra.signing_env(),
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "LEAD_DATABASE_URL": urls[names["lead_partner"]],
            "INSOURCING_DATABASE_URL": urls[names["insourcing_partner"]],
            "BRIDGE_DATABASE_URL": urls[names["sync_bridge"]],
            "RECONCILE_INTERVAL_S": INTERVAL,
            "LOG_LEVEL": "WARNING",
        }
        procs = {n: ServiceProcess(n, env) for n in names}
        for p in procs.values():
            p.migrate()
            p.start()
        try:
            for p in procs.values():
                p.wait_ready()
            by_service = {n: urls[db] for n, db in names.items()}
            time.sleep(5)  # past start-up
            empty = measure(procs, WINDOW)
            asyncio.run(seed(by_service))
            time.sleep(5)
            loaded = measure(procs, WINDOW)
            extra = sum(loaded.values()) - sum(empty.values())
            print("\n".join([
                "",
                f"make bench-idle on {resolved.kafka_source}; PostgreSQL from {resolved.postgres_source}",
                f"RECONCILE_INTERVAL_S={INTERVAL} (default 30), each window {WINDOW:.0f} s",
                table("no links:", empty),
                table(f"{LINKS} idle links in sync:", loaded),
                f"cost of the idle links: {extra:.2f} % of a core (floor: under {FLOOR:.0f} %)",
            ]), flush=True)
        finally:
            for p in procs.values():
                p.stop()
    finally:
        infra.drop_databases(resolved.postgres_admin_url, list(names.values()))
        resolved.close()


if __name__ == "__main__":
    main()
