"""Composition root of the insourcing partner service."""
from fastapi import FastAPI

from services.insourcing_partner.endpoints import router
from services.insourcing_partner.received_work import Insourcing
from services.insourcing_partner.settings import InsourcingSettings
from shared.kafka import outbound_topic
from shared.partner import create_partner_app
from shared.sync import MirroringPolicy


def create_app(settings: InsourcingSettings | None = None) -> FastAPI:
    settings = settings or InsourcingSettings()
    insourcing = Insourcing(settings)
    return create_partner_app(
        "insourcing_partner",
        settings,
        link_field="insource",
        routers=[router],
        handler=insourcing.handle,
        policy=MirroringPolicy(insourcing.links, settings.partner_id, outbound_topic(settings.partner_id)),
        state={"insourcing": insourcing},
    )
