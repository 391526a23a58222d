"""Database plumbing: the declarative base, engines and sessions (SQLAlchemy 2 async on asyncpg)."""
import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import MetaData, event, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 2) -> AsyncEngine:
    # No pre-ping: it costs a round trip per transaction. After a database restart the first use of
    # a dead connection fails (a 503, or a consumer retry) and the pool then replaces them all.
    # Overflow connections are closed as they come back: the pool size is what a replica keeps.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    PoolUse.watch(engine)
    return engine


class PoolUse:
    """The most of the pool's connections in use at once since the start: what a replica really
    needs of its budget (`/metrics`, `make bench`). How many are in use now is the pool's own count."""

    def __init__(self, engine) -> None:
        self.engine = engine  # its pool, not one pool: a database restart replaces the pool
        self.peak = 0

    @property
    def in_use(self) -> int:
        return self.engine.pool.checkedout()

    @classmethod
    def watch(cls, engine: AsyncEngine) -> "PoolUse":
        use = engine.sync_engine.pool_use = cls(engine.sync_engine)

        def checked_out(*_):
            use.peak = max(use.peak, use.in_use)

        event.listen(engine.sync_engine.pool, "checkout", checked_out)
        return use


class UnitOfWork(Session):
    """The sessions this project makes (and only those): the outbox hooks its staged events onto
    their commit (shared/platform/outbox.py), not onto every SQLAlchemy session in the process."""


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=UnitOfWork)


def asyncpg_dsn(url: str) -> str:
    """The same database as a plain libpq-style DSN, for a raw asyncpg connection (LISTEN, advisory locks)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08003", "08006"}


def transient(exc: BaseException) -> bool:
    """Errors that say nothing about the work being done: a lost connection, a deadlock, a serialization failure."""
    # A pool that gave no connection in time (every one busy: the budget, issue 28) is no fault of the work.
    if isinstance(exc, (OSError, asyncio.TimeoutError, OperationalError, InterfaceError, PoolTimeout)):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
    return False


class PlainSql:
    """Plain SQL on a session's own connection, inside the session's transaction, for the statements
    every message and every note runs (issue 11). Through SQLAlchemy a statement cost 0.4-0.5 ms of
    CPU here before it reached the database (building the expression, its cache key, the compiled
    cache, the greenlet hop); through asyncpg 0.18 ms. Errors come out as SQLAlchemy's, as from the
    session, so retries and the HTTP answers treat both alike: a database error as DBAPIError with
    its SQLSTATE, an argument asyncpg cannot encode as DataError (a 400, parked, never retried), a
    lost connection as DBAPIError(connection_invalidated=True) after the pool was replaced (a 503,
    retried). The session's unit of work does not see these writes: get a PlainSql after the ORM
    changes it should see (`plain_sql` flushes them), and do not use ORM objects it changed."""

    def __init__(self, connection: AsyncConnection, driver: asyncpg.Connection):
        self._connection = connection
        self._driver = driver

    async def execute(self, query: str, *args: Any) -> str:
        return await self._run(self._driver.execute, query, args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._run(self._driver.fetch, query, args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._run(self._driver.fetchrow, query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run(self._driver.fetchval, query, args)

    async def _run(self, call, query: str, args: tuple) -> Any:
        try:
            return await call(query, *args)
        except Exception as exc:
            raise await self._translated(exc, query, args) from exc

    async def _translated(self, exc: Exception, query: str, args: tuple) -> Exception:
        if self._driver.is_closed():
            # The database restarted or cut the connection: the others in the pool are as dead.
            # Replaced as SQLAlchemy replaces them when its own statement meets a dead connection.
            await self._connection.invalidate()
            await self._connection.engine.dispose(close=False)
            return DBAPIError.instance(query, args, exc, Exception, connection_invalidated=True)
        if isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError)):
            # The class is chosen by name: asyncpg's DataError (also what it raises for an argument
            # it cannot encode, e.g. an integer out of range) becomes SQLAlchemy's DataError.
            return DBAPIError.instance(query, args, exc, Exception)
        return exc


async def plain_sql(session: AsyncSession, *, one_read: bool = False) -> PlainSql:
    """The session's transaction (begun if it was not), for plain SQL; what the session holds
    unwritten is flushed first, as before any query of its own.

    `one_read`: for a request that only reads, and whose answer rests on one statement (a page of a
    list; its ticket is asked for only when the page is empty). No transaction is begun: a statement
    sees one snapshot, and the BEGIN and COMMIT around it cost 0.3 ms of a page's 2.3 of CPU. Anything the
    session does afterwards begins its own."""
    if session.new or session.deleted or session.dirty:
        await session.flush()
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    plain = PlainSql(connection, raw.driver_connection)
    adapter = raw.dbapi_connection
    if one_read:
        if adapter._transaction is not None:
            raise RuntimeError("one_read asked inside a transaction: use plain_sql(session)")
        return plain
    # SQLAlchemy's asyncpg adapter says BEGIN with its first statement, and COMMIT only if it did:
    # a plain statement first would run outside any transaction (seen: a failed batch's inbox
    # records stayed). SQLAlchemy has no public call for this; tests/integration/test_plain_sql.py
    # pins it (a plain statement is rolled back and committed with its session).
    if adapter._transaction is None:
        try:
            await adapter._start_transaction()
        except Exception as exc:
            raise await plain._translated(exc, "BEGIN", ()) from exc
    return plain


def service_metadata(*tables) -> MetaData:
    """The part of the models' metadata one service's database holds (all services share `Base`):
    what its Alembic environment compares with and tests/integration/test_schema.py checks."""
    metadata = MetaData()
    for table in tables:
        table.to_metadata(metadata)
    return metadata
