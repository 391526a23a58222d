"""The outsourcing workflow of SPEC section 3 in one place: the lead's Outsource Status, the insourcing
partner's Insource Status and the bridge's link state, each with every transition in one table, by
an API call or by a message. Pure functions, no I/O: a handler asks `decide` and stores what it says;
nothing else assigns a status or a link state (tests/unit/test_workflow.py checks both)."""
import enum
from dataclasses import dataclass

from shared.platform.errors import Conflict
from shared.platform.messagebus import Ignored


class OutsourceStatus(enum.StrEnum):
    """The lead ticket's status of its outsourcing."""

    ASSIGNED = "Assigned"  # sent, not yet accepted
    IN_PROGRESS = "In Progress"
    WAITING_APPROVAL = "Waiting Approval"
    DECLINED = "Declined"
    CANCELED = "Canceled"
    COMPLETE = "Complete"


class InsourceStatus(enum.StrEnum):
    """The insourcing partner's status of work it received."""

    PENDING = "Pending"  # received, not yet accepted
    IN_PROGRESS = "In Progress"
    WAITING_APPROVAL = "Waiting Approval"
    DECLINED = "Declined"
    CANCELED = "Canceled"
    COMPLETE = "Complete"


class LinkState(enum.StrEnum):
    """The bridge's state of a link: whether items cross."""

    PENDING = "pending"  # requested, not yet accepted: nothing crosses
    ACTIVE = "active"  # items cross both ways
    SUSPENDED = "suspended"  # waiting for approval: nothing crosses
    TERMINATED = "terminated"  # canceled, declined or complete: nothing ever crosses again


FINISHED_OUTSOURCE = {OutsourceStatus.DECLINED, OutsourceStatus.CANCELED, OutsourceStatus.COMPLETE}
FINISHED_INSOURCE = {InsourceStatus.DECLINED, InsourceStatus.CANCELED, InsourceStatus.COMPLETE}


@dataclass(frozen=True)
class Rule:
    """From which states an event applies, and the state it leads to. An API call from another
    state is refused (409); a message from another state is ignored, with `ignored` saying why (the
    other side's order of events already decided, SPEC section 3 and the races of docs/workflow.md)."""

    allowed: frozenset
    target: enum.StrEnum
    ignored: str = "it no longer applies"


def _rule(allowed, target, ignored: str = "it no longer applies") -> Rule:
    return Rule(frozenset(allowed), target, ignored)


O, I, L = OutsourceStatus, InsourceStatus, LinkState
_NOT_FINISHED_O = set(O) - FINISHED_OUTSOURCE
_NOT_FINISHED_I = set(I) - FINISHED_INSOURCE

# The lead partner: its own actions (API) and what the bridge tells it (messages).
OUTSOURCE: dict[str, Rule] = {
    "cancel": _rule({O.ASSIGNED}, O.CANCELED),
    "reject": _rule({O.WAITING_APPROVAL}, O.IN_PROGRESS),
    "approve": _rule({O.WAITING_APPROVAL}, O.COMPLETE),
    "complete": _rule({O.IN_PROGRESS, O.WAITING_APPROVAL}, O.COMPLETE),
    # The bridge saw the acceptance before any cancel, so the acceptance stands (the handler ends
    # the link instead when the ticket was outsourced again meanwhile).
    "link.accepted": _rule({O.ASSIGNED, O.CANCELED}, O.IN_PROGRESS),
    # A decline the bridge read before the lead's cancel wins: the lead adopts it.
    "link.declined": _rule({O.ASSIGNED, O.CANCELED}, O.DECLINED, "the partner had accepted"),
    "link.waiting_approval": _rule(_NOT_FINISHED_O, O.WAITING_APPROVAL,
                                   "the lead finished the outsourcing first; nothing waits for approval"),
    # The hub removed the insourcing partner: the work ended unfinished, and Canceled lets the lead
    # outsource the ticket again to another partner.
    "link.partner_left": _rule(_NOT_FINISHED_O, O.CANCELED, "the outsourcing is already finished"),
}

# The insourcing partner: its own actions and what the bridge tells it.
INSOURCE: dict[str, Rule] = {
    "accept": _rule({I.PENDING}, I.IN_PROGRESS),
    "decline": _rule({I.PENDING}, I.DECLINED),
    "insource complete": _rule({I.IN_PROGRESS}, I.WAITING_APPROVAL),
    "link.canceled": _rule(_NOT_FINISHED_I, I.CANCELED, "the work is already finished"),
    "link.rejected": _rule({I.WAITING_APPROVAL}, I.IN_PROGRESS, "nothing is waiting for approval"),
    "link.completed": _rule(_NOT_FINISHED_I, I.COMPLETE, "the work is already finished"),
    # The hub removed the lead partner: the work ended unfinished.
    "link.partner_left": _rule(_NOT_FINISHED_I, I.CANCELED, "the work is already finished"),
}

# The bridge: every partner event that moves a link. The first event the bridge reads wins a race.
LINK: dict[str, Rule] = {
    "outsource.canceled": _rule({L.PENDING}, L.TERMINATED, "the partner accepted or declined first"),
    "insource.accepted": _rule({L.PENDING}, L.ACTIVE, "the lead canceled first"),
    "insource.declined": _rule({L.PENDING}, L.TERMINATED, "the lead canceled first"),
    "insource.completion_requested": _rule({L.ACTIVE}, L.SUSPENDED, "the link is not active"),
    "outsource.rejected": _rule({L.SUSPENDED}, L.ACTIVE, "nothing is waiting for approval"),
    "outsource.completed": _rule({L.ACTIVE, L.SUSPENDED}, L.TERMINATED, "the link is already over"),
    # The hub removed one of the link's partners (SPEC section 10): nothing crosses again.
    "partner.removed": _rule({L.PENDING, L.ACTIVE, L.SUSPENDED}, L.TERMINATED, "the link is already over"),
}

# Where a new outsourcing, a new received work and a new link start.
OUTSOURCED, RECEIVED, REQUESTED = O.ASSIGNED, I.PENDING, L.PENDING


def _decide(table: dict[str, Rule], event: str, current, what: str):
    rule = table[event]
    if current in rule.allowed:
        return rule.target
    if "." in event:  # a message: the state already moved on, and the order of events decided
        raise Ignored(f"{event} ignored while the {what} is {current}: {rule.ignored}")
    need = " or ".join(sorted(rule.allowed))
    raise Conflict(f"cannot {event}: the status is {current}, and {event} needs {need}")


def outsource(event: str, current: OutsourceStatus) -> OutsourceStatus:
    """The lead's Outsource Status after `event`; Conflict (an API call) or Ignored (a message)."""
    return _decide(OUTSOURCE, event, O(current), "Outsource Status")


def insource(event: str, current: InsourceStatus) -> InsourceStatus:
    """The Insource Status after `event`; Conflict (an API call) or Ignored (a message)."""
    return _decide(INSOURCE, event, I(current), "Insource Status")


def link(event: str, current: LinkState) -> LinkState:
    """The bridge's link state after a partner's `event`; Ignored when it no longer applies."""
    return _decide(LINK, event, L(current), "link")


def may_outsource(ticket_status: str, last: OutsourceStatus | None) -> None:
    """A ticket may be outsourced when it is not Complete and has no outsourcing under way."""
    if ticket_status == "Complete":
        raise Conflict("cannot outsource: the ticket status is Complete")
    if last is not None and last not in FINISHED_OUTSOURCE:
        raise Conflict(f"cannot outsource: the ticket is already outsourced (Outsource Status {last})")


def synchronizing(status: OutsourceStatus | InsourceStatus | None) -> bool:
    """Items cross only while the link is active: accepted and not waiting for approval or complete."""
    return status is not None and status.value == "In Progress"


def link_state_of(status: OutsourceStatus | InsourceStatus) -> LinkState:
    """The link's state as one side's status of it implies (SPEC section 9, a partner's sync view)."""
    if status.value in ("Assigned", "Pending"):
        return L.PENDING
    if status.value == "In Progress":
        return L.ACTIVE
    if status.value == "Waiting Approval":
        return L.SUSPENDED
    return L.TERMINATED


def link_crosses(state: LinkState) -> bool:
    return state == L.ACTIVE
