"""A broker loss is seen partition by partition, seconds apart: the sightings are one loss, dated by
the first, so work begun after it is not undone by the later ones (issue 9)."""
from datetime import datetime, timedelta, timezone

import pytest

from shared.platform import inbox
from shared.platform.inbox import DataLoss

T0 = datetime(2026, 11, 27, 4, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock(monkeypatch):
    now = [T0]
    monkeypatch.setattr(inbox, "utcnow", lambda: now[0])

    def at(seconds: float) -> None:
        now[0] = T0 + timedelta(seconds=seconds)

    return at


def test_sightings_close_together_are_one_loss_dated_by_the_first(clock):
    loss = DataLoss(window=timedelta(seconds=10))
    seen = []
    for second in (0, 2, 9, 18):  # each within 10 s of the one before
        clock(second)
        seen.append(loss.seen())
    assert seen == [T0] * 4


def test_a_sighting_after_a_quiet_window_is_a_new_loss(clock):
    loss = DataLoss(window=timedelta(seconds=10))
    clock(0)
    loss.seen()
    clock(3)
    loss.seen()
    clock(14)  # 11 s after the last sighting: the broker lost data again
    assert loss.seen() == T0 + timedelta(seconds=14)
