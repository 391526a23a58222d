"""Pure domain rules and contracts: no database, no broker."""
import json
import uuid

import pytest

from shared.contracts.envelope import ContractError, Payload, contract, envelope, parse
from shared.domain.tickets.rules import ItemFacts, ItemKind, Lock, Origin, item_editable


@pytest.mark.parametrize("kind", list(ItemKind))
def test_the_creator_may_edit_its_own_unlocked_item(kind):
    assert item_editable(ItemFacts(Origin.LOCAL, kind))


@pytest.mark.parametrize("origin", [Origin.PARTNER, Origin.SYSTEM])
def test_partner_mirrors_and_system_notes_are_read_only(origin):
    assert not item_editable(ItemFacts(origin, ItemKind.NOTE))


@pytest.mark.parametrize("lock", list(Lock))
def test_a_locked_item_is_read_only_even_for_its_creator(lock):
    assert not item_editable(ItemFacts(Origin.LOCAL, ItemKind.CHARGE, lock))


@pytest.mark.parametrize("kind", [ItemKind.NOTE, ItemKind.CHARGE, ItemKind.ATTACHMENT])
def test_after_completion_the_lead_may_edit_the_partners_notes_charges_and_attachments(kind):
    assert item_editable(ItemFacts(Origin.PARTNER, kind, released=True))


def test_the_partners_time_entries_stay_read_only_after_completion():
    assert not item_editable(ItemFacts(Origin.PARTNER, ItemKind.TIME_ENTRY, released=True))


def test_a_system_note_is_never_editable():
    assert not item_editable(ItemFacts(Origin.SYSTEM, ItemKind.NOTE, released=True))


def test_item_kinds_use_the_url_names_of_the_api():
    assert [k.path for k in ItemKind] == ["notes", "time-entries", "charges", "attachments"]


@contract
class Ping(Payload):
    type = "test.ping"
    schema_version = 1
    text: str


def test_a_registered_contract_round_trips():
    env = envelope(Ping(text="hi"), source="lead-partner", link_id="L1")
    parsed_env, payload = parse(env.to_bytes())
    assert parsed_env.event_id == env.event_id and payload == Ping(text="hi")


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"not json", "not an envelope"),
        (None, "empty message"),
        (json.dumps({"type": "test.ping"}).encode(), "not an envelope"),
        (
            json.dumps({"event_id": str(uuid.uuid4()), "type": "test.unknown", "schema_version": 1,
                        "source": "x", "payload": {}}).encode(),
            "unknown message type",
        ),
        (
            json.dumps({"event_id": str(uuid.uuid4()), "type": "test.ping", "schema_version": 2,
                        "source": "x", "payload": {"text": "hi"}}).encode(),
            "unknown message type 'test.ping' version 2",
        ),
        (
            json.dumps({"event_id": str(uuid.uuid4()), "type": "test.ping", "schema_version": 1,
                        "source": "x", "payload": {"text": 5}}).encode(),
            "invalid test.ping v1 payload",
        ),
    ],
)
def test_a_message_nobody_understands_is_refused_with_a_reason(raw, problem):
    with pytest.raises(ContractError, match=problem):
        parse(raw)
