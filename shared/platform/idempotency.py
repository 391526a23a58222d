"""`Idempotency-Key` (SPEC section 5, issue 28): a client whose POST was cut off by the network sends it
again with the same key and gets the first answer, without a second write. The key is claimed in the
request's own transaction, so the write and the answer kept for it commit together or not at all; a
duplicate sent at the same moment waits on that claim, then answers what the first one answered. The
same key with another request is 422. Kept for 24 hours, per caller (its token, or its page session)."""
import functools
import hashlib
import inspect
import json
import random
import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Header, Request
from starlette.datastructures import UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import DateTime, Integer, LargeBinary, String, func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.platform.db import Base, plain_sql
from shared.platform.errors import Unprocessable

KEEP = timedelta(hours=24)
HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, no spaces: a UUID is the usual choice
REPLAYED = "Idempotency-Replayed"  # set on an answer that is the first request's, sent again
DESCRIPTION = (
    "Makes the request safe to send again: the same key and the same request within 24 hours answer the"
    " first result (with the header `Idempotency-Replayed: true`) and write nothing more; the same key with"
    " another request is 422. A UUID is the usual choice; keys are kept per caller.")


class IdempotencyKey(Base):
    """A key a caller sent, the request it came with, and the answer that request got."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(300), primary_key=True)  # who sent it: a token, or a page session
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    answer: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class Claimed(Exception):
    """The key was used before: `answer` is what the first request got."""

    def __init__(self, status_code: int, answer: bytes):
        super().__init__(status_code)
        self.status_code, self.answer = status_code, answer


async def claim(session: AsyncSession, scope: str, key: str, request_sha256: str) -> None:
    """The key for this request, in the request's transaction; Claimed when an earlier request had it
    (a concurrent one is waited for), 422 when that request was another."""
    db = await plain_sql(session)
    if random.random() < 0.01:  # now and then, forget the keys past their time
        await db.execute("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval", KEEP)
    # A row another transaction inserted and has not committed makes this wait for it: a duplicate sent
    # at the same moment answers what the first answered, or (the first failed) goes ahead itself. A key
    # past its 24 hours is taken over, in the same statement.
    mine = await db.fetchval(
        "INSERT INTO idempotency_keys (scope, key, request_sha256) VALUES ($1, $2, $3)"
        " ON CONFLICT (scope, key) DO UPDATE SET request_sha256 = excluded.request_sha256, status_code = NULL,"
        " answer = NULL, created_at = now() WHERE idempotency_keys.created_at < now() - $4::interval"
        " RETURNING key", scope, key, request_sha256, KEEP)
    if mine is not None:
        return
    row = await db.fetchrow("SELECT request_sha256, status_code, answer FROM idempotency_keys"
                            " WHERE scope = $1 AND key = $2", scope, key)
    if row["request_sha256"] != request_sha256:
        raise Unprocessable(f"{HEADER} {key!r} was used with another request in the last 24 hours: a key names"
                            " one request; send a new key for a new request")
    raise Claimed(row["status_code"], row["answer"])


async def answered(session: AsyncSession, scope: str, key: str, status_code: int, answer: bytes) -> None:
    """The answer the claimed key gets from now on (committed with the request's write)."""
    await (await plain_sql(session)).execute(
        "UPDATE idempotency_keys SET status_code = $3, answer = $4 WHERE scope = $1 AND key = $2",
        scope, key, status_code, answer)


async def _file(upload: UploadFile) -> list:
    """An uploaded file as a request's fingerprint sees it; read again from its start by the endpoint."""
    content = await upload.read()
    await upload.seek(0)
    return [upload.filename, upload.content_type, hashlib.sha256(content).hexdigest()]


async def _fingerprint(request: Request, values: dict[str, Any]) -> str:
    """The request a key names: its method, path and what the endpoint read (bodies, form fields, files)."""
    parts: dict[str, Any] = {"method": request.method, "path": request.url.path}
    for name, value in sorted(values.items()):
        if isinstance(value, BaseModel):
            parts[name] = value.model_dump(mode="json")
        elif isinstance(value, UploadFile):
            parts[name] = await _file(value)
        elif value is None or isinstance(value, str | int | float | bool):
            parts[name] = value
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def idempotent(*, status_code: int, response_model: type[BaseModel]):
    """An API endpoint that creates something, made safe to send again with `Idempotency-Key`. The
    endpoint takes `session` (SessionDep); its answer is kept as the client got it."""

    def decorate(endpoint):
        signature = inspect.signature(endpoint)

        @functools.wraps(endpoint)
        async def wrapper(*args, _request: Request, _idempotency_key: str | None, **kwargs):
            if _idempotency_key is None:
                return await endpoint(*args, **kwargs)
            session: AsyncSession = kwargs["session"]
            scope = f"token:{_request.state.token_sha256}"
            try:
                await claim(session, scope, _idempotency_key, await _fingerprint(_request, kwargs))
            except Claimed as first:
                return JSONResponse(json.loads(first.answer), status_code=first.status_code, headers={REPLAYED: "true"})
            result = await endpoint(*args, **kwargs)
            answer = response_model.model_validate(result, from_attributes=True).model_dump(mode="json", by_alias=True)
            await answered(session, scope, _idempotency_key, status_code, json.dumps(answer).encode())
            return JSONResponse(answer, status_code=status_code)

        wrapper.__signature__ = signature.replace(parameters=[
            *signature.parameters.values(),
            inspect.Parameter("_request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
            inspect.Parameter("_idempotency_key", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
                str | None, Header(alias=HEADER, pattern=KEY_PATTERN, description=DESCRIPTION)], default=None),
        ])
        return wrapper

    return decorate


FORM_FIELD = "idempotency_key"  # what a page's form sends the key as (a new one each time the form is drawn)


def new_key() -> str:
    return str(uuid.uuid4())


async def _form_fingerprint(path: str, form) -> str:
    parts = [path]
    for name, value in sorted(form.multi_items(), key=lambda item: item[0]):
        if name in ("csrf", FORM_FIELD):
            continue
        if isinstance(value, UploadFile):
            value = await _file(value)
        parts.append(f"{name}={value}")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


async def page_claim(session: AsyncSession, who: str, path: str, form) -> str | None:
    # `who`: the signed-in token's SHA-256 (Viewer.token_sha256), unique where a name may not be.
    """A page form sent again (a second click, a resubmission): where the first one led; None the first
    time (the caller writes, then `page_answered`). The same key with another form is 422."""
    key = form.get(FORM_FIELD)
    if not isinstance(key, str) or not re.fullmatch(KEY_PATTERN, key):
        return None
    try:
        await claim(session, f"page:{who}", key, await _form_fingerprint(path, form))
    except Claimed as first:
        return first.answer.decode()
    return None


async def page_answered(session: AsyncSession, who: str, form, location: str) -> None:
    key = form.get(FORM_FIELD)
    if isinstance(key, str) and re.fullmatch(KEY_PATTERN, key):
        await answered(session, f"page:{who}", key, 303, location.encode())
