"""Composition root of the sync bridge."""
from fastapi import FastAPI
from prometheus_client import Gauge

from services.sync_bridge import pages
from services.sync_bridge.bridge import Bridge
from services.sync_bridge.endpoints import router
from services.sync_bridge.reconciliation import Scheduler
from services.sync_bridge.settings import BridgeSettings
from shared.platform.auth import Permission
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.runtime import ServiceSpec
from shared.platform.runtime import create_app as create_service_app
from shared.platform.signing import Signatures
from shared.platform.webui import WebUi, install_web_ui


def create_app(settings: BridgeSettings | None = None) -> FastAPI:
    settings = settings or BridgeSettings()
    topics = [t for p in settings.partners for t in (outbound_topic(p), inbound_topic(p))]
    rings = {p: settings.key_ring(settings.signing_keys.get(p), f"signing_keys (for {p})") for p in settings.partners}
    scheduler = Scheduler(settings.reconcile_interval_s)
    app = create_service_app(
        ServiceSpec(
            name="sync_bridge",
            settings=settings,
            routers=[router],
            token_permissions=[Permission.LINKS],
            operator_permission=Permission.LINKS,
            topics_to_create=topics,
            inbound_topics=[outbound_topic(p) for p in settings.partners],
            handler=Bridge(settings.partners).handle,
            signatures=Signatures.per_partner(rings),
            state={"scheduler": scheduler},
            background=[lambda app: scheduler.attach(app.state.sessions).run()],
            on_data_loss=scheduler.broker_lost_data,
            metrics=lambda registry: _reconcile_metrics(registry, scheduler),
            relay_settle_s=0.0,  # its writers are its consumers: no caller waits for an answer
        )
    )
    # The operator's web UI (SPEC section 8): links, Reconcile now, dead letters.
    install_web_ui(app, WebUi("Sync bridge", [pages.TEMPLATES], settings.ui_secret), home="/links")
    app.include_router(pages.router)
    return app


def _reconcile_metrics(registry, scheduler: Scheduler) -> None:
    Gauge("reconcile_rounds_started_total", "reconciliation rounds the scheduler started",
          registry=registry).set_function(lambda: scheduler.rounds_total)
    Gauge("sync_repairs_total", "differences reconciliation repaired, over all links (as of its last check)",
          registry=registry).set_function(lambda: scheduler.repairs_total)
