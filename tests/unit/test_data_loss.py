"""A broker loss is seen partition by partition, seconds apart: the sightings are one loss, dated by
the first, so work begun after it is not undone by the later ones (issue 9). A partition that shows a
loss again lost what was written since: that is a new loss."""
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
    for second, where in ((0, "t[0]"), (2, "t[1]"), (9, "u[0]"), (18, "t[2]")):  # each within 10 s of the one before
        clock(second)
        seen.append(loss.seen(where))
    assert seen == [T0] * 4


def test_a_sighting_after_a_quiet_window_is_a_new_loss(clock):
    loss = DataLoss(window=timedelta(seconds=10))
    clock(0)
    loss.seen("t[0]")
    clock(3)
    loss.seen("t[1]")
    clock(14)  # 11 s after the last sighting: the broker lost data again
    assert loss.seen("t[2]") == T0 + timedelta(seconds=14)


def test_a_partition_that_shows_a_loss_again_lost_more_and_dates_a_new_loss(clock):
    """Seen on Tansu after a restart: a partition read up to offset 38 after the restart, then its end
    was at 6. A round of reconciliation begun after the first sighting may have lost its messages."""
    loss = DataLoss(window=timedelta(seconds=10))
    clock(0)
    loss.seen("t[1]")
    clock(4)
    assert loss.seen("t[0]") == T0  # the same restart, seen on another partition
    clock(5)
    assert loss.seen("t[1]") == T0 + timedelta(seconds=5)
    clock(6)
    assert loss.seen("t[0]") == T0 + timedelta(seconds=5)  # part of that new loss
