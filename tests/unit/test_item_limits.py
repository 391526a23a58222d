"""Limits the services agree on, as pure functions: the note the bridge makes of a lead's time entry
fits a note's limits (cut with a visible marker), terms take finite numbers only, and the bridge's
dead-letter page says what was kept of an oversized message."""
import hashlib
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from services.sync_bridge import pages
from services.sync_bridge.mirroring import CUT, forwarded_item
from shared.contracts.messages import Terms
from shared.domain.tickets.schemas import MAX_TEXT, MAX_TITLE, NoteFields
from shared.platform.inbox import MAX_KEPT_BYTES, DeadLetter, kept
from shared.platform.webui import Viewer, WebUi

LONGEST = {"resource": "R" * MAX_TITLE, "date_worked": "2026-11-20", "hours": "7.5", "summary": "s" * MAX_TEXT}


def test_the_note_made_of_the_longest_lead_time_entry_fits_a_notes_limits_with_a_visible_cut():
    kind, note = forwarded_item("time_entry", LONGEST, 0, from_lead=True)
    assert kind == "note" and NoteFields.model_validate(note)
    assert len(note["title"]) == MAX_TITLE and note["title"].startswith("Time entry by RRR") and note["title"].endswith(CUT)
    assert len(note["body"]) == MAX_TEXT and note["body"].endswith(CUT)
    assert note["body"].startswith(f"{'R' * MAX_TITLE} worked 7.5 h on 2026-11-20 (billable): sss")


def test_a_lead_time_entry_that_fits_is_described_whole():
    _, note = forwarded_item("time_entry", {**LONGEST, "resource": "Ana", "summary": "Swapped the PSU"}, 0, True)
    assert note == {"title": "Time entry by Ana", "body": "Ana worked 7.5 h on 2026-11-20 (billable): Swapped the PSU"}


@pytest.mark.parametrize("rate", [float("inf"), float("nan"), 1e400, 1e10])
def test_terms_take_only_finite_rates_a_price_can_hold(rate):
    with pytest.raises(ValidationError) as refused:
        Terms(rate_type="hourly", rate=rate)
    assert refused.value.errors()[0]["loc"] == ("rate",)


def test_a_dead_letter_keeps_a_bounded_prefix_of_an_oversized_message_with_its_size_and_hash():
    whole = b"x" * (MAX_KEPT_BYTES + 10)
    kept_of = kept(whole)
    assert (len(kept_of["value"]), kept_of["size"], kept_of["truncated"]) == (MAX_KEPT_BYTES, len(whole), True)
    assert kept_of["sha256"] == hashlib.sha256(whole).hexdigest()
    assert kept(b"small") == {"value": b"small", "size": 5, "truncated": False,
                              "sha256": hashlib.sha256(b"small").hexdigest()}


def test_the_bridge_page_shows_what_was_kept_of_a_dead_letter_and_offers_no_replay_of_a_truncated_one():
    ui = WebUi("Sync bridge", [pages.TEMPLATES], "secret")
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(web_ui=ui)))
    letter = DeadLetter(id=7, topic="psa.lead-partner.outbound", partition=0, offset=3, key=b"k", event_id=None,
                        type=None, reason="not an envelope", parked_at=datetime.now(UTC), resolved_at=None,
                        **kept(b"x" * 20_000_000))
    html = pages.render(request, Viewer("operator", frozenset({"links"}), "csrf"), "dead_letters.html",
                        letters=[letter], include_resolved=False, outcome=None, error=None,
                        max_rows=200).body.decode()
    assert "20000000 bytes" in html and "truncated" in html and letter.sha256 in html
    assert "Replay dead letter 7" not in html and "Discard dead letter 7" in html
