"""The insourcing partner's receivables (SPEC section 12): the statements its work ended with that it
has not invoiced yet, newest settled first, with what each lead partner owes per currency; as the JSON
API, a CSV file and the Billing page."""
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.insourcing_partner.models import ReceivedWork
from services.insourcing_partner.pages import NAV
from shared.domain import billing, statements
from shared.domain.statements import Statement
from shared.domain.tickets.models import Ticket
from shared.partner_pages import PAGE_ROWS, need, ui
from shared.platform import csv_export, paging
from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.errors import DomainError
from shared.platform.webui import ChangeDep, ViewerDep

router = api_router("/api/billing", ["billing"], Permission.OUTSOURCING)
pages = APIRouter(include_in_schema=False)

# Not invoiced yet: the statement the link ended with (settled), with no invoice number.
OWED = (Statement.settled.is_not(None), Statement.invoice_number.is_(None))


class ReceivableOut(BaseModel):
    link_id: str
    lead_partner_id: str
    lead_partner: str = Field(description="the lead partner's name")
    lead_ticket_number: str
    ticket_id: str | None = Field(description="this partner's ticket of the work")
    ticket_number: str | None
    title: str
    statement_version: int
    statement_sha256: str
    settled: Literal["approved", "completed"]
    settled_at: datetime
    currency: str | None
    labor: str = Field(description="a decimal string with two places, as every amount")
    charges: str
    total: str


class ReceivablesTotalOut(BaseModel):
    lead_partner_id: str
    lead_partner: str
    currency: str | None
    count: int
    total: str = Field(description="the exact sum of the statements' totals, two places")


class ReceivablesPage(paging.page_of(ReceivableOut, "ReceivablesItems")):
    totals: list[ReceivablesTotalOut] = Field(
        description="per lead partner and currency, over every statement not invoiced (not this page only)")


def _owed():
    return (select(Statement, ReceivedWork, Ticket)
            .join(ReceivedWork, ReceivedWork.link_id == Statement.link_id)
            .outerjoin(Ticket, Ticket.id == ReceivedWork.ticket_id)
            .where(*OWED))


def _item(statement: Statement, work: ReceivedWork, ticket: Ticket | None) -> dict:
    return {"link_id": statement.link_id, "lead_partner_id": work.lead_partner_id, "lead_partner": work.lead_partner_name,
            "lead_ticket_number": work.lead_ticket_number, "ticket_id": work.ticket_id,
            "ticket_number": ticket.number if ticket else None, "title": ticket.title if ticket else work.title,
            **statements.figures(statement)}


async def receivables(session: AsyncSession, limit: int | None, cursor: str | None = None) -> tuple[list[dict], str | None]:
    """A page of what is not invoiced yet, newest settled first; `limit` None: every row."""
    return await statements.settled_page(session, _owed(), limit, cursor, _item)


async def totals(session: AsyncSession) -> list[dict]:
    """What each lead partner owes per currency, summed exactly by the database."""
    owed = (select(ReceivedWork.lead_partner_id.label("partner_id"), ReceivedWork.lead_partner_name.label("partner"),
                   statements.CURRENCY.label("currency"), statements.TOTAL.label("total"))
            .join(ReceivedWork, ReceivedWork.link_id == Statement.link_id).where(*OWED).subquery())
    groups = (select(owed.c.partner_id, owed.c.partner, owed.c.currency, func.count(), func.sum(owed.c.total))
              .group_by(owed.c.partner_id, owed.c.partner, owed.c.currency)
              .order_by(owed.c.partner, owed.c.partner_id, owed.c.currency))
    return [{"lead_partner_id": partner_id, "lead_partner": partner, "currency": currency, "count": count,
             "total": billing.money(total)}
            for partner_id, partner, currency, count, total in (await session.execute(groups)).all()]


def _export(rows: list[dict]):
    """Amounts as Decimals: the CSV writes them as numbers, never guarded as text."""
    return csv_export.csv_response("receivables", list(ReceivableOut.model_fields), statements.as_numbers(rows))


@router.get("/receivables", response_model=ReceivablesPage, responses=csv_export.responses("Receivables"),
            summary="Receivables: the statements work ended with that are not invoiced yet, newest settled first, a page"
                    " at a time, with the totals per lead partner and currency; or every one as CSV")
async def receivables_list(session: SessionDep, limit: paging.Limit = paging.PAGE_DEFAULT,
                           cursor: paging.Cursor = None, format: csv_export.Format = "json"):
    if format == "csv":
        return _export((await receivables(session, None))[0])
    items, next_cursor = await receivables(session, limit, cursor)
    return {"items": items, "next_cursor": next_cursor, "totals": await totals(session)}


@pages.get("/billing")
async def billing_page(request: Request, who: ViewerDep, session: SessionDep, cursor: str = ""):
    need(who, "outsourcing")
    return await _page(request, who, session, cursor)


async def _page(request: Request, who, session: AsyncSession, cursor: str = "", error: str | None = None,
                status_code: int = 200):
    rows, next_cursor = await receivables(session, PAGE_ROWS, paging.cursor_or_none(cursor))
    return ui(request).render(
        request, "billing.html", status_code=status_code, who=who, nav=NAV, rows=rows, totals=await totals(session),
        next_cursor=next_cursor, error=error, may_invoice=True,
        heading="Billing: receivables", intro="Work the lead partner approved or completed, not invoiced yet.",
        partner_label="Lead partner", partner_field="lead_partner", their_ticket_label="Lead ticket",
        their_ticket_field="lead_ticket_number", invoices=False, filters=[], chosen="", query="")


@pages.get("/billing.csv")
async def billing_csv(who: ViewerDep, session: SessionDep):
    """The page's Export CSV: the API's CSV, with the page's session (the API takes bearer tokens only)."""
    need(who, "outsourcing")
    return _export((await receivables(session, None))[0])


@pages.post("/billing/{link_id}/invoice")
async def invoice_from_page(request: Request, link_id: str, who: ChangeDep, session: SessionDep):
    """The row's Mark invoiced: the same rules as POST /api/received-work/{link_id}/invoice."""
    need(who, "outsourcing")
    number = str((await request.form()).get("invoice_number", "")).strip()
    if not number or len(number) > 64 or any(ord(c) < 32 or ord(c) == 127 for c in number):
        return await _page(request, who, session, error="an invoice number is 1 to 64 printable characters",
                           status_code=422)
    try:
        await request.app.state.insourcing.invoice(session, link_id, number)
    except DomainError as exc:
        return await _page(request, who, session, error=exc.detail, status_code=exc.status_code)
    return RedirectResponse("/billing", status_code=303)
