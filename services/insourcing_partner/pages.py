"""The insourcing partner's own pages: the Received Work dashboard (Accept, Decline) and, on an
insourced ticket, "Notify Lead Partner > Insource Complete"."""
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from shared.domain.workflow import InsourceStatus
from shared.partner_pages import PAGE_ROWS, PageError, need, ui
from shared.platform import paging
from shared.platform.auth import SessionDep
from shared.platform.errors import DomainError
from shared.platform.webui import ChangeDep, ViewerDep

NAV = [("/tickets", "Tickets"), ("/received-work", "Received Work"), ("/billing", "Billing")]
router = APIRouter(include_in_schema=False)


async def panel(request: Request, who, ticket, session) -> dict:
    return {"template": "insourcing_panel.html"}


def _insourcing(request: Request):
    return request.app.state.insourcing


async def _received_page(request: Request, who, session, status: str, cursor: str = "", error: str | None = None,
                         status_code: int = 200):
    chosen = InsourceStatus(status) if status in InsourceStatus._value2member_map_ else None
    rows, next_cursor = await _insourcing(request).received(
        session, chosen, PAGE_ROWS, paging.cursor_or_none(cursor))
    return ui(request).render(request, "received_work.html", status_code=status_code, who=who, nav=NAV, rows=rows,
                              status=chosen.value if chosen else "", next_cursor=next_cursor,
                              statuses=[s.value for s in InsourceStatus], error=error)


@router.get("/received-work")
async def received_work(request: Request, who: ViewerDep, session: SessionDep, status: str = "", cursor: str = ""):
    need(who, "outsourcing")
    return await _received_page(request, who, session, status, cursor)


@router.post("/received-work/{link_id}/{action}")
async def answer(request: Request, link_id: str, action: str, who: ChangeDep, session: SessionDep):
    need(who, "outsourcing")
    form = await request.form()
    try:
        if action == "accept":
            row = await _insourcing(request).accept(session, link_id)
            return RedirectResponse(f"/tickets/{row.ticket_id}", status_code=303)
        if action == "decline":
            reason = str(form.get("reason", "")).strip()
            if not reason:
                return await _received_page(request, who, session, "", error="a reason is required to decline", status_code=422)
            await _insourcing(request).decline(session, link_id, reason)
            return RedirectResponse("/received-work", status_code=303)
    except DomainError as exc:
        return await _received_page(request, who, session, "", error=exc.detail, status_code=exc.status_code)
    return await _received_page(request, who, session, "", error=f"unknown action {action!r}", status_code=404)


@router.post("/tickets/{ticket_id}/insource/complete")
async def insource_complete(request: Request, ticket_id: str, who: ChangeDep, session: SessionDep):
    need(who, "outsourcing")
    try:
        await _insourcing(request).request_approval(session, ticket_id)
    except DomainError as exc:
        raise PageError("panel", exc.detail, exc.status_code) from exc
    return RedirectResponse(f"/tickets/{ticket_id}", status_code=303)
