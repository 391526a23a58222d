"""The lead partner's outsourcing API: partners, outsource, cancel, and the Outsourced Work dashboard."""
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.money import TermsIn, TermsOut
from shared.domain.tickets.schemas import MAX_TEXT
from shared.domain.workflow import OutsourceStatus
from shared.platform import paging
from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.idempotency import idempotent
from shared.platform.openapi import CONFLICT

router = api_router("/api", ["outsourcing"], Permission.OUTSOURCING)


async def _outsourcing(request: Request):
    return request.app.state.outsourcing


class PartnerOut(BaseModel):
    id: str
    name: str


class OutsourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partner_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    instructions: Annotated[str, StringConstraints(max_length=MAX_TEXT)] = ""
    terms: TermsIn | None = None


class OutsourcingOut(BaseModel):
    link_id: str
    ticket_id: str
    status: OutsourceStatus
    partner_id: str
    partner_name: str
    partner_ticket_number: str | None
    instructions: str
    terms: TermsOut | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class OutsourcedWorkOut(OutsourcingOut):
    ticket_number: str
    title: str
    last_activity_at: datetime = Field(description="the latest change of the outsourcing, its ticket or any of its items")


def _out(row) -> dict:
    return OutsourcingOut.model_validate(row, from_attributes=True).model_dump()


@router.get("/partners", response_model=list[PartnerOut],
            summary="The insourcing partners this lead may outsource to: the hub's directory as it last sent it")
async def partners(session: SessionDep, outsourcing=Depends(_outsourcing)):
    return [p.model_dump() for p in await outsourcing.directory.partners(session)]


@router.post("/tickets/{ticket_id}/outsource", responses=CONFLICT, status_code=202, response_model=OutsourcingOut,
             summary="Outsource a ticket to an insourcing partner")
@idempotent(status_code=202, response_model=OutsourcingOut)
async def outsource(ticket_id: str, body: OutsourceBody, session: SessionDep, outsourcing=Depends(_outsourcing)):
    row = await outsourcing.outsource(session, ticket_id, body.partner_id, body.instructions, body.terms)
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)


@router.post("/tickets/{ticket_id}/outsource/cancel", responses=CONFLICT, response_model=OutsourcingOut,
             summary="Cancel an outsourcing the partner has not accepted yet")
async def cancel(ticket_id: str, session: SessionDep, outsourcing=Depends(_outsourcing)):
    row = await outsourcing.cancel(session, ticket_id)
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)


@router.get("/outsourced-work", response_model=paging.page_of(OutsourcedWorkOut, "OutsourcedWorkPage"),
            summary="Outsource Management dashboard: outsourced tickets, newest first, a page at a time")
async def outsourced_work(session: SessionDep, status: Annotated[OutsourceStatus | None, Query(
                              description="only this Outsource Status (Waiting Approval: what waits for the lead)")] = None,
                          limit: paging.Limit = paging.PAGE_DEFAULT, cursor: paging.Cursor = None,
                          outsourcing=Depends(_outsourcing)):
    rows, next_cursor = await outsourcing.dashboard(session, status, limit, cursor)
    return {"items": [{**_out(row), "ticket_number": ticket.number, "title": ticket.title, "last_activity_at": last}
                      for row, ticket, last in rows], "next_cursor": next_cursor}


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]


@router.post("/tickets/{ticket_id}/outsource/reject", responses=CONFLICT, response_model=OutsourcingOut,
             summary="Reject the partner's work (a reason is required): synchronization resumes")
async def reject(ticket_id: str, body: RejectBody, session: SessionDep, outsourcing=Depends(_outsourcing)):
    row = await outsourcing.reject(session, ticket_id, body.reason)
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statement_sha256: Annotated[str | None, Field(
        pattern=r"^[0-9a-fA-F]{64}$", description=(
            "the SHA-256 of the statement approved, as GET /api/tickets/{ticket_id}/statement answers it: required"
            " when the partner's Insource Complete carried a statement (a partner of release 1.0.0 sends none);"
            " a superseded or unknown one is 409 naming the current version"))] = None


@router.post("/tickets/{ticket_id}/outsource/approve", responses=CONFLICT, response_model=OutsourcingOut,
             summary="Approve the partner's work and the statement it asked approval of: the outsourcing is Complete"
                     " and the link ends")
async def approve(ticket_id: str, session: SessionDep, body: ApproveBody | None = None,
                  outsourcing=Depends(_outsourcing)):
    row = await outsourcing.finish(session, ticket_id, "approve", body.statement_sha256 if body else None)
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)


@router.post("/tickets/{ticket_id}/outsource/complete", responses=CONFLICT, response_model=OutsourcingOut,
             summary="Set the Outsource Status to Complete at any time: the same results as approve, with a statement"
                     " frozen of the partner's time entries and charges that had crossed by then")
async def complete(ticket_id: str, session: SessionDep, outsourcing=Depends(_outsourcing)):
    row = await outsourcing.finish(session, ticket_id, "complete")
    await session.flush()  # server-made values for the answer; the request commits in SessionDep
    return _out(row)
