"""The design's skeleton (issue 30): a note's crossing with nothing but the steps the rules require,
measured in `make bench` beside the product, on the same broker, database and machine.

The rules: three processes (the lead, the bridge, the insourcing partner), each with its own
database, talking only through Kafka (TLS, SCRAM, `acks=all`, the services' producer and consumer
settings); every message signed and verified; every step exactly once, through a transactional
outbox (a relay woken by NOTIFY, marking what the broker acknowledged) and an inbox (the message's
id recorded in the transaction that applies it); the note's receipt back, both ways (SPEC section 9).

What the skeleton leaves out, and the product does: tokens and permissions, links and their
states, ticket locks, validation, id mapping rules, versions, reconciliation, metrics, paging,
everything else. Each process is plain asyncpg and a FastAPI route under uvicorn (the services'
HTTP stack), and applies one message to a transaction, in the order read. Its quiet note is timed
as the product's is (POST on the lead, the partner's list polled every 3 ms until it holds the
note): a reference for what a design doing only the rules' steps takes on this machine. It connects
as the broker's admin user, whom the ACLs do not check, so it is if anything a little faster than a
design could be. Its topics (`skel.<run>.*`) are left on the broker, as the bench's own are.

`python -m tests.skeleton` runs one process of it (its role and where things are in SKEL_*)."""
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from devstack import infra
from shared.platform.db import asyncpg_dsn
from shared.platform.kafka import KafkaAccess, ensure_topics, make_consumer, make_producer, probe_broker
from shared.platform.signing import KeyRing

ROLES = ("lead", "bridge", "partner")
PARTITIONS = 4  # as the services' topics (KAFKA_TOPIC_PARTITIONS)


def topics(run: str) -> dict[str, str]:
    """A run's four topics (a run of its own: nothing left from an earlier one is read)."""
    return {step: f"skel.{run}.{step}" for step in ("from-lead", "to-partner", "from-partner", "to-lead")}


def reads(run: str) -> dict[str, list[str]]:
    """What each role reads."""
    t = topics(run)
    return {"lead": [t["to-lead"]], "bridge": [t["from-lead"], t["from-partner"]], "partner": [t["to-partner"]]}


def passes(run: str) -> dict[str, str]:
    """Where what a role reads goes on (the lead's receipt goes nowhere)."""
    t = topics(run)
    return {t["from-lead"]: t["to-partner"], t["to-partner"]: t["from-partner"], t["from-partner"]: t["to-lead"]}


SCHEMA = """
CREATE TABLE items (id text PRIMARY KEY, seq bigserial, ticket text NOT NULL, body text NOT NULL,
                    delivered boolean NOT NULL DEFAULT false);
CREATE INDEX items_ticket ON items (ticket, seq);
CREATE TABLE inbox (event_id text PRIMARY KEY);
CREATE TABLE outbox (id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, value bytea NOT NULL,
                     published_at timestamptz);
CREATE INDEX outbox_waiting ON outbox (id) WHERE published_at IS NULL;
CREATE TABLE mappings (item text PRIMARY KEY, mirror text NOT NULL);
"""


class NoteIn(BaseModel):
    body: str


async def _stage(conn: asyncpg.Connection, topic: str, key: str, message: dict) -> None:
    await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)", topic, key,
                       json.dumps({"event_id": str(uuid.uuid4()), **message}).encode())
    await conn.execute("NOTIFY outbox")


async def _relay(dsn: str, producer, ring: KeyRing) -> None:
    """The outbox relay: woken by a commit's NOTIFY, sends what waits as one batch, marks what the
    broker acknowledged."""
    conn = await asyncpg.connect(dsn)
    wake = asyncio.Event()
    await conn.add_listener("outbox", lambda *_: wake.set())
    while True:
        wake.clear()
        rows = await conn.fetch("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL"
                                " ORDER BY id LIMIT 200")
        if not rows:
            await wake.wait()
            continue
        acks = [await producer.send(row["topic"], row["value"], key=row["key"].encode(),
                                    headers=ring.sign(row["topic"], row["value"])) for row in rows]
        await asyncio.gather(*acks)
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                           [row["id"] for row in rows])


async def _apply(conn: asyncpg.Connection, role: str, run: str, topic: str, message: dict) -> None:
    """What a message does, besides its inbox record: the bridge maps the item and passes it on,
    the partner stores the mirror and answers with its receipt, the lead marks its item delivered."""
    if role == "lead":
        await conn.execute("UPDATE items SET delivered = true WHERE id = $1", message["item"])
        return
    if role == "partner":
        await conn.execute("INSERT INTO items (id, ticket, body) VALUES ($1, $2, $3)",
                           message["mirror"], message["ticket"], message["body"])
        await _stage(conn, passes(run)[topic], message["ticket"], {"mirror": message["mirror"], "ticket": message["ticket"]})
        return
    if topic == topics(run)["from-lead"]:  # the bridge, an item: a mirror id for it, and on to the partner
        mirror = str(uuid.uuid4())
        await conn.execute("INSERT INTO mappings (item, mirror) VALUES ($1, $2)", message["item"], mirror)
        await _stage(conn, passes(run)[topic], message["ticket"], {**message, "mirror": mirror})
    else:  # the bridge, a receipt: back to the item's creator
        item = await conn.fetchval("SELECT item FROM mappings WHERE mirror = $1", message["mirror"])
        await _stage(conn, passes(run)[topic], message["ticket"], {"item": item})


async def _consume(pool: asyncpg.Pool, consumer, role: str, run: str, ring: KeyRing) -> None:
    """The inbox: each message verified, then applied with its id recorded, in a transaction of its
    own; offsets committed when the stream goes quiet, as the services do."""
    done = {}
    while True:
        batches = await consumer.getmany(timeout_ms=200, max_records=500)
        for tp, records in batches.items():
            for record in records:
                ring.verify(record.topic, record.headers, record.value)
                message = json.loads(record.value)
                async with pool.acquire() as conn, conn.transaction():
                    if await conn.fetchval("INSERT INTO inbox VALUES ($1) ON CONFLICT DO NOTHING RETURNING event_id",
                                           message["event_id"]) is not None:
                        await _apply(conn, role, run, record.topic, message)
            done[tp] = records[-1].offset + 1
        if done and not batches:
            await consumer.commit(done)
            done = {}


async def _no_reset(_conn) -> None:
    pass


def _stop_on_failure(task: asyncio.Task) -> None:
    """A relay or consumer that failed ends the process, so that the bench waiting on it fails
    rather than waits for ever (the skeleton has no retries: any failure is a fault of its own)."""
    if not task.cancelled() and task.exception() is not None:
        print(f"the skeleton's {task.get_coro().__name__} failed: {task.exception()!r}", file=sys.stderr, flush=True)
        os._exit(1)


def app_for(role: str, run: str, dsn: str, access: KafkaAccess, ring: KeyRing) -> FastAPI:
    state = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # No reset query when a connection goes back (asyncpg's default is a round trip each time;
        # SQLAlchemy's pool, the services', sends nothing when no transaction is open).
        state["pool"] = pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10, reset=_no_reset)
        profile = await probe_broker(access)
        producer = make_producer(access, profile)
        consumer = make_consumer(access, f"skel-{run}-{role}", reads(run)[role], session_timeout_ms=6000, profile=profile)
        await producer.start()
        await consumer.start()
        tasks = [asyncio.create_task(_relay(dsn, producer, ring)), asyncio.create_task(_consume(pool, consumer, role, run, ring))]
        for task in tasks:
            task.add_done_callback(_stop_on_failure)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await consumer.stop()
            await producer.stop()
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.post("/api/tickets/{ticket}/notes", status_code=201)
    async def add_note(ticket: str, note: NoteIn):
        item = str(uuid.uuid4())
        async with state["pool"].acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO items (id, ticket, body) VALUES ($1, $2, $3)", item, ticket, note.body)
            await _stage(conn, topics(run)["from-lead"], ticket, {"item": item, "ticket": ticket, "body": note.body})
        return {"id": item, "ticket_id": ticket, "body": note.body}

    @app.get("/api/tickets/{ticket}/notes")
    async def list_notes(ticket: str):
        rows = await state["pool"].fetch("SELECT id, body FROM items WHERE ticket = $1 ORDER BY seq LIMIT 501", ticket)
        if len(rows) > 500:
            raise HTTPException(400, "the skeleton lists up to 500 notes a ticket")
        return {"items": [dict(row) for row in rows], "next_cursor": None}

    return app


class Skeleton:
    """The three processes of the skeleton, each on its own database, for a `with` block."""

    def __init__(self, admin_url: str, access: KafkaAccess):
        self.admin_url, self.access = admin_url, access
        self.run = uuid.uuid4().hex[:6]
        self.names = {role: f"skel_{self.run}_{role}" for role in ROLES}
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {role: infra.free_port() for role in ROLES}

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    async def __aenter__(self) -> "Skeleton":
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__()
            raise

    async def _start(self) -> "Skeleton":
        await ensure_topics(self.access, list(topics(self.run).values()), PARTITIONS)
        urls = await asyncio.to_thread(infra.create_databases, self.admin_url, list(self.names.values()))
        keys = KeyRing.generate()
        self.ring = KeyRing.parse(keys)
        for role, name in self.names.items():
            conn = await asyncpg.connect(asyncpg_dsn(urls[name]))
            try:
                await conn.execute(SCHEMA)
            finally:
                await conn.close()
            env = {**os.environ, "SKEL_ROLE": role, "SKEL_DSN": asyncpg_dsn(urls[name]), "SKEL_PORT": str(self.ports[role]), "SKEL_RUN": self.run,
                   "SKEL_KEYS": keys, "SKEL_KAFKA": json.dumps(asdict(self.access))}
            self.procs[role] = subprocess.Popen([sys.executable, "-m", "tests.skeleton"], env=env)
        async with httpx.AsyncClient() as client:
            for role in ROLES:
                deadline = time.monotonic() + 60
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(f"{self.url(role)}/healthz")).status_code == 200:
                            break
                    if time.monotonic() > deadline or self.procs[role].poll() is not None:
                        raise RuntimeError(f"the skeleton's {role} did not start")
                    await asyncio.sleep(0.1)
            # Warmed up: a first note across once every consumer has joined its group.
            (await client.post(f"{self.url('lead')}/api/tickets/warm-up/notes", json={"body": "warm-up"})).raise_for_status()
            deadline = time.monotonic() + 60
            while not (await client.get(f"{self.url('partner')}/api/tickets/warm-up/notes")).json()["items"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the skeleton's first note did not cross in 60 s")
                await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *_exc) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
        await asyncio.to_thread(infra.drop_databases, self.admin_url, list(self.names.values()))


def main() -> None:
    role = os.environ["SKEL_ROLE"]
    access = KafkaAccess(**json.loads(os.environ["SKEL_KAFKA"]))
    app = app_for(role, os.environ["SKEL_RUN"], os.environ["SKEL_DSN"], access, KeyRing.parse(os.environ["SKEL_KEYS"]))
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["SKEL_PORT"]), log_level="warning", access_log=False,
                http="httptools", ws="none")


if __name__ == "__main__":
    main()
