"""Messages authenticated end to end, on any broker: every message between a partner and the bridge
carries an HMAC-SHA256 over its topic and its exact bytes, made with a key only that partner and the bridge hold,
and the id of that key in a header. Broker ACLs say who may write a topic; this says who wrote the
message, so even a holder of the broker's super user cannot plant one."""
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from shared.platform.kafka import inbound_topic, outbound_topic

KEY_ID_HEADER = "signature-key-id"
SIGNATURE_HEADER = "signature"


class BadSignature(Exception):
    """The message was not made by a holder of the key it names."""


@dataclass(frozen=True)
class KeyRing:
    """The keys one pair (a partner and the bridge) shares. The first signs; every one verifies,
    so a key is rotated by putting a new one first and dropping the old once nothing in flight
    still carries it."""

    keys: dict[str, bytes] = field(repr=False)
    signing_key_id: str

    @classmethod
    def parse(cls, text: str) -> "KeyRing":
        """`kid:secret[,kid:secret...]`, newest first."""
        pairs = [part.strip().split(":", 1) for part in text.split(",") if part.strip()]
        if not pairs or any(len(p) != 2 or not p[0] or len(p[1]) < 16 for p in pairs):
            raise ValueError("signing keys must be 'key-id:secret[,key-id:secret]' with secrets of 16+ characters")
        if len({kid for kid, _ in pairs}) != len(pairs):
            raise ValueError("signing keys list a key id twice")
        return cls({kid: secret.encode() for kid, secret in pairs}, pairs[0][0])

    @staticmethod
    def generate(key_id: str = "k1") -> str:
        return f"{key_id}:{secrets.token_urlsafe(32)}"

    @staticmethod
    def _mac(key: bytes, topic: str, value: bytes | None) -> bytes:
        # The topic is signed too: one key serves both directions of a pair, and a message copied
        # from one direction's topic to the other must not verify there.
        return hmac.new(key, topic.encode() + b"\n" + (value or b""), hashlib.sha256).hexdigest().encode()

    def sign(self, topic: str, value: bytes) -> list[tuple[str, bytes]]:
        mac = self._mac(self.keys[self.signing_key_id], topic, value)
        return [(KEY_ID_HEADER, self.signing_key_id.encode()), (SIGNATURE_HEADER, mac)]

    def verify(self, topic: str, headers, value: bytes | None) -> None:
        found = {name: data for name, data in (headers or ())}
        kid, mac = found.get(KEY_ID_HEADER), found.get(SIGNATURE_HEADER)
        if kid is None or mac is None:
            raise BadSignature("unsigned message")
        key = self.keys.get(kid.decode(errors="replace"))
        if key is None:
            raise BadSignature(f"signed with unknown key id {kid.decode(errors='replace')!r}")
        if not hmac.compare_digest(self._mac(key, topic, value), mac):
            raise BadSignature(f"signature does not match the message (key id {kid.decode(errors='replace')!r})")


@dataclass(frozen=True)
class Signatures:
    """Which key ring signs what a service writes to a topic and verifies what it reads from one."""

    by_topic: dict[str, KeyRing]

    @classmethod
    def per_partner(cls, rings: dict[str, KeyRing]) -> "Signatures":
        """Each partner's two topics carry the key that partner and the bridge alone hold."""
        return cls({topic: ring for partner, ring in rings.items()
                    for topic in (outbound_topic(partner), inbound_topic(partner))})

    def sign(self, topic: str, value: bytes) -> list[tuple[str, bytes]]:
        return self.by_topic[topic].sign(topic, value)

    def verify(self, topic: str, headers, value: bytes | None) -> None:
        ring = self.by_topic.get(topic)
        if ring is None:
            raise BadSignature(f"no key is shared for topic {topic}")
        ring.verify(topic, headers, value)
