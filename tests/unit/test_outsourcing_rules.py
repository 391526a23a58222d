"""The outsourcing state machine of SPEC section 3, without a database or a broker."""
import pytest

from shared.errors import Conflict
from shared.outsourcing import Status, insourcing_transition, lead_transition, may_outsource, synchronizing

ALL = list(Status)


@pytest.mark.parametrize(
    "action, allowed, target",
    [
        ("cancel", {Status.ASSIGNED}, Status.CANCELED),
        ("reject", {Status.WAITING_APPROVAL}, Status.IN_PROGRESS),
        ("approve", {Status.WAITING_APPROVAL}, Status.COMPLETE),
        ("complete", {Status.IN_PROGRESS, Status.WAITING_APPROVAL}, Status.COMPLETE),
    ],
)
def test_each_lead_action_is_allowed_exactly_from_the_statuses_of_the_spec(action, allowed, target):
    for status in ALL:
        if status in allowed:
            assert lead_transition(action, status) == target
        else:
            with pytest.raises(Conflict, match=f"the status is {status.value}"):
                lead_transition(action, status)


@pytest.mark.parametrize(
    "action, allowed, target",
    [
        ("accept", {Status.PENDING}, Status.IN_PROGRESS),
        ("decline", {Status.PENDING}, Status.DECLINED),
        ("insource complete", {Status.IN_PROGRESS}, Status.WAITING_APPROVAL),
    ],
)
def test_each_insourcing_action_is_allowed_exactly_from_the_statuses_of_the_spec(action, allowed, target):
    for status in ALL:
        if status in allowed:
            assert insourcing_transition(action, status) == target
        else:
            with pytest.raises(Conflict, match=f"the status is {status.value}"):
                insourcing_transition(action, status)


@pytest.mark.parametrize("last", [None, Status.DECLINED, Status.CANCELED, Status.COMPLETE])
def test_a_ticket_may_be_outsourced_again_once_the_last_outsourcing_is_over(last):
    may_outsource("In Progress", last)


@pytest.mark.parametrize("last", [Status.ASSIGNED, Status.IN_PROGRESS, Status.WAITING_APPROVAL])
def test_a_ticket_under_outsourcing_cannot_be_outsourced_again(last):
    with pytest.raises(Conflict, match=last.value):
        may_outsource("New", last)


def test_a_complete_ticket_cannot_be_outsourced():
    with pytest.raises(Conflict, match="Complete"):
        may_outsource("Complete", None)


@pytest.mark.parametrize("status", ALL)
def test_items_cross_only_while_in_progress(status):
    assert synchronizing(status) is (status == Status.IN_PROGRESS)
