"""The agents' web UI of both partner services (SPEC section 8): the ticket list, the ticket page with
one timeline of every item, the forms to add, edit and delete items, and live updates. Each page
calls the same use cases as the JSON API (shared/domain/tickets/service.py), so the same rules hold;
a refusal is shown next to its form in words. The outsourcing panel of a ticket is each service's
own (services/*/pages.py)."""
import asyncio
import hashlib
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from markupsafe import Markup, escape
from pydantic import ValidationError
from sqlalchemy import func, select

from shared.domain import statements
from shared.domain.tickets import service
from shared.domain.tickets.endpoints import content_disposition
from shared.domain.tickets.models import Ticket, TicketItem
from shared.domain.tickets.rules import ItemKind, Origin, TicketStatus
from shared.domain.tickets.schemas import (
    CREATE_MODELS,
    MAX_ATTACHMENT_BYTES,
    MAX_TITLE,
    UPDATE_MODELS,
    TicketCreate,
    TicketUpdate,
    stored_fields,
)
from shared.platform import idempotency, paging
from shared.platform.auth import SessionDep
from shared.platform.errors import DomainError, NotFound, TooLarge, size_in_words
from shared.platform.webui import ChangeDep, ViewerDep, WebUi, page_headers, viewer

TEMPLATES = Path(__file__).resolve().parent / "templates"
KIND_NAMES = {"note": "Note", "time_entry": "Time entry", "charge": "Charge", "attachment": "Attachment"}
CHECKBOXES = {"internal", "billable"}
PAGE_ROWS = 100  # rows of a list page, then "Older" or "Next page"


class PageError(Exception):
    """A refusal to show next to the form that caused it."""

    def __init__(self, form: str | None, message: str, status_code: int):
        super().__init__(message)
        self.form, self.message, self.status_code = form, message, status_code


def _words(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors())


def form_fields(form, names: set[str]) -> dict[str, Any]:
    """What a form sent, checkboxes as booleans, empty optional fields left out."""
    values: dict[str, Any] = {}
    for name in names:
        if name in CHECKBOXES:
            values[name] = form.get(name) == "on"
        elif (value := form.get(name)) not in (None, ""):
            values[name] = value
    return values


def need(who, permission: str) -> None:
    """The server refuses what the page would not offer (a token without the permission)."""
    if not who.may(permission):
        raise PageError(None, f"your token ({who.name}) lacks the '{permission}' permission for this", 403)


class PartnerPages:
    """Pages both partners share; `panel` renders the service's own outsourcing panel."""

    def __init__(self, link_field: str, panel: Callable[[Request, Any, Ticket, Any], Awaitable[dict]],
                 nav: list[tuple[str, str]]):
        self.link_field = link_field  # outsource (lead) or insource
        self.status_label = "Outsource Status" if link_field == "outsource" else "Insource Status"
        self.panel = panel
        self.nav = nav

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)
        pages = self

        @router.get("/")
        async def home():
            return RedirectResponse("/tickets", status_code=303)

        @router.get("/tickets")
        async def tickets(request: Request, who: ViewerDep, session: SessionDep, q: str = "", status: str = "",
                          cursor: str = ""):
            need(who, "tickets")
            return await pages.ticket_list(request, who, session, q, status, cursor)

        @router.post("/tickets")
        async def new_ticket(request: Request, who: ChangeDep, session: SessionDep):
            need(who, "tickets")
            form = await request.form()
            try:
                body = TicketCreate.model_validate(form_fields(form, {"title", "description"}))
            except ValidationError as exc:
                return await pages.ticket_list(request, who, session, "", "", error=_words(exc), status_code=422)
            try:
                before = await idempotency.page_claim(session, who.token_sha256, request.url.path, form)
            except DomainError as exc:
                return await pages.ticket_list(request, who, session, "", "", error=exc.detail, status_code=exc.status_code)
            if before is not None:
                return RedirectResponse(before, status_code=303)
            ticket = await service.create_ticket(session, body.title, body.description)
            await idempotency.page_answered(session, who.token_sha256, form, f"/tickets/{ticket.id}")
            return RedirectResponse(f"/tickets/{ticket.id}", status_code=303)

        @router.get("/tickets/{ticket_id}")
        async def ticket_page(request: Request, ticket_id: str, who: ViewerDep, session: SessionDep):
            need(who, "tickets")
            return await pages.ticket_page(request, who, session, ticket_id)

        @router.post("/tickets/{ticket_id}/status")
        async def change_status(request: Request, ticket_id: str, who: ChangeDep, session: SessionDep):
            need(who, "tickets")
            form = await request.form()
            try:
                body = TicketUpdate.model_validate({"status": form.get("status")})
            except ValidationError as exc:
                raise PageError("status", _words(exc), 422) from exc
            await service.update_ticket(session, ticket_id, body)
            return RedirectResponse(f"/tickets/{ticket_id}", status_code=303)

        @router.get("/tickets/{ticket_id}/live")
        async def live(request: Request, ticket_id: str, who: ViewerDep, session: SessionDep):
            need(who, "tickets")
            context = await pages.context(request, who, session, ticket_id)
            return ui(request).render(request, "ticket_live.html", **context)

        @router.get("/tickets/{ticket_id}/events")
        async def events(request: Request, ticket_id: str, who: ViewerDep, after: str = ""):
            need(who, "tickets")
            # Resumes after the version the page rendered, or (a reconnection) the last one it was sent.
            last = request.headers.get("last-event-id") or after
            return StreamingResponse(pages.versions(request, ticket_id, last[:64] or None), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

        @router.get("/tickets/{ticket_id}/attachments/{item_id}")
        async def download(ticket_id: str, item_id: str, who: ViewerDep, session: SessionDep):
            need(who, "tickets")
            item, content = await service.attachment_content(session, ticket_id, item_id)
            return Response(content, media_type=item.fields["content_type"],
                            headers={"Content-Disposition": content_disposition(item.fields["filename"]),
                                     "X-Content-Type-Options": "nosniff"})

        @router.post("/tickets/{ticket_id}/items/{kind}")
        async def add_item(request: Request, ticket_id: str, kind: ItemKind, who: ChangeDep, session: SessionDep):
            need(who, "tickets")
            form = await request.form()
            policy = request.app.state.sync_policy
            here = f"/tickets/{ticket_id}#timeline"
            try:
                if await idempotency.page_claim(session, who.token_sha256, request.url.path, form) is not None:
                    return RedirectResponse(here, status_code=303)  # sent twice: written once
                if kind == ItemKind.ATTACHMENT:
                    upload = form.get("file")
                    if not isinstance(upload, UploadFile) or not upload.filename:
                        raise PageError(kind, "choose a file to upload", 422)
                    content = await upload.read(MAX_ATTACHMENT_BYTES + 1)
                    if len(content) > MAX_ATTACHMENT_BYTES:
                        raise TooLarge(f"the file is over the limit of {size_in_words(MAX_ATTACHMENT_BYTES)}; nothing was stored")
                    fields = service.attachment_fields(upload.filename, upload.content_type or "application/octet-stream",
                                                       content)
                    await service.add_item(session, policy, ticket_id, kind, fields, form.get("internal") == "on", content)
                else:
                    model = CREATE_MODELS[kind]
                    body = model.model_validate(form_fields(form, set(model.model_fields)))
                    await service.add_item(session, policy, ticket_id, kind, stored_fields(body), body.internal)
            except ValidationError as exc:
                raise PageError(kind, _words(exc), 422) from exc
            except DomainError as exc:
                raise PageError(kind, exc.detail, exc.status_code) from exc
            await idempotency.page_answered(session, who.token_sha256, form, here)
            return RedirectResponse(here, status_code=303)

        @router.post("/tickets/{ticket_id}/items/{kind}/{item_id}/edit")
        async def edit_item(request: Request, ticket_id: str, kind: ItemKind, item_id: str, who: ChangeDep,
                            session: SessionDep):
            need(who, "tickets")
            form = await request.form()
            model = UPDATE_MODELS[kind]
            try:
                changes = model.model_validate(form_fields(form, set(model.model_fields)))
                await service.update_item(session, request.app.state.sync_policy, ticket_id, kind, item_id,
                                          changes.model_dump(mode="json", exclude_unset=True, exclude_none=True))
            except ValidationError as exc:
                raise PageError(item_id, _words(exc), 422) from exc
            except DomainError as exc:
                raise PageError(item_id, exc.detail, exc.status_code) from exc
            return RedirectResponse(f"/tickets/{ticket_id}#item-{item_id}", status_code=303)

        @router.post("/tickets/{ticket_id}/items/{kind}/{item_id}/delete")
        async def delete_item(request: Request, ticket_id: str, kind: ItemKind, item_id: str, who: ChangeDep,
                              session: SessionDep):
            need(who, "tickets")
            try:
                await service.delete_item(session, request.app.state.sync_policy, ticket_id, kind, item_id)
            except DomainError as exc:
                raise PageError(item_id, exc.detail, exc.status_code) from exc
            return RedirectResponse(f"/tickets/{ticket_id}#timeline", status_code=303)

        return router

    # --- the pages --------------------------------------------------------------------------------

    async def ticket_list(self, request, who, session, q: str, status: str, cursor: str = "",
                          error: str | None = None, status_code: int = 200) -> HTMLResponse:
        q = q.replace("\x00", "")[:MAX_TITLE]
        chosen = status if status in TicketStatus._value2member_map_ else None
        rows, next_cursor = await service.list_tickets(
            session, q, chosen, PAGE_ROWS, paging.cursor_or_none(cursor))
        links = {t.id: await request.app.state.sync_policy.link_of(session, t) for t in rows}
        return ui(request).render(request, "tickets.html", status_code=status_code, who=who, nav=self.nav,
                                  tickets=rows, links=links, q=q, status=chosen or "", next_cursor=next_cursor,
                                  statuses=[s.value for s in TicketStatus], error=error, status_label=self.status_label)

    async def context(self, request, who, session, ticket_id: str) -> dict[str, Any]:
        policy = request.app.state.sync_policy
        # The version first: each statement below sees what has committed by then (read committed), so
        # the page is at least as new as the version it names, and the stream that starts after that
        # version sends anything newer. Read last, a note committed meanwhile would be named and not shown.
        version = await self.version(session, policy, ticket_id)
        ticket = await service.get_ticket(session, ticket_id)
        items = list((await session.scalars(
            select(TicketItem).where(TicketItem.ticket_id == ticket_id).order_by(TicketItem.seq))).all())
        link = await policy.link_of(session, ticket)
        health = await policy.sync.health(session, ticket_id)
        entries = [{"item": item, "kind": ItemKind(item.kind), "editable": policy.editable(item),
                    "badges": _badges(item, linked=link is not None)} for item in items]
        # The insourcing partner's work so far: its own time entries there, their mirrors at the lead.
        worker = Origin.PARTNER if self.link_field == "outsource" else Origin.LOCAL
        hours = sum((Decimal(str(i.fields["hours"])) for i in items
                     if i.kind == ItemKind.TIME_ENTRY and i.origin == worker and not i.internal), Decimal(0))
        frozen = await statements.current(session, link["link_id"]) if link else None
        # What Approve approves: the statement of the Insource Complete waiting, never an older one.
        awaiting = None
        if frozen is not None and frozen.settled is None and link["status"] == "Waiting Approval":
            rounds = (await policy.links.side_status(session, link["link_id"])).rounds
            awaiting = frozen if frozen.version == rounds else None
        return {"who": who, "ticket": ticket, "entries": entries, "link": link, "health": health, "hours_logged": hours,
                "statement": frozen, "awaiting": awaiting,
                "statuses": [s.value for s in TicketStatus],
                "status_label": self.status_label, "kind_names": KIND_NAMES, "version": version,
                "panel": await self.panel(request, who, ticket, session)}

    async def ticket_page(self, request, who, session, ticket_id: str, errors: dict[str, str] | None = None,
                          status_code: int = 200) -> HTMLResponse:
        context = await self.context(request, who, session, ticket_id)
        return ui(request).render(request, "ticket.html", status_code=status_code, nav=self.nav, errors=errors or {},
                                  **context)

    @staticmethod
    async def version(session, policy, ticket_id: str) -> str:
        """Changes whenever anything shown on the ticket page changes (items, receipts, statuses)."""
        ticket = await session.get(Ticket, ticket_id, populate_existing=True)
        if ticket is None:
            return "gone"
        count, latest = (await session.execute(
            select(func.count(), func.max(TicketItem.updated_at)).where(TicketItem.ticket_id == ticket_id))).one()
        raw = f"{count}|{latest}|{ticket.updated_at}|{ticket.status}|{await policy.link_of(session, ticket)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    async def versions(self, request: Request, ticket_id: str, last: str | None = None):
        """Server-Sent Events: the page's version each time it differs from `last` (checked twice a
        second), each event's id its version, so that a reconnecting browser resumes where it was."""
        sessions, policy = request.app.state.sessions, request.app.state.sync_policy
        quiet = 0
        while not await request.is_disconnected():
            async with sessions() as session:
                current = await self.version(session, policy, ticket_id)
            if current != last:
                last, quiet = current, 0
                yield f"id: {current}\ndata: {current}\n\n"
            else:
                quiet += 1
                if quiet % 30 == 0:
                    yield ": still here\n\n"
            await asyncio.sleep(0.5)


def _badges(item: TicketItem, linked: bool) -> list[str]:
    badges = []
    if item.origin == Origin.PARTNER:
        badges.append("From partner")
    if item.internal:
        badges.append("Internal")
    if item.origin == Origin.SYSTEM:
        badges.append("System")
    if linked and item.origin == Origin.LOCAL and not item.internal and not item.shared:
        badges.append("Not shared")
    return badges


def when(value) -> Markup | str:
    """A time as people read it, with its zone (UTC), and the exact instant for machines."""
    if value is None:
        return "never"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    value = value.astimezone(UTC)
    return Markup(f'<time datetime="{value.isoformat()}">{value:%Y-%m-%d %H:%M} UTC</time>')


def money(amount, currency: str | None = None) -> str:
    """An amount with two places and its currency, e.g. 1,250.00 USD (none when the lead stated none)."""
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return str(amount)
    return f"{value:,.2f} {currency}" if currency else f"{value:,.2f}"


def ui(request: Request) -> WebUi:
    return request.app.state.web_ui


def install_partner_pages(app, pages: PartnerPages, routers: list[APIRouter]) -> None:
    """The shared pages, the service's own, and refusals shown on the page they came from."""
    app.state.web_ui.templates.filters.update(when=when, money=money)
    app.state.web_ui.templates.globals["new_key"] = idempotency.new_key
    app.include_router(pages.router())
    for router in routers:
        app.include_router(router)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError):
        ticket_id = request.path_params.get("ticket_id")
        async with request.app.state.sessions() as session:
            who = await viewer(request, session)
            if ticket_id is None or exc.form is None:
                return ui(request).render(request, "message.html", status_code=exc.status_code, who=who, nav=pages.nav,
                                          message=exc.message)
            try:
                return await pages.ticket_page(request, who, session, ticket_id, {exc.form: exc.message},
                                               exc.status_code)
            except NotFound as missing:
                return ui(request).render(request, "message.html", status_code=404, who=who, nav=pages.nav,
                                          message=missing.detail)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=404)
        return HTMLResponse(f"<!doctype html><title>Not found</title><p>{escape(exc.detail)}</p>"
                            f"<p><a href=\"/tickets\">Tickets</a></p>", status_code=404, headers=page_headers())
