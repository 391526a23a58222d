"""Plain SQL on a session's connection (shared/platform/db.py, issue 11) against a real PostgreSQL:
it belongs to the session's transaction whichever statement comes first, so it is rolled back and
committed with the session's own writes, and sees what the session added before it; its errors are
SQLAlchemy's, classified as the session's would be (a refused input is not worth retrying, a lost
connection is, and the pool is replaced)."""
import asyncio

import asyncpg
import pytest
from sqlalchemy import Integer, String, select, text
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from devstack import infra
from shared.platform.db import asyncpg_dsn, make_engine, make_sessionmaker, plain_sql, transient


class _Base(DeclarativeBase):
    pass


class Thing(_Base):
    __tablename__ = "plain_sql_things"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    size: Mapped[int | None] = mapped_column(Integer)


async def scenario(url: str) -> dict:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    seen = {}
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: Thing.__table__.create(sync, checkfirst=True))

        # A plain statement first, then the session's own: rolled back together.
        with pytest.raises(RuntimeError):
            async with sessions() as session, session.begin():
                await (await plain_sql(session)).execute("INSERT INTO plain_sql_things (name) VALUES ('plain-first')")
                session.add(Thing(name="orm-after"))
                await session.flush()
                raise RuntimeError("the unit of work fails")

        # The same, committed.
        async with sessions() as session, session.begin():
            await (await plain_sql(session)).execute("INSERT INTO plain_sql_things (name) VALUES ('committed')")

        # What the session added and did not flush yet is visible to a plain statement; a duplicate
        # key is a database error with its SQLSTATE, and an argument asyncpg cannot encode is a
        # DataError: neither is worth a retry.
        async with sessions() as session:
            session.add(Thing(name="added"))
            plain = await plain_sql(session)
            seen["added"] = await plain.fetchval("SELECT count(*) FROM plain_sql_things WHERE name = 'added'")
            with pytest.raises(DBAPIError) as refused:
                await plain.execute("INSERT INTO plain_sql_things (name) VALUES ('added')")
            seen["duplicate"] = (refused.value.orig.sqlstate, transient(refused.value))
            await session.rollback()
        async with sessions() as session:
            with pytest.raises(DataError) as refused:
                await (await plain_sql(session)).execute(
                    "INSERT INTO plain_sql_things (name, size) VALUES ('big', $1)", 2 ** 40)
            seen["too big"] = transient(refused.value)

        # One read (a page of a list): no transaction is begun around it (SAVEPOINT is refused
        # outside one), the session's commit is harmless, and a write after it in the same session
        # begins its own transaction and commits. Asked inside a transaction, it is refused.
        async with sessions() as session:
            plain = await plain_sql(session, one_read=True)
            seen["one read"] = await plain.fetchval("SELECT count(*) FROM plain_sql_things")
            with pytest.raises(DBAPIError) as outside:
                await plain.execute("SAVEPOINT inside")
            seen["outside a transaction"] = outside.value.orig.sqlstate
            await session.commit()
            session.add(Thing(name="after a read"))
            await session.commit()
        async with sessions() as session, session.begin():
            await (await plain_sql(session)).fetchval("SELECT 1")
            with pytest.raises(RuntimeError, match="inside a transaction"):
                await plain_sql(session, one_read=True)

        # The database cuts every connection (a restart): the next transaction that begins with a
        # plain statement fails as a lost connection would through the session, and the one after
        # it works on a new connection.
        async with sessions() as session, session.begin():
            await (await plain_sql(session)).fetchval("SELECT 1")  # a connection in the pool
        admin = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
        with pytest.raises(DBAPIError) as lost:
            async with sessions() as session, session.begin():
                await (await plain_sql(session)).execute("INSERT INTO plain_sql_things (name) VALUES ('lost')")
        seen["lost"] = (lost.value.connection_invalidated, transient(lost.value))
        async with sessions() as session, session.begin():
            await (await plain_sql(session)).execute("INSERT INTO plain_sql_things (name) VALUES ('after')")

        async with sessions() as session:
            seen["rows"] = sorted(await session.scalars(select(Thing.name)))
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE plain_sql_things"))
    finally:
        await engine.dispose()
    return seen


def test_plain_statements_share_the_session_transaction_and_its_errors(infrastructure):
    name = "plain_sql"
    [url] = infra.create_databases(infrastructure.postgres_admin_url, [name], drop_first=True).values()
    try:
        seen = asyncio.run(scenario(url))
    finally:
        infra.drop_databases(infrastructure.postgres_admin_url, [name])

    assert seen["one read"] == 1  # 'committed'
    assert seen["outside a transaction"] == "25P01"  # no_active_sql_transaction
    assert seen["rows"] == ["after", "after a read", "committed"]  # not 'plain-first', 'orm-after', 'added', 'big', 'lost'
    assert seen["added"] == 1
    assert seen["duplicate"] == ("23505", False)  # a unique violation: the API answers 400
    assert seen["too big"] is False
    assert seen["lost"] == (True, True)  # the API answers 503, a consumer starts again
