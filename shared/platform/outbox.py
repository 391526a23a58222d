"""Transactional outbox. A state change and the event describing it commit in one transaction;
one relay per service (a PostgreSQL advisory lock elects it among replicas) publishes the rows in
commit order, woken by LISTEN/NOTIFY, and marks them published only after the broker acknowledged."""
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer
from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    String,
    event,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.contracts.envelope import Envelope, Payload, envelope, waits_a_moment
from shared.platform.db import Base, UnitOfWork, asyncpg_dsn
from shared.platform.signing import Signatures

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "outbox"
SEND_TIMEOUT_S = 20.0  # longer than the producer's own request timeout (4 s) and its retries
# Sends the broker refused at once are tried again this soon with the same producer, for this long
# after the first refusal; then the relay starts over with a new one (after its backoff). Sends
# that failed slowly (the producer gave up after its request timeout: a topic the broker lost, a
# broker away) start over at once, which also makes any missing topic again.
RESEND_AFTER_S = 0.2
RESEND_FOR_S = 3.0
QUICK_REFUSAL_S = 1.0
# A busy relay (it sent a batch less than this long ago) holds a batch of nothing but receipts
# (`Payload.may_wait`) until this long after that send, or until anything else is written, and sends
# what came meanwhile with it: nobody waits for a receipt, and under load they go in fewer, larger
# batches, applied in fewer transactions downstream. A quiet relay sends at once (issue 30: a wait
# after every receipt pushed a quiet note's receipts into the next note's way).
RECEIPTS_WAIT_S = 0.005


class SendsRefused(Exception):
    """The broker refused some of a batch's sends; those acknowledged before them were marked."""


class OutboxMessage(Base):
    __tablename__ = "outbox"
    # The relay reads only what is waiting.
    __table_args__ = (Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    schema_version: Mapped[int]
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Publisher:
    """Stages events from one source on one topic, keyed by their link."""

    topic: str
    source: str

    def emit(self, session: AsyncSession, payload: Payload, link_id: str) -> None:
        add_to_outbox(session, self.topic, envelope(payload, source=self.source, link_id=link_id))


_STAGED = "outbox.staged"


def add_to_outbox(session: AsyncSession, topic: str, env: Envelope, key: str | None = None) -> None:
    """Stage an event in the caller's transaction; it is published only if that transaction commits.
    The staged rows go in with one INSERT just before the commit (see `_write_staged`); a trigger on
    the table sends the NOTIFY, which PostgreSQL delivers at commit, not before."""
    if not session.in_transaction():
        session.sync_session.begin()  # the rows belong to a transaction, whose end drops them
    session.info.setdefault(_STAGED, []).append(
        {
            "event_id": str(env.event_id),
            "topic": topic,
            "key": key or env.link_id,
            "type": env.type,
            "schema_version": env.schema_version,
            "value": env.to_bytes(),
        }
    )


@event.listens_for(UnitOfWork, "before_commit")
def _write_staged(session: Session) -> None:
    # One plain statement for all the rows (issue 11: through the ORM this was a few ms of CPU per
    # transaction), without RETURNING: nothing needs the generated ids back.
    staged = session.info.pop(_STAGED, None)
    if staged:
        # Ordered explicitly: the ids give the relay its order, and a link's messages keep theirs.
        session.connection().exec_driver_sql(
            "INSERT INTO outbox (event_id, topic, key, type, schema_version, value)"
            " SELECT event_id, topic, key, type, schema_version, value FROM unnest($1::varchar[],"
            " $2::varchar[], $3::varchar[], $4::varchar[], $5::int[], $6::bytea[]) WITH ORDINALITY"
            " AS staged(event_id, topic, key, type, schema_version, value, position) ORDER BY position",
            tuple([row[column] for row in staged] for column in _COLUMNS))


_COLUMNS = ("event_id", "topic", "key", "type", "schema_version", "value")


@event.listens_for(UnitOfWork, "after_transaction_end")
def _drop_staged(session: Session, transaction) -> None:
    # Whatever ended the outermost transaction (commit, rollback, close), nothing staged in it may
    # reach the next one. A savepoint ending leaves its enclosing transaction's rows alone.
    if transaction.parent is None:
        session.info.pop(_STAGED, None)


class OutboxRelay:
    """Publishes unpublished outbox rows. Only the replica holding the advisory lock publishes."""

    def __init__(
        self,
        database_url: str,
        producer_factory: Callable[[], AIOKafkaProducer],
        lock_key: int,
        signatures: Signatures,
        batch_size: int = 200,
        after_publish: Callable[[list[int]], Awaitable[None]] | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ):
        self._dsn = asyncpg_dsn(database_url)
        self._producer_factory = producer_factory
        self._lock_key = lock_key
        self._signatures = signatures
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        # A test hook: runs between the broker's acknowledgement and the marking of the rows.
        self._after_publish = after_publish
        self._prepare = prepare  # run before each (re)start of the producer, e.g. making missing topics
        self.is_leader = False
        self.published_total = 0
        self._sent_at = 0.0  # time.monotonic() of the last batch sent

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", delay)
                self.is_leader = False
                await asyncio.sleep(delay)
                # Short: what waits here is every write of the service (a broker recovering from a
                # restart may refuse produce requests for some seconds).
                delay = min(delay * 2, 2.0)

    async def _run_once(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        producer = None
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                await asyncio.sleep(1.0)
            self.is_leader = True
            refused_since = None
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            conn.add_termination_listener(lambda *_: self._wake.set())
            if self._prepare is not None:
                await self._prepare()
            producer = self._producer_factory()
            await producer.start()
            log.info("outbox relay is the leader (lock %s)", self._lock_key)
            while True:
                if conn.is_closed():
                    # The lock went with the connection: another replica may lead now.
                    raise ConnectionError("the outbox relay lost the connection holding its lock")
                self._wake.clear()
                started = time.monotonic()
                try:
                    published = await self.publish_batch(producer, conn)
                    refused_since = None
                except SendsRefused as exc:
                    if time.monotonic() - started > QUICK_REFUSAL_S:
                        raise
                    # Seen on Tansu for some seconds after a restart: produce requests refused
                    # (its storage reports a write conflict), each retry getting a little further.
                    # A new producer and the relay's backoff made every writer wait seconds more.
                    refused_since = refused_since or time.monotonic()
                    if time.monotonic() - refused_since > RESEND_FOR_S:
                        raise
                    log.warning("outbox relay: %s; sending them again in %.1fs", exc, RESEND_AFTER_S)
                    await asyncio.sleep(RESEND_AFTER_S)
                    continue
                if published == self._batch_size:
                    continue
                try:
                    # NOTIFY wakes us at once; the timeout is only a safety net. No pause after it
                    # (issue 30: a 3 ms pause, meant to let an API's writer answer first, added 3 ms
                    # to every note's crossing and answered no sooner; rows that commit while a
                    # batch waits for the broker go out together with the next one).
                    await asyncio.wait_for(self._wake.wait(), timeout=2.0)
                except asyncio.TimeoutError:
                    await conn.execute("SELECT 1")  # a connection that died silently holds no lock
        finally:
            self.is_leader = False
            if producer is not None:
                try:
                    await asyncio.wait_for(producer.stop(), timeout=SEND_TIMEOUT_S)
                except Exception:  # a stuck producer is dropped; a new one takes over
                    log.warning("outbox relay: the producer did not stop cleanly; replacing it", exc_info=True)
            await conn.close()

    async def _receipts_waited(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """What to send now: on a busy relay, a batch of nothing but receipts RECEIPTS_WAIT_S after the
        last batch sent, with what was written meanwhile, or at once when anything else is written (a
        commit's NOTIFY wakes the wait); anything else at once."""
        until = self._sent_at + RECEIPTS_WAIT_S
        while (len(rows) < self._batch_size and all(waits_a_moment(row["type"]) for row in rows)
               and (left := until - time.monotonic()) > 0):
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()  # before the read: a commit after it wakes the relay again
            rows = await self._waiting(conn)
        return rows

    async def _waiting(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await conn.fetch("SELECT id, topic, key, event_id, type, schema_version, value FROM outbox"
                                " WHERE published_at IS NULL ORDER BY id LIMIT $1", self._batch_size)

    async def publish_batch(self, producer: AIOKafkaProducer, conn: asyncpg.Connection) -> int:
        """Publishes up to a batch of waiting rows in id order and marks what the broker acknowledged.
        Plain SQL on the relay's own connection (the one holding its lock): through the ORM the read
        and the mark cost 4 ms of CPU more per batch on a 2-core machine, four batches per note."""
        rows = await self._waiting(conn)
        if not rows:
            return 0
        rows = await self._receipts_waited(conn, rows)
        # send() queues in order; one partition's batches are delivered in that order.
        acks = [
            await producer.send(
                row["topic"],
                row["value"],
                key=row["key"].encode() if row["key"] else None,
                headers=[
                    ("event_id", row["event_id"].encode()),
                    ("type", row["type"].encode()),
                    ("schema_version", str(row["schema_version"]).encode()),
                    *self._signatures.sign(row["topic"], row["value"]),
                ],
            )
            for row in rows
        ]
        # Bounded: a producer that never hears back (seen once in this suite's broker-crash test,
        # with the idempotent producer after a SIGKILLed broker came back) is replaced by a new
        # one, which publishes the unmarked rows again; the inbox absorbs any duplicate.
        results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), timeout=SEND_TIMEOUT_S)
        # Marked: what the broker acknowledged, per key (one link's stream) up to the first
        # refusal; the rest is sent again. What followed a refused send on the same partition
        # may have been acknowledged before it: a link's messages can then arrive out of order
        # (so they could with any resend); reconciliation repairs any difference that leaves.
        ids, refused = [], {}
        for row, result in zip(rows, results):
            stream = (row["topic"], row["key"])
            if isinstance(result, BaseException) or stream in refused:
                refused.setdefault(stream, result)
            else:
                ids.append(row["id"])
        self._sent_at = time.monotonic()
        if ids:
            if self._after_publish is not None:
                await self._after_publish(ids)
            await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)
            self.published_total += len(ids)
        if refused:
            first = next(iter(refused.values()))  # each stream's first refusal
            raise SendsRefused(f"the broker refused {len(rows) - len(ids)} of {len(rows)} sends ({first!r})")
        return len(ids)

