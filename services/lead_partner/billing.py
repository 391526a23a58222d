"""The lead partner's payables (SPEC section 12): the statements its outsourcings ended with, invoiced by
the partner or not yet, newest settled first, with what it owes each partner per currency; as the JSON
API, a CSV file and the Billing page."""
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.lead_partner.models import Outsourcing
from services.lead_partner.pages import NAV
from shared.domain import billing, statements
from shared.domain.statements import Statement
from shared.domain.tickets.models import Ticket
from shared.partner_pages import PAGE_ROWS, need, ui
from shared.platform import csv_export, paging
from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.webui import ViewerDep

router = api_router("/api/billing", ["billing"], Permission.OUTSOURCING)
pages = APIRouter(include_in_schema=False)

FILTERS = [("false", "Open"), ("true", "Invoiced"), ("", "All")]  # the page's ?invoiced=


class PayableOut(BaseModel):
    link_id: str
    partner_id: str
    partner: str = Field(description="the insourcing partner's name")
    partner_ticket_number: str | None
    ticket_id: str = Field(description="this lead's ticket")
    ticket_number: str
    title: str
    statement_version: int
    statement_sha256: str
    settled: Literal["approved", "completed"]
    settled_at: datetime
    currency: str | None
    labor: str = Field(description="a decimal string with two places, as every amount")
    charges: str
    total: str
    invoice_number: str | None = Field(description="the partner's invoice, once it invoiced the statement")
    invoiced_at: datetime | None


class PayablesTotalOut(BaseModel):
    partner_id: str
    partner: str
    currency: str | None
    count: int
    total: str = Field(description="the exact sum of the statements' totals, two places")
    invoiced: str = Field(description="the part of `total` the partner invoiced")
    open: str = Field(description="the part of `total` not invoiced yet")


class PayablesPage(paging.page_of(PayableOut, "PayablesItems")):
    totals: list[PayablesTotalOut] = Field(
        description="per partner and currency, over every statement that matches (not this page only)")


def _settled(invoiced: bool | None) -> tuple:
    """The statements outsourcings ended with; `invoiced`: only those the partner invoiced, or only the others."""
    where = (Statement.settled.is_not(None),)
    if invoiced is None:
        return where
    return (*where, Statement.invoice_number.is_not(None) if invoiced else Statement.invoice_number.is_(None))


def _item(statement: Statement, row: Outsourcing, ticket: Ticket) -> dict:
    return {"link_id": statement.link_id, "partner_id": row.partner_id, "partner": row.partner_name,
            "partner_ticket_number": row.partner_ticket_number, "ticket_id": ticket.id, "ticket_number": ticket.number,
            "title": ticket.title, **statements.figures(statement),
            "invoice_number": statement.invoice_number, "invoiced_at": statement.invoiced_at}


async def payables(session: AsyncSession, invoiced: bool | None, limit: int | None,
                   cursor: str | None = None) -> tuple[list[dict], str | None]:
    """A page of settled statements, newest settled first; `limit` None: every row."""
    query = (select(Statement, Outsourcing, Ticket)
             .join(Outsourcing, Outsourcing.link_id == Statement.link_id)
             .join(Ticket, Ticket.id == Outsourcing.ticket_id)
             .where(*_settled(invoiced)))
    return await statements.settled_page(session, query, limit, cursor, _item)


async def totals(session: AsyncSession, invoiced: bool | None) -> list[dict]:
    """What this lead owes each partner per currency, invoiced and open, summed exactly by the database."""
    owed = (select(Outsourcing.partner_id, Outsourcing.partner_name.label("partner"),
                   statements.CURRENCY.label("currency"), statements.TOTAL.label("total"),
                   Statement.invoice_number.is_not(None).label("invoiced"))
            .join(Outsourcing, Outsourcing.link_id == Statement.link_id).where(*_settled(invoiced)).subquery())
    groups = (select(owed.c.partner_id, owed.c.partner, owed.c.currency, func.count(), func.sum(owed.c.total),
                     func.coalesce(func.sum(owed.c.total).filter(owed.c.invoiced), 0),
                     func.coalesce(func.sum(owed.c.total).filter(~owed.c.invoiced), 0))
              .group_by(owed.c.partner_id, owed.c.partner, owed.c.currency)
              .order_by(owed.c.partner, owed.c.partner_id, owed.c.currency))
    return [{"partner_id": partner_id, "partner": partner, "currency": currency, "count": count,
             "total": billing.money(total), "invoiced": billing.money(Decimal(done)), "open": billing.money(Decimal(left))}
            for partner_id, partner, currency, count, total, done, left in (await session.execute(groups)).all()]


def _export(rows: list[dict]):
    """Amounts as Decimals: the CSV writes them as numbers, never guarded as text."""
    return csv_export.csv_response("payables", list(PayableOut.model_fields), statements.as_numbers(rows))


Invoiced = Annotated[bool | None, Query(description="true: only what the partner invoiced; false: only what it has not")]


@router.get("/payables", response_model=PayablesPage, responses=csv_export.responses("Payables"),
            summary="Payables: the statements outsourcings ended with, invoiced by the partner or not, newest settled"
                    " first, a page at a time, with the totals per partner and currency; or every one as CSV")
async def payables_list(session: SessionDep, invoiced: Invoiced = None, limit: paging.Limit = paging.PAGE_DEFAULT,
                        cursor: paging.Cursor = None, format: csv_export.Format = "json"):
    if format == "csv":
        return _export((await payables(session, invoiced, None))[0])
    items, next_cursor = await payables(session, invoiced, limit, cursor)
    return {"items": items, "next_cursor": next_cursor, "totals": await totals(session, invoiced)}


def _invoiced(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text)


@pages.get("/billing")
async def billing_page(request: Request, who: ViewerDep, session: SessionDep, invoiced: str = "", cursor: str = ""):
    need(who, "outsourcing")
    chosen = _invoiced(invoiced)
    rows, next_cursor = await payables(session, chosen, PAGE_ROWS, paging.cursor_or_none(cursor))
    query = "" if chosen is None else f"invoiced={invoiced}"
    return ui(request).render(
        request, "billing.html", who=who, nav=NAV, rows=rows, totals=await totals(session, chosen),
        next_cursor=next_cursor, heading="Billing: payables",
        intro="Work partners did that this lead approved or completed, and the partners' invoices for it.",
        partner_label="Partner", partner_field="partner", their_ticket_label="Partner ticket",
        their_ticket_field="partner_ticket_number", invoices=True, filters=FILTERS,
        chosen="" if chosen is None else invoiced, query=query)


@pages.get("/billing.csv")
async def billing_csv(who: ViewerDep, session: SessionDep, invoiced: str = ""):
    """The page's Export CSV: the API's CSV, with the page's session (the API takes bearer tokens only)."""
    need(who, "outsourcing")
    return _export((await payables(session, _invoiced(invoiced), None))[0])
