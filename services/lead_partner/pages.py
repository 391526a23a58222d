"""The lead partner's own pages: the outsourcing panel of a ticket (Outsource, Cancel outsourcing,
Approve, Reject, Complete) and the Outsourced Work dashboard."""
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from shared.domain.money import TermsIn
from shared.domain.workflow import OutsourceStatus
from shared.partner_pages import PAGE_ROWS, PageError, need, ui
from shared.platform import idempotency, paging
from shared.platform.auth import SessionDep
from shared.platform.errors import DomainError
from shared.platform.webui import ChangeDep, ViewerDep

NAV = [("/tickets", "Tickets"), ("/outsourced-work", "Outsourced Work"), ("/billing", "Billing")]
router = APIRouter(include_in_schema=False)


async def panel(request: Request, who, ticket, session) -> dict:
    outsourcing = _outsourcing(request)
    return {"template": "lead_panel.html", "partners": await outsourcing.directory.partners(session),
            "currency": outsourcing.settings.currency}


def _outsourcing(request: Request):
    return request.app.state.outsourcing


@router.post("/tickets/{ticket_id}/outsource")
async def outsource(request: Request, ticket_id: str, who: ChangeDep, session: SessionDep):
    need(who, "outsourcing")
    form = await request.form()
    terms = None
    try:
        if await idempotency.page_claim(session, who.token_sha256, request.url.path, form) is not None:
            return RedirectResponse(f"/tickets/{ticket_id}", status_code=303)  # sent twice: outsourced once
        if form.get("rate_type"):
            terms = TermsIn.model_validate({"rate_type": form["rate_type"], "rate": form.get("rate") or "0",
                                            "authorized_hours": form.get("authorized_hours") or None})
        await _outsourcing(request).outsource(session, ticket_id, str(form.get("partner_id", "")),
                                              str(form.get("instructions", "")), terms)
    except ValidationError as exc:
        raise PageError("panel", "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), 422) from exc
    except DomainError as exc:
        raise PageError("panel", exc.detail, exc.status_code) from exc
    await idempotency.page_answered(session, who.token_sha256, form, f"/tickets/{ticket_id}")
    return RedirectResponse(f"/tickets/{ticket_id}", status_code=303)


@router.post("/tickets/{ticket_id}/outsource/{action}")
async def decide(request: Request, ticket_id: str, action: str, who: ChangeDep, session: SessionDep):
    need(who, "outsourcing")
    outsourcing = _outsourcing(request)
    form = await request.form()
    try:
        if action == "cancel":
            await outsourcing.cancel(session, ticket_id)
        elif action == "reject":
            reason = str(form.get("reason", "")).strip()
            if not reason:
                raise PageError("panel", "a reason is required to reject: the partner receives it", 422)
            await outsourcing.reject(session, ticket_id, reason)
        elif action == "approve":
            await outsourcing.finish(session, ticket_id, action, str(form.get("statement_sha256") or "") or None)
        elif action == "complete":
            await outsourcing.finish(session, ticket_id, action)
        else:
            raise PageError("panel", f"unknown action {action!r}", 404)
    except DomainError as exc:
        raise PageError("panel", exc.detail, exc.status_code) from exc
    return RedirectResponse(f"/tickets/{ticket_id}", status_code=303)


@router.get("/outsourced-work")
async def outsourced_work(request: Request, who: ViewerDep, session: SessionDep, status: str = "", cursor: str = ""):
    need(who, "outsourcing")
    chosen = OutsourceStatus(status) if status in OutsourceStatus._value2member_map_ else None
    rows, next_cursor = await _outsourcing(request).dashboard(
        session, chosen, PAGE_ROWS, paging.cursor_or_none(cursor))
    return ui(request).render(request, "outsourced_work.html", who=who, nav=NAV, rows=rows,
                              status=chosen.value if chosen else "", next_cursor=next_cursor,
                              statuses=[s.value for s in OutsourceStatus])
