"""Composition root of the insourcing partner service."""
from fastapi import FastAPI

from services.insourcing_partner import billing, pages
from services.insourcing_partner.endpoints import insource_router, router
from services.insourcing_partner.received_work import Insourcing
from services.insourcing_partner.settings import InsourcingSettings
from shared.partner import create_partner_app
from shared.partner_pages import PartnerPages


def create_app(settings: InsourcingSettings | None = None) -> FastAPI:
    settings = settings or InsourcingSettings()
    insourcing = Insourcing(settings)
    return create_partner_app(
        "insourcing_partner",
        settings,
        link_field="insource",
        routers=[router, insource_router, billing.router],
        handler=insourcing.handle,
        policy=insourcing.mirroring,
        pages=PartnerPages("insource", pages.panel, pages.NAV),
        page_routers=[pages.router, billing.pages],
        state={"insourcing": insourcing},
    )
