"""The design's skeleton (tests/skeleton.py), which `make bench` times beside the product as the
least a quiet note can take within the rules, still does what it stands for: a note written on its
lead crosses through its bridge to its partner, readable there, and the receipt comes back to the
lead, each step through an outbox and an inbox; and a message delivered twice is applied once."""
import asyncio
import json
import time

import asyncpg
import httpx

from devstack import infra
from shared.platform.db import asyncpg_dsn
from shared.platform.kafka import make_producer
from tests.skeleton import Skeleton, topics


async def _until(check, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while not (found := await check()):
        assert time.monotonic() < deadline, "the skeleton did not get there in time"
        await asyncio.sleep(0.05)
    return found


async def scenario(admin_url: str, access) -> dict:
    async with Skeleton(admin_url, access) as skeleton, httpx.AsyncClient() as client:
        databases = {role: asyncpg_dsn(infra.with_database(admin_url, name)) for role, name in skeleton.names.items()}

        async def notes(ticket: str) -> list[dict]:
            return (await client.get(f"{skeleton.url('partner')}/api/tickets/{ticket}/notes")).json()["items"]

        async def delivered(item: str) -> bool:
            conn = await asyncpg.connect(databases["lead"])
            try:
                return await conn.fetchval("SELECT delivered FROM items WHERE id = $1", item)
            finally:
                await conn.close()

        answer = await client.post(f"{skeleton.url('lead')}/api/tickets/t-1/notes", json={"body": "across"})
        item = answer.json()["id"]
        crossed = await _until(lambda: notes("t-1"))
        await _until(lambda: delivered(item))

        # The bridge's message to the partner, sent a second time as a relay resending it would.
        bridge = await asyncpg.connect(databases["bridge"])
        try:
            [row] = [row for row in await bridge.fetch("SELECT topic, key, value FROM outbox WHERE topic = $1",
                                                        topics(skeleton.run)["to-partner"])
                     if json.loads(row["value"])["body"] == "across"]
        finally:
            await bridge.close()
        producer = make_producer(access)
        await producer.start()
        try:
            ring = skeleton.ring
            await producer.send_and_wait(row["topic"], row["value"], key=row["key"].encode(),
                                         headers=ring.sign(row["topic"], row["value"]))
        finally:
            await producer.stop()
        (await client.post(f"{skeleton.url('lead')}/api/tickets/t-1/notes", json={"body": "after"})).raise_for_status()
        after = await _until(lambda: _with(notes("t-1"), lambda found: len(found) >= 2 and found))
        return {"answer": answer.status_code, "crossed": crossed, "after": after}


async def _with(call, predicate):
    return predicate(await call)


def test_a_note_crosses_the_skeleton_and_its_receipt_comes_back_once(infrastructure):
    seen = asyncio.run(scenario(infrastructure.postgres_admin_url, infrastructure.kafka_admin))

    assert seen["answer"] == 201
    assert [note["body"] for note in seen["crossed"]] == ["across"]
    assert [note["body"] for note in seen["after"]] == ["across", "after"]  # the resent mirror applied once
