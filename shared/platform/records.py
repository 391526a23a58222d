"""Kafka records as the bytes they are. Whatever a record holds (a NUL in its key, invalid UTF-8 in a
header's name, no value at all) must be readable, storable and showable, or one record written by anyone
with write access to a topic stops its consumer for good (issue 23).

- aiokafka decodes header names strictly as UTF-8, inside its fetcher: a name that is not UTF-8 raises
  from every poll, before the consumer sees a record. `TolerantMemoryRecords` reads such a batch again
  with the name's bytes kept as surrogate escapes; every other batch is read by aiokafka's own C reader.
- `pack_headers` stores headers as bytes, `escaped` shows any bytes as text a database, a log line and a
  page accept, and `fingerprint` tells one record from another at the same offset of a topic made again."""
import hashlib
import struct
from collections.abc import Iterable, Iterator

from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch, _DefaultRecordBatchPy, _DefaultRecordPy
from aiokafka.record.memory_records import _MemoryRecordsPy
from aiokafka.record.util import decode_varint

Headers = Iterable[tuple[str, bytes | None]]
_LENGTH = struct.Struct(">i")


def name_bytes(name: str) -> bytes:
    """A header name's bytes as they were on the wire (see `TolerantMemoryRecords`)."""
    return name.encode("utf-8", "surrogateescape")


def pack_headers(headers: Headers | None) -> bytes:
    """Headers as bytes: for each, the name's length and bytes, then the value's length (-1: null)
    and bytes, lengths as 4-byte big-endian integers."""
    out = bytearray()
    for name, value in headers or ():
        raw = name_bytes(name)
        out += _LENGTH.pack(len(raw)) + raw
        out += _LENGTH.pack(-1) if value is None else _LENGTH.pack(len(value)) + value
    return bytes(out)


def unpack_headers(data: bytes | None) -> list[tuple[str, bytes | None]]:
    """The headers `pack_headers` stored, names decoded as aiokafka (or `TolerantMemoryRecords`) did."""
    headers, pos = [], 0
    data = data or b""
    while pos + 8 <= len(data):  # a header cut short (never written so) ends the list
        (length,), pos = _LENGTH.unpack_from(data, pos), pos + 4
        name, pos = data[pos:pos + length].decode("utf-8", "surrogateescape"), pos + length
        if pos + 4 > len(data):
            break
        (length,), pos = _LENGTH.unpack_from(data, pos), pos + 4
        if length < 0:
            headers.append((name, None))
        else:
            headers.append((name, data[pos:pos + length]))
            pos += length
    return headers


def escaped(data: bytes | str | None, limit: int | None = None) -> str | None:
    """Any bytes (or text) as printable text: valid UTF-8 stays as it is, except control characters
    (NUL among them, which PostgreSQL's text refuses), backslashes and bytes that are not UTF-8,
    which are written as Python writes them (\\x00, \\\\, \\udcff...). At most `limit` characters, with
    "…" when cut."""
    if data is None:
        return None
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    shown = "".join(_escape(c) for c in (text if limit is None else text[:limit]))
    if limit is not None and (len(text) > limit or len(shown) > limit):
        return shown[:max(0, limit - 1)] + "…"
    return shown


def _escape(c: str) -> str:
    code = ord(c)
    if c == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept as a surrogate escape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or 0x7F <= code <= 0x9F:  # C0 and C1 controls, DEL
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate (PostgreSQL cannot store one)
        return f"\\u{code:04x}"
    return c


def fingerprint(timestamp: int | None, key: bytes | None, value: bytes | None, headers: Headers | None) -> str:
    """The SHA-256 of a record's timestamp, key, value and headers: the same record read twice has the
    same one; another record at the same offset (its topic deleted and made again) another."""
    digest = hashlib.sha256()
    for part in (str(timestamp).encode(), key, value, pack_headers(headers)):
        digest.update(b"-" if part is None else _LENGTH.pack(len(part)) + part)
    return digest.hexdigest()


class TolerantMemoryRecords(_MemoryRecordsPy):
    """What aiokafka's fetcher reads a fetch response with: its own batches, each read by aiokafka's C
    reader, and read again by `_LenientBatch` only when a header name is not UTF-8."""

    def next_batch(self, *args, **kwargs):
        data = self._next_slice
        batch = super().next_batch(*args, **kwargs)
        return _TolerantBatch(batch, data) if isinstance(batch, DefaultRecordBatch) else batch


class _TolerantBatch:
    """A v2 batch read whole by aiokafka's C reader, or by `_LenientBatch` when that one refuses it."""

    def __init__(self, fast, data: memoryview):
        self._fast, self._data = fast, data

    def __getattr__(self, name: str):
        return getattr(self._fast, name)

    def __next__(self):  # aiokafka reads a control batch's marker with next()
        return next(self._fast)

    def __iter__(self) -> Iterator:
        try:
            records = list(self._fast)
        except (UnicodeDecodeError, CorruptRecordException) as exc:
            # aiokafka's pure-Python reader (AIOKAFKA_NO_EXTENSIONS) wraps the decoding error
            if not isinstance(exc, UnicodeDecodeError) and not isinstance(exc.__context__, UnicodeDecodeError):
                raise
            records = list(_LenientBatch(bytes(self._data)))
        return iter(records)


class _LenientBatch(_DefaultRecordBatchPy):
    """aiokafka 0.14's pure-Python reader of a v2 batch, with header names decoded as surrogate
    escapes instead of refused (the rest of `_read_msg` is aiokafka's own)."""

    def _read_msg(self, decode_varint=decode_varint) -> _DefaultRecordPy:
        buffer, pos = self._buffer, self._pos
        length, pos = decode_varint(buffer, pos)
        start_pos = pos
        _, pos = decode_varint(buffer, pos)  # attributes
        ts_delta, pos = decode_varint(buffer, pos)
        timestamp = self.max_timestamp if self.timestamp_type == self.LOG_APPEND_TIME else self.first_timestamp + ts_delta
        offset_delta, pos = decode_varint(buffer, pos)
        key, pos = _nullable(buffer, pos)
        value, pos = _nullable(buffer, pos)
        count, pos = decode_varint(buffer, pos)
        if count < 0:
            raise CorruptRecordException(f"Found invalid number of record headers {count}")
        headers = []
        for _ in range(count):
            name, pos = _nullable(buffer, pos)
            if name is None:
                raise CorruptRecordException("Invalid negative header key size")
            header_value, pos = _nullable(buffer, pos)
            headers.append((name.decode("utf-8", "surrogateescape"), header_value))
        if pos - start_pos != length:
            raise CorruptRecordException(f"Invalid record size: expected {length} bytes, read {pos - start_pos}")
        self._pos = pos
        return _DefaultRecordPy(self.base_offset + offset_delta, timestamp, self.timestamp_type, key, value, headers)


def _nullable(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buffer, pos)
    if length < 0:
        return None, pos
    return bytes(buffer[pos:pos + length]), pos + length


def install() -> None:
    """Every consumer in this process reads fetch responses with `TolerantMemoryRecords`."""
    fetcher.MemoryRecords = TolerantMemoryRecords
