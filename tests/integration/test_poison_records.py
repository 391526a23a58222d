"""No record can stop a consumer (issue 23), on the real broker and a real PostgreSQL: records that
aiokafka itself could not read, or that parking could not store, are parked with their bytes and the
next record is applied; a record the database will not take holds only its own partition, loudly, and
is parked once the database takes it; a consumer that restarts over and over says so."""
import os

import pytest
from aiokafka.producer import message_accumulator, producer as producer_module
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from sqlalchemy import select, text

from shared.contracts.envelope import envelope
from shared.platform import inbox as inbox_module
from shared.platform.inbox import DeadLetter, InboxConsumer
from shared.platform.kafka import KafkaAccess, make_consumer, make_producer
from shared.platform.records import unpack_headers
from devstack.infra import free_port
from tests.harness import eventually
from tests.raw_records import RawName
from tests.integration.test_messaging import OpenTicket, Rig, _at_least, open_ticket, plumbing_db, rig  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def hostile_producer(monkeypatch):
    """Producers of this test write batches with aiokafka's pure-Python builder (see RawName)."""
    monkeypatch.setattr(message_accumulator, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    monkeypatch.setattr(producer_module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)


def good(title: str, link: str) -> bytes:
    return envelope(OpenTicket(title=title), source="test", link_id=link).to_bytes()


async def write(rig: Rig, records: list[tuple[bytes | None, bytes | None, list]], partition: int = 0) -> None:
    producer = make_producer(rig.access)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(rig.topic, value, key=key, headers=headers, partition=partition)
    finally:
        await producer.stop()


async def letters(rig: Rig) -> list[DeadLetter]:
    async with rig.sessions() as session:
        return list((await session.scalars(select(DeadLetter).where(DeadLetter.topic == rig.topic)
                                           .order_by(DeadLetter.offset))).all())


async def test_records_aiokafka_or_parking_could_not_handle_are_parked_as_they_were_and_the_next_is_applied(
        rig, hostile_producer):
    value = good("after-the-poison-records", "link-p")
    poison = [
        (b"\x00", b"{}", []),  # issue 23: a NUL in the key made PostgreSQL refuse the dead letter
        (b"link-p", b"x", [("\x00name", b"\x00")]),  # a NUL in a header's name (headers were JSONB)
        (b"link-p", b"x", [(RawName(b"\xff\xfename"), b"v")]),  # not UTF-8: aiokafka's reader refused it
        (b"\xc3\x28", None, []),  # invalid UTF-8 key and no value
        (b"link-p", os.urandom(900_000), [("signature", None)]),
    ]
    await write(rig, [*poison, (b"link-p", value, rig.signatures.sign(rig.topic, value))])
    consumer = rig.consumer()
    rig.spawn(consumer.run())
    await eventually(lambda: _at_least(consumer, "applied_total", 1), timeout=30)
    assert await rig.tickets_titled("after-the-poison-records") == 1
    parked = await letters(rig)
    assert [(p.key, p.value, unpack_headers(p.headers)) for p in parked] == [
        (key, val, [(name if not isinstance(name, RawName) else "\udcff\udcfename", v) for name, v in headers])
        for key, val, headers in poison]
    assert [p.shown_key for p in parked[:1]] == ["\\x00"] and parked[2].header_names == ["\\xff\\xfename"]
    assert consumer.parked_total == len(poison) and consumer.restarts_total == 0 and consumer.problems() == []


async def test_a_record_the_database_will_not_take_holds_only_its_partition_until_it_does(rig):
    """Parking fails (here a trigger refuses that one row, as a full disk or a broken constraint
    would): the record is neither applied nor skipped, its partition waits at it, the other flows,
    and /readyz's check names it; once the database takes it, it is parked and the rest follows."""
    async with rig.sessions() as session, session.begin():
        await session.execute(text(
            "CREATE OR REPLACE FUNCTION refuse_hold_me() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.key = convert_to('hold-me', 'UTF8') THEN RAISE EXCEPTION 'no space left (test)'; END IF; "
            "RETURN NEW; END $$"))
        await session.execute(text("CREATE TRIGGER refuse_hold_me BEFORE INSERT ON dead_letters "
                                   "FOR EACH ROW EXECUTE FUNCTION refuse_hold_me()"))
    try:
        behind, beside = good("behind-the-held-record", "link-h"), good("beside-the-held-record", "link-b")
        await write(rig, [(b"hold-me", b"not a message", []),
                          (b"link-h", behind, rig.signatures.sign(rig.topic, behind))], partition=0)
        await write(rig, [(b"link-b", beside, rig.signatures.sign(rig.topic, beside))], partition=1)
        consumer = rig.consumer()
        rig.spawn(consumer.run())
        await eventually(lambda: _at_least(consumer, "park_failures_total", 2), timeout=30)
        assert await rig.tickets_titled("beside-the-held-record") == 1
        assert await rig.tickets_titled("behind-the-held-record") == 0
        [problem] = consumer.problems()
        assert f"holds {rig.topic}[0] at offset 0" in problem and "no space left (test)" in problem
    finally:
        async with rig.sessions() as session, session.begin():
            await session.execute(text("DROP TRIGGER refuse_hold_me ON dead_letters"))
    await eventually(lambda: _at_least(consumer, "applied_total", 2), timeout=90)
    assert await rig.tickets_titled("behind-the-held-record") == 1
    assert [p.key for p in await letters(rig)] == [b"hold-me"]
    assert consumer.parked_total == 1 and consumer.problems() == [] and consumer.restarts_total == 0


async def test_a_consumer_restarting_over_and_over_says_so_until_it_reads_again(rig, monkeypatch):
    """Its broker refuses it (here: nothing listens where it looks, three times): the check behind
    /readyz names the consumer and the last error; once it reads again, it is quiet."""
    monkeypatch.setattr(inbox_module.asyncio, "sleep", _no_backoff(inbox_module.asyncio.sleep))
    nowhere = KafkaAccess(f"127.0.0.1:{free_port()}")
    made = []

    def factory(listener):
        made.append(listener)
        access = nowhere if len(made) <= inbox_module.RESTART_LOOP else rig.access
        return make_consumer(access, f"g-{rig.topic}", [rig.topic], session_timeout_ms=6000, listener=listener)

    consumer = InboxConsumer(rig.sessions, factory, open_ticket, name="looping", signatures=rig.signatures)
    seen = []

    async def watch():
        seen.extend(consumer.problems())
        return consumer.restarts_total >= inbox_module.RESTART_LOOP and seen

    rig.spawn(consumer.run())
    await eventually(watch, timeout=60, interval=0.01)
    assert any(p.startswith(f"the looping consumer restarted {inbox_module.RESTART_LOOP} times in a row (last: ")
               for p in seen), seen
    value = good("after-the-restart-loop", "link-r")
    await write(rig, [(b"link-r", value, rig.signatures.sign(rig.topic, value))])
    await eventually(lambda: _at_least(consumer, "applied_total", 1), timeout=30)
    assert consumer.problems() == []


def _no_backoff(sleep):
    """The consumer's restart backoff shortened to a tenth, so three restarts take a second."""
    async def shorter(seconds):
        await sleep(seconds / 10)
    return shorter
