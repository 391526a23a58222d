"""`make bench`: how long a note takes to show up on the other side, beside two floors measured in
the same run on the same broker: one HTTP round trip, and one Kafka produce->consume hop; the write
path of a note alone, on a ticket that is outsourced and on one that is not; a quiet link's note
while a hot link is flooded, and after an outage behind a hot link's backlog; under each note
figure, where its time went, stage by stage; throughput, a backlog's drain, big-ticket pages and
memory. It runs on Apache Kafka (where it can run) and on Tansu, one table each; `make bench` then
runs `make bench-idle` (tests/bench_idle.py), what idle links cost."""
import asyncio
import os
import statistics
import time
import uuid
from dataclasses import dataclass

import httpx
import psutil

from sqlalchemy import text

from devstack import infra
from shared.platform.db import make_engine
from shared.platform.kafka import KafkaAccess, ensure_topics, make_consumer, make_producer, probe_broker
from tests import load
from tests.e2e.flows import items, linked_tickets
from tests.harness import ServiceProcess, resolve_infrastructure, wait_for_directory
from tests.skeleton import Skeleton

SAMPLES = int(os.environ.get("BENCH_SAMPLES", 500))
LINKS = 50
RATE_NOTES = int(os.environ.get("BENCH_RATE_NOTES", 2000))
POLL = float(os.environ.get("BENCH_POLL_SECONDS", 0.003))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", 20_000))
BACKLOG_LINKS = 100
HOT_BACKLOG = int(os.environ.get("BENCH_HOT_BACKLOG", 400))
BIG_TICKET = 100_000
IDLE_S = float(os.environ.get("BENCH_IDLE_SECONDS", 60))  # resident memory again after this long idle
POOL = int(os.environ.get("DATABASE_POOL_SIZE", 10)) + int(os.environ.get("DATABASE_MAX_OVERFLOW", 2))
# BENCH_WORKERS=1: each partner service as `serve --api-only` and a `worker` beside it (issue 30).
WORKERS = os.environ.get("BENCH_WORKERS", "").lower() in ("1", "true", "yes")


def percentile(seconds: list[float], pct: int) -> float:
    """The pct-th percentile, in ms."""
    return statistics.quantiles(sorted(s * 1000 for s in seconds), n=100)[pct - 1]


@dataclass(frozen=True)
class Ratio:
    """One of issue 30's targets: a figure of this run divided by another of the same run."""
    name: str
    numerator: float
    denominator: float
    at_most: float | None = None
    at_least: float | None = None
    also: bool = True  # a condition of the target beyond the ratio (a quiet p99 itself on target)

    @property
    def value(self) -> float:
        return self.numerator / self.denominator if self.denominator else float("inf")

    @property
    def met(self) -> bool:
        within = self.value <= self.at_most if self.at_most is not None else self.value >= self.at_least
        return within and self.also

    def line(self) -> str:
        target = f"<= {self.at_most:g}" if self.at_most is not None else f">= {self.at_least:g}"
        return (f"  {self.name:<62} {self.numerator:9.1f} / {self.denominator:7.1f} = {self.value:5.2f}"
                f"  target {target:<5} {'met' if self.met else 'NOT met'}")


def quiet_ratios(floor_sum: float, quiet: list[float], who: str = "") -> list[Ratio]:
    """Two of issue 30's targets: the quiet note's p50 and p99 against the floor-sum."""
    return [
        Ratio(f"{who}quiet note p50 / floor-sum (2 HTTP + 2 Kafka hops), ms", percentile(quiet, 50), floor_sum, at_most=2),
        Ratio(f"{who}quiet note p99 / floor-sum, ms", percentile(quiet, 99), floor_sum, at_most=4),
    ]


def ratios(floor_sum: float, quiet: list[float], beside_hot: list[float], product_cpu: float, post_cpu: float,
           accepted: float, delivered: float, drained: float) -> list[Ratio]:
    """Issue 30's six targets, from figures of one run (ms, CPU ms per note, notes/s)."""
    quiet_p99 = percentile(quiet, 99)
    return [
        *quiet_ratios(floor_sum, quiet),
        Ratio("product CPU per mirrored note / lead CPU per plain POST, ms", product_cpu, post_cpu, at_most=2.5),
        Ratio("sustained: delivered within the phase / accepted, notes/s", delivered, accepted, at_least=0.98),
        Ratio("quiet p99 beside a hot link / quiet p99 (and quiet p99 on target), ms", percentile(beside_hot, 99),
              quiet_p99, at_most=2, also=quiet_p99 <= 4 * floor_sum),
        Ratio("backlog drained end to end / sustained delivered, notes/s", drained, delivered, at_least=3),
    ]


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100)
    return f"{name:<44} n={len(ms):<5} p50={q[49]:7.2f} ms  p95={q[94]:7.2f} ms  p99={q[98]:7.2f} ms"


async def http_floor(client: httpx.AsyncClient) -> list[float]:
    out = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        (await client.get("/healthz")).raise_for_status()
        out.append(time.perf_counter() - started)
    return out


async def kafka_floor(access: KafkaAccess) -> list[float]:
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    await ensure_topics(access, [topic], 1)
    profile = await probe_broker(access)  # tuned as the services tune themselves
    producer = make_producer(access, profile)
    consumer = make_consumer(access, f"bench-{topic}", [topic], session_timeout_ms=6000, profile=profile)
    await producer.start()
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        await producer.send_and_wait(topic, b"warm-up")
        await consumer.getmany(timeout_ms=5000)
        out = []
        for n in range(SAMPLES):
            started = time.perf_counter()
            await producer.send(topic, str(n).encode())
            while not await consumer.getmany(timeout_ms=1000):
                pass
            out.append(time.perf_counter() - started)
        return out
    finally:
        await producer.stop()
        await consumer.stop()


@dataclass
class NoteTrace:
    """One sample of `note_latency`, in wall-clock seconds (`time.time()`): what the bench saw."""
    body: str
    posted: float
    answered: float
    readable: float


async def note_latency(source, target, pairs, traces: list[NoteTrace] | None = None) -> list[float]:
    """Each sample: create a note through one API, then read the other ticket through the other
    API until the note is there. With `traces`, each sample's times are kept there too."""
    out, tag = [], uuid.uuid4().hex[:6]
    for n in range(SAMPLES):
        src_id, dst_id = pairs[n % len(pairs)]
        before = len(await items(target, dst_id, "notes"))
        body = f"bench {tag} {n}"
        posted, started = time.time(), time.perf_counter()
        (await source.post(f"/api/tickets/{src_id}/notes", json={"body": body})).raise_for_status()
        answered = time.time()
        while len(await items(target, dst_id, "notes")) == before:
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"note {body!r} was not readable on the other side in 120 s")
            await asyncio.sleep(POLL)  # polling harder steals the CPU the receiving service needs
        out.append(time.perf_counter() - started)
        if traces is not None:
            traces.append(NoteTrace(body, posted, answered, time.time()))
    return out


# Where a note's time went, read from the three databases: the source's and the bridge's outbox row
# (`published_at`: the relay marked its batch sent, one statement after the broker acknowledged every
# row of it) and the bridge's and the partner's inbox row (`applied_at`: the consumer's transaction
# began, its first statement). The bridge's message carries the note's body, so it is found by it;
# a reconciliation resend of the same note makes a second row, so the first is taken.
_SENT = text("SELECT event_id, published_at FROM outbox WHERE type = :type AND position(:needle IN value) > 0"
             " ORDER BY id LIMIT 1")
_APPLIED = text("SELECT applied_at FROM inbox WHERE event_id = :event_id")
STAGES = ("answered", "source relay marked it sent", "bridge began", "bridge relay marked it sent",
          "partner began", "readable")


async def database_clock_offset(connection) -> float:
    """PostgreSQL's clock minus this process's (0 when they are one machine's clock; a server
    named by TEST_POSTGRES_URL may be elsewhere)."""
    before = time.time()
    server = float(await connection.scalar(text("SELECT extract(epoch FROM clock_timestamp())")))
    return server - (before + time.time()) / 2


async def where_the_time_went(traces: list[NoteTrace], source_db: str, bridge_db: str, target_db: str) -> str:
    """Each stage's median milliseconds since the POST, over the traced notes whose every stage is
    in the databases (a relay's mark still unwritten, say, leaves a note out; the line says how many
    were used)."""
    await asyncio.sleep(0.5)  # the last relay's mark is written just after the broker's answer
    engines = [make_engine(url) for url in (source_db, bridge_db, target_db)]
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    try:
        async with engines[0].connect() as source, engines[1].connect() as bridge, engines[2].connect() as target:
            offset = await database_clock_offset(source)
            for trace in traces:
                needle = f'"{trace.body}"'.encode()
                sent = (await source.execute(_SENT, {"type": "item.created", "needle": needle})).first()
                began = sent and await bridge.scalar(_APPLIED, {"event_id": sent.event_id})
                passed = (await bridge.execute(_SENT, {"type": "mirror.upsert", "needle": needle})).first()
                applied = passed and await target.scalar(_APPLIED, {"event_id": passed.event_id})
                if not (sent and sent.published_at and began and passed and passed.published_at and applied):
                    continue
                in_database = [moment.timestamp() - offset
                               for moment in (sent.published_at, began, passed.published_at, applied)]
                for name, moment in zip(STAGES, (trace.answered, *in_database, trace.readable)):
                    stages[name].append((moment - trace.posted) * 1000)
    finally:
        for engine in engines:
            await engine.dispose()
    used = len(stages["answered"])
    if not used:
        return f"  where the time went: none of the {len(traces)} notes had every stage in the databases"
    return f"  p50 ms since the POST ({used} of {len(traces)} notes): " + ", ".join(
        f"{name} {statistics.median(ms):.1f}" for name, ms in stages.items())


async def post_latency(client, ticket_ids: list[str], settle=None) -> list[float]:
    """Each sample: one note POSTed on one of the tickets, until the answer (the write path). With
    `settle`, awaited before each sample: the service has nothing else to do while it answers."""
    out = []
    for n in range(SAMPLES):
        if settle is not None:
            await settle()
        started = time.perf_counter()
        (await client.post(f"/api/tickets/{ticket_ids[n % len(ticket_ids)]}/notes",
                           json={"body": f"write path {n}"})).raise_for_status()
        out.append(time.perf_counter() - started)
    return out


async def beside_a_hot_link(source, target, hot_pair, quiet_pairs,
                            traces: list[NoteTrace]) -> tuple[list[float], int]:
    """A quiet link's note, lead -> insourcing visible via API, while 16 writers (wrk's connections) keep
    one hot link busy (issue 11: one hot link must not stall the others); and how many notes the hot link got."""
    writers = await load.Writers(source, [hot_pair[0]], "hot").start()
    try:
        await asyncio.sleep(2.0)  # the hot link's backlog builds up first
        quiet = await note_latency(source, target, quiet_pairs, traces)
    finally:
        written = await writers.stop()
    return quiet, written.created


async def skeleton_latency(postgres_admin_url: str, access: KafkaAccess) -> list[float]:
    """The design's skeleton (tests/skeleton.py): its quiet note, timed as the product's is, on the
    same broker, database and machine."""
    async with Skeleton(postgres_admin_url, access) as skeleton, \
            httpx.AsyncClient(base_url=skeleton.url("lead")) as lead, \
            httpx.AsyncClient(base_url=skeleton.url("partner")) as partner:
        return await note_latency(lead, partner, [(f"ticket-{n}", f"ticket-{n}") for n in range(LINKS)])


async def write_notes(source, pairs, count: int, label: str) -> int:
    """`count` notes through the source's API by 16 connections of wrk, round-robin over the pairs: how
    many were answered 201."""
    return (await load.write_notes(source, [src_id for src_id, _ in pairs], count, label)).created


@dataclass
class Sustained:
    accepted: float  # notes/s the API took, while the writers wrote
    delivered: float  # notes/s mirrored to the other side, from the first write until the last was
    cpu: dict[str, float]  # CPU ms per note, by part (the services, broker, PostgreSQL, bench, load generator)

    @property
    def product_cpu(self) -> float:
        """CPU ms per mirrored note of the product: the services, the broker and PostgreSQL, not the bench."""
        return sum(ms for part, ms in self.cpu.items() if part not in CLIENT_PARTS)

    def cpu_line(self) -> str:
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in self.cpu.items())
        return (f"CPU ms per note: {parts}; the product (services, broker, PostgreSQL) {self.product_cpu:.1f}, all"
                f" {sum(self.cpu.values()):.1f} (of {psutil.cpu_count()} cores)")


async def sustained_rate(source, bridge, pairs, link_ids, meter_parts, lead_database: str | None = None) -> Sustained:
    """RATE_NOTES notes written over the links; delivered when the bridge has mirrored each of them and,
    with `lead_database`, when every receipt is back at the lead (the other side applied them all): the
    phase, and its CPU meter, end there."""
    async def mirrored() -> int:
        count, cursor = 0, None
        while True:  # every active link, a page at a time
            params = {"state": "active", "limit": 500} | ({"cursor": cursor} if cursor else {})
            page = (await bridge.get("/api/links", params=params)).json()
            count += sum(l["mirrored_to_insourcing"] for l in page["items"] if l["id"] in link_ids)
            if (cursor := page["next_cursor"]) is None:
                return count

    start_count = await mirrored()
    meter = CpuMeter(meter_parts)
    started = time.perf_counter()
    notes = await write_notes(source, pairs, RATE_NOTES, "rate")
    written = time.perf_counter() - started
    while await mirrored() - start_count < notes:
        await asyncio.sleep(0.05)
    if lead_database is not None:
        await until_delivered(lead_database, poll=0.05)
    return Sustained(notes / written, notes / (time.perf_counter() - started), meter.per_item(notes))


CLIENT_PARTS = ("bench", "load generator")


class CpuMeter:
    """CPU seconds each part of the system spends over a stretch of the bench: where the time of a
    note goes when the machine is the limit."""

    def __init__(self, parts: dict[str, int]):
        self.parts = parts  # name -> pid; "PostgreSQL" is found by name (a server and its backends)
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pid in self.parts.items():
            times = psutil.Process(pid).cpu_times()
            out[name] = times.user + times.system
        postgres = 0.0
        for process in psutil.process_iter(["name"]):
            if process.info["name"] == "postgres":
                try:
                    times = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                postgres += times.user + times.system + times.children_user + times.children_system
        out["PostgreSQL"] = postgres
        # wrk, once it has exited and been waited for: the CPU of this process's children that ended
        # (the services and the broker are children too, but still running).
        own = psutil.Process(os.getpid()).cpu_times()
        out["load generator"] = own.children_user + own.children_system
        return out

    def per_item(self, items: int) -> dict[str, float]:
        """CPU ms per item since the meter started, by part."""
        end = self._read()
        return {name: (end[name] - self._start[name]) * 1000 / items for name in end}


async def pending_receipts(engine) -> int:
    """Items the lead shared that the partner has not confirmed yet, counted in the lead's database
    (its `sync_items_pending` gauge is refreshed only once per watch interval, so it can read 0 while
    a backlog waits)."""
    async with engine.connect() as connection:
        return await connection.scalar(text("SELECT count(*) FROM ticket_items WHERE delivery_status = 'pending'"))


async def until_delivered(lead_database: str, poll: float = 0.2) -> float:
    """Seconds until every note the lead shared has its receipt back."""
    started, engine = time.perf_counter(), make_engine(lead_database)
    try:
        while await pending_receipts(engine) > 0:
            await asyncio.sleep(poll)
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def backlog_drain(source, bridge: ServiceProcess, pairs, lead_database: str) -> tuple[float, float, float]:
    """The bridge is stopped while BACKLOG notes are written over the links, then started: notes per
    second from its start until the partner has confirmed every one of them (end to end)."""
    bridge.stop()
    started = time.perf_counter()
    notes = await write_notes(source, pairs, BACKLOG, "backlog")
    written = notes / (time.perf_counter() - started)
    started = time.perf_counter()
    bridge.start()
    await asyncio.to_thread(bridge.wait_ready)
    ready = time.perf_counter()
    await until_delivered(lead_database)
    done = time.perf_counter()
    return written, notes / (done - started), notes / (done - ready)


async def quiet_after_a_hot_backlog(source, target, bridge: ServiceProcess, hot_pair, quiet_pairs,
                                    lead_database: str) -> tuple[list[float], float]:
    """The bridge is stopped while one hot link takes HOT_BACKLOG notes, then each quiet link one;
    then started: seconds from its start until each quiet note is readable on the other side, and
    until the hot backlog is confirmed (a quiet link must not wait behind a busy one's backlog)."""
    bridge.stop()
    await write_notes(source, [hot_pair], HOT_BACKLOG, "hot backlog")
    for src_id, _ in quiet_pairs:
        (await source.post(f"/api/tickets/{src_id}/notes", json={"body": "quiet after the backlog"})).raise_for_status()
    started = time.perf_counter()
    bridge.start()
    waiting, seen = set(range(len(quiet_pairs))), []
    while waiting:
        if time.perf_counter() - started > 300:
            raise RuntimeError(f"{len(waiting)} quiet notes not readable 300 s after the bridge started")
        for n in sorted(waiting):
            if any(i["body"] == "quiet after the backlog" for i in await items(target, quiet_pairs[n][1], "notes")):
                waiting.discard(n)
                seen.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    await until_delivered(lead_database)
    return seen, time.perf_counter() - started


async def big_ticket_pages(client, database_url: str) -> list[float]:
    """Each sample: one page of 100 notes of a ticket holding BIG_TICKET notes (put in with one SQL
    statement), walking the whole ticket page by page with the cursor."""
    ticket = (await client.post("/api/tickets", json={"title": "big ticket"})).json()
    engine = make_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO ticket_items (id, ticket_id, kind, origin, internal, shared, released, fields)"
                " SELECT gen_random_uuid()::text, :ticket, 'note', 'local', false, false, false,"
                " jsonb_build_object('title', '', 'body', 'note ' || n) FROM generate_series(1, :count) AS n"
            ), {"ticket": ticket["id"], "count": BIG_TICKET})
    finally:
        await engine.dispose()
    out, cursor = [], None
    while True:
        started = time.perf_counter()
        answer = await client.get(f"/api/tickets/{ticket['id']}/notes",
                                  params={"limit": 100} | ({"cursor": cursor} if cursor else {}))
        out.append(time.perf_counter() - started)
        if (cursor := answer.raise_for_status().json()["next_cursor"]) is None:
            return out


async def round_costs(bridge, link_id: str, samples: int = 4) -> str:
    """Reconciliation rounds of the hot link once it holds thousands of notes (issue 28): each side
    asked for everything it holds, then asked only for what changed since (nothing much), in turns.
    Each figure: from the question to the round compared, as the operator's API shows it."""
    times: dict[bool, list[float]] = {True: [], False: []}
    answers: dict[bool, dict] = {}
    for _ in range(samples):
        for everything in (True, False):
            before = (await bridge.get(f"/api/links/{link_id}/health")).json()["last_reconciled_at"]
            started = time.perf_counter()
            (await bridge.post(f"/api/links/{link_id}/reconcile", params={"everything": everything})).raise_for_status()
            while True:
                health = (await bridge.get(f"/api/links/{link_id}/health")).json()
                if health["last_reconciled_at"] != before and not health["reconciling"]:
                    break
                await asyncio.sleep(POLL)
            times[everything].append(time.perf_counter() - started)
            answers[everything] = health["lead"]["last_answer"]
    whole, changes = (statistics.median(times[e]) * 1000 for e in (True, False))
    return (f"reconciliation round of the hot link ({answers[True]['held']:,} items held on the lead side), median of"
            f" {samples}: everything {whole:.0f} ms ({answers[True]['entries']:,} listed), only what changed"
            f" {changes:.0f} ms ({answers[False]['entries']:,} listed); ratio {whole / max(changes, 0.001):.1f}")


def processes(procs: dict[str, ServiceProcess]) -> dict[str, int]:
    """Each service's process, and its worker's beside it (BENCH_WORKERS=1): name -> pid."""
    return {name: p.proc.pid for name, p in procs.items()} | {
        f"{name} worker": p.worker_proc.pid for name, p in procs.items() if p.worker_proc}


def resident(procs: dict[str, ServiceProcess]) -> str:
    return ", ".join(f"{name} {psutil.Process(pid).memory_info().rss / 2**20:.0f} MB"
                     for name, pid in processes(procs).items())


async def gauge(client: httpx.AsyncClient, name: str) -> float:
    found = [line.split()[-1] for line in (await client.get("/metrics")).text.splitlines() if line.startswith(name + " ")]
    return float(found[0]) if found else float("nan")


async def quiet_figures(lead, insourcing, bridge, lead_database: str, worker_urls: list[str | None]) -> str:
    """Quiet when healthy (issue 28): what reconciliation repaired over every note of the run (nothing
    was lost: the target is 0), losses reported, and the most database connections each pool needed."""
    engine = make_engine(lead_database, pool_size=1)
    try:
        async with engine.connect() as conn:
            notes = await conn.scalar(text("SELECT count(*) FROM ticket_items WHERE kind = 'note' AND origin = 'local'"))
    finally:
        await engine.dispose()
    # The messaging's gauges are its worker's, when a service has one (BENCH_WORKERS=1: the partners).
    workers = [httpx.AsyncClient(base_url=url) if url else None for url in worker_urls]
    try:
        messaging = [worker or client for worker, client in zip(workers, (lead, insourcing, bridge))]
        repairs = await gauge(messaging[2], "sync_repairs_total")
        losses = [await gauge(c, "inbox_broker_data_losses_total") for c in messaging]
        peaks = [await gauge(c, "db_pool_connections_peak") for c in (lead, insourcing, bridge, *filter(None, workers))]
    finally:
        for client in filter(None, workers):
            await client.aclose()
    return (f"reconciliation: {repairs:.0f} repairs over {notes:,} notes ({1000 * repairs / max(notes, 1):.2f} per 1,000;"
            f" target 0), broker losses reported {sum(losses):.0f}; pool connections at most"
            f" {', '.join(f'{n:.0f}' for n in peaks)} of {POOL} (lead, insourcing, bridge"
            f"{', and the partner workers' if any(workers) else ''})")


async def run(procs: dict[str, ServiceProcess], access: KafkaAccess, broker: str, databases: dict[str, str],
              meter_parts: dict[str, int], postgres_admin_url: str) -> None:
    lead_database = databases["lead_partner"]
    async with procs["lead_partner"].client() as lead, procs["insourcing_partner"].client() as insourcing, \
            procs["sync_bridge"].client() as bridge:
        pairs, link_ids, hot_link = [], set(), None
        for _ in range(LINKS):
            lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
            pairs.append((lead_ticket["id"], insourced["id"]))
            link_ids.add(link_id)
            hot_link = hot_link or link_id  # pairs[0]'s
        http, hop = await http_floor(lead), await kafka_floor(access)
        floor_sum = 2 * percentile(http, 50) + 2 * percentile(hop, 50)
        lines = [
            summary("floor: HTTP round trip (GET /healthz)", http),
            summary("floor: Kafka produce -> consume, one hop", hop),
            f"  floor-sum: 2 HTTP round trips + 2 Kafka hops, p50 = {floor_sum:.2f} ms",
        ]
        quiet: list[float] = []
        for name, source, target, source_db, target_db, direction in (
                ("note lead -> insourcing, visible via API", lead, insourcing, "lead_partner", "insourcing_partner", pairs),
                ("note insourcing -> lead, visible via API", insourcing, lead, "insourcing_partner", "lead_partner",
                 [(b, a) for a, b in pairs])):
            traces: list[NoteTrace] = []
            latencies = await note_latency(source, target, direction, traces)
            quiet = quiet or latencies  # lead -> insourcing, the figure of the targets
            lines.append(summary(name, latencies))
            lines.append(await where_the_time_went(traces, databases[source_db], databases["sync_bridge"],
                                                   databases[target_db]))
        skeleton = await skeleton_latency(postgres_admin_url, access)
        lines.append(summary("the design's skeleton: note lead -> partner", skeleton))
        unlinked = [(await lead.post("/api/tickets", json={"title": "not outsourced"})).json()["id"] for _ in range(10)]
        meter = CpuMeter({"lead_partner": meter_parts["lead_partner"]})
        lines.append(summary("POST a note, ticket not outsourced", await post_latency(lead, unlinked)))
        post_cpu = meter.per_item(SAMPLES)["lead_partner"]
        lines.append(f"  the lead's CPU per such POST: {post_cpu:.2f} ms")
        lines.append(summary("POST a note, outsourced (linked) ticket", await post_latency(lead, [a for a, _ in pairs])))

        async def delivered() -> None:
            await until_delivered(lead_database)
            await asyncio.sleep(0.05)  # the receipt's own bookkeeping done

        lines.append(summary("  the same, each once the last was delivered",
                             await post_latency(lead, [a for a, _ in pairs], settle=delivered)))
        lines.append(summary(f"page of 100 notes, a ticket of {BIG_TICKET:,}", await big_ticket_pages(lead, lead_database)))
        traces: list[NoteTrace] = []
        beside_hot, hot_notes = await beside_a_hot_link(lead, insourcing, pairs[0], pairs[1:], traces)
        drained = await until_delivered(lead_database)  # from the moment the writers stopped
        lines.append(summary("note on a quiet link beside a hot one", beside_hot))
        lines.append(await where_the_time_went(traces, lead_database, databases["sync_bridge"],
                                               databases["insourcing_partner"]))
        lines.append(f"  the hot link took {hot_notes} notes from 16 writers meanwhile; its backlog was delivered"
                     f" {drained:.1f} s after they stopped")
        lines.append(await round_costs(bridge, hot_link))
        after, hot_drained = await quiet_after_a_hot_backlog(lead, insourcing, procs["sync_bridge"], pairs[0],
                                                             pairs[1:11], lead_database)
        lines.append(f"after an outage: {HOT_BACKLOG} notes waiting on one link, then one on each of {len(after)} quiet"
                     f" links; from the bridge's start the quiet ones were readable in {min(after):.1f}-{max(after):.1f} s,"
                     f" the hot backlog confirmed in {hot_drained:.1f} s")
        meter_parts |= processes({"sync_bridge": procs["sync_bridge"]})  # started again
        sustained = await sustained_rate(lead, bridge, pairs, link_ids, meter_parts, lead_database)
        lines.append(f"sustained: {RATE_NOTES} notes over {LINKS} links, 16 connections of wrk: "
                     f"{sustained.accepted:.0f} notes/s accepted, {sustained.delivered:.0f} notes/s delivered to the"
                     f" other side (its receipts back)")
        lines.append(f"  {sustained.cpu_line()}")
        while len(pairs) < BACKLOG_LINKS:
            lead_ticket, insourced, _ = await linked_tickets(lead, insourcing)
            pairs.append((lead_ticket["id"], insourced["id"]))
        written, drained_rate, drained_ready = await backlog_drain(lead, procs["sync_bridge"], pairs, lead_database)
        lines.append(f"backlog: {BACKLOG} notes over {len(pairs)} links written at {written:.0f}/s with the bridge "
                     f"stopped; then {drained_rate:.0f} notes/s confirmed end to end from its start "
                     f"({drained_ready:.0f}/s from ready)")
        lines.append(f"resident memory after the flood: {resident(procs)}")
        lines.append(await quiet_figures(lead, insourcing, bridge, lead_database,
                                         [procs[name].worker_url for name in ("lead_partner", "insourcing_partner",
                                                                              "sync_bridge")]))
        await asyncio.sleep(IDLE_S)
        lines.append(f"resident memory after {IDLE_S:.0f} s idle: {resident(procs)}")
        table = ratios(floor_sum, quiet, beside_hot, sustained.product_cpu, post_cpu, sustained.accepted,
                       sustained.delivered, drained_rate)
        lines += [f"targets of issue 30, as ratios of this run's figures ({sum(r.met for r in table)} of {len(table)} met;"
                  f" a page < 50 ms and <= 200 MB a service stay):", *(r.line() for r in table),
                  "the quiet note of the design's skeleton (tests/skeleton.py: the rules' steps and nothing else),"
                  " a reference for what a design doing only them takes on this machine:",
                  *(r.line() for r in quiet_ratios(floor_sum, skeleton, "the skeleton's "))]
        shape = "each partner an API process and a worker beside it" if WORKERS else "each service one process"
        print("\n".join(["", f"make bench on {broker}; {shape}", *lines]), flush=True)


def bench_on(broker: str | None) -> None:
    resolved = resolve_infrastructure(broker)
    try:
        names = {n: f"bench_{uuid.uuid4().hex[:6]}_{n}" for n in ("lead_partner", "insourcing_partner", "sync_bridge")}
        urls = infra.create_databases(resolved.postgres_admin_url, list(names.values()))
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": resolved.kafka_bootstrap,
            **resolved.kafka_service_env,
            **infra.signing_env(),
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "LEAD_DATABASE_URL": urls[names["lead_partner"]],
            "INSOURCING_DATABASE_URL": urls[names["insourcing_partner"]],
            "BRIDGE_DATABASE_URL": urls[names["sync_bridge"]],
            "LOG_LEVEL": "WARNING",
        }
        procs = {n: ServiceProcess(n, env, workers=WORKERS and n != "sync_bridge") for n in names}
        for p in procs.values():
            p.migrate()
            p.start()
        try:
            for p in procs.values():
                p.wait_ready()
            wait_for_directory(procs["lead_partner"], "insourcing-partner")  # the lead may outsource only then
            print(f"\nPostgreSQL from {resolved.postgres_source}; Kafka from {resolved.kafka_source}", flush=True)
            broker_proc = resolved.broker.proc if resolved.broker is not None else resolved.tansu
            meter_parts = processes(procs) | {"bench": os.getpid()}
            if broker_proc is not None:  # not a broker named by KAFKA_BOOTSTRAP_SERVERS
                meter_parts["broker"] = broker_proc.pid
            asyncio.run(run(procs, resolved.kafka_admin, resolved.kafka_source,
                            {name: urls[database] for name, database in names.items()}, meter_parts,
                            resolved.postgres_admin_url))
        finally:
            for p in procs.values():
                p.stop()
            infra.drop_databases(resolved.postgres_admin_url, list(names.values()))
    finally:
        resolved.close()


def main() -> None:
    """The broker of record first, then the fallback (BENCH_BROKERS=default or tansu for one)."""
    brokers = os.environ.get("BENCH_BROKERS", "default,tansu").split(",")
    for broker in brokers:
        bench_on(None if broker == "default" else broker)


if __name__ == "__main__":
    main()
