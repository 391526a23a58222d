"""`make bench-apply`: the CPU one message costs each consumer, measured in this process against a
real PostgreSQL, through the real inbox (`InboxConsumer`) and each service's real handler, without
Kafka or HTTP: one message per transaction (a quiet link), 25 per transaction (a busy poll), and 25
per transaction applied set-based (issue 30; all of one link's, so the figure is a hot link's or a
backlog's, where per-link statements are shared by the whole batch). The four messages every note
makes: the mirror the partner stores, the bridge passing the item on, the bridge passing the receipt
back, the creator taking the receipt. Issue 11 measured its plain-SQL hot paths with it; the floors
printed first are an empty transaction of the same session machinery, a committed one-row INSERT's
wall-clock time, and decoding a message."""
import asyncio
import itertools
import json
import os
import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

from devstack import infra
from services.insourcing_partner.received_work import Insourcing
from services.insourcing_partner.settings import InsourcingSettings
from services.lead_partner.outsourcing import LeadOutsourcing
from services.lead_partner.settings import LeadSettings
from services.sync_bridge.bridge import Bridge
from services.sync_bridge.directory import Directory
from services.sync_bridge.mirroring import MIRROR_NAMESPACE
from shared.contracts.envelope import Payload, envelope, parse
from shared.contracts.messages import ItemCreated, ItemDelivered, MirrorApplied, MirrorUpsert
from shared.platform.inbox import APPLY_TOGETHER, InboxConsumer
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.db import asyncpg_dsn
from shared.platform.migrations import upgrade
from tests.handlers.sides import LEAD, PARTNER, Side, accepted_work, active_link, directory, outsourced
from tests.harness import resolve_infrastructure

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = int(os.environ.get("BENCH_APPLY_MESSAGES", 300))
ROUNDS = 2


class Record:
    """What the inbox reads of a Kafka record when it applies a batch: where it was read (the
    inbox moves the partition's position past it) and its key."""

    offsets = itertools.count()

    def __init__(self, topic: str, key: bytes):
        self.topic, self.key = topic, key
        self.partition, self.offset = 0, next(self.offsets)


async def cpu_per_message(side: Side, make: Callable[[int], Payload], source: str, topic: str,
                          together=None) -> dict[str, list[float]]:
    """ms of this process's CPU per message, alone and in batches, ROUNDS times each; with `together`
    (the service's set-based handlers), in batches both one at a time and set-based."""
    consumer = InboxConsumer(side.sessions, None, side.handle, "bench", None)
    out: dict[str, list[float]] = {"alone": [], "batched": []} | ({"together": []} if together else {})
    set_based = InboxConsumer(side.sessions, None, side.handle, "bench", None, together=together)
    for _ in range(ROUNDS):
        for mode in out:
            ready = [(Record(topic, p.link_id.encode()), envelope(p, source=source, link_id=p.link_id), p)
                     for p in (make(n) for n in range(MESSAGES))]
            started = time.process_time()
            if mode == "alone":
                for _, env, payload in ready:
                    await consumer._apply_retrying(env, payload, topic)
            else:
                applier = set_based if mode == "together" else consumer
                for start in range(0, MESSAGES, APPLY_TOGETHER):
                    await applier._apply_together(ready[start:start + APPLY_TOGETHER])
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


async def durable_commits(url: str) -> list[float]:
    """Wall-clock ms of one committed single-row INSERT, p50 per round: what each transaction on a
    note's path waits for at least (the WAL flushed to disk), beside the CPU figures here."""
    figures = []
    raw = await asyncpg.connect(asyncpg_dsn(url))  # each statement its own transaction
    try:
        await raw.execute("CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, body text)")
        for _ in range(ROUNDS):
            waits = []
            for n in range(MESSAGES):
                started = time.perf_counter()
                await raw.execute("INSERT INTO bench_commits (body) VALUES ($1)", f"note {n}")
                waits.append((time.perf_counter() - started) * 1000)
            figures.append(statistics.median(waits))
    finally:
        await raw.close()
    return figures


def decoding(samples: int = 20_000) -> str:
    """µs of CPU to read one message as the inbox does (JSON, then the envelope's and the payload's
    pydantic models), beside the JSON parse alone: the leanest decoder could save at most the difference."""
    payload = MirrorUpsert(link_id=str(uuid.uuid4()), mirror_id=str(uuid.uuid4()), kind="note",
                           fields={"title": "", "body": "a note of a few words " * 5}, source_version=1, source_hash="h" * 64)
    raw = envelope(payload, source="bridge", link_id=payload.link_id).to_bytes()
    started = time.process_time()
    for _ in range(samples):
        parse(raw)
    parsed = (time.process_time() - started) * 1e6 / samples
    started = time.process_time()
    for _ in range(samples):
        json.loads(raw)
    loaded = (time.process_time() - started) * 1e6 / samples
    return (f"{'decoding a mirror.upsert of ' + str(len(raw)) + ' bytes: pydantic / json.loads alone':<66} "
            f"{parsed:5.1f} / {loaded:5.1f} µs CPU per message")


def line(name: str, figures: list[float]) -> str:
    return f"{name:<66} " + " / ".join(f"{f:5.2f}" for f in figures) + " ms CPU per message"


async def run(urls: dict[str, str]) -> None:
    insourcing = Insourcing(InsourcingSettings(database_url=urls["insourcing_partner"]))
    partner = Side(urls["insourcing_partner"], insourcing.handle)
    partner.service = insourcing
    passing = Bridge(Directory.of({LEAD: "lead", PARTNER: "insourcing"}))
    bridge = Side(urls["sync_bridge"], passing.handle)
    outsourcing = LeadOutsourcing(LeadSettings(database_url=urls["lead_partner"]))
    lead = Side(urls["lead_partner"], outsourcing.handle)
    lead.service = outsourcing
    try:
        print(line("floor: an empty transaction", await empty_transactions(partner)))
        print(f"{'a committed one-row INSERT, wall-clock p50':<66} "
              + " / ".join(f"{f:5.2f}" for f in await durable_commits(urls['insourcing_partner'])) + " ms")
        print(decoding())
        link_id, _ = await accepted_work(partner)
        figures = await cpu_per_message(partner, lambda n: MirrorUpsert(
            link_id=link_id, mirror_id=str(uuid.uuid4()), kind="note", fields={"title": "", "body": f"note {n}"},
            source_version=1, source_hash="h"), "bridge", inbound_topic(PARTNER), together=insourcing.mirroring.together())
        report("partner stores a mirror (mirror.upsert)", figures)

        bridged = await active_link(bridge)
        items: list[str] = []

        def created(n: int) -> ItemCreated:
            items.append(str(uuid.uuid4()))
            return ItemCreated(link_id=bridged, item_id=items[-1], kind="note", fields={"title": "", "body": f"n {n}"})
        report("bridge passes an item on (item.created)", await cpu_per_message(bridge, created, LEAD, outbound_topic(LEAD),
                                                                                together=passing.together()))
        mirrors = itertools.cycle(items)  # a receipt again is passed on again
        report("bridge passes its receipt back (mirror.applied)", await cpu_per_message(bridge, lambda n: MirrorApplied(
            link_id=bridged, mirror_id=str(uuid.uuid5(MIRROR_NAMESPACE, f"{bridged}:{next(mirrors)}")), source_version=1),
            PARTNER, outbound_topic(PARTNER), together=passing.together()))

        await lead.receive(directory(1))  # as the bridge answers the lead: it may outsource to the partner
        _, outsourced_link = await outsourced(lead)
        report("creator takes the receipt (item.delivered)", await cpu_per_message(lead, lambda n: ItemDelivered(
            link_id=outsourced_link, item_id=str(uuid.uuid4()), version=1), "bridge", inbound_topic(LEAD),
            together=outsourcing.sync.together()))
    finally:
        for side in (partner, bridge, lead):
            await side.engine.dispose()


def report(name: str, figures: dict[str, list[float]]) -> None:
    print(line(f"{name}, alone", figures["alone"]))
    print(line(f"{name}, {APPLY_TOGETHER} a transaction", figures["batched"]))
    if "together" in figures:
        print(line(f"{name}, {APPLY_TOGETHER} a transaction, set-based", figures["together"]))


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
