"""The bench's load generator: Debian's `wrk` with a Lua script (`notes.lua`), a process of its own written
in C, so that the bench measures the product and not its client (issue 30: the bench's 16 Python writers
cost 5-6 ms of CPU per note, as much as the lead service). `make bench` installs it (Debian's `wrk`)."""
import asyncio
import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx

SCRIPT = Path(__file__).with_name("notes.lua")
THREADS = 2  # one per core of this machine


@dataclass
class Written:
    created: int  # notes the service answered 201
    refused: int  # answered anything else (never expected)
    seconds: float


def _wrk() -> str:
    found = shutil.which("wrk")
    assert found, "the bench writes its load with wrk: `apt-get install wrk` (`make bench` does it as root)"
    return found


class Writers:
    """`connections` connections writing notes through `client`'s service, round-robin over `ticket_ids`:
    `count` of them in all (a multiple of THREADS; `created` says how many were answered 201: a note
    whose connection wrk lost goes unanswered), or with count=0 until `stop()`."""

    def __init__(self, client: httpx.AsyncClient, ticket_ids: list[str], label: str, count: int = 0,
                 connections: int = 16):
        assert count % THREADS == 0, f"{count} notes: a multiple of {THREADS}, one share per wrk thread"
        token = client.headers["Authorization"].removeprefix("Bearer ")
        self.count = count
        self._args = [_wrk(), "--threads", str(THREADS), "--connections", str(max(connections, THREADS)),
                      "--duration", "3600s", "--timeout", "60s", "--script", str(SCRIPT),
                      str(client.base_url).rstrip("/"), "--", token, label, str(count // THREADS), str(THREADS),
                      *ticket_ids]
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> "Writers":
        self._proc = await asyncio.create_subprocess_exec(*self._args, stdout=asyncio.subprocess.PIPE,
                                                          stderr=asyncio.subprocess.PIPE)
        return self

    async def finished(self) -> Written:
        """Once every note is answered (count > 0), or at once after SIGINT (wrk then reports what it had).
        wrk runs until its --duration whatever its threads do: each says "finished", then it is stopped."""
        assert self._proc is not None and self._proc.stdout is not None
        out, done = [], 0
        while self.count and done < THREADS and (line := await self._proc.stdout.readline()):
            out.append(line)
            done += line.strip() == b"finished"
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGINT)
        rest, err = await self._proc.communicate()
        text = b"".join(out).decode() + rest.decode()
        lines = [line for line in text.splitlines() if line.startswith("{")]
        assert self._proc.returncode == 0 and lines, f"wrk: exit {self._proc.returncode}: {text[-2000:]}{err.decode()[-2000:]}"
        written = Written(**json.loads(lines[-1]))
        assert not written.refused, f"{written.refused} notes refused by the service"
        # A note whose connection wrk lost is not answered (nor counted); a few in thousands at most.
        assert not self.count or self.count * 0.99 <= written.created <= self.count, written
        return written

    async def stop(self) -> Written:
        """Stops writers without a count (SIGINT), and says what they wrote."""
        assert self._proc is not None and not self.count
        return await self.finished()


async def write_notes(client: httpx.AsyncClient, ticket_ids: list[str], count: int, label: str,
                      connections: int = 16) -> Written:
    """`count` notes through the client's service by `connections` concurrent connections, round-robin."""
    return await (await Writers(client, ticket_ids, label, count, connections).start()).finished()
