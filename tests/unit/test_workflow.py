"""The outsourcing workflow of SPEC section 3 (shared/domain/workflow.py), without a database or a broker:
every cell of the three tables, allowed and refused, and that nothing else assigns a status."""
import ast
from pathlib import Path

import pytest

from shared.domain import workflow
from shared.domain.workflow import Ignored, InsourceStatus, LinkState, OutsourceStatus
from shared.platform.errors import Conflict

O, I, L = OutsourceStatus, InsourceStatus, LinkState
ROOT = Path(__file__).resolve().parents[2]

# Every transition of SPEC section 3 and of the races of docs/workflow.md, written out once more by hand:
# (event, the states it applies from, the state it leads to).
OUTSOURCE = [
    ("cancel", {O.ASSIGNED}, O.CANCELED),
    ("reject", {O.WAITING_APPROVAL}, O.IN_PROGRESS),
    ("approve", {O.WAITING_APPROVAL}, O.COMPLETE),
    ("complete", {O.IN_PROGRESS, O.WAITING_APPROVAL}, O.COMPLETE),
    ("link.accepted", {O.ASSIGNED, O.CANCELED}, O.IN_PROGRESS),
    ("link.declined", {O.ASSIGNED, O.CANCELED}, O.DECLINED),
    ("link.waiting_approval", {O.ASSIGNED, O.IN_PROGRESS, O.WAITING_APPROVAL}, O.WAITING_APPROVAL),
    ("link.partner_left", {O.ASSIGNED, O.IN_PROGRESS, O.WAITING_APPROVAL}, O.CANCELED),
]
INSOURCE = [
    ("accept", {I.PENDING}, I.IN_PROGRESS),
    ("decline", {I.PENDING}, I.DECLINED),
    ("insource complete", {I.IN_PROGRESS}, I.WAITING_APPROVAL),
    ("link.canceled", {I.PENDING, I.IN_PROGRESS, I.WAITING_APPROVAL}, I.CANCELED),
    ("link.rejected", {I.WAITING_APPROVAL}, I.IN_PROGRESS),
    ("link.completed", {I.PENDING, I.IN_PROGRESS, I.WAITING_APPROVAL}, I.COMPLETE),
    ("link.partner_left", {I.PENDING, I.IN_PROGRESS, I.WAITING_APPROVAL}, I.CANCELED),
]
LINK = [
    ("outsource.canceled", {L.PENDING}, L.TERMINATED),
    ("insource.accepted", {L.PENDING}, L.ACTIVE),
    ("insource.declined", {L.PENDING}, L.TERMINATED),
    ("insource.completion_requested", {L.ACTIVE}, L.SUSPENDED),
    ("outsource.rejected", {L.SUSPENDED}, L.ACTIVE),
    ("outsource.completed", {L.ACTIVE, L.SUSPENDED}, L.TERMINATED),
    ("partner.removed", {L.PENDING, L.ACTIVE, L.SUSPENDED}, L.TERMINATED),
]


def cells(table, states):
    return [(event, state, allowed, target) for event, allowed, target in table for state in states]


def check(decide, event, state, allowed, target):
    if state in allowed:
        assert decide(event, state) == target
    elif "." in event:  # a message arriving after the state moved on is a no-op, not an error
        with pytest.raises(Ignored, match=f"{event} ignored while the .* is {state.value}"):
            decide(event, state)
    else:  # an API call answers 409 naming the current status
        with pytest.raises(Conflict, match=f"the status is {state.value}"):
            decide(event, state)


@pytest.mark.parametrize("event, state, allowed, target", cells(OUTSOURCE, list(O)))
def test_every_outsource_status_cell(event, state, allowed, target):
    check(workflow.outsource, event, state, allowed, target)


@pytest.mark.parametrize("event, state, allowed, target", cells(INSOURCE, list(I)))
def test_every_insource_status_cell(event, state, allowed, target):
    check(workflow.insource, event, state, allowed, target)


@pytest.mark.parametrize("event, state, allowed, target", cells(LINK, list(L)))
def test_every_link_state_cell(event, state, allowed, target):
    check(workflow.link, event, state, allowed, target)


def test_the_tables_hold_exactly_the_transitions_written_out_here():
    assert {e for e, _, _ in OUTSOURCE} == set(workflow.OUTSOURCE)
    assert {e for e, _, _ in INSOURCE} == set(workflow.INSOURCE)
    assert {e for e, _, _ in LINK} == set(workflow.LINK)


def test_a_status_read_from_the_database_as_text_is_understood():
    assert workflow.outsource("cancel", "Assigned") == O.CANCELED
    assert workflow.link("insource.accepted", "pending") == L.ACTIVE


@pytest.mark.parametrize("last", [None, O.DECLINED, O.CANCELED, O.COMPLETE])
def test_a_ticket_may_be_outsourced_again_once_the_last_outsourcing_is_over(last):
    workflow.may_outsource("In Progress", last)


@pytest.mark.parametrize("last", [O.ASSIGNED, O.IN_PROGRESS, O.WAITING_APPROVAL])
def test_a_ticket_under_outsourcing_cannot_be_outsourced_again(last):
    with pytest.raises(Conflict, match=last.value):
        workflow.may_outsource("New", last)


@pytest.mark.parametrize("status", [O.ASSIGNED, O.IN_PROGRESS, O.WAITING_APPROVAL])
def test_when_the_partner_leaves_the_hub_the_lead_may_outsource_the_ticket_again(status):
    workflow.may_outsource("In Progress", workflow.outsource("link.partner_left", status))


def test_a_complete_ticket_cannot_be_outsourced():
    with pytest.raises(Conflict, match="Complete"):
        workflow.may_outsource("Complete", None)


@pytest.mark.parametrize("status", [*O, *I])
def test_items_cross_only_while_in_progress(status):
    assert workflow.synchronizing(status) is (status.value == "In Progress")


def _assignments(tree: ast.AST):
    """(line, target attribute, value) of every `x.status = ...` / `x.state = ...`, tuples split."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts))
                for t, v in pairs:
                    if isinstance(t, ast.Attribute) and t.attr in ("status", "state"):
                        yield node.lineno, t.attr, v


def _decided_by_the_workflow(value: ast.AST) -> bool:
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name) and value.func.value.id == "workflow")


def test_no_status_or_link_state_is_assigned_except_as_the_workflow_decides():
    offenders = []
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]:
        if path.name == "workflow.py":
            continue
        for line, attr, value in _assignments(ast.parse(path.read_text())):
            if not _decided_by_the_workflow(value):
                offenders.append(f"{path.relative_to(ROOT)}:{line} assigns .{attr} = {ast.unparse(value)}")
        for node in ast.walk(ast.parse(path.read_text())):
            # A new row's first state comes from the workflow too (workflow.OUTSOURCED, ...).
            if isinstance(node, ast.keyword) and node.arg in ("status", "state") and _an_enum_member(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno} sets {node.arg}={ast.unparse(node.value)}")
    assert offenders == []


def _an_enum_member(value: ast.AST) -> bool:
    return (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id in ("OutsourceStatus", "InsourceStatus", "LinkState", "O", "I", "L"))


def test_the_lint_above_catches_a_direct_assignment():
    tree = ast.parse("row.status = OutsourceStatus.COMPLETE\nlink.state, x = 'active', 1\nrow.status = workflow.outsource('cancel', s)")
    found = [(attr, _decided_by_the_workflow(v)) for _, attr, v in _assignments(tree)]
    assert found == [("status", False), ("state", False), ("status", True)]
