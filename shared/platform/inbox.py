"""Inbox and dead letters. A consumer applies each event in one transaction with the record of its
id, skips an id it has seen, and commits Kafka offsets only after the database commit. A message it
cannot parse or apply is parked (table + log) and the stream keeps flowing."""
import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Identity,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from shared.contracts.envelope import ContractError, Envelope, Payload, parse
from shared.platform.db import Base, plain_sql, transient, utcnow
from shared.platform.kafka import MAX_REQUEST_BYTES, tear_down
from shared.platform.records import escaped, fingerprint, pack_headers, unpack_headers
from shared.platform.signing import BadSignature, Signatures

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
COMMIT_EVERY = 0.5  # seconds
STALL_S = 30.0  # a poll that takes longer: the consumer is replaced
# A commit that takes longer: the consumer is replaced. A commit waits for the group's coordinator,
# and aiokafka's lookup of it can fail for good without a word to the commit (seen after Apache
# Kafka lost its data and ACLs: the bridge's commit waited 30 s, the old bound, after the broker was back).
COMMIT_S = 10.0
STOP_S = 2.0  # a consumer that takes longer to stop is torn down (a cluster's frozen broker: issue 29)
# At most this many records are applied in one transaction: it holds the rows of every ticket it
# touched until it commits, and API writes to those tickets wait for it.
APPLY_TOGETHER = 25
MAX_REASON = 4000  # characters of a parking reason that are kept
# Bytes of a parked message that are kept: whatever a service of ours sent fits whole (and can be
# replayed); of anything larger only this prefix is kept, with the whole message's size and SHA-256.
MAX_KEPT_BYTES = MAX_REQUEST_BYTES
MAX_KEY = 255  # characters of a key or header name shown
MAX_KEY_BYTES = 4096  # bytes of a record's key that are kept
MAX_HEADER_BYTES = 64 * 1024  # bytes of a record's packed headers that are kept
# Parking is tried this many times, a moment apart; then the record's partition is held (paused at the
# record, nothing after it read) and parking is tried again after HOLD_RETRY_S, doubling up to HOLD_MAX_S.
PARK_ATTEMPTS = 3
HOLD_RETRY_S, HOLD_MAX_S = 1.0, 60.0
RESTART_LOOP = 3  # restarts in a row, without a poll handled between them: /readyz says so
STALLED_S = 60.0  # records waiting on a partition whose position has not moved for this long: /readyz says so
APPLIED, ALREADY_APPLIED = "applied", "already applied"  # what a replay answers


class Rejected(Exception):
    """A well-formed message that must never be applied (forged source, unknown link...)."""


class Parked(Exception):
    """A message that cannot be applied (it is parked, or stays parked): why, and what it claimed to be."""

    def __init__(self, reason: str, env: Envelope | None = None):
        super().__init__(reason)
        self.reason = reason
        self.env = env


class InboxRecord(Base):
    __tablename__ = "inbox"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadLetter(Base):
    """A record that was not applied, kept as the bytes it was, whatever they hold (issue 23: a key
    with a NUL byte, stored as text, made PostgreSQL refuse the row and wedged the consumer). One record
    is parked once: it is known by where it was read and its fingerprint, so another record at the same
    offset of a topic made again is parked too."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("topic", "partition", "offset", "record_sha256"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    # The record's key, at most MAX_KEY_BYTES of it (our keys are link ids, 36 bytes).
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    # What the sender claimed (read from the message even when it is not authenticated), escaped.
    event_id: Mapped[str | None] = mapped_column(String(36))
    type: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)  # escaped, at most MAX_REASON characters
    value: Mapped[bytes | None] = mapped_column(LargeBinary)  # at most MAX_KEPT_BYTES of it
    # The whole message's length and SHA-256, and whether `value`, `key` or `headers` is only a prefix.
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # The record's headers as `records.pack_headers` writes them: a replay verifies the signature again.
    headers: Mapped[bytes | None] = mapped_column(LargeBinary)
    # `records.fingerprint` of the whole record (null: parked before it was kept).
    record_sha256: Mapped[str | None] = mapped_column(String(64))
    parked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Replayed or discarded: when, by whom (the token's name), and what happened.
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    resolution: Mapped[str | None] = mapped_column(Text)

    @property
    def shown_key(self) -> str | None:
        """The key as text for a page or an answer: bytes that are not printable UTF-8 escaped."""
        return escaped(self.key, MAX_KEY)

    @property
    def header_names(self) -> list[str]:
        return [escaped(name, MAX_KEY) for name, _ in unpack_headers(self.headers)]


class StreamPosition(Base):
    """How far this service has read each partition, for telling a replay from a loss (issue 28). The
    next offset after what was applied moves in the transaction that applies (or parks) the records,
    so a database crash cannot leave it behind; the offset last committed to Kafka is saved after
    that commit. A fetch resumes between the two after any crash or rebalance (a replay, which the
    inbox makes harmless); one that starts after what was applied, or before what Kafka had
    committed, means the broker lost data (a topic recreated, committed offsets gone, records
    expired unread)."""

    __tablename__ = "stream_positions"

    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)  # after the last record applied or parked
    committed_offset: Mapped[int | None] = mapped_column(BigInteger)  # the last offset committed to Kafka


# Records the ids of a batch's messages and answers those that were not recorded before; in the same
# statement (one round trip, one prepared statement for every batch size), moves the positions of the
# partitions they came from past them, never back (records of one partition may apply out of offset
# order, each link in its own).
_MOVE_POSITIONS = ("INSERT INTO stream_positions (topic, partition, next_offset)"
                   " SELECT * FROM unnest($1::varchar[], $2::int[], $3::bigint[])"
                   " ON CONFLICT (topic, partition)"
                   " DO UPDATE SET next_offset = GREATEST(stream_positions.next_offset, excluded.next_offset)")
_RECORD_MANY = (f"WITH moved AS ({_MOVE_POSITIONS})"
                " INSERT INTO inbox (event_id, type) SELECT * FROM unnest($4::varchar[], $5::varchar[])"
                " ON CONFLICT DO NOTHING RETURNING event_id")

# (session, envelope, payload, topic it came from): the topic is the sender's identity, the
# envelope's `source` only a claim.
Handler = Callable[[AsyncSession, Envelope, Payload, str], Awaitable[None]]
# Applies several messages of one type in one go, set-based (issue 30): the same effects as the
# Handler applying each in turn, in fewer statements. Messages of that type that follow each other in
# a batch are handed over together, as (envelope, payload, topic); a message alone goes to the Handler.
Together = Callable[[AsyncSession, list[tuple[Envelope, Payload, str]]], Awaitable[None]]


class CannotPark(Exception):
    """The database did not take a dead letter, PARK_ATTEMPTS times."""


@dataclass
class Held:
    """A partition paused at a record that could not be parked: it is neither applied nor skipped."""

    offset: int
    error: str  # why parking failed
    since: datetime
    attempts: int
    retry_at: float  # time.monotonic()


class ConsumerHung(Exception):
    """A consumer's poll or commit did not return in time."""


class FetcherStopped(Exception):
    """aiokafka's fetcher, a task of its own, ended: its consumer would return nothing for ever."""


def _fetching(consumer: AIOKafkaConsumer) -> None:
    """Raises FetcherStopped when the consumer's fetch task has ended. It ends only on an error of its
    own (seen: an assertion of aiokafka's when a group's assignment changed while the subscription
    did, on a three-node cluster's start), and then every poll returns nothing, with no error, so the
    bridge read nothing more. Such a consumer is replaced, as one that hangs is."""
    task = getattr(getattr(consumer, "_fetcher", None), "error_future", None)
    if task is not None and task.done():
        error = "cancelled" if task.cancelled() else repr(task.exception())
        raise FetcherStopped(f"the consumer's fetcher stopped ({error})")


async def _bounded(call: Awaitable, seconds: float, what: str):
    try:
        return await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise ConsumerHung(f"the consumer's {what} did not return within {seconds:.0f}s") from None


class DataLoss:
    """When the broker lost data, as consumers see it. Each partition shows a loss on its next fetch,
    seconds apart under load: sightings of other partitions less than `window` apart are one loss,
    dated by its first sighting, so work begun after that date (a round of reconciliation, say) is
    not undone by the later sightings. A partition that shows a loss again lost what was written to
    it since (a broker that just restarted may do that): a new loss, dated now."""

    def __init__(self, window: timedelta = timedelta(seconds=10)):
        self.window = window
        self.since: datetime | None = None  # the date of the current loss
        self._last: datetime | None = None
        self._seen: set[str] = set()  # the partitions that showed the current loss

    def seen(self, where: str) -> datetime:
        """A loss shown by `where` (a topic and partition); the date of the loss it belongs to."""
        now = utcnow()
        if self._last is None or now - self._last > self.window or where in self._seen:
            self.since, self._seen = now, set()
        self._seen.add(where)
        self._last = now
        return self.since


class _Positions(ConsumerRebalanceListener):
    """Hands the consumer's assignments to the inbox, which checks where each partition resumes."""

    def __init__(self, inbox: "InboxConsumer"):
        self.inbox = inbox

    def on_partitions_revoked(self, revoked):
        self.inbox.partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.inbox.partitions_assigned(assigned)


class InboxConsumer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        # Makes a consumer subscribed with the given rebalance listener (or None while there is nothing to
        # read); no factory: it only replays (the CLI).
        consumer_factory: Callable[[ConsumerRebalanceListener], AIOKafkaConsumer | None] | None,
        handler: Handler,
        name: str,
        signatures: Signatures,
        on_data_loss: Callable[[str], None] | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
        together: dict[type[Payload], Together] | None = None,
    ):
        self._sessions = sessions
        self._together = together or {}
        self._prepare = prepare  # run before each (re)start, e.g. making topics a broker lost
        self._consumer_factory = consumer_factory
        self._handler = handler
        self._name = name
        self._signatures = signatures
        self._on_data_loss = on_data_loss
        self._expected: dict[TopicPartition, int | None] = {}  # the next offset each partition should deliver
        self._fresh: set[TopicPartition] = set()  # assigned since the loop last looked
        # Resuming partitions (their first poll not checked yet): the offset Kafka last committed there.
        self._resuming: dict[TopicPartition, int | None] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.applied_total = 0
        self.duplicates_total = 0
        self.parked_total = 0
        self.batches_split_total = 0  # batches that failed together and were applied one message at a time
        self.data_losses_total = 0
        self.lag: dict[TopicPartition, int] = {}  # per partition read: records not applied yet
        self.rebalances = 0
        self.restarts_total = 0
        self.park_failures_total = 0
        self.held: dict[TopicPartition, Held] = {}
        self._hold_attempts: dict[TopicPartition, tuple[int, int]] = {}  # (offset, attempts) of the last hold
        self._failures_in_a_row = 0
        self._last_failure = ""
        self._waiting_since: dict[TopicPartition, float] = {}  # records wait there, the position unmoved since
        self._prepared_at = 0.0
        self._topics_changed = asyncio.Event()  # set by follow(): the topics to read changed
        self._wanted: list[str] = []

    async def run(self) -> None:
        delay = 0.5
        self._listener = _Positions(self)
        while True:
            self._topics_changed.clear()  # what the factory reads now is the latest; a change after it shows
            consumer, stuck = self._consumer_factory(self._listener), False
            if consumer is None:  # nothing to read yet (a bridge that serves no partner)
                await self._until_topics()
                continue
            try:
                if self._prepare is not None:
                    await self._prepare()
                await consumer.start()
                self.consumer = consumer
                if self._topics_changed.is_set() and self._wanted:  # changed while it was being made
                    consumer.subscribe(self._wanted, listener=self._listener)
                delay = 0.5
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s consumer failed; restarting from the last committed offset in %.1fs", self._name, delay)
                self.restarts_total += 1
                self._failures_in_a_row += 1
                self._last_failure = escaped(repr(exc), 300)
                stuck = isinstance(exc, ConsumerHung)  # its stop would hang on the same thing
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self.consumer = None
                self.lag.clear()  # the next consumer may be given other partitions
                self._waiting_since.clear()
                self.held.clear()  # the next consumer reads them again from the last commit
                await self._let_go(consumer, stuck)

    def follow(self, topics: list[str]) -> None:
        """Reads these topics from now on, without a restart (the bridge's directory changed): the group
        rebalances, and a new topic is read from its start. A consumer not running yet is made with
        the topics of its moment anyway."""
        self._wanted = topics
        self._topics_changed.set()
        if self.consumer is not None and topics:
            log.info("%s now reads %d topics", self._name, len(topics))
            self.consumer.subscribe(topics, listener=self._listener)

    async def _until_topics(self) -> None:
        try:
            await asyncio.wait_for(self._topics_changed.wait(), 5.0)
        except asyncio.TimeoutError:
            pass

    async def _let_go(self, consumer: AIOKafkaConsumer, stuck: bool = False) -> None:
        """Stops a consumer, leaving its group; one that does not stop in STOP_S is torn down, so a new
        one starts at once (waiting on it once kept a bridge from reading for 30 s after a broker
        lost its data, past the convergence bound). A stuck one (its poll or commit hung, as its
        stop would on the same lookup of the group's coordinator) is torn down at once."""
        if stuck:
            log.warning("%s: the old consumer hung; its connections are closed", self._name)
            tear_down(consumer)
            return
        try:
            await asyncio.wait_for(consumer.stop(), STOP_S)
        except asyncio.TimeoutError:
            log.warning("%s: the old consumer did not stop within %.0fs; its connections are closed", self._name, STOP_S)
            tear_down(consumer)
        except Exception:  # the broker may be gone; nothing left to release
            log.debug("consumer stop failed", exc_info=True)
            tear_down(consumer)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        # Offsets move only past records whose effect the database has committed. They are sent to
        # the broker when the stream goes quiet or every COMMIT_EVERY seconds, not after each batch:
        # a commit is a broker round trip on the hot path, and the inbox makes any replay harmless.
        done: dict = {}
        last_commit = time.monotonic()
        while True:
            # Bounded, like the relay's sends: a consumer that stops answering (seen after a broker
            # restart, all three services at once, with no database wait) is replaced by a new one.
            self._retry_held(consumer)
            batches = await _bounded(consumer.getmany(timeout_ms=200, max_records=500), STALL_S, "poll")
            _fetching(consumer)
            await self._take_fresh()
            # Noted before applying too: what was just read waits until it is applied (noted only
            # after, a poll's records never showed as waiting, however long they took to apply).
            self._note_lag(consumer)
            rebalances = self.rebalances
            lost = {tp: records[0].offset for tp, records in batches.items()
                    if not self._check_continuity(tp, records[0].offset)}
            if lost:
                await self._rebase(lost)  # the positions start again where the partition now is
            for records in in_turns(batches):
                await self.handle_batch(records)
                if self.rebalances != rebalances:
                    break
            if self.rebalances != rebalances:
                # The group rebalanced while these were applied: whoever has the partitions now
                # reads them from the last commit (the inbox skips what was applied), so neither
                # offsets nor positions are recorded; recording them made a false loss.
                done.clear()
            else:
                for tp, records in batches.items():
                    self._waiting_since.pop(tp, None)  # its position moved (to the held record, at least)
                    done[tp] = self._expected[tp] = self._next_offset(consumer, tp, records[-1].offset + 1)
            if not batches:
                await self._make_missing_topics(consumer)
                for tp in consumer.assignment():
                    highwater = consumer.highwater(tp)
                    expected = self._expected.get(tp)
                    if highwater is not None and expected is not None and highwater < expected:
                        self._lost(tp, f"its end is at offset {highwater}, before offset {expected} already read")
                        # Read on from the new end, and commit that: the consumer would otherwise
                        # wait at the old offset (skipping what is written up to it), and the old
                        # offset committed again made the same loss show twice.
                        consumer.seek(tp, highwater)
                        self._expected[tp] = done[tp] = highwater
                        await self._rebase({tp: highwater})
            self._note_lag(consumer)
            # Only partitions still assigned: committing one a rebalance took away (its topic
            # deleted, say) is retried by aiokafka until the commit's bound.
            done = {tp: offset for tp, offset in done.items() if tp in consumer.assignment()}
            if done and (not batches or time.monotonic() - last_commit > COMMIT_EVERY):
                await self._commit(consumer, done)
                done, last_commit = {}, time.monotonic()
            self._failures_in_a_row = 0

    def _next_offset(self, consumer: AIOKafkaConsumer, tp: TopicPartition, after_poll: int) -> int:
        """Where a partition resumes after a poll was handled: after its last record, or at the record
        it holds, paused there until parking it is tried again."""
        held = self.held.get(tp)
        if held is None:
            return after_poll
        consumer.seek(tp, held.offset)
        consumer.pause(tp)
        return held.offset

    def _retry_held(self, consumer: AIOKafkaConsumer) -> None:
        """A held partition whose time has come reads its record again (and parks it, or holds again)."""
        now = time.monotonic()
        for tp, held in list(self.held.items()):
            if now < held.retry_at:
                continue
            del self.held[tp]
            self._hold_attempts[tp] = (held.offset, held.attempts)
            if tp in consumer.assignment():
                consumer.seek(tp, held.offset)
                consumer.resume(tp)

    async def _make_missing_topics(self, consumer: AIOKafkaConsumer) -> None:
        """A topic this consumer reads that the broker no longer has (deleted, or a broker that
        restarted empty) is made again, at most once a second: nothing is read from it until then,
        and a new consumer, which would make it first, is no longer started for a rebalance."""
        if self._prepare is None or time.monotonic() - self._prepared_at < 1.0:
            return
        if all(consumer.partitions_for_topic(topic) for topic in consumer.subscription()):
            return
        self._prepared_at = time.monotonic()
        await _bounded(self._prepare(), COMMIT_S, "making the topics")

    async def _commit(self, consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]) -> None:
        try:
            await _bounded(consumer.commit(done), COMMIT_S, "commit")
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (a rebalance, or a restarted broker that forgot its members; or a
            # partition was given to another member meanwhile): the consumer rejoins by itself, and
            # whoever has these partitions reads them from the last commit, which the inbox makes
            # harmless. Replacing the consumer here, as for other failures, cost two more group
            # joins: 11 s without reading after a Tansu restart.
            log.warning("%s: offsets not committed, the group rebalanced (%s); carrying on", self._name, exc.__cause__ or exc)
            return
        await self._save_committed(done)

    def partitions_assigned(self, assigned) -> None:
        """Noted only: nothing may wait on the broker inside a rebalance (a call to the coordinator
        there was seen to hang a consumer after a broker restart); the loop checks them next."""
        self._fresh.update(assigned)

    async def _take_fresh(self) -> None:
        """Newly assigned partitions resume between what Kafka had committed and what this service had
        applied: a first record outside that, or a partition ending before it, is a loss."""
        if not self._fresh:
            return
        saved = await self._load_positions()
        for tp in self._fresh:
            applied, committed = saved.get(tp, (None, None))
            self._expected[tp] = applied
            self._resuming[tp] = committed
        self._fresh.clear()

    def partitions_revoked(self, revoked) -> None:
        self.rebalances += 1
        for tp in revoked:
            self._expected.pop(tp, None)
            self._resuming.pop(tp, None)
            self.lag.pop(tp, None)
            self._waiting_since.pop(tp, None)
            self.held.pop(tp, None)  # whoever has it next reads it from the last commit, at the record

    def _note_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Records the broker has and this service has not applied yet, per partition it reads (the
        end offset is the one the last fetch saw): writers outrunning delivery show as a growing lag."""
        now = time.monotonic()
        for tp in consumer.assignment():
            highwater, expected = consumer.highwater(tp), self._expected.get(tp)
            if highwater is not None and expected is not None:
                self.lag[tp] = max(0, highwater - expected)
                if self.lag[tp]:
                    self._waiting_since.setdefault(tp, now)
                else:
                    self._waiting_since.pop(tp, None)

    def problems(self) -> list[str]:
        """What keeps this consumer from applying what waits for it, in words (for /readyz): restarting
        over and over, a partition held at a record it cannot park, or records waiting on a partition
        whose position has not moved for STALLED_S."""
        found = []
        if self._failures_in_a_row >= RESTART_LOOP:
            found.append(f"the {self._name} consumer restarted {self._failures_in_a_row} times in a row "
                         f"(last: {self._last_failure})")
        for tp, held in sorted(self.held.items()):
            found.append(f"the {self._name} consumer holds {tp.topic}[{tp.partition}] at offset {held.offset} since "
                         f"{held.since:%H:%M:%S} UTC: the record cannot be parked ({held.error}); nothing after it "
                         f"is read there, every other partition flows")
        now = time.monotonic()
        for tp, since in sorted(self._waiting_since.items()):
            if tp not in self.held and now - since > STALLED_S:
                found.append(f"the {self._name} consumer has not moved on {tp.topic}[{tp.partition}] for "
                             f"{now - since:.0f}s while {self.lag.get(tp, 0)} records wait there")
        return found

    def _check_continuity(self, tp: TopicPartition, first: int) -> bool:
        """Whether the partition's first record of a poll is where it should be. Resuming (after a start,
        a rebalance or a crash), anywhere from the last Kafka commit to just after what was applied is a
        replay; reading on, only the next offset is."""
        expected = self._expected.get(tp)
        if expected is None:
            self._resuming.pop(tp, None)
            return True
        if tp in self._resuming:
            floor = self._resuming.pop(tp)
            # No commit noted yet: it may have been refused, and Kafka resumes from the start.
            floor = 0 if floor is None else min(floor, expected)
            if floor <= first <= expected:
                return True
            how = "went back before the last commit" if first < floor else "skipped ahead"
            self._lost(tp, f"the next record is at offset {first}, expected {floor}..{expected} (offsets {how})")
            return False
        if first != expected:
            how = "went back" if first < expected else "skipped ahead"
            self._lost(tp, f"the next record is at offset {first}, expected {expected} (offsets {how})")
            return False
        return True

    def _lost(self, tp: TopicPartition, detail: str) -> None:
        self.data_losses_total += 1
        log.warning("%s: the broker lost data on %s[%d]: %s", self._name, tp.topic, tp.partition, detail)
        if self._on_data_loss is not None:
            self._on_data_loss(f"{tp.topic}[{tp.partition}]")

    async def _load_positions(self) -> dict[TopicPartition, tuple[int, int | None]]:
        """Per partition: the next offset after what was applied, and the offset last committed to Kafka."""
        async with self._sessions() as session:
            rows = await session.execute(select(StreamPosition.topic, StreamPosition.partition, StreamPosition.next_offset,
                                                StreamPosition.committed_offset))
            return {TopicPartition(topic, partition): (applied, committed) for topic, partition, applied, committed in rows}

    async def _save_committed(self, done: dict[TopicPartition, int]) -> None:
        """The offsets Kafka has just committed. Lost in a crash, they are only older than Kafka's:
        the replay check then allows a little more, and reports no false loss."""
        async with self._sessions() as session, session.begin():
            await (await plain_sql(session)).execute(
                "INSERT INTO stream_positions (topic, partition, next_offset, committed_offset)"
                " SELECT t, p, o, o FROM unnest($1::varchar[], $2::int[], $3::bigint[]) AS c(t, p, o)"
                " ON CONFLICT (topic, partition) DO UPDATE SET committed_offset = excluded.committed_offset",
                [tp.topic for tp in done], [tp.partition for tp in done], list(done.values()))

    async def _rebase(self, at: dict[TopicPartition, int]) -> None:
        """After a loss, both offsets start again where the partition now is."""
        async with self._sessions() as session, session.begin():
            await (await plain_sql(session)).execute(
                "INSERT INTO stream_positions (topic, partition, next_offset, committed_offset)"
                " SELECT t, p, o, o FROM unnest($1::varchar[], $2::int[], $3::bigint[]) AS c(t, p, o)"
                " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset,"
                " committed_offset = excluded.committed_offset",
                [tp.topic for tp in at], [tp.partition for tp in at], list(at.values()))

    async def handle_batch(self, records: list[ConsumerRecord]) -> None:
        """Records from one poll, each link's in order. Those that verify and parse are applied
        in one transaction (one inbox insert, one commit); when any of them fails there, the
        transaction is rolled back and they go one at a time, so a poison message is parked alone
        and the others still apply, each exactly once. Nothing after a held record of its partition
        is touched."""
        ready = []
        for record in records:
            if self._behind_held(record):
                continue
            try:
                ready.append((record, *self._verified(record.topic, record.headers, record.value)))
            except Parked as exc:
                await self._park_or_hold(record, exc.env, exc.reason)
        ready = [entry for entry in ready if not self._behind_held(entry[0])]
        if len(ready) > 1:
            try:
                await self._apply_together(ready)
                return
            except Exception as exc:
                # A poison message, or a transaction that lost a race (a deadlock with a writer of
                # the same tickets): one at a time, each in a transaction of its own, as before.
                log.warning("%s: a batch of %d failed (%r); applying them one at a time", self._name, len(ready), exc)
                self.batches_split_total += 1
        for record, env, payload in ready:
            if self._behind_held(record):
                continue
            try:
                await self._apply_retrying(env, payload, record.topic, record)
            except Parked as exc:
                await self._park_or_hold(record, exc.env, exc.reason)

    def _behind_held(self, record: ConsumerRecord) -> bool:
        held = self.held.get(TopicPartition(record.topic, record.partition))
        return held is not None and record.offset > held.offset

    async def _apply_together(self, ready: list[tuple[ConsumerRecord, Envelope, Payload]]) -> None:
        async with self._sessions() as session, session.begin():
            first_time = {row["event_id"] for row in await (await plain_sql(session)).fetch(
                _RECORD_MANY, *positions_after(record for record, _, _ in ready),
                [str(env.event_id) for _, env, _ in ready], [env.type for _, env, _ in ready])}
            fresh = []
            for record, env, payload in ready:
                event_id = str(env.event_id)
                if event_id not in first_time:  # applied before, or twice in this batch
                    self.duplicates_total += 1
                    log.info("%s: %s %s already applied; skipped", self._name, env.type, event_id)
                    continue
                first_time.discard(event_id)
                fresh.append((record, env, payload))
            for run in runs(fresh, self._together):
                together = self._together.get(type(run[0][2])) if len(run) > 1 else None
                if together is not None:
                    await together(session, [(env, payload, record.topic) for record, env, payload in run])
                else:
                    record, env, payload = run[0]
                    await self._handler(session, env, payload, record.topic)
                # Each handler starts from the database, as it would in a transaction of its own.
                await session.flush()
                session.expunge_all()
        self.applied_total += len(fresh)

    async def handle(self, record: ConsumerRecord) -> None:
        try:
            await self._verify_and_apply(record.topic, record.headers, record.value, record)
        except Parked as exc:
            await self._park_or_hold(record, exc.env, exc.reason)

    async def replay(self, letter: DeadLetter) -> str:
        """A parked message once more through the live path: verified with today's keys (they may
        have been rotated), parsed, and applied with its inbox record, so at most once. Answers
        "applied" or "already applied" (the inbox had its id); raises Parked when it still cannot be."""
        try:
            applied = await self._verify_and_apply(letter.topic, unpack_headers(letter.headers), letter.value)
        except Parked as exc:
            log.error("%s: dead letter %d parked again: %s", self._name, letter.id, exc.reason)
            raise
        return APPLIED if applied else ALREADY_APPLIED

    def _verified(self, topic: str, headers, value: bytes | None) -> tuple[Envelope, Payload]:
        """The message, signed by its sender and parsed; Parked when it is not, whatever it holds."""
        try:
            self._signatures.verify(topic, headers, value)
        except BadSignature as exc:
            raise Parked(f"not authenticated: {exc}", _claimed_envelope(value)) from exc
        except Exception as exc:  # headers no signer of ours writes (a null value, say)
            raise Parked(f"not authenticated: unreadable signature headers ({exc!r})") from exc
        try:
            return parse(value)
        except ContractError as exc:
            raise Parked(str(exc)) from exc
        except Exception as exc:
            raise Parked(f"unreadable message: {exc!r}") from exc

    async def _verify_and_apply(self, topic: str, headers, value: bytes | None,
                                record: ConsumerRecord | None = None) -> bool:
        """The one path of a message, live (`record`, whose position moves with it) or replayed:
        True when applied, False when the inbox had it."""
        env, payload = self._verified(topic, headers, value)
        return await self._apply_retrying(env, payload, topic, record)

    async def _apply_retrying(self, env: Envelope, payload: Payload, topic: str,
                              record: ConsumerRecord | None = None) -> bool:
        """A verified message applied in a transaction of its own, tried again on a passing failure."""
        for attempt in itertools.count(1):
            try:
                return await self._apply(env, payload, topic, record)
            except Rejected as exc:
                raise Parked(f"rejected: {exc}", env) from exc
            except Exception as exc:
                if transient(exc):
                    # The database is away (restart, failover) or the transaction lost a race:
                    # nothing is wrong with the message. Restart from the committed offset.
                    raise
                if attempt == MAX_ATTEMPTS:
                    log.exception("%s: %s %s failed %d times", self._name, env.type, env.event_id, attempt)
                    raise Parked(f"failed {attempt} times: {exc!r}", env) from exc
                await asyncio.sleep(0.2 * attempt)

    async def _apply(self, env: Envelope, payload: Payload, topic: str, record: ConsumerRecord | None = None) -> bool:
        async with self._sessions() as session, session.begin():
            first_time = await (await plain_sql(session)).fetchval(
                _RECORD_MANY, *positions_after([record] if record else []), [str(env.event_id)], [env.type])
            if first_time is None:
                self.duplicates_total += 1
                log.info("%s: %s %s already applied; skipped", self._name, env.type, env.event_id)
                return False
            await self._handler(session, env, payload, topic)
        self.applied_total += 1
        return True

    async def _park_or_hold(self, record: ConsumerRecord, env: Envelope | None, reason: str) -> None:
        """Parks the record; when the database does not take it, holds its partition at it instead
        (loudly: log, metric, /readyz), so it is neither applied nor skipped, and the rest flows."""
        tp = TopicPartition(record.topic, record.partition)
        rebalances = self.rebalances
        try:
            await self._park(record, env, reason)
        except CannotPark as exc:
            self.park_failures_total += 1
            if self.rebalances != rebalances:  # no longer ours: its next reader meets the record again
                return
            offset, attempts = self._hold_attempts.get(tp, (None, 0))
            attempts = attempts + 1 if offset == record.offset else 1
            wait = min(HOLD_MAX_S, HOLD_RETRY_S * 2 ** (attempts - 1))
            held = self.held[tp] = Held(record.offset, escaped(str(exc), 300), utcnow(), attempts,
                                        time.monotonic() + wait)
            log.error("%s: CANNOT PARK %s[%d]@%d (%s); the partition is held at it, tried again in %.0fs "
                      "(attempt %d): %s", self._name, record.topic, record.partition, record.offset, held.error,
                      wait, attempts, escaped(reason, 300))

    async def _park(self, record: ConsumerRecord, env: Envelope | None, reason: str) -> None:
        row = dead_letter_row(record, env, reason)
        for attempt in range(1, PARK_ATTEMPTS + 1):
            try:
                async with self._sessions() as session, session.begin():
                    # A redelivered record is parked once.
                    letter_id = await session.scalar(
                        insert(DeadLetter).values(**row).on_conflict_do_nothing().returning(DeadLetter.id))
                    await (await plain_sql(session)).execute(_MOVE_POSITIONS, *positions_after([record]))
                break
            except Exception as exc:
                if attempt == PARK_ATTEMPTS:
                    raise CannotPark(repr(exc)) from exc
                log.warning("%s: parking %s[%d]@%d failed (%r); trying again", self._name, record.topic,
                            record.partition, record.offset, exc)
                await asyncio.sleep(0.2 * attempt)
        if letter_id is None:
            log.info("%s: %s[%d]@%d is parked already", self._name, record.topic, record.partition, record.offset)
            return
        self.parked_total += 1
        log.error("%s: parked message %s[%d]@%d as dead letter %d: %s", self._name, record.topic, record.partition,
                  record.offset, letter_id, row["reason"])


def runs(entries: list[tuple[ConsumerRecord, Envelope, Payload]], together) -> list[list]:
    """A batch's messages in order, grouped: messages that follow each other and are of a type
    `together` applies set-based form one group; every other message is a group of its own. No
    message moves past another, so each link's messages keep their order."""
    out: list[list] = []
    for entry in entries:
        kind = type(entry[2])
        if out and kind in together and type(out[-1][0][2]) is kind:
            out[-1].append(entry)
        else:
            out.append([entry])
    return out


def positions_after(records) -> tuple[list[str], list[int], list[int]]:
    """The next offset after these records, per partition, as the three arrays _MOVE_POSITIONS takes."""
    after: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        after[key] = max(after.get(key, 0), record.offset + 1)
    return [t for t, _ in after], [p for _, p in after], list(after.values())


def dead_letter_row(record: ConsumerRecord, env: Envelope | None, reason: str) -> dict[str, Any]:
    """What a dead letter keeps of a record: its bytes, bounded, and text only where escaped, so that
    the database takes it whatever the record holds."""
    headers, all_headers = kept_headers(record.headers)
    key = record.key
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": None if key is None else key[:MAX_KEY_BYTES],
        "event_id": escaped(str(env.event_id), 36) if env else None,
        "type": escaped(env.type, 100) if env else None,
        "reason": escaped(reason, MAX_REASON),
        **kept(record.value),
        "headers": headers,
        "record_sha256": fingerprint(record.timestamp, key, record.value, record.headers),
    } | ({"truncated": True} if not all_headers or len(key or b"") > MAX_KEY_BYTES else {})


def kept_headers(headers) -> tuple[bytes, bool]:
    """The record's headers packed, the first ones up to MAX_HEADER_BYTES in all; and whether all fit."""
    kept, size = [], 0
    for header in headers or ():
        size += len(pack_headers([header]))
        if size > MAX_HEADER_BYTES:
            return pack_headers(kept), False
        kept.append(header)
    return pack_headers(kept), True


def in_turns(batches: dict[TopicPartition, list[ConsumerRecord]]) -> list[list[ConsumerRecord]]:
    """What one poll returned, as the transactions to apply it in: first the first record of every
    stream (a topic and key: one link on one topic), then the rest in turns, the second of each,
    the third..., at most APPLY_TOGETHER to a transaction. Each stream keeps its order, the only
    order a message relies on, and a quiet link's record is committed with the first transaction,
    not after every record a busy link had before it in the poll (issue 11: one hot link must not
    stall the others). Within a turn, which holds one record of each stream, records are ordered by
    the type they say they are, so that receipts follow each other and are applied together (`runs`)."""
    streams: dict[tuple[str, bytes | None], list[ConsumerRecord]] = {}
    for records in batches.values():
        for record in records:
            streams.setdefault((record.topic, record.key), []).append(record)
    firsts = sorted((records[0] for records in streams.values()), key=_said_type)
    rest = [record for turn in itertools.zip_longest(*(records[1:] for records in streams.values()))
            for record in sorted((r for r in turn if r is not None), key=_said_type)]
    return [part[start:start + APPLY_TOGETHER] for part in (firsts, rest) for start in range(0, len(part), APPLY_TOGETHER)]


def _said_type(record: ConsumerRecord) -> bytes:
    """The record's `type` header, unchecked (it only orders a turn), whatever the headers hold."""
    for name, value in record.headers or ():
        if name == "type" and isinstance(value, bytes):
            return value
    return b""


def kept(value: bytes | None) -> dict[str, Any]:
    """What a dead letter keeps of a message: all of it, or a bounded prefix of an oversized one
    (a 20 MB message must not go into the database whole); its size and SHA-256 either way."""
    if value is None:
        return {"value": None, "size": None, "sha256": None, "truncated": False}
    return {"value": value[:MAX_KEPT_BYTES], "size": len(value), "sha256": hashlib.sha256(value).hexdigest(),
            "truncated": len(value) > MAX_KEPT_BYTES}


def _claimed_envelope(value: bytes | None) -> Envelope | None:
    """What an unauthenticated message claims to be, for the operator's record only."""
    try:
        return parse(value)[0]
    except Exception:  # ContractError, or whatever else its bytes provoke (RecursionError on deep JSON)
        return None

