"""Composition root of the lead partner service."""
from fastapi import FastAPI

from services.lead_partner import billing, pages
from services.lead_partner.endpoints import router
from services.lead_partner.outsourcing import LeadOutsourcing
from services.lead_partner.settings import LeadSettings
from shared.partner import create_partner_app
from shared.partner_pages import PartnerPages


def create_app(settings: LeadSettings | None = None) -> FastAPI:
    settings = settings or LeadSettings()
    outsourcing = LeadOutsourcing(settings)
    return create_partner_app(
        "lead_partner",
        settings,
        link_field="outsource",
        routers=[router, billing.router],
        handler=outsourcing.handle,
        policy=outsourcing.mirroring,
        pages=PartnerPages("outsource", pages.panel, pages.NAV),
        page_routers=[pages.router, billing.pages],
        state={"outsourcing": outsourcing},
        # At each start, one directory.requested: a lead with a fresh database learns its partners.
        background=[lambda app: outsourcing.directory.ask_at_start(app.state.sessions)],
    )
