"""The outbox relay and the inbox consumer against the real broker and a real PostgreSQL:
nothing is lost when the relay dies between publishing and marking, nothing is applied twice,
and a message nobody understands is parked while the rest keeps flowing."""
import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from aiokafka.errors import CommitFailedError, KafkaError

from shared.contracts.envelope import Payload, contract, envelope
from shared.domain.tickets.models import Ticket
from shared.domain.tickets.service import create_ticket
from shared.platform.db import asyncpg_dsn, make_engine, make_sessionmaker
from shared.platform import inbox as inbox_module
from shared.platform.inbox import DeadLetter, InboxConsumer, Rejected
from shared.platform.kafka import KafkaAccess, ensure_topics, make_consumer, make_producer
from shared.platform.migrations import upgrade
from shared.platform.outbox import OutboxMessage, OutboxRelay, add_to_outbox
from shared.platform.signing import KeyRing, Signatures
from tests.harness import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.broker]  # also run on Tansu
MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "lead_partner" / "migrations"


@contract
class OpenTicket(Payload):
    """A test-only contract whose effect a test can count: one ticket per applied event."""

    type = "test.open_ticket"
    schema_version = 1
    title: str


async def open_ticket(session, env, payload: OpenTicket, topic: str) -> None:
    if payload.title.startswith("refuse"):
        raise Rejected(f"{payload.title!r} is refused by this handler")
    await create_ticket(session, payload.title)


class Rig:
    def __init__(self, url: str, access: KafkaAccess):
        self.url, self.access = url, access
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.topic = f"test.{uuid.uuid4().hex[:8]}"
        self.signatures = Signatures({self.topic: KeyRing.parse(KeyRing.generate())})
        self.tasks: list[asyncio.Task] = []

    def relay(self, after_publish=None, lock_key=None) -> OutboxRelay:
        return OutboxRelay(
            self.url, lambda: make_producer(self.access),
            lock_key=lock_key or uuid.uuid4().int >> 65, signatures=self.signatures, after_publish=after_publish,
        )

    def consumer(self) -> InboxConsumer:
        return InboxConsumer(
            self.sessions,
            lambda listener: make_consumer(self.access, f"g-{self.topic}", [self.topic], session_timeout_ms=6000,
                                           listener=listener),
            open_ticket,
            name="test",
            signatures=self.signatures,
        )

    async def send(self, values: list[bytes], key: bytes, signed: bool = True) -> None:
        """Writes straight to the topic, signed as the relay would (or not at all)."""
        producer = make_producer(self.access)
        await producer.start()
        try:
            for value in values:
                headers = self.signatures.sign(self.topic, value) if signed else None
                await producer.send_and_wait(self.topic, value, key=key, headers=headers)
        finally:
            await producer.stop()

    def spawn(self, coro) -> None:
        self.tasks.append(asyncio.create_task(coro))

    async def stage(self, title: str) -> str:
        env = envelope(OpenTicket(title=title), source="test", link_id="link-1")
        async with self.sessions() as session, session.begin():
            add_to_outbox(session, self.topic, env)
        return str(env.event_id)

    async def tickets_titled(self, title: str) -> int:
        async with self.sessions() as session:
            return await session.scalar(select(func.count()).where(Ticket.title == title))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.engine.dispose()


@pytest.fixture(scope="session")
def plumbing_db(databases):
    upgrade(MIGRATIONS, databases["plumbing"])
    return databases["plumbing"]


@pytest_asyncio.fixture(loop_scope="session")
async def rig(plumbing_db, infrastructure):
    rig = Rig(plumbing_db, infrastructure.kafka_admin)
    await ensure_topics(rig.access, [rig.topic], partitions=2)
    yield rig
    await rig.close()


async def test_an_event_published_but_not_marked_when_the_relay_dies_is_published_again_and_applied_once(rig):
    event_id = await rig.stage("crash-between-publish-and-mark")

    async def die(ids):
        raise RuntimeError("relay process killed after the broker acknowledged")

    producer, conn = make_producer(rig.access), await asyncpg.connect(asyncpg_dsn(rig.url))
    await producer.start()
    try:
        with pytest.raises(RuntimeError):
            await rig.relay(after_publish=die).publish_batch(producer, conn)
    finally:
        await producer.stop()
        await conn.close()
    async with rig.sessions() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.event_id == event_id))
        assert row.published_at is None  # the broker has it, the outbox does not know

    consumer = rig.consumer()
    rig.spawn(consumer.run())
    rig.spawn(rig.relay().run())  # a fresh relay, as after a restart

    async def marked():
        async with rig.sessions() as session:
            return await session.scalar(select(OutboxMessage.published_at).where(OutboxMessage.event_id == event_id))

    await eventually(marked)
    await eventually(lambda: _at_least(consumer, "duplicates_total", 1))
    assert await rig.tickets_titled("crash-between-publish-and-mark") == 1
    assert consumer.applied_total == 1


async def test_a_consumer_whose_commit_hangs_is_replaced_without_waiting_for_it_to_stop(rig, monkeypatch):
    """Seen after Apache Kafka lost its data and ACLs: the lookup of the group's coordinator failed for
    good, the commit waited on it, and so did stopping the consumer. The hung one is torn down at once."""
    monkeypatch.setattr(inbox_module, "COMMIT_S", 0.5)
    made, stops = [], []

    def hanging_first(listener):
        consumer = make_consumer(rig.access, f"g-{rig.topic}", [rig.topic], session_timeout_ms=6000, listener=listener)
        if not made:
            async def hang(*_, **__):
                await asyncio.Event().wait()

            async def stop_hangs():
                stops.append(consumer)
                await hang()

            consumer.commit, consumer.stop = hang, stop_hangs
        made.append(consumer)
        return consumer

    inbox = InboxConsumer(rig.sessions, hanging_first, open_ticket, name="test", signatures=rig.signatures)
    rig.spawn(inbox.run())
    await rig.send([envelope(OpenTicket(title="before-the-hung-commit"), source="test", link_id="link-8").to_bytes()],
                   key=b"link-8")
    await eventually(lambda: _true(len(made) == 2))
    await rig.send([envelope(OpenTicket(title="after-the-hung-commit"), source="test", link_id="link-8").to_bytes()],
                   key=b"link-8")
    # On Tansu the new member's join waits for the old one's session to expire (it never left).
    await eventually(lambda: _at_least(inbox, "applied_total", 2), timeout=45)
    assert stops == []  # never waited on
    assert await rig.tickets_titled("before-the-hung-commit") == 1
    assert await rig.tickets_titled("after-the-hung-commit") == 1


class RefusingOnce:
    """A real producer whose broker refuses the send of one chosen message, once (as Tansu refused
    produce requests for some seconds after a restart)."""

    def __init__(self, producer, refuse: bytes):
        self.producer, self.refuse, self.refused = producer, refuse, False

    async def start(self):
        await self.producer.start()

    async def stop(self):
        await self.producer.stop()

    async def send(self, topic, value, **kwargs):
        if value == self.refuse and not self.refused:
            self.refused = True
            refused = asyncio.get_running_loop().create_future()
            refused.set_exception(KafkaError("write conflict"))
            return refused
        return await self.producer.send(topic, value, **kwargs)


async def test_a_send_the_broker_refuses_is_sent_again_at_once_with_the_rest_of_its_link(rig):
    """Only the refused message and those after it on the same link go again, with the same
    producer; the other link's messages were acknowledged and are not sent twice."""
    events = [envelope(OpenTicket(title=title), source="test", link_id=link)
              for title, link in (("A1", "link-a"), ("B1", "link-b"), ("A2", "link-a"), ("B2", "link-b"),
                                  ("A3", "link-a"))]
    async with rig.sessions() as session, session.begin():
        for env in events:
            add_to_outbox(session, rig.topic, env)
    made = []

    def producer():
        made.append(RefusingOnce(make_producer(rig.access), refuse=events[2].to_bytes()))
        return made[-1]

    consumer = rig.consumer()
    rig.spawn(consumer.run())
    relay = OutboxRelay(rig.url, producer, lock_key=uuid.uuid4().int >> 65, signatures=rig.signatures)
    rig.spawn(relay.run())
    await eventually(lambda: _at_least(consumer, "applied_total", 5))
    await eventually(lambda: _at_least(consumer, "duplicates_total", 1))
    await asyncio.sleep(1.0)  # anything sent a second time has arrived by now
    assert len(made) == 1 and made[0].refused
    assert consumer.duplicates_total == 1  # A3 went out before A2 was refused, and again after it
    for title in ("A1", "A2", "A3", "B1", "B2"):
        assert await rig.tickets_titled(title) == 1


async def _at_least(consumer, counter: str, n: int) -> bool:
    return getattr(consumer, counter) >= n


async def test_the_relay_wakes_on_commit_and_publishes_in_commit_order(rig):
    consumer = rig.consumer()
    rig.spawn(consumer.run())
    relay = rig.relay()
    rig.spawn(relay.run())
    await eventually(lambda: _true(relay.is_leader))
    titles = [f"ordered-{n}" for n in range(30)]
    for title in titles:
        await rig.stage(title)
    await eventually(lambda: _at_least(consumer, "applied_total", len(titles)))
    async with rig.sessions() as session:
        applied = (await session.scalars(
            select(Ticket.title).where(Ticket.title.like("ordered-%")).order_by(Ticket.number)
        )).all()
    assert applied == titles  # one key, one partition: applied in the order committed


async def _true(value) -> bool:
    return bool(value)


async def test_the_same_event_delivered_twice_is_applied_once(rig):
    env = envelope(OpenTicket(title="delivered-twice"), source="test", link_id="link-2")
    await rig.send([env.to_bytes()] * 2, key=b"link-2")
    consumer = rig.consumer()
    rig.spawn(consumer.run())
    await eventually(lambda: _at_least(consumer, "duplicates_total", 1))
    assert await rig.tickets_titled("delivered-twice") == 1


async def test_a_commit_refused_by_a_rebalance_keeps_the_consumer_and_applies_everything_once(rig):
    """A broker that restarted forgets the group's members, so the next commit is refused
    (CommitFailedError) while the consumer rejoins by itself. The inbox carries on with the same
    consumer (replacing it cost two more group joins, 11 s without reading on Tansu)."""
    made = []

    def refusing_once(listener):
        consumer = make_consumer(rig.access, f"g-{rig.topic}", [rig.topic], session_timeout_ms=6000, listener=listener)
        commit = consumer.commit

        async def commit_refused_the_first_time(offsets=None):
            if len(made) == 1 and not getattr(consumer, "refused", False):
                consumer.refused = True
                consumer._coordinator.reset_generation()  # what aiokafka does on UnknownMemberId: rejoin
                raise CommitFailedError("the group has already rebalanced")
            return await commit(offsets)

        consumer.commit = commit_refused_the_first_time
        made.append(consumer)
        return consumer

    inbox = InboxConsumer(rig.sessions, refusing_once, open_ticket, name="test", signatures=rig.signatures)
    rig.spawn(inbox.run())
    first = envelope(OpenTicket(title="before-the-refused-commit"), source="test", link_id="link-9")
    await rig.send([first.to_bytes()], key=b"link-9")
    await eventually(lambda: _at_least(inbox, "applied_total", 1))
    await eventually(lambda: _true(getattr(made[0], "refused", False)))
    second = envelope(OpenTicket(title="after-the-refused-commit"), source="test", link_id="link-9")
    await rig.send([second.to_bytes()], key=b"link-9")
    await eventually(lambda: _at_least(inbox, "applied_total", 2))
    await eventually(lambda: _at_least(inbox, "duplicates_total", 1))  # the first, read again after the rejoin
    assert len(made) == 1 and inbox.consumer is made[0]
    assert inbox.data_losses_total == 0  # a rejoin that reads again from the last commit is no loss
    assert await rig.tickets_titled("before-the-refused-commit") == 1
    assert await rig.tickets_titled("after-the-refused-commit") == 1


async def test_a_database_crash_between_the_kafka_commit_and_its_note_is_no_loss(rig):
    """Issue 28: the offsets reached Kafka, then the database went away before the service noted them.
    The records' own transactions had moved the position, so the consumer that follows resumes where
    Kafka says and reports no loss (the old single position, noted after the commit, made the next
    fetch look like a jump ahead, and every open link was reconciled)."""
    inbox = rig.consumer()
    note = inbox._save_committed
    notes = []

    async def database_gone_at_the_second_note(done):
        notes.append(done)
        if len(notes) == 2:
            raise ConnectionResetError("the database went away after Kafka committed the offsets")
        await note(done)

    async def send(prefix: str) -> list:
        sent = [envelope(OpenTicket(title=f"{prefix}-{n}"), source="test", link_id=f"link-c{n}") for n in range(4)]
        for env in sent:
            await rig.send([env.to_bytes()], key=env.link_id.encode())
        return sent

    inbox._save_committed = database_gone_at_the_second_note
    rig.spawn(inbox.run())
    first = await send("noted")
    await eventually(lambda: _at_least(inbox, "applied_total", 4))
    await eventually(lambda: _true(len(notes) >= 1))
    second = await send("committed-not-noted")
    await eventually(lambda: _at_least(inbox, "applied_total", 8))
    await eventually(lambda: _at_least(inbox, "restarts_total", 1))  # the crash replaced the consumer
    third = await send("after-the-crash")
    await eventually(lambda: _at_least(inbox, "applied_total", 12))
    assert len(notes) >= 2 and inbox.data_losses_total == 0
    for env in first + second + third:
        assert await rig.tickets_titled(env.payload["title"]) == 1


async def test_a_consumer_whose_fetcher_stopped_is_replaced_and_reads_on(rig):
    """aiokafka's fetch task ended by an error of its own (seen on a three-node cluster's start: an
    assertion when the assignment changed while the subscription did) leaves a consumer whose every
    poll returns nothing, with no error: the bridge read nothing more. The inbox replaces it."""
    inbox = rig.consumer()
    rig.spawn(inbox.run())
    before = envelope(OpenTicket(title="before-the-fetcher-stopped"), source="test", link_id="link-f")
    await rig.send([before.to_bytes()], key=b"link-f")
    await eventually(lambda: _at_least(inbox, "applied_total", 1))
    stopped = inbox.consumer
    stopped._fetcher.error_future.cancel()  # the task ends, as it does when it raises
    after = envelope(OpenTicket(title="after-the-fetcher-stopped"), source="test", link_id="link-f")
    await rig.send([after.to_bytes()], key=b"link-f")
    await eventually(lambda: _at_least(inbox, "applied_total", 2))
    assert inbox.restarts_total == 1 and inbox.consumer is not stopped
    assert "fetcher stopped" in inbox._last_failure
    assert await rig.tickets_titled("after-the-fetcher-stopped") == 1


async def test_a_poison_message_is_parked_and_the_next_one_is_still_applied(rig):
    good = envelope(OpenTicket(title="after-the-poison"), source="test", link_id="link-3")
    unknown = envelope(OpenTicket(title="x"), source="test", link_id="link-3").model_copy(update={"type": "test.nope"})
    await rig.send([b"\x00garbage", unknown.to_bytes(), good.to_bytes()], key=b"link-3")
    consumer = rig.consumer()
    rig.spawn(consumer.run())
    await eventually(lambda: _at_least(consumer, "applied_total", 1))
    assert await rig.tickets_titled("after-the-poison") == 1
    async with rig.sessions() as session:
        parked = (await session.scalars(select(DeadLetter).where(DeadLetter.topic == rig.topic))).all()
    reasons = sorted(p.reason for p in parked)
    assert len(parked) == 2
    assert reasons[0].startswith("not an envelope") and "unknown message type 'test.nope'" in reasons[1]


async def test_a_poll_applied_together_still_parks_its_poison_alone_and_applies_the_rest_once_in_order(rig):
    """What one poll returns is applied in one transaction; a message its handler refuses sends the
    batch back to one at a time: the refused one is parked, the others are applied once each."""
    events = [envelope(OpenTicket(title=title), source="test", link_id="link-5")
              for title in ("batch-1", "batch-2", "refuse-me", "batch-3")]
    values = [e.to_bytes() for e in events]
    await rig.send([*values, values[0]], key=b"link-5")  # all on the topic before the consumer starts
    consumer = rig.consumer()
    rig.spawn(consumer.run())
    await eventually(lambda: _at_least(consumer, "parked_total", 1))
    await eventually(lambda: _at_least(consumer, "applied_total", 3))
    async with rig.sessions() as session:
        applied = (await session.scalars(
            select(Ticket.title).where(Ticket.title.like("batch-%")).order_by(Ticket.number))).all()
        parked = (await session.scalars(select(DeadLetter).where(DeadLetter.event_id == str(events[2].event_id)))).all()
    assert applied == ["batch-1", "batch-2", "batch-3"]
    assert [p.reason for p in parked] == ["rejected: 'refuse-me' is refused by this handler"]
    assert consumer.duplicates_total >= 1  # the copy of the first


async def test_an_unsigned_or_tampered_message_is_parked_unapplied_and_the_next_one_is_applied(rig):
    forged = envelope(OpenTicket(title="forged"), source="test", link_id="link-4")
    genuine = envelope(OpenTicket(title="genuine"), source="test", link_id="link-4")
    tampered = genuine.to_bytes().replace(b"genuine", b"tampered")
    other_key = Signatures({rig.topic: KeyRing.parse(KeyRing.generate("k1"))})
    await rig.send([forged.to_bytes()], key=b"link-4", signed=False)
    producer = make_producer(rig.access)
    await producer.start()
    try:
        # a copy of a real message with a new body, under the real signature
        await producer.send_and_wait(rig.topic, tampered, key=b"link-4",
                                     headers=rig.signatures.sign(rig.topic, genuine.to_bytes()))
        # a message signed with a key of the right id that is not the shared one
        await producer.send_and_wait(rig.topic, forged.to_bytes(), key=b"link-4",
                                     headers=other_key.sign(rig.topic, forged.to_bytes()))
    finally:
        await producer.stop()
    await rig.send([genuine.to_bytes()], key=b"link-4")
    consumer = rig.consumer()
    rig.spawn(consumer.run())
    await eventually(lambda: _at_least(consumer, "applied_total", 1))
    assert await rig.tickets_titled("genuine") == 1
    assert await rig.tickets_titled("forged") == 0 and await rig.tickets_titled("tampered") == 0
    async with rig.sessions() as session:
        parked = (await session.scalars(select(DeadLetter).where(DeadLetter.topic == rig.topic))).all()
    assert sorted(p.reason for p in parked) == [
        "not authenticated: signature does not match the message (key id 'k1')",
        "not authenticated: signature does not match the message (key id 'k1')",
        "not authenticated: unsigned message",
    ]


async def test_only_one_relay_publishes_at_a_time(rig):
    first, second = rig.relay(lock_key=4242), rig.relay(lock_key=4242)
    rig.spawn(first.run())
    await eventually(lambda: _true(first.is_leader))
    rig.spawn(second.run())
    await asyncio.sleep(1.5)
    assert first.is_leader and not second.is_leader
    rig.tasks[0].cancel()  # the leader dies; the other takes over
    await eventually(lambda: _true(second.is_leader))


async def _outbox_has(rig, event_id: str) -> bool:
    async with rig.sessions() as session:
        return await session.scalar(select(func.count()).where(OutboxMessage.event_id == event_id)) == 1


async def test_an_event_staged_in_a_transaction_that_fails_is_never_written(rig):
    env = envelope(OpenTicket(title="rolled back"), source="test", link_id="link-1")
    with pytest.raises(RuntimeError):
        async with rig.sessions() as session, session.begin():
            add_to_outbox(session, rig.topic, env)
            raise RuntimeError("the state change failed")
    assert not await _outbox_has(rig, str(env.event_id))

    # The same session used again commits only what its new transaction staged.
    kept = envelope(OpenTicket(title="kept"), source="test", link_id="link-1")
    async with rig.sessions() as session:
        add_to_outbox(session, rig.topic, env)
        await session.rollback()
        async with session.begin():
            add_to_outbox(session, rig.topic, kept)
    assert not await _outbox_has(rig, str(env.event_id))
    assert await _outbox_has(rig, str(kept.event_id))

    # ...and after a close without commit, too.
    closed = envelope(OpenTicket(title="closed"), source="test", link_id="link-1")
    session = rig.sessions()
    add_to_outbox(session, rig.topic, closed)
    await session.close()
    async with session.begin():
        await create_ticket(session, "after the close")
    await session.close()
    assert not await _outbox_has(rig, str(closed.event_id))


async def test_a_savepoint_rolled_back_keeps_the_events_staged_before_it(rig):
    outer = envelope(OpenTicket(title="outer"), source="test", link_id="link-1")
    async with rig.sessions() as session, session.begin():
        add_to_outbox(session, rig.topic, outer)
        savepoint = await session.begin_nested()
        await create_ticket(session, "inside the savepoint")
        await savepoint.rollback()
    assert await _outbox_has(rig, str(outer.event_id))
