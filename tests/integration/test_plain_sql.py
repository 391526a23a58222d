"""Plain SQL on a session's connection (shared/platform/db.py, issue 11) against a real PostgreSQL:
it belongs to the session's transaction whichever statement comes first, so it is rolled back and
committed with the session's own writes, sees what the session added before it, and a database
error comes out as SQLAlchemy's DBAPIError with its SQLSTATE."""
import asyncio

import pytest
from sqlalchemy import String, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from devstack import infra
from shared.platform.db import make_engine, make_sessionmaker, plain_sql


class TestBase(DeclarativeBase):
    pass


class Thing(TestBase):
    __tablename__ = "plain_sql_things"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)


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
                await (await plain_sql(session)).execute("INSERT INTO plain_sql_things VALUES ('plain-first')")
                session.add(Thing(name="orm-after"))
                await session.flush()
                raise RuntimeError("the unit of work fails")

        # The same, committed.
        async with sessions() as session, session.begin():
            await (await plain_sql(session)).execute("INSERT INTO plain_sql_things VALUES ('committed')")

        # What the session added and did not flush yet is visible to a plain statement.
        async with sessions() as session:
            session.add(Thing(name="added"))
            seen["added"] = await (await plain_sql(session)).fetchval(
                "SELECT count(*) FROM plain_sql_things WHERE name = 'added'")
            with pytest.raises(DBAPIError) as refused:
                await (await plain_sql(session)).execute("INSERT INTO plain_sql_things VALUES ('added')")
            seen["sqlstate"] = refused.value.orig.sqlstate
            await session.rollback()

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

    assert seen["rows"] == ["committed"]  # neither 'plain-first' nor 'orm-after', nor 'added'
    assert seen["added"] == 1
    assert seen["sqlstate"] == "23505"  # a unique violation, which the API answers as a 400
