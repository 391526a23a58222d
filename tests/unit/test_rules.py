"""Pure domain rules and contracts: no database, no broker."""
import json
import uuid

import pytest

from shared.contracts.envelope import ContractError, Payload, contract, envelope, parse
from shared.contracts.messages import OutsourceRequested  # noqa: F401  (registers the contracts)
from shared.domain.tickets.validation import InvalidItem, valid_fields
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


def test_a_reader_ignores_fields_it_does_not_know_in_the_envelope_and_at_every_depth_of_the_payload():
    # A partner a release ahead added optional fields (SPEC section 11): the message is applied as it was.
    raw = {"event_id": str(uuid.uuid4()), "type": "outsource.requested", "schema_version": 1, "source": "acme",
           "link_id": "L1", "trace": {"id": 7},
           "payload": {"link_id": "L1", "lead_partner_name": "Acme", "lead_ticket_id": "t", "lead_ticket_number": "T-1",
                       "insourcing_partner_id": "globex", "title": "Hot", "description": "", "instructions": "",
                       "terms": {"rate_type": "hourly", "rate": 90, "discount_code": "SPRING"}, "priority": "high"}}
    env, payload = parse(json.dumps(raw).encode())
    assert env.link_id == "L1" and payload.title == "Hot"
    assert payload.terms.model_dump() == {"rate_type": "hourly", "rate": 90, "authorized_hours": None,
                                          "authorized_charge": None, "currency": None}
    assert "priority" not in payload.model_dump() and "trace" not in env.model_dump()


def test_item_fields_a_release_does_not_know_are_left_out_not_refused():
    assert valid_fields("note", {"body": "Fan replaced", "mood": "calm"}) == {"title": "", "body": "Fan replaced"}
    with pytest.raises(InvalidItem, match="body"):
        valid_fields("note", {"mood": "calm"})


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
