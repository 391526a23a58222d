"""The bridge operator's pages (SPEC section 8): the links with their partners, ticket numbers, state and
health (found by ticket number), Reconcile now, the partner directory (SPEC section 10: onboard, rotate,
remove) and the dead letters with Replay and Discard. Each page calls the same functions as the JSON API
(services/sync_bridge/endpoints.py, shared/platform/dead_letters.py), so the same rules hold; a
refusal is shown on the page in words."""
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from services.sync_bridge import endpoints
from services.sync_bridge.models import ItemMirror, Link
from services.sync_bridge.onboarding import PartnerIn
from shared.platform import dead_letters, paging
from shared.platform.auth import Permission, SessionDep
from shared.platform.errors import DomainError, NotFound
from shared.platform.inbox import DeadLetter
from shared.platform.webui import ChangeDep, Viewer, ViewerDep, WebUi

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The bridge's own styles, loaded by its pages beside the shared app.css.
STYLES = Path(__file__).resolve().parent / "static" / "bridge.css"
NAV = [("/links", "Links"), ("/partners", "Partners"), ("/dead-letters", "Dead letters")]
LINK_STATES = ["pending", "active", "suspended", "terminated"]
MAX_ROWS = 200
router = APIRouter(include_in_schema=False)


def ui(request: Request) -> WebUi:
    return request.app.state.web_ui


def render(request: Request, who: Viewer, template: str, status_code: int = 200, **context) -> HTMLResponse:
    return ui(request).render(request, template, status_code=status_code, who=who, nav=NAV, **context)


def refused(request: Request, who: Viewer, permission: Permission = Permission.LINKS) -> HTMLResponse | None:
    """The server refuses what the page would not offer: a token without the bridge's permission."""
    if who.may(permission.value):
        return None
    return render(request, who, "message.html", status_code=403,
                  message=f"Your token ({who.name}) lacks the '{permission.value}' permission: "
                          "these pages are for the bridge's operators.")


@router.get("/")
async def home():
    return RedirectResponse("/links", status_code=303)


@router.get("/bridge.css")
async def styles():
    return FileResponse(STYLES, media_type="text/css", headers={"Cache-Control": "no-cache"})


@router.get("/links")
async def links(request: Request, who: ViewerDep, session: SessionDep, state: str = "", q: str = "",
                cursor: str = ""):
    if denied := refused(request, who):
        return denied
    state = state if state in LINK_STATES else ""
    q = q.strip()[:endpoints.MAX_QUERY]
    # A cursor the page did not make (edited by hand) starts again from the newest.
    after = paging.cursor_or_none(cursor)
    rows, next_cursor = await endpoints.find_links(session, state or None, q, paging.PAGE_DEFAULT, after)
    backlog = await endpoints.backlog_of(session, getattr(request.app.state, "consumer", None))
    waiting = {link.id: link for link in await session.scalars(
        select(Link).where(Link.id.in_([entry.link_id for entry in backlog.links])))} if backlog.links else {}
    return render(request, who, "links.html", links=rows, state=state, states=LINK_STATES, q=q,
                  paged=after is not None, next_cursor=next_cursor, backlog=backlog, waiting=waiting,
                  partner_name=endpoints.partner_names(request))


@router.get("/links/{link_id}")
async def link_page(request: Request, link_id: str, who: ViewerDep, session: SessionDep, reconcile: str = ""):
    if denied := refused(request, who):
        return denied
    try:
        health = await endpoints.health_of(session, link_id)
    except NotFound as exc:
        return render(request, who, "message.html", status_code=404, message=exc.detail)
    link = await session.get(Link, link_id)
    mirrors = list((await session.scalars(
        select(ItemMirror).where(ItemMirror.link_id == link_id).order_by(ItemMirror.created_at, ItemMirror.source_item_id)
        .limit(MAX_ROWS * 5))).all())
    return render(request, who, "link.html", link=link, health=health, mirrors=mirrors,
                  started=reconcile == "started", partner_name=endpoints.partner_names(request))


@router.post("/links/{link_id}/reconcile")
async def reconcile_now(request: Request, link_id: str, who: ChangeDep, session: SessionDep):
    if denied := refused(request, who):
        return denied
    try:
        await endpoints.reconcile(session, link_id)
    except NotFound as exc:
        return render(request, who, "message.html", status_code=404, message=exc.detail)
    return RedirectResponse(f"/links/{link_id}?reconcile=started", status_code=303)


@router.get("/dead-letters")
async def dead_letter_page(request: Request, who: ViewerDep, session: SessionDep, include_resolved: bool = False,
                           done: str = ""):
    if denied := refused(request, who):
        return denied
    outcome = await _outcome(session, int(done)) if done.isdigit() and len(done) < 19 else None
    return await _dead_letters(request, who, session, include_resolved, outcome=outcome)


@router.post("/dead-letters/{letter_id}/{action}")
async def resolve(request: Request, letter_id: int, action: str, who: ChangeDep, session: SessionDep):
    if denied := refused(request, who):
        return denied
    try:
        if action == "replay":
            await dead_letters.replay(session, request.app.state.consumer, letter_id, who.name)
        elif action == "discard":
            await dead_letters.discard(session, letter_id, who.name)
        else:
            raise NotFound(f"there is no action {action!r} for a dead letter (replay or discard)")
    except DomainError as exc:
        return await _dead_letters(request, who, session, False, error=exc.detail, status_code=exc.status_code)
    return RedirectResponse(f"/dead-letters?done={letter_id}", status_code=303)


async def _outcome(session, letter_id: int) -> str | None:
    """What the last action on the letter came to, in words, read back from its row (so that the
    message cannot be made up through the address)."""
    letter = await session.get(DeadLetter, letter_id)
    if letter is None:
        return None
    if letter.resolved_at is None:
        return f"Dead letter {letter.id}: parked again: {letter.reason}"
    return f"Dead letter {letter.id}: {letter.resolution}"


async def _dead_letters(request, who, session, include_resolved: bool, outcome: str | None = None,
                        error: str | None = None, status_code: int = 200) -> HTMLResponse:
    letters = await dead_letters.list_dead_letters(session, include_resolved, limit=MAX_ROWS)
    return render(request, who, "dead_letters.html", status_code=status_code, letters=letters,
                  include_resolved=include_resolved, outcome=outcome, error=error, max_rows=MAX_ROWS)


# --- the partner directory (SPEC section 10), through the same calls as /api/partners ---------------


@router.get("/partners")
async def partners_page(request: Request, who: ViewerDep, done: str = ""):
    if denied := refused(request, who, Permission.PARTNERS):
        return denied
    listed = await request.app.state.hub.list()
    return await _partners(request, who, outcome=_removed_outcome(listed, done), listed=listed)


@router.post("/partners")
async def onboard_partner(request: Request, who: ChangeDep, id: Annotated[str, Form()] = "",
                          name: Annotated[str, Form()] = "", role: Annotated[str, Form()] = ""):
    if denied := refused(request, who, Permission.PARTNERS):
        return denied
    try:
        new = PartnerIn(id=id.strip(), name=name, role=role)
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        return await _partners(request, who, error=problems, status_code=422, form={"id": id, "name": name, "role": role})
    try:
        onboarded = await request.app.state.hub.add(new)
    except DomainError as exc:
        return await _partners(request, who, error=exc.detail, status_code=exc.status_code,
                               form={"id": id, "name": name, "role": role})
    return await _partners(request, who, onboarded=onboarded, outcome=f"{new.name} ({new.id}) is onboarded.")


@router.post("/partners/{partner_id}/{action}")
async def change_partner(request: Request, partner_id: str, action: str, who: ChangeDep):
    if denied := refused(request, who, Permission.PARTNERS):
        return denied
    hub = request.app.state.hub
    try:
        if action == "rotate":
            onboarded = await hub.rotate(partner_id)
            return await _partners(request, who, onboarded=onboarded,
                                   outcome=f"{partner_id} has a new password and signing key.")
        if action != "remove":
            raise NotFound(f"there is no action {action!r} for a partner (rotate or remove)")
        await hub.remove(partner_id)
    except DomainError as exc:
        return await _partners(request, who, error=exc.detail, status_code=exc.status_code)
    return RedirectResponse(f"/partners?done={partner_id}", status_code=303)


def _removed_outcome(listed: list, partner_id: str) -> str | None:
    """Read back from the directory, so that the message cannot be made up through the address."""
    gone = next((p for p in listed if p.id == partner_id and p.status == "removed"), None)
    return f"{gone.name} ({gone.id}) was removed: its open links ended and their other parties were told." if gone else None


async def _partners(request, who, outcome: str | None = None, error: str | None = None, status_code: int = 200,
                    onboarded=None, form: dict | None = None, listed: list | None = None) -> HTMLResponse:
    listed = listed if listed is not None else await request.app.state.hub.list()
    bundle = onboarded.bundle.model_dump_json(indent=2) if onboarded is not None else None
    return render(request, who, "partners.html", status_code=status_code, partners=listed, outcome=outcome,
                  error=error, onboarded=onboarded, bundle=bundle, form=form or {})
