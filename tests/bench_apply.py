"""`make bench-apply`: the CPU one message costs each consumer, measured in this process against a
real PostgreSQL, through the real inbox (`InboxConsumer`) and each service's real handler, without
Kafka or HTTP: one message per transaction (a quiet link) and 25 per transaction (a busy poll). The
four messages every note makes: the mirror the partner stores, the bridge passing the item on, the
bridge passing the receipt back, the creator taking the receipt. Issue 11 measured its plain-SQL
hot paths with it; the floor printed first is an empty transaction of the same session machinery."""
import asyncio
import os
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from devstack import infra
from services.insourcing_partner.received_work import Insourcing
from services.insourcing_partner.settings import InsourcingSettings
from services.lead_partner.outsourcing import LeadOutsourcing
from services.lead_partner.settings import LeadSettings
from services.sync_bridge.bridge import Bridge
from services.sync_bridge.directory import Directory
from services.sync_bridge.mirroring import MIRROR_NAMESPACE
from shared.contracts.envelope import Payload, envelope
from shared.contracts.messages import ItemCreated, ItemDelivered, MirrorApplied, MirrorUpsert
from shared.platform.inbox import APPLY_TOGETHER, InboxConsumer
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.migrations import upgrade
from tests.handlers.sides import LEAD, PARTNER, Side, accepted_work, active_link, outsourced
from tests.harness import resolve_infrastructure

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = int(os.environ.get("BENCH_APPLY_MESSAGES", 300))
ROUNDS = 2


class Record:
    """What the inbox reads of a Kafka record when it applies a batch."""

    def __init__(self, topic: str, key: bytes):
        self.topic, self.key = topic, key


async def cpu_per_message(side: Side, make: Callable[[int], Payload], source: str, topic: str) -> dict[str, list[float]]:
    """ms of this process's CPU per message, alone and in batches, ROUNDS times each."""
    consumer = InboxConsumer(side.sessions, None, side.handle, "bench", None)
    out: dict[str, list[float]] = {"alone": [], "batched": []}
    for _ in range(ROUNDS):
        for mode in out:
            ready = [(Record(topic, p.link_id.encode()), envelope(p, source=source, link_id=p.link_id), p)
                     for p in (make(n) for n in range(MESSAGES))]
            started = time.process_time()
            if mode == "alone":
                for _, env, payload in ready:
                    await consumer._apply_retrying(env, payload, topic)
            else:
                for start in range(0, MESSAGES, APPLY_TOGETHER):
                    await consumer._apply_together(ready[start:start + APPLY_TOGETHER])
            out[mode].append((time.process_time() - started) * 1000 / MESSAGES)
    return out


async def empty_transactions(side: Side) -> list[float]:
    figures = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(MESSAGES):
            async with side.sessions() as session, session.begin():
                await session.connection()
        figures.append((time.process_time() - started) * 1000 / MESSAGES)
    return figures


def line(name: str, figures: list[float]) -> str:
    return f"{name:<66} " + " / ".join(f"{f:5.2f}" for f in figures) + " ms CPU per message"


async def run(urls: dict[str, str]) -> None:
    insourcing = Insourcing(InsourcingSettings(database_url=urls["insourcing_partner"]))
    partner = Side(urls["insourcing_partner"], insourcing.handle)
    partner.service = insourcing
    bridge = Side(urls["sync_bridge"], Bridge(Directory.of({LEAD: "lead", PARTNER: "insourcing"})).handle)
    outsourcing = LeadOutsourcing(LeadSettings(database_url=urls["lead_partner"]))
    lead = Side(urls["lead_partner"], outsourcing.handle)
    lead.service = outsourcing
    try:
        print(line("floor: an empty transaction", await empty_transactions(partner)))
        link_id, _ = await accepted_work(partner)
        figures = await cpu_per_message(partner, lambda n: MirrorUpsert(
            link_id=link_id, mirror_id=str(uuid.uuid4()), kind="note", fields={"title": "", "body": f"note {n}"},
            source_version=1, source_hash="h"), "bridge", inbound_topic(PARTNER))
        report("partner stores a mirror (mirror.upsert)", figures)

        bridged = await active_link(bridge)
        items: list[str] = []

        def created(n: int) -> ItemCreated:
            items.append(str(uuid.uuid4()))
            return ItemCreated(link_id=bridged, item_id=items[-1], kind="note", fields={"title": "", "body": f"n {n}"})
        report("bridge passes an item on (item.created)", await cpu_per_message(bridge, created, LEAD, outbound_topic(LEAD)))
        mirrors = iter(items)
        report("bridge passes its receipt back (mirror.applied)", await cpu_per_message(bridge, lambda n: MirrorApplied(
            link_id=bridged, mirror_id=str(uuid.uuid5(MIRROR_NAMESPACE, f"{bridged}:{next(mirrors)}")), source_version=1),
            PARTNER, outbound_topic(PARTNER)))

        _, outsourced_link = await outsourced(lead)
        report("creator takes the receipt (item.delivered)", await cpu_per_message(lead, lambda n: ItemDelivered(
            link_id=outsourced_link, item_id=str(uuid.uuid4()), version=1), "bridge", inbound_topic(LEAD)))
    finally:
        for side in (partner, bridge, lead):
            await side.engine.dispose()


def report(name: str, figures: dict[str, list[float]]) -> None:
    print(line(f"{name}, alone", figures["alone"]))
    print(line(f"{name}, {APPLY_TOGETHER} a transaction", figures["batched"]))


def main() -> None:
    resolved = resolve_infrastructure("tansu")  # only its PostgreSQL is used
    try:
        run_id = secrets.token_hex(4)
        names = {s: f"ba{run_id}_{s}" for s in ("lead_partner", "insourcing_partner", "sync_bridge")}
        urls = infra.create_databases(resolved.postgres_admin_url, list(names.values()))
        try:
            for service, name in names.items():
                upgrade(ROOT / "services" / service / "migrations", urls[name])
            print(f"make bench-apply: {MESSAGES} messages, {ROUNDS} rounds each, PostgreSQL from {resolved.postgres_source}")
            asyncio.run(run({s: urls[n] for s, n in names.items()}))
        finally:
            infra.drop_databases(resolved.postgres_admin_url, list(names.values()))
    finally:
        resolved.close()


if __name__ == "__main__":
    main()
