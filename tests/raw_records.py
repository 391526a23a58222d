"""What a hostile producer writes that aiokafka's own producer cannot."""


class RawName(str):
    """A header name whose bytes on the wire are any bytes, e.g. not UTF-8: aiokafka's pure-Python
    record builder writes what `encode` answers (its C builder encodes the text itself)."""

    def __new__(cls, raw: bytes):
        name = super().__new__(cls, raw.decode("utf-8", "surrogateescape"))
        name.raw = raw
        return name

    def encode(self, *args, **kwargs) -> bytes:
        return self.raw
