"""The hub's three Kafka brokers as deploy/hub runs them (SPEC section 13): every topic on three brokers,
all in sync; one broker SIGKILLed while two writers post notes (Docker starts it again), and a rolling
restart of the three, one after the other as an upgrade of Kafka goes: nothing is lost, nothing arrives
twice, and the cluster is whole again after each."""
import asyncio
import os
import signal
import time

import pytest

from devstack import containers
from tests.containers.deployment import BROKERS, FIRST, Hub
from tests.containers.steps import bodies, each_exactly_once, linked, note
from tests.harness import eventually

pytestmark = pytest.mark.containers


async def fully_in_sync(hub: Hub) -> list[dict] | None:
    in_sync, partitions = await asyncio.to_thread(hub.replication)
    return partitions if in_sync else None


class Writers:
    """Two users, one on each side of a link, each posting a note every half second until stopped."""

    def __init__(self, lead, insourcing, lead_ticket: dict, insourced: dict, what: str):
        self.sides = {"lead": (lead, lead_ticket["id"]), "insourcing": (insourcing, insourced["id"])}
        self.what = what
        self.written: dict[str, list[str]] = {side: [] for side in self.sides}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _write(self, side: str) -> None:
        client, ticket_id = self.sides[side]
        while not self._stop.is_set():
            body = f"{side} note {len(self.written[side])} {self.what}"
            await note(client, ticket_id, body)  # the partner's own database takes it whatever Kafka does
            self.written[side].append(body)
            await asyncio.sleep(0.5)

    async def __aenter__(self) -> "Writers":
        self._tasks = [asyncio.create_task(self._write(side)) for side in self.sides]
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def arrived_exactly_once(self, lead, insourcing, lead_ticket: dict, insourced: dict) -> None:
        assert min(len(w) for w in self.written.values()) >= 10, self.written
        await each_exactly_once(insourcing, insourced["id"], self.written["lead"])
        await each_exactly_once(lead, lead_ticket["id"], self.written["insourcing"])
        print(f"\n{len(self.written['lead'])} + {len(self.written['insourcing'])} notes {self.what}: each on the other"
              f" side once")


async def test_every_topic_of_the_hub_is_on_its_three_brokers_all_in_sync(hub, partners):
    partitions = await eventually(lambda: fully_in_sync(hub), timeout=60, interval=1)
    topics = {p["topic"] for p in partitions}
    # Each partner's two topics (made at its onboarding, by the bridge) and Kafka's consumer offsets.
    assert {f"psa.{partner}.{way}" for partner in partners for way in ("outbound", "inbound")} <= topics
    assert "__consumer_offsets" in topics
    assert all(p["replicas"] == [1, 2, 3] for p in partitions), [p for p in partitions if p["replicas"] != [1, 2, 3]]


async def test_a_broker_killed_while_two_write_is_started_again_and_nothing_is_lost_or_doubled(hub, lead, insourcing):
    lead_ticket, insourced, _ = await linked(lead, insourcing, FIRST, "Switch stack reboots")
    partitions = await eventually(lambda: fully_in_sync(hub), timeout=60, interval=1)
    # The broker leading most of the partners' partitions: its loss moves the most.
    leaders = [p["leader"] for p in partitions if p["topic"].startswith("psa.")]
    victim = BROKERS[max(set(leaders), key=leaders.count) - 1]
    container = hub.project.container_ids(victim)[0]
    started_before = hub.project.inspect(container)["State"]["StartedAt"]

    async with Writers(lead, insourcing, lead_ticket, insourced, f"while {victim} was killed") as writers:
        await asyncio.sleep(3)
        killed_at = time.monotonic()
        os.kill(hub.project.inspect(container)["State"]["Pid"], signal.SIGKILL)  # as the kernel's OOM killer would
        crossed = f"lead note written just after {victim} was killed"
        await note(lead, lead_ticket["id"], crossed)
        await eventually(lambda: _has_note(insourcing, insourced["id"], crossed), timeout=60, interval=0.5)
        print(f"\n{victim} SIGKILLed: a note written just after crossed in {time.monotonic() - killed_at:.1f} s")

        async def started_again():
            state = hub.project.inspect(container)["State"]
            return state["Running"] and state["StartedAt"] != started_before

        await eventually(started_again, timeout=60, interval=1)  # restart: unless-stopped
        await eventually(lambda: fully_in_sync(hub), timeout=120, interval=1)  # it caught up and rejoined
        await asyncio.sleep(3)

    await writers.arrived_exactly_once(lead, insourcing, lead_ticket, insourced)


async def test_a_rolling_restart_of_the_three_brokers_loses_and_duplicates_nothing(hub, lead, insourcing):
    lead_ticket, insourced, _ = await linked(lead, insourcing, FIRST, "Core switch upgrade")
    await eventually(lambda: fully_in_sync(hub), timeout=60, interval=1)

    async with Writers(lead, insourcing, lead_ticket, insourced, "during Kafka's rolling restart") as writers:
        for broker in BROKERS:  # one at a time, as an upgrade of Kafka goes: the next only once all are in sync
            container = hub.project.container_ids(broker)[0]
            started = time.monotonic()
            await asyncio.to_thread(containers.docker, "restart", "--time", "30", container)
            await eventually(lambda: fully_in_sync(hub), timeout=120, interval=1)
            print(f"\n{broker} restarted and every partition in sync again in {time.monotonic() - started:.0f} s")

    await writers.arrived_exactly_once(lead, insourcing, lead_ticket, insourced)


async def _has_note(client, ticket_id: str, body: str) -> bool:
    return bool((await bodies(client, ticket_id))[body])
