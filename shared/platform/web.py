"""The HTTP shell every service shares: health, readiness, Prometheus metrics, and errors that
name the problem (4xx for bad input, never a 500)."""
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.platform.errors import DomainError, size_in_words
from shared.platform.kafka import KafkaAccess, bootstrap_addresses, probe_context, unreachable_brokers
from shared.platform.openapi import ErrorOut, FieldError, install_openapi

log = logging.getLogger(__name__)
HTTP_METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]



def install_common(app: FastAPI, service_name: str, ready_checks: list[Callable[[], Awaitable[str | None]]],
                   max_body_bytes: int) -> CollectorRegistry:
    """Adds /healthz, /readyz, /metrics and the error handlers. Each ready check returns None when
    fine, or a sentence saying what is not."""
    registry = CollectorRegistry()
    requests = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
        buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )

    app.add_middleware(_Measure, requests=requests, latency=latency, max_body_bytes=max_body_bytes)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:
            # FastAPI makes one route per method, and Starlette's 405 names only the first one's.
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [_field_error(error) for error in exc.errors()]
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return JSONResponse(ErrorOut(detail=summary, errors=errors).model_dump(), status_code=422)

    @app.exception_handler(DBAPIError)
    async def database_refused(request: Request, exc: DBAPIError):
        # Input that slipped past validation (e.g. a NUL byte in text) must not become a 500.
        sqlstate = str(getattr(exc.orig, "sqlstate", "") or "")
        if sqlstate in COLLISIONS:
            log.warning("a request collided with another transaction: %s", exc.orig)
            return JSONResponse({"detail": "this change collided with another one being saved at the same moment;"
                                           " nothing was saved; try again"},
                                status_code=503, headers={"Retry-After": "1"})
        if not (isinstance(exc, (DataError, IntegrityError)) or sqlstate[:2] in ("22", "23")):
            log.warning("database unavailable: %r", exc.orig)
            return database_away()
        log.warning("database refused a request: %s", exc.orig)
        return JSONResponse({"detail": f"the database refused this input: {str(exc.orig).splitlines()[0]}"}, status_code=400)

    @app.exception_handler(OSError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.CannotConnectNowError)
    @app.exception_handler(SATimeoutError)
    async def database_unreachable(request: Request, exc: Exception):
        # The database is restarting or gone: the caller should come back, not see a 500.
        log.warning("database unreachable: %r", exc)
        return database_away()

    @app.get("/healthz", tags=["operations"], response_model=HealthOut, summary="The process is alive")
    async def healthz():
        return {"status": "ok", "service": service_name}

    @app.get("/readyz", tags=["operations"], response_model=ReadyOut,
             responses={503: {"model": ReadyOut, "description": "The database or Kafka is unreachable"}},
             summary="The database and Kafka are reachable")
    async def readyz():
        found = [p for p in [await check() for check in ready_checks] if p]
        problems = [p for p in found if not isinstance(p, Degraded)]
        body = {"status": "ready" if not problems else "not ready", "service": service_name, "problems": problems,
                "degraded": [str(p) for p in found if isinstance(p, Degraded)]}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse, summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "The Prometheus text format"}})
    async def metrics():
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    install_openapi(app)
    return registry


class HealthOut(BaseModel):
    status: str
    service: str


class ReadyOut(BaseModel):
    status: str = Field(description='"ready" or "not ready"')
    service: str
    problems: list[str] = Field(description="what is unreachable, in words")
    degraded: list[str] = Field(default_factory=list, description=(
        "what is unreachable but not needed to serve, in words: a broker of a Kafka cluster the others stand in for"))


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route answers on this path, each asked as if the request had used it."""
    asked = {"type": "http", "path": request.scope["path"], "root_path": request.scope.get("root_path", ""),
             "headers": []}
    return [method for method in HTTP_METHODS
            if any(route.matches({**asked, "method": method})[0] == Match.FULL for route in request.app.router.routes)]


def _field_error(error: dict) -> FieldError:
    loc = error.get("loc", ())
    if error.get("type") == "json_invalid":
        where = f"body (position {loc[-1]})" if len(loc) > 1 else "body"
    else:
        where = ".".join(str(part) for part in loc if part != "body") or "body"
    return FieldError(field=where, message=error.get("msg", "invalid"), type=error.get("type", "invalid"))


COLLISIONS = ("40P01", "40001")  # deadlock detected, serialization failure: the same request can succeed again


def database_away() -> JSONResponse:
    return JSONResponse({"detail": "the database is unavailable or busy; try again"},
                        status_code=503, headers={"Retry-After": "2"})


def database_check(engine) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database unreachable: {exc.__class__.__name__}"
        return None

    return check


class Degraded(str):
    """What a ready check notes without making the service unready: it still serves."""


def kafka_check(access: KafkaAccess) -> Callable[[], Awaitable[str | None]]:
    """Unready when no broker of the bootstrap list answers; ready, naming them, when some do not (a
    cluster serves on with one broker lost, SPEC section 13)."""
    context, addresses = probe_context(access), bootstrap_addresses(access.bootstrap)

    async def check() -> str | None:
        gone = await unreachable_brokers(access, context)
        if len(gone) == len(addresses):
            return f"Kafka unreachable at {access.bootstrap}"
        if gone:
            return Degraded(f"Kafka broker{'s' if len(gone) > 1 else ''} {', '.join(gone)} unreachable; the cluster"
                            f" serves through {', '.join(a for a in addresses if a not in gone)}")
        return None

    return check


class _Measure:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path): holds every request body
    to the service's limit, and records request counts and latency per route."""

    def __init__(self, app, requests: Counter, latency: Histogram, max_body_bytes: int):
        self.app, self.requests, self.latency, self.max_body_bytes = app, requests, latency, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            response = JSONResponse(
                {"detail": f"the request body of {int(length)} bytes is over this service's limit of "
                           f"{size_in_words(self.max_body_bytes)}; nothing was read or stored"},
                status_code=413, headers={"Connection": "close"},
            )
            return await response(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        body = _LimitedBody(receive, self.max_body_bytes, headers)

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if body.unfinished:
                    # Answered before the body was read to its end (refused over the limit, or a route
                    # that reads none): uvicorn closes the connection after this answer, unread.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, body.receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], route, status["code"]).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


class _LimitedBody:
    """A request's `receive` that counts the body as it streams: a chunked body has no Content-Length
    to refuse it by, and was read whole before its 413 or 422 (a 200 MB note took the lead from 134 to
    1,012 MB). The read that passes the limit raises a 413 instead of returning (FastAPI lets an
    HTTPException from reading the body through to the handlers), and as the body is then unfinished the
    answer closes the connection: nothing more is read."""

    def __init__(self, receive, limit: int, headers: dict[bytes, bytes]):
        self._receive, self.limit = receive, limit
        self.received = 0
        self.unfinished = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers

    async def receive(self):
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.unfinished = message.get("more_body", False)
            if self.received > self.limit:
                raise StarletteHTTPException(
                    413, detail=f"the request body is over this service's limit of {size_in_words(self.limit)};"
                                " nothing more was read and nothing was stored")
        return message
