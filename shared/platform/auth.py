"""Bearer tokens, stored as SHA-256 hashes, each with a set of permissions. 401 for a missing or
unknown token, 403 for a token without the permission a call needs."""
import enum
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import DateTime, String, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.platform.db import Base

TOKENS_CHANNEL = "api_tokens"  # NOTIFY channel: a token was revoked


class Permission(enum.StrEnum):
    TICKETS = "tickets"  # "Ticket access": tickets and their items
    OUTSOURCING = "outsourcing"  # outsource, cancel, approve, reject, complete, accept, decline, dashboards
    LINKS = "links"  # the bridge's link registry
    PARTNERS = "partners"  # the bridge's partner directory: onboard, rotate, remove (SPEC section 10)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(255))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    permissions: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


async def create_token(session: AsyncSession, name: str, permissions: list[Permission], prefix: str) -> tuple[ApiToken, str]:
    token = new_token(prefix)
    row = ApiToken(name=name, token_sha256=hash_token(token), permissions=[p.value for p in permissions])
    session.add(row)
    await session.flush()
    return row, token


async def ensure_token(session: AsyncSession, name: str, token: str, permissions: list[Permission]) -> None:
    """Register a token given by the operator (e.g. LEAD_API_TOKEN) so that it works, idempotently."""
    await session.execute(
        insert(ApiToken)
        .values(id=str(uuid.uuid4()), name=name, token_sha256=hash_token(token), permissions=[p.value for p in permissions])
        .on_conflict_do_update(
            index_elements=[ApiToken.token_sha256],
            set_={"permissions": [p.value for p in permissions], "revoked_at": None},
        )
    )


async def revoke_token(session: AsyncSession, token_id: str) -> bool:
    result = await session.execute(
        update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None)).values(revoked_at=func.now())
    )
    # Every running replica drops its cache of verified tokens when this commits.
    await session.execute(select(func.pg_notify(TOKENS_CHANNEL, token_id)))
    return result.rowcount == 1


class TokenCache:
    """Verified tokens (their name and permissions), so that a request does not pay a database query
    to authenticate. Emptied on a revocation NOTIFY from any process, and after `ttl` seconds in any case."""

    def __init__(self, ttl: float = 30.0):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, tuple[str, list[str]]]] = {}

    def get(self, digest: str) -> tuple[str, list[str]] | None:
        entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, digest: str, name: str, permissions: list[str]) -> None:
        self._entries[digest] = (time.monotonic(), (name, permissions))

    def clear(self, *_: object) -> None:
        self._entries.clear()


_bearer = HTTPBearer(auto_error=False, description="A service API token")


async def _session(request: Request):
    """One unit of work per request, committed in this one place: after the endpoint returned and
    before its answer is sent (scope="function"), so a failed commit still becomes the answer (a 4xx
    or a 503), and an endpoint that raised rolls everything back."""
    async with request.app.state.sessions() as session:
        yield session
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


async def authenticate(request: Request) -> None:
    """401 unless the request carries a live token; leaves the token's name and permissions in
    `request.state` (`token_name` records who did what)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    digest = hash_token(token.strip())
    cache: TokenCache = request.app.state.token_cache
    known = cache.get(digest)
    if known is None:
        async with request.app.state.sessions() as session:
            known = (await session.execute(
                select(ApiToken.name, ApiToken.permissions)
                .where(ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None))
            )).first()
        if known is None:
            raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        cache.put(digest, *known)
    request.state.token_name, request.state.token_permissions = known
    request.state.token_sha256 = digest  # who the caller is, unique (a name may be given twice)


class TokenFirstRoute(APIRoute):
    """A route that authenticates its caller before FastAPI reads the request body: without a valid
    token the answer is 401 whatever the body (SPEC section 5), never a 422 about a body the caller
    may not send. A dependency cannot do this, because FastAPI parses the body before it solves any."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def authenticated_first(request: Request) -> Response:
            await authenticate(request)
            return await handle(request)

        return authenticated_first


def require(permission: Permission):
    """A dependency that admits only a token carrying `permission` (403 otherwise); the token was
    authenticated by `TokenFirstRoute` before the body was read."""

    async def check(
        request: Request,
        # Unused here: it declares the bearer scheme in the OpenAPI document.
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if permission.value not in request.state.token_permissions:
            raise HTTPException(403, f"this token lacks the '{permission.value}' permission")

    return check


def api_router(prefix: str, tags: list[str], permission: Permission) -> APIRouter:
    """A router of JSON API calls, each needing a live token (401 before the body is read) that
    carries `permission` (403)."""
    return APIRouter(prefix=prefix, tags=tags, dependencies=[Depends(require(permission))],
                     route_class=TokenFirstRoute)
