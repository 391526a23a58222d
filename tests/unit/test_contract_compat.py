"""The compatibility check (SPEC section 11): each rule fires on a before/after pair of payload models
as pydantic writes their schemas, and stays quiet on the one change that keeps a schema_version."""
import copy
from typing import Literal

import pytest
from pydantic import Field
from pydantic.json_schema import models_json_schema

from services.sync_bridge.asyncapi import document
from shared.contracts.compat import breaking_changes
from shared.contracts.envelope import Message


def doc(*messages: tuple[str, type[Message]], sent: tuple[str, ...] | None = None) -> dict:
    """A minimal AsyncAPI document in the generator's shape: each message sent by the lead, read by the bridge."""
    _, schemas = models_json_schema([(m, "validation") for _, m in messages], ref_template="#/components/schemas/{model}")
    refs = lambda ids: [{"$ref": f"#/channels/partnerOutbound/messages/{i}"} for i in ids]  # noqa: E731
    ids = [i for i, _ in messages]
    return {
        "components": {
            "messages": {i: {"payload": {"type": "object", "required": ["payload"], "properties": {
                "payload": {"$ref": f"#/components/schemas/{m.__name__}"}}}} for i, m in messages},
            "schemas": schemas.get("$defs", {}),
        },
        "operations": {"leadSends": {"action": "send", "messages": refs(ids if sent is None else sent)},
                       "bridgeReceives": {"action": "receive", "messages": refs(ids)}},
    }


class Note(Message):
    link_id: str
    body: str = Field(max_length=100)
    kind: Literal["note", "charge"] = "note"
    hours: float | None = None


def changed(after: type[Message]) -> list[str]:
    return breaking_changes(doc(("x.v1", Note)), doc(("x.v1", after)))


def test_an_added_optional_field_keeps_the_version():
    class WithTitle(Note):
        title: str | None = None

    assert changed(WithTitle) == []


def test_a_removed_field_breaks():
    class NoKind(Message):
        link_id: str
        body: str = Field(max_length=100)
        hours: float | None = None

    assert changed(NoKind) == ["x.v1: payload.kind: removed field"]


def test_a_new_required_field_breaks():
    class WithTitle(Note):
        title: str

    assert changed(WithTitle) == ["x.v1: payload.title: new required field"]


def test_an_optional_field_made_required_breaks():
    class HoursRequired(Note):
        hours: float | None

    assert changed(HoursRequired) == ["x.v1: payload.hours: became required"]


@pytest.mark.parametrize("hours, problem", [
    (float, "payload.hours: narrowed type, no longer accepts null"),
    (int | None, "payload.hours: narrowed type, no longer accepts number"),
    (str | None, "payload.hours: narrowed type, no longer accepts number"),
])
def test_a_narrowed_type_breaks(hours, problem):
    after = type("After", (Note,), {"__annotations__": {"hours": hours}, "hours": None})
    assert f"x.v1: {problem}" in changed(after)


def test_a_tighter_limit_breaks_and_so_does_a_looser_one():
    class Shorter(Note):
        body: str = Field(max_length=50)

    class Longer(Note):
        body: str = Field(max_length=500)

    assert changed(Shorter) == ["x.v1: payload.body: narrowed maxLength 100 -> 50"]
    assert changed(Longer) == ["x.v1: payload.body: widened maxLength 100 -> 500"]


def test_a_removed_enum_value_breaks_and_an_added_one_too():
    class NoCharge(Note):
        kind: Literal["note"] = "note"

    class WithExpense(Note):
        kind: Literal["note", "charge", "expense"] = "note"

    assert changed(NoCharge) == ["x.v1: payload.kind: removed enum value 'charge'"]
    assert changed(WithExpense) == ["x.v1: payload.kind: added enum value 'expense' (a reader of the last release refuses it)"]


def test_a_nested_model_is_checked_field_by_field():
    class Terms(Message):
        rate: float

    class TermsV2(Message):
        rate: float
        currency: str

    class Outer(Message):
        terms: Terms | None = None

    class OuterAfter(Message):
        terms: TermsV2 | None = None

    assert breaking_changes(doc(("x.v1", Outer)), doc(("x.v1", OuterAfter))) == [
        "x.v1: payload.terms.currency: new required field"]


def test_a_change_under_a_new_schema_version_is_allowed_once_readers_know_it():
    class NoteV2(Message):
        link_id: str
        text: str

    before = doc(("x.v1", Note))
    expanded = doc(("x.v1", Note), ("x.v2", NoteV2), sent=("x.v1",))
    assert breaking_changes(before, expanded) == []
    # Sending v2 in the same release as readers learn it would park it at every reader a release behind.
    sent_at_once = doc(("x.v1", Note), ("x.v2", NoteV2))
    assert breaking_changes(before, sent_at_once) == [
        "x.v2: sent, but bridgeReceives of the last release does not read it yet (send it from the next "
        "release; mark it read-only in this one)"]
    # The release after: v2 is sent, and v1 still read (the release before still sends it).
    assert breaking_changes(expanded, doc(("x.v1", Note), ("x.v2", NoteV2), sent=("x.v2",))) == []
    # Dropping v1 while the last release still sends it breaks; once it no longer does, it may go.
    assert breaking_changes(expanded, doc(("x.v2", NoteV2))) == [
        "x.v1: bridgeReceives no longer reads it, and the last release sends it"]
    assert breaking_changes(doc(("x.v1", Note), ("x.v2", NoteV2), sent=("x.v2",)), doc(("x.v2", NoteV2))) == []


def test_a_new_type_that_informs_only_is_sent_at_once_and_no_other_change_is():
    class Invoiced(Message):
        link_id: str
        invoice_number: str

    before = doc(("x.v1", Note))
    added = doc(("x.v1", Note), ("y.v1", Invoiced))
    assert breaking_changes(before, added) == [
        "y.v1: sent, but bridgeReceives of the last release does not read it yet (send it from the next "
        "release; mark it read-only in this one)"]
    added["components"]["messages"]["y.v1"]["x-informs-only"] = True
    assert breaking_changes(before, added) == []
    # Informs only is a promise about a new type: a new version of a known one still takes two steps.
    class NoteV2(Message):
        link_id: str
        text: str

    second = doc(("x.v1", Note), ("x.v2", NoteV2))
    second["components"]["messages"]["x.v2"]["x-informs-only"] = True
    assert breaking_changes(doc(("x.v1", Note), ("x.v2", NoteV2), sent=("x.v1",)), second) == []
    assert breaking_changes(before, second) == [
        "x.v2: sent, but bridgeReceives of the last release does not read it yet (send it from the next "
        "release; mark it read-only in this one)"]


def test_todays_document_is_compatible_with_itself_and_a_real_change_is_caught():
    today = document()
    assert breaking_changes(today, copy.deepcopy(today)) == []
    changed_doc = copy.deepcopy(today)
    declined = changed_doc["components"]["schemas"]["InsourceDeclined"]
    del declined["properties"]["reason"]
    changed_doc["components"]["schemas"]["NoteFields"]["required"].append("title")
    assert breaking_changes(today, changed_doc) == [
        "insource.declined.v1: payload.reason: removed field", "NoteFields: title: became required"]


def test_a_recursive_model_is_compared_without_end():
    class Node(Message):
        name: str
        children: list["Node"] = []

    class NodeAfter(Message):
        name: str
        children: list["NodeAfter"] = []
        weight: int

    assert breaking_changes(doc(("x.v1", Node)), doc(("x.v1", Node))) == []
    assert breaking_changes(doc(("x.v1", Node)), doc(("x.v1", NodeAfter))) == [
        "x.v1: payload.weight: new required field"]


def test_each_object_of_a_union_is_compared_with_its_own():
    def price(drop_hours: bool) -> type[Message]:
        class Hourly(Message):
            rate: float
            if not drop_hours:
                hours: float

        class Flat(Message):
            amount: float

        class Price(Message):
            price: Hourly | Flat

        return Price

    assert breaking_changes(doc(("x.v1", price(False))), doc(("x.v1", price(False)))) == []
    assert breaking_changes(doc(("x.v1", price(False))), doc(("x.v1", price(True)))) == [
        "x.v1: payload.price.hours: removed field"]
