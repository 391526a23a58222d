"""The outsourcing state machine of SPEC section 3, as pure functions: which transition is allowed
from which Outsource Status (lead) or Insource Status (insourcing). No I/O."""
import enum

from shared.errors import Conflict


class Status(enum.StrEnum):
    """Outsource Status and Insource Status share their names."""

    ASSIGNED = "Assigned"  # lead only: sent, not yet accepted
    PENDING = "Pending"  # insourcing only: received, not yet accepted
    IN_PROGRESS = "In Progress"
    WAITING_APPROVAL = "Waiting Approval"
    DECLINED = "Declined"
    CANCELED = "Canceled"
    COMPLETE = "Complete"


FINISHED = {Status.DECLINED, Status.CANCELED, Status.COMPLETE}

# action -> the statuses it is allowed from, and the status it leads to
LEAD_ACTIONS: dict[str, tuple[set[Status], Status]] = {
    "cancel": ({Status.ASSIGNED}, Status.CANCELED),
    "reject": ({Status.WAITING_APPROVAL}, Status.IN_PROGRESS),
    "approve": ({Status.WAITING_APPROVAL}, Status.COMPLETE),
    "complete": ({Status.IN_PROGRESS, Status.WAITING_APPROVAL}, Status.COMPLETE),
}
INSOURCING_ACTIONS: dict[str, tuple[set[Status], Status]] = {
    "accept": ({Status.PENDING}, Status.IN_PROGRESS),
    "decline": ({Status.PENDING}, Status.DECLINED),
    "insource complete": ({Status.IN_PROGRESS}, Status.WAITING_APPROVAL),
}


def _transition(actions: dict[str, tuple[set[Status], Status]], action: str, current: Status) -> Status:
    allowed, target = actions[action]
    if current not in allowed:
        need = " or ".join(sorted(allowed))
        raise Conflict(f"cannot {action}: the status is {current}, and {action} needs {need}")
    return target


def lead_transition(action: str, current: Status) -> Status:
    return _transition(LEAD_ACTIONS, action, current)


def insourcing_transition(action: str, current: Status) -> Status:
    return _transition(INSOURCING_ACTIONS, action, current)


def may_outsource(ticket_status: str, last: Status | None) -> None:
    """A ticket may be outsourced when it is not Complete and has no outsourcing under way."""
    if ticket_status == "Complete":
        raise Conflict("cannot outsource: the ticket status is Complete")
    if last is not None and last not in FINISHED:
        raise Conflict(f"cannot outsource: the ticket is already outsourced (Outsource Status {last})")


def synchronizing(status: Status | None) -> bool:
    """Items cross only while the link is active: accepted and not waiting for approval or complete."""
    return status == Status.IN_PROGRESS
