"""The README's API tour, `docs/tour.sh`, run as a newcomer runs it (bash, curl, python3) against this
session's services: when the workflow or the API moves, this fails before a newcomer pastes it."""
import os
import re
import subprocess

import httpx

from devstack import run
from services.insourcing_partner.settings import InsourcingSettings
from tests.harness import ROOT

TOUR = ROOT / "docs" / "tour.sh"
# What the tour says at each step, in this order (its output, one line a step).
STEPS = [
    "ready:", "lead: created ticket", "lead: outsourced it to insourcing-partner (Outsource Status Assigned)",
    "insourcing: sees it in Received Work as Pending", "insourcing: accepted it", "lead: Outsource Status In Progress",
    "lead -> insourcing: note delivered", "insourcing -> lead: note delivered", "insourcing: logged 1.50 h",
    "insourcing: Notify Lead Partner > Insource Complete", "lead: Outsource Status Waiting Approval",
    "lead: rejected it", "insourcing: Insource Status In Progress again", "insourcing: Insource Complete again",
    "lead: Outsource Status Waiting Approval", "lead: statement version 2, total 142.50 USD",
    "lead: approved it, and that statement", "insourcing: invoiced that statement as INV-", "lead: sees invoice INV-",
    "done: Complete on both sides, the bridge's link terminated", "see it:",
]


def test_the_readme_tour_runs_as_pasted_and_leaves_the_ticket_complete_on_both_sides(services):
    lead, insourcing, bridge = services["lead_partner"], services["insourcing_partner"], services["sync_bridge"]
    env = {
        **os.environ,
        "LEAD_URL": lead.url, "INSOURCING_URL": insourcing.url, "BRIDGE_URL": bridge.url,
        "LEAD_API_TOKEN": lead.token, "INSOURCING_API_TOKEN": insourcing.token, "BRIDGE_API_TOKEN": bridge.token,
        "TOKENS_FILE": str(ROOT / "var" / "no-such-tokens.env"),  # the environment alone, never make run's tokens
        "TOUR_TIMEOUT": "60",  # a whole suite leaves many links for the bridge to watch
    }
    done = subprocess.run(["bash", str(TOUR)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said

    lines = done.stdout.splitlines()
    assert len(lines) == len(STEPS), said
    for line, step in zip(lines, STEPS):
        assert line.startswith(step), said

    lead_ticket, insourced = re.fullmatch(
        rf"see it: {re.escape(lead.url)}/tickets/(\S+) \(lead\), {re.escape(insourcing.url)}/tickets/(\S+) "
        r"\(insourcing partner\)", lines[-1]).groups()
    ticket = httpx.get(f"{lead.url}/api/tickets/{lead_ticket}", headers={"Authorization": f"Bearer {lead.token}"}).json()
    assert ticket["outsource"]["status"] == "Complete", ticket
    theirs = httpx.get(f"{insourcing.url}/api/tickets/{insourced}",
                       headers={"Authorization": f"Bearer {insourcing.token}"}).json()
    assert theirs["insource"]["status"] == "Complete", theirs
    notes = httpx.get(f"{lead.url}/api/tickets/{lead_ticket}/notes", params={"limit": 500},
                      headers={"Authorization": f"Bearer {lead.token}"}).json()["items"]
    bodies = [n["body"] for n in notes]
    assert "Toner ordered, arrives Monday" in bodies and "Fuser replaced, test page prints" in bodies, bodies


def test_the_tour_without_a_stack_says_what_is_missing_and_fails():
    env = {**os.environ, "TOKENS_FILE": str(ROOT / "var" / "no-such-tokens.env")}
    for name in ("LEAD_API_TOKEN", "INSOURCING_API_TOKEN", "BRIDGE_API_TOKEN"):
        env.pop(name, None)
    done = subprocess.run(["bash", str(TOUR)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "start `make run` first" in done.stderr, done.stderr


def test_the_tour_defaults_are_what_make_run_starts():
    """Run as pasted after `make run`, the tour reaches make run's ports, tokens and insourcing partner."""
    script = TOUR.read_text()
    for _, prefix, port, _ in run.SERVICES:  # make run's own ports, or the ones it was given
        assert f'{prefix}_URL="${{{prefix}_URL:-http://127.0.0.1:${{{prefix}_PORT:-{port}}}}}"' in script
    assert 'TOKENS_FILE="${TOKENS_FILE:-${DEVSTACK_VAR:-$ROOT/var}/tokens.env}"' in script  # as run.VAR
    assert f'PARTNER="${{INSOURCING_PARTNER_ID:-{InsourcingSettings.model_fields["partner_id"].default}}}"' in script
