"""Whatever bytes a record holds, the inbox parks it or applies it, and never raises (issue 23: one key
with a NUL byte made parking fail, and the consumer restarted on that record for good). The bridge's own
handler and inbox on its real database; records as aiokafka hands them over."""
import itertools
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from devstack import infra
from shared.platform import dead_letters
from shared.platform.db import make_engine, make_sessionmaker, utcnow
from shared.platform.inbox import MAX_KEPT_BYTES, DeadLetter, InboxConsumer
from shared.platform.kafka import outbound_topic
from shared.platform.migrations import upgrade
from shared.platform.records import fingerprint, pack_headers, unpack_headers
from shared.platform.signing import KeyRing, Signatures
from tests.handlers.sides import LEAD, PARTNER

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEYS = Signatures.per_partner({LEAD: KeyRing.parse(KeyRing.generate()), PARTNER: KeyRing.parse(KeyRing.generate())})
TOPICS = [outbound_topic(LEAD), outbound_topic(PARTNER)]
_offsets = itertools.count(10_000)
ROOT = Path(__file__).resolve().parents[2]

header_names = st.binary(max_size=30).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
headers = st.lists(st.tuples(header_names, st.none() | st.binary(max_size=40)), max_size=4)


def record(topic: str, key: bytes | None, value: bytes | None, extra_headers: list, signed: bool,
           partition: int = 0, offset: int | None = None, timestamp: int = 1_700_000_000_000) -> ConsumerRecord:
    """A record as aiokafka's consumer hands it over; signed with the topic's real key, or not."""
    signature = KEYS.sign(topic, value or b"") if signed else []
    hs = tuple([*extra_headers, *signature])
    return ConsumerRecord(topic, partition, next(_offsets) if offset is None else offset, timestamp, 0, key, value,
                          None, len(key) if key is not None else -1, len(value) if value is not None else -1, hs)


records = st.builds(record, topic=st.sampled_from(TOPICS), key=st.none() | st.binary(max_size=64),
                    value=st.none() | st.binary(max_size=2000), extra_headers=headers, signed=st.booleans(),
                    partition=st.integers(0, 3))


def inbox(bridge) -> InboxConsumer:
    return InboxConsumer(bridge.sessions, None, bridge.handle, name="sync_bridge", signatures=KEYS)


async def letter_of(bridge, rec: ConsumerRecord) -> DeadLetter | None:
    async with bridge.sessions() as session:
        return await session.scalar(select(DeadLetter).where(
            DeadLetter.topic == rec.topic, DeadLetter.partition == rec.partition, DeadLetter.offset == rec.offset,
            DeadLetter.record_sha256 == fingerprint(rec.timestamp, rec.key, rec.value, rec.headers)))


def kept_as_it_was(letter: DeadLetter, rec: ConsumerRecord) -> bool:
    return (letter.key == rec.key and letter.value == rec.value and unpack_headers(letter.headers) == list(rec.headers)
            and "\x00" not in letter.reason)


@settings(max_examples=int(os.environ.get("POISON_EXAMPLES", "150")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(batch=st.lists(records, min_size=1, max_size=6))
async def test_any_record_is_parked_with_its_bytes_as_they_were_and_nothing_raises(bridge, batch):
    consumer = inbox(bridge)
    await consumer.handle_batch(batch)  # must not raise, whatever the bytes
    assert not consumer.held and consumer.park_failures_total == 0
    for rec in batch:  # nothing random is a message of ours: every one is parked, whole
        letter = await letter_of(bridge, rec)
        assert letter is not None and kept_as_it_was(letter, rec), rec
    assert consumer.parked_total == len(batch)


@pytest.mark.parametrize("key, value, extra", [
    (b"\x00", b"{}", []),
    (b"\xff\xfe\x00", b"\x00", []),
    (b"", b"", []),
    (None, None, []),
    (b"link", None, [("\x00", b"\x00")]),
    (b"link", b"x", [("\udcff\udcfe", None), ("signature", None)]),
    (b"link", os.urandom(1_000_000), [("n\x00", os.urandom(100))]),
    (b"link", b"[" * 100_000, []),
    (b"link", b'{"a":' * 50_000, []),
    (b"\x00" * 10_000, os.urandom(MAX_KEPT_BYTES + 10), []),
    (b"link", b"x", [("a", b"x" * 65_525), ("b", b"y")]),
], ids=["nul-key", "invalid-utf8-key-and-nul-value", "empty-key-and-value", "null-key-and-value",
        "nul-header-name-and-value", "invalid-utf8-header-name-and-null-values", "1-MB-value", "deep-json-array",
        "deep-json-object", "oversized", "headers-over-64-KiB"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
async def test_each_hostile_byte_pattern_is_parked_and_shown_escaped(bridge, key, value, extra, signed):
    rec = record(TOPICS[0], key, value, extra, signed)
    consumer = inbox(bridge)
    await consumer.handle_batch([rec])
    assert consumer.parked_total == 1 and not consumer.held
    letter = await letter_of(bridge, rec)
    assert letter is not None
    truncated = len(key or b"") > 4096 or len(value or b"") > MAX_KEPT_BYTES or len(pack_headers(rec.headers)) > 65536
    assert letter.truncated == truncated
    if not truncated:
        assert kept_as_it_was(letter, rec)
    else:  # what was kept is a prefix: the first headers whole, the key and value cut
        assert letter.size == len(value) and letter.key == key[:4096] and letter.value == value[:MAX_KEPT_BYTES]
        assert list(rec.headers)[:len(unpack_headers(letter.headers))] == unpack_headers(letter.headers)
    assert "\x00" not in (letter.shown_key or "") and all("\x00" not in name for name in letter.header_names)


async def test_a_record_read_twice_is_parked_once_and_another_at_the_same_offset_is_parked_too(bridge):
    """After a topic is deleted and made again its offsets start over: a new record at an offset
    already parked is a new dead letter (issue 23: 14 of 1,004 were logged as parked, never stored)."""
    first = record(TOPICS[1], b"\x00", b"first", [], False)
    again = record(TOPICS[1], b"\x00", b"first", [], False, offset=first.offset)
    other = record(TOPICS[1], b"\x00", b"second", [], False, offset=first.offset, timestamp=first.timestamp + 1)
    consumer = inbox(bridge)
    await consumer.handle_batch([first, again])
    await consumer.handle_batch([other])
    async with bridge.sessions() as session:
        stored = await session.scalar(select(func.count()).select_from(DeadLetter).where(
            DeadLetter.topic == TOPICS[1], DeadLetter.offset == first.offset))
    assert stored == 2 and consumer.parked_total == 2


@pytest.fixture
def empty_bridge_database(infrastructure):
    """A bridge database of its own: retention counts every dead letter there is."""
    name = f"retention_{uuid.uuid4().hex[:8]}"
    url = infra.create_databases(infrastructure.postgres_admin_url, [name])[name]
    upgrade(ROOT / "services" / "sync_bridge" / "migrations", url)
    yield url
    infra.drop_databases(infrastructure.postgres_admin_url, [name])


async def test_retention_deletes_old_and_surplus_resolved_letters_oldest_first_and_keeps_every_unresolved_one(
        empty_bridge_database):
    """Resolved dead letters older than the age bound go, then the oldest resolved ones beyond the
    count bound; unresolved ones stay, even beyond the count, until an operator acts."""
    engine = make_engine(empty_bridge_database, pool_size=1)
    sessions = make_sessionmaker(engine)
    now = utcnow()
    rows = ([("old", now - timedelta(days=40))] * 2 + [(f"resolved-{i}", now - timedelta(hours=5 - i)) for i in range(5)]
            + [("unresolved", None)] * 4)
    try:
        async with sessions() as session, session.begin():
            for offset, (reason, resolved_at) in enumerate(rows):
                session.add(DeadLetter(topic="t", partition=0, offset=offset, key=b"\x00", reason=reason,
                                       resolved_at=resolved_at, resolution="discarded" if resolved_at else None))
        async with sessions() as session, session.begin():
            gone = await dead_letters.prune(session, max_count=6, max_age=timedelta(days=30))
        async with sessions() as session:
            left = (await session.scalars(select(DeadLetter.reason).order_by(DeadLetter.offset))).all()
            assert gone == 5 and await dead_letters.count_unresolved(session) == 4
        assert left == ["resolved-3", "resolved-4", "unresolved", "unresolved", "unresolved", "unresolved"]
        async with sessions() as session, session.begin():
            assert await dead_letters.prune(session, max_count=1, max_age=timedelta(days=30)) == 2
            assert await dead_letters.count_unresolved(session) == 4
    finally:
        await engine.dispose()
