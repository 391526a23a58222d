"""Composition root of the sync bridge."""
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import Gauge

from services.sync_bridge import pages
from services.sync_bridge.bridge import Bridge
from services.sync_bridge.kept_manifests import Counts
from services.sync_bridge.directory import Directory, secret_box
from services.sync_bridge.endpoints import router
from services.sync_bridge.onboarding import Hub
from services.sync_bridge.partners_api import router as partners_router
from services.sync_bridge.reconciliation import Scheduler
from services.sync_bridge.settings import BridgeSettings
from services.sync_bridge.asyncapi import document as asyncapi_document
from shared.platform.auth import Permission
from shared.platform.runtime import ServiceSpec
from shared.platform.runtime import create_app as create_service_app
from shared.platform.webui import WebUi, install_web_ui


def directory_of(settings: BridgeSettings) -> Directory:
    """The configured partners (BRIDGE_PARTNERS, their keys in BRIDGE_SIGNING_KEYS); the onboarded ones
    are loaded from the database."""
    configured = {
        pid: (role, name, settings.key_ring(settings.signing_keys.get(pid), f"signing_keys (for {pid})"))
        for pid, (role, name) in settings.configured_partners().items()
    }
    return Directory(configured, secret_box(settings.secret_key))


def create_app(settings: BridgeSettings | None = None) -> FastAPI:
    settings = settings or BridgeSettings()
    directory = directory_of(settings)
    bridge = Bridge(directory)
    scheduler = Scheduler(settings.reconcile_interval_s)

    async def load_directory(app: FastAPI) -> None:
        async with app.state.sessions() as session:
            await directory.load(session)

    app = create_service_app(
        ServiceSpec(
            name="sync_bridge",
            settings=settings,
            routers=[router, partners_router],
            token_permissions=[Permission.LINKS, Permission.PARTNERS],
            operator_permission=Permission.LINKS,
            topics_to_create=directory.topics,
            inbound_topics=directory.outbound_topics,
            handler=bridge.handle,
            together=bridge.together(),  # new items and receipts that come together, set-based (issue 30)
            signatures=directory,
            state={"scheduler": scheduler, "directory": directory},
            before_messaging=load_directory,
            make_topics=lambda app: app.state.hub.restore_kafka(),
            background=[lambda app: scheduler.attach(app.state.sessions).run(),
                        lambda app: directory.follow(app.state.sessions, settings.database_url)],
            on_data_loss=scheduler.broker_lost_data,
            metrics=lambda registry: _reconcile_metrics(registry, scheduler),
            splits=False,
        )
    )
    # A partner onboarded or removed (here, by another replica, or on the command line) is read at once.
    directory.on_change(lambda: getattr(app.state, "consumer", None) and app.state.consumer.follow(
        directory.outbound_topics()))
    app.state.hub = Hub(settings, lambda: app.state.sessions(), directory, secret_box(settings.secret_key))
    # The operator's web UI (SPEC section 8): links, Reconcile now, dead letters.
    install_web_ui(app, WebUi("Sync bridge", [pages.TEMPLATES], settings.ui_secret), home="/links")
    app.include_router(pages.router)

    @app.get("/asyncapi.json", tags=["contracts"], summary="The Kafka interface, as an AsyncAPI 3.0 document",
             description="What a partner's service sends and receives (docs/asyncapi.yaml); needs no token.")
    async def asyncapi() -> JSONResponse:
        return JSONResponse(asyncapi_document())

    return app


def _reconcile_metrics(registry, scheduler: Scheduler) -> None:
    Gauge("reconcile_rounds_started_total", "reconciliation rounds the scheduler started",
          registry=registry).set_function(lambda: scheduler.rounds_total)
    Gauge("sync_repairs_total", "differences reconciliation repaired, over all links (as of its last check)",
          registry=registry).set_function(lambda: scheduler.repairs_total)
    answers = Gauge("reconcile_answers_total", "partners' answers to reconciliation rounds, by what they described:"
                    " what changed since the last kept answer, everything, or a kept answer that did not add up"
                    " (then both sides are asked for everything)", ["described"], registry=registry)
    for described, count in (("changes", lambda: Counts.incremental), ("everything", lambda: Counts.whole),
                             ("dropped", lambda: Counts.dropped)):
        answers.labels(described).set_function(count)
