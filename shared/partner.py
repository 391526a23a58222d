"""What both partner services are made of: their settings, their ticket API and their messaging."""

from shared.auth import Permission
from shared.config import CommonSettings
from shared.kafka import inbound_topic, outbound_topic
from shared.runtime import ServiceSpec, create_app
from shared.tickets.endpoints import ticket_router

PARTNER_PERMISSIONS = [Permission.TICKETS, Permission.OUTSOURCING]


class PartnerSettings(CommonSettings):
    database_url: str
    port: int
    api_token: str | None = None
    notify_email: str
    partner_id: str
    partner_name: str


def create_partner_app(name: str, settings: PartnerSettings, link_field: str, routers, handler, policy, state):
    spec = ServiceSpec(
        name=name,
        settings=settings,
        routers=[ticket_router(link_field), *routers],
        token_permissions=PARTNER_PERMISSIONS,
        # A partner writes only its outbound topic and reads only its inbound topic.
        topics_to_create=[outbound_topic(settings.partner_id), inbound_topic(settings.partner_id)],
        inbound_topics=[inbound_topic(settings.partner_id)],
        handler=handler,
        state={"sync_policy": policy, **state},
    )
    return create_app(spec)
