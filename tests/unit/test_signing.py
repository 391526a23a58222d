"""Message signatures (shared/platform/signing.py): what verifies, what is refused, and key rotation."""
import pytest

from shared.platform.signing import BadSignature, KeyRing, Signatures

OLD, NEW = "k1:" + "o" * 32, "k2:" + "n" * 32
T = "psa.lead-partner.outbound"


def test_a_message_signed_with_the_shared_key_verifies():
    ring = KeyRing.parse(NEW)
    ring.verify(T, ring.sign(T, b"payload"), b"payload")


def test_a_changed_byte_or_a_missing_signature_is_refused():
    ring = KeyRing.parse(NEW)
    headers = ring.sign(T, b"payload")
    with pytest.raises(BadSignature, match="does not match"):
        ring.verify(T, headers, b"payloaD")
    with pytest.raises(BadSignature, match="unsigned"):
        ring.verify(T, [], b"payload")
    with pytest.raises(BadSignature, match="unsigned"):
        ring.verify(T, None, b"payload")


def test_a_key_of_another_pair_with_the_same_id_is_refused():
    mine, theirs = KeyRing.parse("k1:" + "a" * 32), KeyRing.parse("k1:" + "b" * 32)
    with pytest.raises(BadSignature, match="does not match"):
        mine.verify(T, theirs.sign(T, b"payload"), b"payload")


def test_rotation_signs_with_the_new_key_and_still_accepts_the_old_one_until_it_is_dropped():
    before, during, after = KeyRing.parse(OLD), KeyRing.parse(f"{NEW},{OLD}"), KeyRing.parse(NEW)
    in_flight = before.sign(T, b"old message")
    during.verify(T, in_flight, b"old message")
    assert dict(during.sign(T, b"x"))["signature-key-id"] == b"k2"
    with pytest.raises(BadSignature, match="unknown key id 'k1'"):
        after.verify(T, in_flight, b"old message")


def test_the_same_message_copied_to_the_other_directions_topic_is_refused():
    ring = KeyRing.parse(NEW)
    headers = ring.sign("psa.lead-partner.outbound", b"payload")
    with pytest.raises(BadSignature, match="does not match"):
        ring.verify("psa.lead-partner.inbound", headers, b"payload")


def test_signing_keys_that_are_malformed_or_short_are_refused_at_start():
    for text in ("", "nocolon", "k1:short", ":" + "x" * 32, f"{NEW},k2:{'y' * 32}"):
        with pytest.raises(ValueError):
            KeyRing.parse(text)


def test_a_topic_without_a_shared_key_is_refused():
    signatures = Signatures({"psa.lead-partner.inbound": KeyRing.parse(NEW)})
    with pytest.raises(BadSignature, match="no key is shared for topic psa.other.inbound"):
        signatures.verify("psa.other.inbound", [], b"")
