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


def resuming(applied: int | None, committed: int | None) -> inbox.InboxConsumer:
    """A consumer given a partition back (a start, a rebalance, a crash) with these saved positions."""
    consumer = inbox.InboxConsumer(None, None, None, name="test", signatures=None)
    consumer._expected[TP], consumer._resuming[TP] = applied, committed
    return consumer


TP = inbox.TopicPartition("psa.lead-partner.outbound", 0)


@pytest.mark.parametrize("first", [197, 199, 201])
def test_resuming_anywhere_from_the_last_commit_to_after_what_was_applied_is_a_replay_not_a_loss(first):
    """Kafka committed 197; the database had applied up to 201 when it crashed (or the commit to 201
    went through and the note of it did not): the fetch resumes at 197 or 201, and either is a replay."""
    consumer = resuming(applied=201, committed=197)
    assert consumer._check_continuity(TP, first) is True
    assert consumer.data_losses_total == 0
    assert TP not in consumer._resuming  # reading on, only the next offset is right


@pytest.mark.parametrize("first, how", [(205, "skipped ahead"), (3, "went back before the last commit")])
def test_resuming_after_what_was_applied_or_before_the_last_commit_is_a_loss(first, how, caplog):
    consumer = resuming(applied=201, committed=197)
    assert consumer._check_continuity(TP, first) is False
    assert consumer.data_losses_total == 1
    assert how in caplog.text and "expected 197..201" in caplog.text


def test_reading_on_a_partition_a_jump_either_way_is_a_loss():
    consumer = resuming(applied=201, committed=197)
    consumer._resuming.clear()  # not resuming: the previous poll set where it goes on
    assert consumer._check_continuity(TP, 201) is True
    assert consumer._check_continuity(TP, 199) is False and consumer.data_losses_total == 1


def test_without_a_commit_noted_only_what_was_applied_bounds_the_replay():
    """A first commit refused (the group rebalanced): Kafka resumes from the partition's start."""
    assert resuming(applied=201, committed=None)._check_continuity(TP, 0) is True
    assert resuming(applied=201, committed=None)._check_continuity(TP, 202) is False
