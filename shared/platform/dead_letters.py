"""What an operator does with parked messages, over HTTP and from the command line alike: list them,
replay one through the inbox (so it is applied at most once; an oversized message, of which only a
prefix was kept, cannot be), or discard it. Either resolution is
recorded with who did it and when; a replay that fails again leaves the message parked with the new reason."""
import base64
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import defer
from sqlalchemy.ext.asyncio import AsyncSession

from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.db import plain_sql, utcnow
from shared.platform.errors import Conflict, NotFound
from shared.platform.inbox import MAX_REASON, DeadLetter, InboxConsumer, Parked
from shared.platform.openapi import CONFLICT

DISCARDED = "discarded"
LetterId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a dead letter's id (a PostgreSQL bigint)")]


class DeadLetterOut(BaseModel):
    id: int
    topic: str
    partition: int
    offset: int
    key: str | None = Field(description="the record's key as text: bytes that are not printable UTF-8 are escaped "
                                        "(\\x00), so the same text may stand for different keys; see key_base64")
    key_base64: str | None = Field(description="the record's key as it was (at most 4 KiB of it), base64")
    header_names: list[str] = Field(description="the record's header names, escaped as the key is")
    event_id: str | None
    type: str | None
    reason: str = Field(description="why it is parked (the last replay's reason, when one failed)")
    size: int | None = Field(description="the message's length in bytes (null: the record had no value)")
    sha256: str | None = Field(description="the SHA-256 of the whole message, hex")
    truncated: bool = Field(description="only the message's first bytes were kept (it was oversized): "
                                        "it cannot be replayed")
    parked_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="the token's name, or the command line and its OS user")
    resolution: str | None = Field(description='"applied", "already applied" or "discarded"')


class OutcomeOut(BaseModel):
    id: int
    outcome: str = Field(description='"applied", "already applied", "discarded" or "parked again: <reason>"')
    resolved_at: datetime | None
    resolved_by: str | None


def letter_out(letter: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        **{name: getattr(letter, name) for name in DeadLetterOut.model_fields
           if name not in ("key", "key_base64", "header_names")},
        key=letter.shown_key, header_names=letter.header_names,
        key_base64=None if letter.key is None else base64.b64encode(letter.key).decode())


async def list_dead_letters(session: AsyncSession, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
    # The message itself (up to a megabyte each) is not listed: read only when a letter is replayed.
    query = select(DeadLetter).options(defer(DeadLetter.value)).order_by(DeadLetter.id.desc()).limit(limit)
    if not include_resolved:
        query = query.where(DeadLetter.resolved_at.is_(None))
    return list((await session.scalars(query)).all())


async def prune(session: AsyncSession, max_count: int, max_age: timedelta) -> int:
    """Retention: resolved dead letters older than `max_age` go, then the oldest resolved ones while
    there are more than `max_count` in all. Unresolved ones stay until an operator acts, whatever their
    number. Answers how many went."""
    sql = await plain_sql(session)
    aged = await sql.fetchval(
        "WITH gone AS (DELETE FROM dead_letters WHERE resolved_at < now() - $1::interval RETURNING 1)"
        " SELECT count(*) FROM gone", max_age)
    over = await sql.fetchval(
        "WITH gone AS (DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE resolved_at IS NOT NULL"
        " ORDER BY resolved_at, id LIMIT greatest(0, (SELECT count(*) FROM dead_letters) - $1))"
        " RETURNING 1) SELECT count(*) FROM gone", max_count)
    return aged + over


async def count_unresolved(session: AsyncSession) -> int:
    return await (await plain_sql(session)).fetchval("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL")


async def replay(session: AsyncSession, consumer: InboxConsumer, letter_id: int, who: str) -> OutcomeOut:
    """The letter's row stays locked while the inbox applies it, so two operators cannot replay it at once."""
    letter = await _unresolved(session, letter_id)
    if letter.truncated:
        raise Conflict(f"dead letter {letter.id} cannot be replayed: the message was {letter.size} bytes and only "
                       f"its first {len(letter.value or b'')} were kept (SHA-256 {letter.sha256}); discard it")
    try:
        outcome = await consumer.replay(letter)
    except Parked as exc:
        letter.reason = exc.reason[:MAX_REASON]
        return _answer(letter, f"parked again: {exc.reason}")
    return _resolve(letter, outcome, who)


async def discard(session: AsyncSession, letter_id: int, who: str) -> OutcomeOut:
    return _resolve(await _unresolved(session, letter_id), DISCARDED, who)


async def _unresolved(session: AsyncSession, letter_id: int) -> DeadLetter:
    letter = await session.scalar(select(DeadLetter).where(DeadLetter.id == letter_id).with_for_update())
    if letter is None:
        raise NotFound(f"dead letter {letter_id} not found")
    if letter.resolved_at is not None:
        raise Conflict(f"dead letter {letter_id} is resolved already: {letter.resolution} "
                       f"(by {letter.resolved_by} at {letter.resolved_at:%Y-%m-%d %H:%M:%S %Z})")
    return letter


def _resolve(letter: DeadLetter, resolution: str, who: str) -> OutcomeOut:
    letter.resolved_at, letter.resolved_by, letter.resolution = utcnow(), who, resolution
    return _answer(letter, resolution)


def _answer(letter: DeadLetter, outcome: str) -> OutcomeOut:
    return OutcomeOut(id=letter.id, outcome=outcome, resolved_at=letter.resolved_at, resolved_by=letter.resolved_by)


def dead_letter_router(permission: Permission) -> APIRouter:
    """Every service's parked messages, behind the permission its operators' tokens carry."""
    router = api_router("/api", ["dead letters"], permission)

    @router.get("/dead-letters", response_model=list[DeadLetterOut],
                summary="Parked messages, newest first: the unresolved ones, or with include_resolved=true "
                        "the replayed and discarded ones too")
    async def dead_letters(session: SessionDep, include_resolved: bool = False,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100):
        return [letter_out(letter) for letter in await list_dead_letters(session, include_resolved, limit)]

    @router.post("/dead-letters/{letter_id}/replay", responses=CONFLICT, response_model=OutcomeOut,
                 summary="Apply a parked message again through the inbox (at most once); answers the outcome")
    async def replay_dead_letter(letter_id: LetterId, request: Request, session: SessionDep):
        return await replay(session, request.app.state.consumer, letter_id, request.state.token_name)

    @router.post("/dead-letters/{letter_id}/discard", responses=CONFLICT, response_model=OutcomeOut,
                 summary="Set a parked message aside for good, on record with who and when")
    async def discard_dead_letter(letter_id: LetterId, request: Request, session: SessionDep):
        return await discard(session, letter_id, request.state.token_name)

    return router
