"""Reconciliation's workflow rules (services/sync_bridge/reconciliation.py): from what each side says
and what the bridge recorded, which decision the bridge missed and which message a side missed.
Every lost workflow message of SPEC section 3 is found, and nothing is found when all agree."""
import pytest

from services.sync_bridge.models import Link
from services.sync_bridge.reconciliation import missed_decision, missed_events
from shared.contracts.messages import SideStatus, WorkRequested

LEAD, PARTNER = "lead-partner", "insourcing-partner"
REQUEST = WorkRequested(link_id="L", lead_partner_id=LEAD, lead_partner_name="Lead", lead_ticket_number="T1",
                        title="t", description="", instructions="", terms=None).model_dump(mode="json")


def link(state: str, **facts) -> Link:
    values = dict(id="L", state=state, lead_partner_id=LEAD, insourcing_partner_id=PARTNER, lead_ticket_id="t1",
                  insourcing_ticket_id=None, insourcing_ticket_number=None, rounds=0, outcome=None, approved=None,
                  reason=None, request=REQUEST)
    values.update(facts)
    return Link(**values)


def lead(status: str, **facts) -> SideStatus:
    return SideStatus(status=status, **facts)


def partner(status: str | None = None, **facts) -> SideStatus:
    return SideStatus(known=status is not None, status=status, **facts)


ACCEPTED = dict(insourcing_ticket_id="i1", insourcing_ticket_number="T9")


@pytest.mark.parametrize(
    "the_link, lead_says, partner_says, decision",
    [
        # The lead approved (or completed) and the message was lost: the bridge ends the link.
        (link("suspended", rounds=1, **ACCEPTED), lead("Complete", rounds=1, approved=True),
         partner("Waiting Approval", rounds=1, ticket_id="i1"), "outsource.completed"),
        (link("active", **ACCEPTED), lead("Complete", approved=False), partner("In Progress", ticket_id="i1"),
         "outsource.completed"),
        (link("pending"), lead("Canceled"), partner("Pending"), "outsource.canceled"),
        (link("pending"), lead("Assigned"), partner("Declined", reason="busy"), "insource.declined"),
        (link("pending"), lead("Assigned"), partner("In Progress", ticket_id="i1", ticket_number="T9"),
         "insource.accepted"),
        (link("active", **ACCEPTED), lead("In Progress"), partner("Waiting Approval", rounds=1, ticket_id="i1"),
         "insource.completion_requested"),
        # The lead rejected Insource Complete 1 and the rejection was lost.
        (link("suspended", rounds=1, **ACCEPTED), lead("In Progress", rounds=1, reason="redo"),
         partner("Waiting Approval", rounds=1, ticket_id="i1"), "outsource.rejected"),
    ],
)
def test_a_decision_the_bridge_missed_is_found(the_link, lead_says, partner_says, decision):
    found = missed_decision(the_link, lead_says, partner_says)
    assert found is not None and found.type == decision


@pytest.mark.parametrize(
    "the_link, lead_says, partner_says, sent",
    [
        (link("pending"), lead("Assigned"), partner(), [(PARTNER, "link.requested")]),
        (link("terminated", outcome="canceled"), lead("Canceled"), partner("Pending"), [(PARTNER, "link.canceled")]),
        (link("terminated", outcome="declined", reason="busy"), lead("Assigned"), partner("Declined"),
         [(LEAD, "link.declined")]),
        (link("active", **ACCEPTED), lead("Assigned"), partner("In Progress", ticket_id="i1"),
         [(LEAD, "link.accepted")]),
        # The lead never heard of Insource Complete 1.
        (link("suspended", rounds=1, **ACCEPTED), lead("In Progress", rounds=0),
         partner("Waiting Approval", rounds=1, ticket_id="i1"), [(LEAD, "link.waiting_approval")]),
        # The partner never heard that the lead rejected Insource Complete 1.
        (link("active", rounds=1, reason="redo", **ACCEPTED), lead("In Progress", rounds=1),
         partner("Waiting Approval", rounds=1, ticket_id="i1"), [(PARTNER, "link.rejected")]),
        (link("terminated", outcome="completed", approved=True, rounds=1, **ACCEPTED), lead("Complete", rounds=1),
         partner("Waiting Approval", rounds=1, ticket_id="i1"), [(PARTNER, "link.completed")]),
    ],
)
def test_a_message_a_side_missed_is_sent_again(the_link, lead_says, partner_says, sent):
    assert [(to, message.type) for to, message in missed_events(the_link, lead_says, partner_says)] == sent
    assert missed_decision(the_link, lead_says, partner_says) is None


@pytest.mark.parametrize(
    "the_link, lead_says, partner_says",
    [
        (link("pending"), lead("Assigned"), partner("Pending")),
        (link("active", **ACCEPTED), lead("In Progress"), partner("In Progress", ticket_id="i1")),
        (link("suspended", rounds=1, **ACCEPTED), lead("Waiting Approval", rounds=1),
         partner("Waiting Approval", rounds=1, ticket_id="i1")),
        (link("active", rounds=1, **ACCEPTED), lead("In Progress", rounds=1), partner("In Progress", rounds=1, ticket_id="i1")),
        (link("terminated", outcome="completed", approved=True, rounds=1, **ACCEPTED), lead("Complete", rounds=1),
         partner("Complete", rounds=1, ticket_id="i1")),
        (link("terminated", outcome="declined"), lead("Declined"), partner("Declined")),
        (link("terminated", outcome="canceled"), lead("Canceled"), partner("Canceled")),
    ],
)
def test_nothing_is_repaired_when_all_agree(the_link, lead_says, partner_says):
    assert missed_decision(the_link, lead_says, partner_says) is None
    assert missed_events(the_link, lead_says, partner_says) == []
