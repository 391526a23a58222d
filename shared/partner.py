"""What both partner services are made of: their settings, their ticket API and their messaging."""

from datetime import datetime
from typing import Any, ClassVar, Literal

from fastapi import APIRouter, Request
from prometheus_client import Gauge
from pydantic import BaseModel, Field, model_validator

from shared.domain.tickets.endpoints import ticket_router
from shared.domain import statements
from shared.domain.partner_sync import SyncWatch
from shared.partner_pages import TEMPLATES, PartnerPages, install_partner_pages
from shared.domain.tickets.schemas import MAX_ATTACHMENT_BYTES
from shared.domain.tickets.service import get_ticket
from shared.platform import bundle
from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.config import CommonSettings
from shared.platform.errors import NotFound
from shared.platform.kafka import inbound_topic, outbound_topic, partner_group
from shared.platform.notifications import NotificationSender, list_notifications
from shared.platform.runtime import ServiceSpec, create_app
from shared.platform.signing import Signatures
from shared.platform.webui import WebUi, install_web_ui

PARTNER_PERMISSIONS = [Permission.TICKETS, Permission.OUTSOURCING]


class PartnerSettings(CommonSettings):
    ROLE: ClassVar[bundle.Role]

    database_url: str
    port: int
    api_token: str | None = None
    notify_email: str
    partner_id: str
    partner_name: str
    mail_from: str | None = None  # default: "<partner name> <notifications@<partner id>.invalid>"
    # The keys this partner shares with the bridge ("key-id:secret", newest first), e.g. LEAD_SIGNING_KEYS.
    signing_keys: str | None = None
    # The hub's onboarding bundle: when given, it alone says where Kafka is, who this partner is there,
    # the CA to verify the broker against and the signing key (shared/platform/bundle.py).
    bundle_file: str | None = Field(None, validation_alias="PARTNER_BUNDLE_FILE")

    @model_validator(mode="after")
    def _from_bundle(self) -> "PartnerSettings":
        if self.bundle_file:
            given = bundle.load(self.bundle_file, self.ROLE)
            self.partner_id, self.signing_keys = given.partner_id, given.signing_keys
            if given.partner_name and "partner_name" not in self.model_fields_set:
                self.partner_name = given.partner_name
            self.kafka_bootstrap_servers = given.bootstrap_servers
            self.kafka_username, self.kafka_password = given.username, given.password
            self.kafka_ssl, self.kafka_ssl_cafile, self.kafka_ssl_cadata = False, None, given.ca_pem
        return self


class NotificationOut(BaseModel):
    id: int
    kind: str
    to: str
    subject: str
    body: str
    ticket_id: str | None
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None


class SyncHealthOut(BaseModel):
    link_id: str
    link_state: str = Field(description="the link's state as this side sees it: pending, active, suspended or terminated")
    status: str = Field(description="this side's Outsource Status or Insource Status of the link")
    partner_id: str
    in_sync: bool = Field(description="nothing waits for a receipt and the last reconciliation found no difference")
    last_sent_at: datetime | None
    last_received_at: datetime | None
    last_reconciled_at: datetime | None
    pending: int = Field(description="shared items (and deletions) waiting for the partner's receipt")
    delivered: int
    refused: int
    oldest_pending_at: datetime | None


sync_router = api_router("/api/tickets", ["sync"], Permission.TICKETS)


@sync_router.get("/{ticket_id}/sync", response_model=SyncHealthOut,
                 summary="The ticket's synchronization with its partner: receipts, last traffic, last reconciliation")
async def sync_health(ticket_id: str, request: Request, session: SessionDep):
    await get_ticket(session, ticket_id)
    health = await request.app.state.sync_policy.sync.health(session, ticket_id)
    if health is None:
        raise NotFound(f"ticket {ticket_id} was never linked to a partner: it has no synchronization")
    return health


class StatementOut(BaseModel):
    link_id: str
    version: int = Field(description="1 at the first Insource Complete, one more at each after a reject")
    sha256: str = Field(description="of the statement's canonical JSON (sorted keys, no whitespace, UTF-8): the same on"
                                    " both sides")
    statement: dict[str, Any] = Field(description="lines, totals, warnings, currency; every amount a decimal string")
    frozen_at: datetime
    settled: Literal["approved", "completed"] | None = Field(description=(
        "the link ended with this statement: approved by the lead, or completed (the lead's Complete at any"
        " time froze it from what had crossed); null while it waits"))
    settled_at: datetime | None
    invoice_number: str | None = Field(description="the insourcing partner's invoice for it, once invoiced")
    invoiced_at: datetime | None


@sync_router.get("/{ticket_id}/statement", response_model=StatementOut,
                 summary="The statement of the ticket's link (SPEC section 12): the one waiting for approval, or the one"
                         " the link ended with; the same statement and SHA-256 on both sides")
async def statement(ticket_id: str, request: Request, session: SessionDep):
    await get_ticket(session, ticket_id)
    link = await request.app.state.sync_policy.links.link_for_ticket(session, ticket_id)
    frozen = await statements.current(session, link.link_id) if link else None
    if frozen is None:
        raise NotFound(f"ticket {ticket_id} has no statement: none was frozen by an Insource Complete or a Complete yet")
    return frozen.as_json()


notifications_router = api_router("/api", ["notifications"], Permission.OUTSOURCING)


@notifications_router.get("/notifications", response_model=list[NotificationOut],
                          summary="E-mail notifications this side sent (or is still sending), newest first")
async def notifications(session: SessionDep):
    return await list_notifications(session)


def create_partner_app(name: str, settings: PartnerSettings, link_field: str, routers, handler, policy, state,
                       pages: PartnerPages, page_routers: list[APIRouter], background=()):
    """`background`: the service's own jobs, each called with the app once its sessions exist."""
    ring = settings.key_ring(settings.signing_keys, "signing_keys")
    watch = SyncWatch(policy.sync, settings.reconcile_interval_s)
    spec = ServiceSpec(
        name=name,
        settings=settings,
        routers=[ticket_router(link_field), sync_router, notifications_router, *routers],
        token_permissions=PARTNER_PERMISSIONS,
        operator_permission=Permission.OUTSOURCING,
        # A partner writes only its outbound topic and reads only its inbound topic.
        topics_to_create=[outbound_topic(settings.partner_id), inbound_topic(settings.partner_id)],
        inbound_topics=[inbound_topic(settings.partner_id)],
        group_id=partner_group(settings.partner_id),  # its own, as its topics: partners share a hub's Kafka
        handler=handler,
        together=policy.together(),  # mirrors and receipts that come together, set-based (issue 30)
        max_body_bytes=MAX_ATTACHMENT_BYTES + 256 * 1024,  # room for the multipart envelope around a 10 MiB file
        signatures=Signatures.per_partner({settings.partner_id: ring}),
        state={"sync_policy": policy, **state},
        on_data_loss=watch.broker_lost_data,
        metrics=lambda registry: _sync_metrics(registry, watch),
        background=[lambda app: watch.attach(app.state.sessions).run(), lambda app: NotificationSender(
            app.state.sessions,
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.mail_from or f"{settings.partner_name} <notifications@{settings.partner_id}.invalid>",
            domain=f"{settings.partner_id}.invalid",
        ).run(), *background],
    )
    app = create_app(spec)
    # The agents' web UI (SPEC section 8), next to the JSON API.
    install_web_ui(app, WebUi(settings.partner_name, [TEMPLATES], settings.ui_secret), home="/tickets")
    install_partner_pages(app, pages, page_routers)
    return app


def _sync_metrics(registry, watch: SyncWatch) -> None:
    Gauge("sync_items_pending", "shared items and deletions waiting for the partner's receipt",
          registry=registry).set_function(lambda: watch.pending_items)
    Gauge("sync_oldest_pending_age_seconds", "age of the oldest item waiting for its receipt",
          registry=registry).set_function(lambda: watch.oldest_pending_age)
    Gauge("sync_reconcile_requests_total", "reconciliations this replica asked the bridge for",
          registry=registry).set_function(lambda: watch.requests_total)
