"""The bridge's partner directory as pure logic: which key signs and which verifies around a rotation,
what a removed partner's message is refused with, and how BRIDGE_PARTNERS and a new partner's fields
are read."""
from datetime import timedelta

import pytest
from pydantic import ValidationError

from services.sync_bridge.directory import Directory, Member
from services.sync_bridge.onboarding import PartnerIn
from services.sync_bridge.settings import BridgeSettings
from shared.platform.db import utcnow
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.signing import BadSignature, KeyRing

OLD, NEW = b"o" * 32, b"n" * 32


def rotated(grace_left: timedelta) -> Directory:
    """One onboarded partner, "globex", whose k1 was replaced by k2 and verifies for `grace_left` more."""
    directory = Directory({}, None)
    directory.members["globex"] = Member("globex", "Globex", "insourcing", "active", False,
                                         [("k2", NEW, None), ("k1", OLD, utcnow() + grace_left)])
    return directory


def signed_by(key_id: str, key: bytes, topic: str, value: bytes = b"{}") -> list:
    return KeyRing({key_id: key}, key_id).sign(topic, value)


def key_id_of(headers) -> str:
    return dict(headers)["signature-key-id"].decode()


def test_within_the_grace_both_keys_verify_and_the_bridge_answers_in_the_old_one_until_the_new_is_used():
    directory = rotated(timedelta(hours=1))
    topic = outbound_topic("globex")
    assert key_id_of(directory.sign(inbound_topic("globex"), b"{}")) == "k1"
    directory.verify(topic, signed_by("k1", OLD, topic), b"{}")
    assert key_id_of(directory.sign(inbound_topic("globex"), b"{}")) == "k1"
    directory.verify(topic, signed_by("k2", NEW, topic), b"{}")
    assert key_id_of(directory.sign(inbound_topic("globex"), b"{}")) == "k2"


def test_after_the_grace_the_old_key_is_refused_as_retired_and_the_new_one_signs():
    directory = rotated(-timedelta(seconds=1))
    topic = outbound_topic("globex")
    with pytest.raises(BadSignature, match="retired"):
        directory.verify(topic, signed_by("k1", OLD, topic), b"{}")
    directory.verify(topic, signed_by("k2", NEW, topic), b"{}")
    assert key_id_of(directory.sign(inbound_topic("globex"), b"{}")) == "k2"


def test_a_removed_partners_message_is_refused_with_the_reason_and_what_is_staged_for_it_is_signed_void():
    directory = rotated(timedelta(hours=1))
    directory.members["globex"].status = "removed"
    directory.members["globex"].keys = []
    topic = outbound_topic("globex")
    with pytest.raises(BadSignature, match="partner removed"):
        directory.verify(topic, signed_by("k2", NEW, topic), b"{}")
    assert key_id_of(directory.sign(inbound_topic("globex"), b"{}")) == "void"
    with pytest.raises(BadSignature, match="no partner 'nobody'"):
        directory.verify(outbound_topic("nobody"), signed_by("k1", OLD, outbound_topic("nobody")), b"{}")


def test_a_forged_signature_with_a_current_key_id_is_refused():
    directory = rotated(timedelta(hours=1))
    topic = outbound_topic("globex")
    with pytest.raises(BadSignature, match="does not match"):
        directory.verify(topic, signed_by("k2", b"x" * 32, topic), b"{}")


def test_bridge_partners_are_read_with_their_roles_and_names(monkeypatch):
    monkeypatch.setenv("BRIDGE_PARTNERS", "acme:lead:Acme IT,globex:insourcing,either")
    assert BridgeSettings().configured_partners() == {
        "acme": ("lead", "Acme IT"), "globex": ("insourcing", "globex"), "either": (None, "either")}
    monkeypatch.setenv("BRIDGE_PARTNERS", "")
    assert BridgeSettings().configured_partners() == {}
    monkeypatch.setenv("BRIDGE_PARTNERS", "acme:owner")
    with pytest.raises(SystemExit, match="lead or insourcing"):
        BridgeSettings().configured_partners()


@pytest.mark.parametrize("partner_id", ["a", "Globex", "glo_bex", "-globex", "globex-", "glo.bex", "bridge",
                                        "g" * 65, "glo\x00bex"])
def test_a_partner_id_a_topic_or_kafka_user_cannot_carry_is_refused(partner_id):
    with pytest.raises(ValidationError):
        PartnerIn(id=partner_id, name="Globex", role="insourcing")


def test_a_name_is_printable_text_without_surrounding_blanks():
    assert PartnerIn(id="globex", name="  Globex Field Services ", role="lead").name == "Globex Field Services"
    for name in ("", "   ", "Glo\nbex", "Glo\x85bex"):
        with pytest.raises(ValidationError):
            PartnerIn(id="globex", name=name, role="lead")
