"""The composition root every service uses: engine and sessions, the operator's token, the outbox
relay and the inbox consumer as background tasks, and the common HTTP endpoints (dead letters too)."""
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI
from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential

from shared.contracts.envelope import Payload
from shared.platform import memory
from shared.platform.api_docs import install_api_docs
from shared.platform.auth import TOKENS_CHANNEL, Permission, TokenCache, ensure_token
from shared.platform.dead_letters import count_unresolved, dead_letter_router, prune
from shared.platform.db import asyncpg_dsn, make_engine, make_sessionmaker
from shared.platform.inbox import Handler, InboxConsumer, Together
from shared.platform.kafka import FALLBACK, ensure_topics, make_consumer, make_producer, probe_broker
from shared.platform.outbox import OutboxRelay
from shared.platform.signing import Signatures
from shared.platform.web import database_check, install_common, kafka_check

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 300.0  # how often dead-letter retention runs
COUNT_EVERY_S = 15.0  # how often the unresolved dead letters are counted for the metric


@dataclass
class ServiceSpec:
    name: str  # e.g. "lead_partner"; also the consumer group and the relay's lock key seed
    settings: Any  # a CommonSettings subclass with database_url, api_token, port
    routers: list[APIRouter]
    token_permissions: list[Permission]
    operator_permission: Permission  # what a token needs to see and resolve the service's dead letters
    # The topics it makes and reads: a list, or a function of the moment (the bridge's partner directory).
    topics_to_create: list[str] | Callable[[], list[str]]
    inbound_topics: list[str] | Callable[[], list[str]]
    handler: Handler
    signatures: Signatures  # the key ring of each topic the service writes or reads
    # Message types applied set-based when several follow each other in a batch (`inbox.Together`).
    together: dict[type[Payload], Together] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # extra app.state values (e.g. the sync policy)
    max_body_bytes: int = 1024 * 1024  # a request body over this is refused (413) before it is read
    background: list[Callable[[FastAPI], Awaitable[None]]] = field(default_factory=list)
    # Told (with the topic) when a consumer sees the broker lost data: reconciliation starts at once.
    on_data_loss: Callable[[str], None] | None = None
    metrics: Callable[[Any], None] | None = None  # adds the service's own gauges to its registry
    group_id: str | None = None  # the consumer group; default `name`
    # Makes what the service's topics need, instead of creating `topics_to_create` (the bridge: users
    # and ACLs too, after a broker lost its metadata).
    make_topics: Callable[[FastAPI], Awaitable[None]] | None = None
    # Run (and retried, like the broker's probe) before the relay and the consumer start.
    before_messaging: Callable[[FastAPI], Awaitable[None]] | None = None
    # Whether it may run as an API process and a worker beside it (`serve --api-only`, `worker`). The
    # bridge may not: its operator's API shows its consumer's backlog and its directory in process.
    splits: bool = True

    def topics(self, which: list[str] | Callable[[], list[str]]) -> list[str]:
        return which() if callable(which) else list(which)


def _lock_key(name: str) -> int:
    return int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "big") & 0x7FFF_FFFF_FFFF_FFFF


def create_app(spec: ServiceSpec) -> FastAPI:
    settings = spec.settings
    # An API process alone (`serve --api-only`) runs no relay, consumer or job: its worker does, and
    # picks its writes up from the outbox (NOTIFY crosses processes).
    if settings.process != "all" and not spec.splits:
        raise SystemExit(f"{spec.name} runs as one process (`serve`): its API shows what its consumer and jobs "
                         f"hold in process, so it cannot be an API process with a worker beside it")
    messaging_here = settings.process != "api"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.database_url, pool_size=settings.database_pool_size,
                             max_overflow=settings.database_max_overflow)
        sessions = make_sessionmaker(engine)
        app.state.engine = engine
        app.state.sessions = sessions
        app.state.settings = settings
        app.state.token_cache = TokenCache()
        for key, value in spec.state.items():
            setattr(app.state, key, value)
        if settings.api_token:
            async with sessions() as session, session.begin():
                await ensure_token(session, "operator (from environment)", settings.api_token, spec.token_permissions)

        access = settings.kafka_access()
        replication = settings.replication()  # refuses to start with more in sync than replicas
        app.state.broker = FALLBACK  # until the broker has been asked what it is

        async def make_topics() -> None:
            """Topics lost with a broker's data, or deleted, are made again before they are used."""
            if spec.make_topics is not None:
                await spec.make_topics(app)
            else:
                await ensure_topics(access, spec.topics(spec.topics_to_create), settings.kafka_topic_partitions,
                                    replication=replication)
        relay = OutboxRelay(
            settings.database_url,
            lambda: make_producer(access, app.state.broker),
            lock_key=_lock_key(spec.name),
            signatures=spec.signatures,
            prepare=make_topics,
        )
        def make_inbox_consumer(listener):
            topics = spec.topics(spec.inbound_topics)
            if not topics:
                return None  # a bridge that serves no partner yet: made once its directory names one
            return make_consumer(access, group_id=spec.group_id or spec.name, topics=topics,
                                 session_timeout_ms=settings.kafka_session_timeout_ms, profile=app.state.broker,
                                 listener=listener)

        consumer = InboxConsumer(
            sessions,
            make_inbox_consumer,
            spec.handler,
            name=spec.name,
            signatures=spec.signatures,
            on_data_loss=spec.on_data_loss,
            prepare=make_topics,
            together=spec.together,
        )
        app.state.relay = relay
        app.state.consumer = consumer  # in an API process too: a dead letter is replayed through it
        _install_pool_metrics(app)
        if messaging_here:  # an API process's would read 0: its worker's /metrics has them
            _install_messaging_metrics(app, relay, consumer)

        async def messaging() -> None:
            async for attempt in AsyncRetrying(
                wait=wait_exponential(min=0.2, max=5), retry=retry_if_exception_type(Exception),
                before_sleep=before_sleep_log(log, logging.WARNING),
            ):
                with attempt:
                    if spec.before_messaging is not None:
                        await spec.before_messaging(app)
                    app.state.broker = await probe_broker(access)
                    await make_topics()
            profile = app.state.broker
            log.info("Kafka at %s as %s: %s (idempotent producer %s, fetch wait %d ms)", access.bootstrap,
                     access.username or "no SASL user", profile.name, "on" if profile.idempotent else "off",
                     profile.fetch_max_wait_ms)
            await asyncio.gather(relay.run(), consumer.run())

        app.state.unresolved_letters = 0
        listener = asyncio.create_task(
            listen_for_revocations(settings.database_url, app.state.token_cache), name="token-revocations"
        )
        others = [asyncio.create_task(memory.keep_trimmed(), name="memory-trim")]
        if messaging_here:
            # Work that does not need Kafka (e.g. sending mail) starts without waiting for it.
            others += [asyncio.create_task(_prune_dead_letters(app, sessions, settings), name="dead-letter-retention"),
                       *(asyncio.create_task(job(app)) for job in spec.background),
                       asyncio.create_task(messaging(), name=f"{spec.name}-messaging")]
        try:
            yield
        finally:
            for running in (listener, *others):
                running.cancel()
            await asyncio.gather(listener, *others, return_exceptions=True)
            await engine.dispose()

    app = FastAPI(
        title=spec.name.replace("_", " ").title(),
        lifespan=lifespan,
        description="Partner ticket outsourcing with synchronized tickets. Every /api call needs a bearer token.",
        docs_url=None,  # served by install_api_docs from the service's own files, not from a CDN
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    install_api_docs(app)
    for router in (*spec.routers, dead_letter_router(spec.operator_permission)):
        app.include_router(router)
    app.state.spec = spec  # the command line replays dead letters with its handler and key rings
    checks = [lambda: database_check(app.state.engine)()]
    if messaging_here:  # an API alone needs its database only: what it writes waits in the outbox
        checks += [kafka_check(settings.kafka_access()), consumer_check(app)]
    app.state.metrics_registry = install_common(app, spec.name, checks, spec.max_body_bytes)
    if spec.metrics is not None and messaging_here:  # the service's gauges are its jobs'
        spec.metrics(app.state.metrics_registry)
    return app


def _install_pool_metrics(app: FastAPI) -> None:
    registry = app.state.metrics_registry
    pool = app.state.engine.sync_engine.pool_use
    Gauge("db_pool_connections_in_use", "connections of the database pool in use now", registry=registry
          ).set_function(lambda: pool.in_use)
    Gauge("db_pool_connections_peak", "the most connections of the database pool in use at once since the start "
          "(of DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW)", registry=registry).set_function(lambda: pool.peak)


def _install_messaging_metrics(app: FastAPI, relay: OutboxRelay, consumer: InboxConsumer) -> None:
    registry = app.state.metrics_registry
    Gauge("outbox_published_total", "events published by this replica", registry=registry).set_function(
        lambda: relay.published_total
    )
    Gauge("outbox_relay_leader", "1 when this replica's relay holds the lock", registry=registry).set_function(
        lambda: int(relay.is_leader)
    )
    Gauge("inbox_applied_total", "events applied", registry=registry).set_function(lambda: consumer.applied_total)
    Gauge("inbox_broker_data_losses_total", "times a partition showed the broker lost data (a fetch outside what "
          "was applied and committed, or a partition ending before it); never a replay", registry=registry
          ).set_function(lambda: consumer.data_losses_total)
    Gauge("inbox_duplicates_total", "redelivered events skipped", registry=registry).set_function(
        lambda: consumer.duplicates_total
    )
    Gauge("inbox_batches_split_total", "batches that failed as one transaction (a message refused or parked, a "
          "lost race) and were applied one message at a time", registry=registry).set_function(
        lambda: consumer.batches_split_total)
    Gauge("dead_letters_total", "records parked (stored as dead letters) by this replica", registry=registry
          ).set_function(lambda: consumer.parked_total)
    Gauge("dead_letters_unresolved", "dead letters no operator has replayed or discarded (as of the last "
          "retention pass)", registry=registry).set_function(lambda: app.state.unresolved_letters)
    Gauge("dead_letters_park_failures_total", "records the database did not take as dead letters "
          "(their partition is held at them)", registry=registry).set_function(lambda: consumer.park_failures_total)
    Gauge("inbox_held_partitions", "partitions held at a record that cannot be parked", registry=registry
          ).set_function(lambda: len(consumer.held))
    Gauge("inbox_consumer_restarts_total", "times this replica's consumer failed and was started again",
          registry=registry).set_function(lambda: consumer.restarts_total)
    registry.register(_LagCollector(consumer))


def consumer_check(app: FastAPI) -> Callable[[], Awaitable[str | None]]:
    """/readyz names a consumer that cannot apply what waits for it (see InboxConsumer.problems)."""
    async def check() -> str | None:
        consumer = getattr(app.state, "consumer", None)
        problems = consumer.problems() if consumer is not None else []
        return "; ".join(problems) or None

    return check


async def _prune_dead_letters(app: FastAPI, sessions, settings) -> None:
    """Dead-letter retention (settings DEAD_LETTER_MAX_COUNT, DEAD_LETTER_MAX_AGE_DAYS) every
    PRUNE_EVERY_S, and the count of unresolved ones for the metric every COUNT_EVERY_S."""
    max_age = timedelta(days=settings.dead_letter_max_age_days)
    next_prune = time.monotonic()
    while True:
        try:
            async with sessions() as session, session.begin():
                pruning = time.monotonic() >= next_prune
                if pruning:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    if gone := await prune(session, settings.dead_letter_max_count, max_age):
                        log.info("dead-letter retention deleted %d resolved dead letters", gone)
                app.state.unresolved_letters = await count_unresolved(session)
            if pruning and app.state.unresolved_letters > settings.dead_letter_max_count:
                log.warning("%d dead letters are unresolved, more than DEAD_LETTER_MAX_COUNT=%d: they are kept "
                            "until an operator replays or discards them", app.state.unresolved_letters,
                            settings.dead_letter_max_count)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("dead-letter retention failed; trying again later", exc_info=True)
        await asyncio.sleep(COUNT_EVERY_S)


class _LagCollector:
    """`inbox_lag_messages{topic, partition}`: what the broker holds that this replica has not applied
    yet, for each partition it reads."""

    def __init__(self, consumer: InboxConsumer):
        self.consumer = consumer

    def collect(self):
        family = GaugeMetricFamily("inbox_lag_messages", "records on the broker not applied yet, per partition read",
                                   labels=["topic", "partition"])
        for tp, lag in sorted(self.consumer.lag.items()):
            family.add_metric([tp.topic, str(tp.partition)], lag)
        yield family


async def listen_for_revocations(database_url: str, cache: TokenCache) -> None:
    """Empties the token cache whenever any process revokes a token (and on every reconnect, since
    a notification may have been missed meanwhile)."""
    while True:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                await conn.add_listener(TOKENS_CHANNEL, cache.clear)
                cache.clear()
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
            finally:
                await conn.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("token revocation listener lost its connection; reconnecting", exc_info=True)
            cache.clear()
            await asyncio.sleep(1.0)
