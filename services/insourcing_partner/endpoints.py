"""The insourcing partner's API for received work: the Received Work dashboard, accept, decline."""
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.money import TermsOut
from shared.domain.tickets.schemas import MAX_TEXT
from shared.domain.workflow import InsourceStatus
from shared.platform import paging
from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.idempotency import idempotent
from shared.platform.openapi import CONFLICT

router = api_router("/api", ["received work"], Permission.OUTSOURCING)


async def _insourcing(request: Request):
    return request.app.state.insourcing


class ReceivedWorkOut(BaseModel):
    link_id: str
    lead_partner: str
    lead_partner_id: str
    lead_ticket_number: str
    title: str
    description: str
    instructions: str
    terms: TermsOut | None
    insource_status: InsourceStatus
    ticket_id: str | None
    reason: str | None
    created_at: datetime
    received_at: datetime = Field(description="when the lead partner's request arrived (the same as created_at)")
    last_activity_at: datetime = Field(description="the latest change of the work, its ticket or any of its items")


class DeclineBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]


def _out(row, last_activity: datetime | None = None) -> dict:
    return {
        "link_id": row.link_id,
        "lead_partner": row.lead_partner_name,
        "lead_partner_id": row.lead_partner_id,
        "lead_ticket_number": row.lead_ticket_number,
        "title": row.title,
        "description": row.description,
        "instructions": row.instructions,
        "terms": row.terms,
        "insource_status": row.status,
        "ticket_id": row.ticket_id,
        "reason": row.reason,
        "created_at": row.created_at,
        "received_at": row.created_at,
        "last_activity_at": last_activity or row.updated_at or row.created_at,
    }


@router.get("/received-work", response_model=paging.page_of(ReceivedWorkOut, "ReceivedWorkPage"),
            summary="Received Work dashboard: work from lead partners, newest first, a page at a time")
async def received_work(session: SessionDep, status: Annotated[InsourceStatus | None, Query(
                            description="only this Insource Status (Pending: what waits for this partner)")] = None,
                        limit: paging.Limit = paging.PAGE_DEFAULT, cursor: paging.Cursor = None,
                        insourcing=Depends(_insourcing)):
    rows, next_cursor = await insourcing.received(session, status, limit, cursor)
    return {"items": [_out(row, last) for row, last in rows], "next_cursor": next_cursor}


@router.post("/received-work/{link_id}/accept", responses=CONFLICT, response_model=ReceivedWorkOut,
             summary="Accept received work: creates the insourced ticket and activates the link")
@idempotent(status_code=200, response_model=ReceivedWorkOut)
async def accept(link_id: str, session: SessionDep, insourcing=Depends(_insourcing)):
    row = await insourcing.accept(session, link_id)
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)


@router.post("/received-work/{link_id}/decline", responses=CONFLICT, response_model=ReceivedWorkOut,
             summary="Decline received work (a reason is required)")
async def decline(link_id: str, body: DeclineBody, session: SessionDep, insourcing=Depends(_insourcing)):
    row = await insourcing.decline(session, link_id, body.reason)
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)


class InvoiceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    invoice_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                                     pattern=r"^[^\x00-\x1f\x7f]+$")] = Field(
        description="this partner's own invoice number (1 to 64 printable characters); the lead sees it")


class InvoicedOut(BaseModel):
    link_id: str
    statement_version: int
    statement_sha256: str
    total: str = Field(description="the statement's total, a decimal string with two places")
    currency: str | None
    invoice_number: str
    invoiced_at: datetime


@router.post("/received-work/{link_id}/invoice", responses=CONFLICT, response_model=InvoicedOut,
             summary="Mark the statement the work ended with invoiced (SPEC section 12): the lead sees the number."
                     " The same number again answers the same; another number is 409")
@idempotent(status_code=200, response_model=InvoicedOut)
async def invoice(link_id: str, body: InvoiceBody, session: SessionDep, insourcing=Depends(_insourcing)):
    ending = await insourcing.invoice(session, link_id, body.invoice_number)
    return {"link_id": link_id, "statement_version": ending.version, "statement_sha256": ending.sha256,
            "total": ending.body["totals"]["total"], "currency": ending.body.get("currency"),
            "invoice_number": ending.invoice_number, "invoiced_at": ending.invoiced_at}


insource_router = api_router("/api", ["received work"], Permission.TICKETS)


@insource_router.post("/tickets/{ticket_id}/insource/complete", responses=CONFLICT, response_model=ReceivedWorkOut,
                      summary="Notify Lead Partner > Insource Complete: ask the lead to approve")
async def insource_complete(ticket_id: str, session: SessionDep, insourcing=Depends(_insourcing)):
    row = await insourcing.request_approval(session, ticket_id)
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)
