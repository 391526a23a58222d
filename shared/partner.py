"""What both partner services are made of: their settings, their ticket API and their messaging."""

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from shared.domain.tickets.endpoints import ticket_router
from shared.domain.tickets.schemas import MAX_ATTACHMENT_BYTES
from shared.platform.auth import Permission, SessionDep, require
from shared.platform.config import CommonSettings
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.notifications import NotificationSender, list_notifications
from shared.platform.runtime import ServiceSpec, create_app
from shared.platform.signing import Signatures

PARTNER_PERMISSIONS = [Permission.TICKETS, Permission.OUTSOURCING]


class PartnerSettings(CommonSettings):
    database_url: str
    port: int
    api_token: str | None = None
    notify_email: str
    partner_id: str
    partner_name: str
    mail_from: str | None = None  # default: "<partner name> <notifications@<partner id>.invalid>"
    # The keys this partner shares with the bridge ("key-id:secret", newest first), e.g. LEAD_SIGNING_KEYS.
    signing_keys: str | None = None


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


notifications_router = APIRouter(
    prefix="/api", tags=["notifications"], dependencies=[Depends(require(Permission.OUTSOURCING))]
)


@notifications_router.get("/notifications", response_model=list[NotificationOut],
                          summary="E-mail notifications this side sent (or is still sending), newest first")
async def notifications(session: SessionDep):
    return await list_notifications(session)


def create_partner_app(name: str, settings: PartnerSettings, link_field: str, routers, handler, policy, state):
    ring = settings.key_ring(settings.signing_keys, "signing_keys")
    spec = ServiceSpec(
        name=name,
        settings=settings,
        routers=[ticket_router(link_field), notifications_router, *routers],
        token_permissions=PARTNER_PERMISSIONS,
        operator_permission=Permission.OUTSOURCING,
        # A partner writes only its outbound topic and reads only its inbound topic.
        topics_to_create=[outbound_topic(settings.partner_id), inbound_topic(settings.partner_id)],
        inbound_topics=[inbound_topic(settings.partner_id)],
        handler=handler,
        max_body_bytes=MAX_ATTACHMENT_BYTES + 256 * 1024,  # room for the multipart envelope around a 10 MiB file
        signatures=Signatures.per_partner({settings.partner_id: ring}),
        state={"sync_policy": policy, **state},
        background=[lambda app: NotificationSender(
            app.state.sessions,
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.mail_from or f"{settings.partner_name} <notifications@{settings.partner_id}.invalid>",
            domain=f"{settings.partner_id}.invalid",
        ).run()],
    )
    return create_app(spec)
