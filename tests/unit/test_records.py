"""Records as the bytes they are (shared/platform/records.py): any header name can be read, any
headers kept and given back, any bytes shown as text PostgreSQL and a page accept."""
from aiokafka.record import default_records
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given
from hypothesis import strategies as st

from shared.platform.records import (
    TolerantMemoryRecords,
    escaped,
    fingerprint,
    name_bytes,
    pack_headers,
    unpack_headers,
)
from tests.raw_records import RawName

header_names = st.binary(max_size=40).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
headers = st.lists(st.tuples(header_names, st.none() | st.binary(max_size=60)), max_size=6)


def batch(records: list[tuple[bytes | None, bytes | None, list]]) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                           producer_epoch=-1, base_sequence=-1, batch_size=10_000_000)
    for offset, (key, value, hs) in enumerate(records):
        builder.append(offset, timestamp=1_700_000_000_000 + offset, key=key, value=value,
                       headers=[(RawName(name_bytes(n)), v) for n, v in hs])
    return bytes(builder.build())


def read(data: bytes, reader=TolerantMemoryRecords) -> list:
    records, found = reader(data), []
    while records.has_next():
        found += [(r.offset, r.key, r.value, list(r.headers)) for r in records.next_batch()]
    return found


def test_aiokafka_alone_cannot_read_a_header_name_that_is_not_utf8_and_the_tolerant_reader_can():
    data = batch([(b"\x00", b"v", [("\udcff\x00bad", b"1")]), (b"k", None, [("signature", None)])])
    try:
        read(data, MemoryRecords)
        refused = False
    except Exception:  # noqa: BLE001 (aiokafka raises UnicodeDecodeError or CorruptRecordException)
        refused = True
    assert refused, "aiokafka now reads such names: records.TolerantMemoryRecords may no longer be needed"
    assert read(data) == [(0, b"\x00", b"v", [("\udcff\x00bad", b"1")]), (1, b"k", None, [("signature", None)])]


@given(st.lists(st.tuples(st.none() | st.binary(max_size=50), st.none() | st.binary(max_size=200), headers),
                min_size=1, max_size=8))
def test_the_tolerant_reader_gives_back_every_record_as_it_was_written(records):
    assert read(batch(records)) == [(offset, key, value, hs) for offset, (key, value, hs) in enumerate(records)]


def test_well_formed_batches_are_read_by_aiokafkas_own_reader():
    data = batch([(b"k", b"v", [("a", b"1")])])
    records = TolerantMemoryRecords(data)
    assert type(records.next_batch()._fast) is default_records.DefaultRecordBatch


@given(headers)
def test_headers_are_kept_as_bytes_and_given_back_as_they_were(hs):
    packed = pack_headers(hs)
    assert isinstance(packed, bytes)
    assert unpack_headers(packed) == hs


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_bytes_or_text_are_shown_as_printable_utf8_without_controls(data):
    shown = escaped(data)
    shown.encode("utf-8")  # no lone surrogate left: PostgreSQL and a page take it
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\x00" not in shown


def test_escaping_keeps_readable_text_and_names_each_odd_byte():
    assert escaped("Zürich note") == "Zürich note"
    assert escaped(b"\x00k\xff\\") == "\\x00k\\xff\\\\"
    assert escaped("a\u0085b") == "a\\x85b"  # a C1 control character
    assert escaped(b"x" * 10, limit=4) == "xxx…"


def test_a_fingerprint_tells_records_apart_by_any_part_and_is_the_same_for_the_same_record():
    base = (1, b"k", b"v", [("h", b"1")])
    assert fingerprint(*base) == fingerprint(*base)
    others = [(2, b"k", b"v", [("h", b"1")]), (1, None, b"v", [("h", b"1")]), (1, b"", b"v", [("h", b"1")]),
              (1, b"k", None, [("h", b"1")]), (1, b"k", b"v", []), (1, b"k", b"v", [("h", None)]),
              (1, b"kv", b"", [("h", b"1")])]
    assert len({fingerprint(*base), *(fingerprint(*o) for o in others)}) == len(others) + 1
