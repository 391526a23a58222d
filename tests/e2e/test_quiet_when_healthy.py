"""Quiet when healthy (issue 28): a link flooded by eight writers, reconciled again and again while the
notes and their receipts cross, loses nothing, and reconciliation repairs nothing, because nothing was
lost. Before, a receipt passed on after a round's questions looked lost to that round: 2,971 repairs for
7,822 notes in a minute, on a healthy link."""
import asyncio
import signal
import time
from datetime import datetime, timezone

import pytest

from tests.e2e.flows import items, linked_tickets
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
WRITERS, SECONDS = 8, 12.0
FROZEN_S, RECONCILE_INTERVAL_S = 30.0, 10  # as tests/conftest.py sets it


async def test_a_flooded_link_reconciled_throughout_records_no_repair(lead, insourcing, bridge):
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    before = (await bridge.get(f"/api/links/{link_id}/health")).json()["repairs"]["count"]
    deadline, written = time.monotonic() + SECONDS, []

    async def writer(n: int) -> None:
        while time.monotonic() < deadline:
            client, ticket = (lead, lead_ticket) if n % 4 else (insourcing, insourced)  # both ways
            answer = await client.post(f"/api/tickets/{ticket['id']}/notes", json={"body": f"flood {n} {len(written)}"})
            assert answer.status_code == 201, answer.text
            written.append(answer.json()["id"])

    async def reconciling() -> int:
        rounds = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)  # a round every second, whatever the interval: each meets notes in flight
            rounds += (await bridge.post(f"/api/links/{link_id}/reconcile")).status_code == 202
        return rounds

    *_, rounds = await asyncio.gather(*(writer(n) for n in range(WRITERS)), reconciling())

    async def all_delivered() -> bool:
        mine = [n for client, ticket in ((lead, lead_ticket), (insourcing, insourced))
                for n in await items(client, ticket["id"], "notes") if n["origin"] == "local"]
        return len(mine) == len(written) and all(n["delivery"]["status"] == "delivered" for n in mine)

    await eventually(all_delivered, timeout=120)
    # One more round, begun after everything crossed, agrees.
    finished = (await bridge.post(f"/api/links/{link_id}/reconcile")).json()["round_id"]

    async def agreed():
        health = (await bridge.get(f"/api/links/{link_id}/health")).json()
        return health if not health["reconciling"] and health["last_reconciled_at"] else None

    health = await eventually(agreed, timeout=60)
    repairs = health["repairs"]["count"] - before
    answers = {side: health[side]["last_answer"] for side in ("lead", "insourcing")}
    print(f"\nhot link: {len(written)} notes by {WRITERS} writers in {SECONDS:.0f} s, {rounds} rounds asked, "
          f"{repairs} repairs ({1000 * repairs / len(written):.1f} per 1,000 notes), round {finished[:8]}; "
          f"its answers: " + ", ".join(f"{side} {a['described']} ({a['entries']} listed of {a['held']} held)"
                                        for side, a in answers.items()))
    assert rounds >= 5 and len(written) >= 100
    assert repairs == 0, health["repairs"]["recent"]
    assert health["in_sync"] is True
    # The last round, after everything crossed, cost what changed since the one before: each side held
    # every note (its own and the other's mirrors), and listed only what the last receipts changed.
    for answer in answers.values():
        assert answer["described"] == "changes" and answer["held"] == len(written), answers
        assert answer["entries"] < len(written) / 4, answers


@pytest.mark.parametrize("victim", ["lead_partner", "sync_bridge"])
async def test_a_frozen_service_agrees_again_within_the_promise_after_it_thaws(
        lead, insourcing, bridge, services, victim):
    """Issue 28: while the lead (or the bridge) is frozen (SIGSTOP) the insourcing partner keeps writing,
    and rounds of the link wait for answers, backing off. Once it thaws, the link is confirmed in sync
    within RECONCILE_INTERVAL_S + 30 s (SPEC section 9), not when a backed-off wait happens to end
    (the issue measured 62.6 s after a stall; about 1 s here: the thawed side answers the round under
    way, which waited behind the backlog in order)."""
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing)
    frozen, written = services[victim], []
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + FROZEN_S
        while time.monotonic() < deadline:
            answer = await insourcing.post(f"/api/tickets/{insourced['id']}/notes", json={"body": f"frozen {len(written)}"})
            written.append(answer.raise_for_status().json()["id"])
            if victim != "sync_bridge":
                await bridge.post(f"/api/links/{link_id}/reconcile")  # as the partner's watch asks, waiting for receipts
            await asyncio.sleep(1.0)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    thawed, thawed_at = time.monotonic(), datetime.now(timezone.utc)

    async def agreed():
        health = (await bridge.get(f"/api/links/{link_id}/health")).json()
        reconciled = health["last_reconciled_at"] and datetime.fromisoformat(health["last_reconciled_at"]) > thawed_at
        mine = [n for n in await items(insourcing, insourced["id"], "notes") if n["origin"] == "local"]
        delivered = len(mine) == len(written) and all(n["delivery"]["status"] == "delivered" for n in mine)
        return health if reconciled and health["in_sync"] and not health["reconciling"] and delivered else None

    health = await eventually(agreed, timeout=RECONCILE_INTERVAL_S + 30)
    print(f"\n{victim} frozen {FROZEN_S:.0f} s while {len(written)} notes were written: the link was confirmed"
          f" in sync {time.monotonic() - thawed:.1f} s after it thawed")
    assert health["repairs"]["count"] == 0, health["repairs"]["recent"]
