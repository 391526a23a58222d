"""HTTP routes of the ticket core, shared by both partner services. Routes parse, call one
service function, and shape the answer; the service's SyncPolicy supplies link state and mirroring."""
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError, create_model

from shared.domain.tickets import service
from shared.domain.tickets.models import Ticket, TicketItem
from shared.domain.tickets.rules import ItemKind, TicketStatus
from shared.domain.tickets.schemas import (
    CREATE_MODELS,
    CURSOR_PATTERN,
    MAX_ATTACHMENT_BYTES,
    MAX_TITLE,
    OUT_MODELS,
    UPDATE_MODELS,
    PartnerLinkOut,
    page_model,
    TicketCreate,
    TicketOut,
    TicketUpdate,
    stored_fields,
)
from shared.platform import paging
from shared.platform.idempotency import idempotent
from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.errors import TooLarge, size_in_words
from shared.platform.openapi import CONFLICT


async def _policy(request: Request) -> service.SyncPolicy:
    return request.app.state.sync_policy


PolicyDep = Annotated[service.SyncPolicy, Depends(_policy)]
FILE_BYTES = {"description": "The file's bytes, with the Content-Type it was uploaded with",
              "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}


def item_out(policy: service.SyncPolicy, item: TicketItem | service.ListedItem) -> dict[str, Any]:
    return {
        **item.fields,
        "id": item.id,
        "ticket_id": item.ticket_id,
        "origin": item.origin,
        "internal": item.internal,
        "shared": item.shared,
        "editable": policy.editable(item),
        "delivery": (
            {"status": item.delivery_status, "at": item.delivery_at, "reason": item.delivery_reason}
            if item.delivery_status else None
        ),
        "created_at": item.created_at,
        "updated_at": item.updated_at,
    }


def content_disposition(filename: str) -> str:
    """An ASCII fallback and the exact UTF-8 name (RFC 6266), safe for any file name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "attachment"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def ticket_router(link_field: str) -> APIRouter:
    """`link_field` is `outsource` on the lead partner and `insource` on the insourcing partner."""
    router = api_router("/api/tickets", ["tickets"], Permission.TICKETS)
    TicketWithLink = create_model(
        f"Ticket{link_field.title()}Out", __base__=TicketOut, **{link_field: (PartnerLinkOut | None, None)}
    )

    async def ticket_out(session, policy: service.SyncPolicy, ticket: Ticket) -> dict[str, Any]:
        out = TicketOut.model_validate(ticket, from_attributes=True).model_dump()
        out[link_field] = await policy.link_of(session, ticket)
        return out

    @router.get("", response_model=paging.page_of(TicketWithLink, f"Ticket{link_field.title()}Page"),
                summary="List tickets, newest first, a page at a time")
    async def list_tickets(
        session: SessionDep,
        policy: PolicyDep,
        q: Annotated[str, Query(max_length=MAX_TITLE, pattern=r"^[^\x00]*$",
                                description="a ticket number (or its start), or words of the title")] = "",
        status: Annotated[TicketStatus | None, Query(description="only tickets of this status")] = None,
        limit: paging.Limit = paging.PAGE_DEFAULT,
        cursor: paging.Cursor = None,
    ):
        rows, next_cursor = await service.list_tickets(session, q, status, limit, cursor)
        return {"items": [await ticket_out(session, policy, ticket) for ticket in rows], "next_cursor": next_cursor}

    @router.post("", status_code=201, response_model=TicketWithLink, summary="Create a ticket")
    @idempotent(status_code=201, response_model=TicketWithLink)
    async def create_ticket(body: TicketCreate, session: SessionDep, policy: PolicyDep):
        ticket = await service.create_ticket(session, body.title, body.description)
        await session.flush()  # server-made values for the answer; the request commits in SessionDep
        return await ticket_out(session, policy, ticket)

    @router.get("/{ticket_id}", response_model=TicketWithLink, summary="Read a ticket")
    async def read_ticket(ticket_id: str, session: SessionDep, policy: PolicyDep):
        return await ticket_out(session, policy, await service.get_ticket(session, ticket_id))

    @router.patch("/{ticket_id}", response_model=TicketWithLink, summary="Edit a ticket's title, description or status")
    async def update_ticket(ticket_id: str, body: TicketUpdate, session: SessionDep, policy: PolicyDep):
        return await ticket_out(session, policy, await service.update_ticket(session, ticket_id, body))

    for kind in ItemKind:
        _item_routes(router, kind)

    @router.get("/{ticket_id}/attachments/{item_id}/content", summary="Download an attachment's bytes",
                response_class=Response, responses={200: FILE_BYTES})
    async def download(ticket_id: str, item_id: str, session: SessionDep):
        item, content = await service.attachment_content(session, ticket_id, item_id)
        return Response(
            content,
            media_type=item.fields["content_type"],
            headers={"Content-Disposition": content_disposition(item.fields["filename"]),
                     "X-Content-Type-Options": "nosniff"},
        )

    return router


def _item_routes(router: APIRouter, kind: ItemKind) -> None:
    out_model = OUT_MODELS[kind]
    noun = kind.value.replace("_", " ")
    path = f"/{{ticket_id}}/{kind.path}"

    if kind == ItemKind.ATTACHMENT:

        @router.post(path, status_code=201, response_model=out_model, summary="Upload an attachment")
        @idempotent(status_code=201, response_model=out_model)
        async def upload(
            ticket_id: str,
            session: SessionDep,
            policy: PolicyDep,
            file: Annotated[UploadFile, File(description=f"the file, at most {size_in_words(MAX_ATTACHMENT_BYTES)}")],
            internal: Annotated[bool, Form()] = False,
        ):
            content = await file.read(MAX_ATTACHMENT_BYTES + 1)
            if len(content) > MAX_ATTACHMENT_BYTES:
                raise TooLarge(f"attachment is over the limit of {size_in_words(MAX_ATTACHMENT_BYTES)}; nothing was stored")
            try:
                fields = service.attachment_fields(
                    file.filename or "attachment", file.content_type or "application/octet-stream", content
                )
            except ValidationError as exc:
                # The 422 every other field gets, naming the upload's part: file.filename, file.content_type.
                raise RequestValidationError(
                    [{**error, "loc": ("body", "file", *error["loc"])} for error in exc.errors(include_input=False)]
                ) from exc
            # The item as written (its server-made values included); the request commits in SessionDep.
            item = await service.add_item(session, policy, ticket_id, kind, fields, internal, content)
            return item_out(policy, item)

    else:
        create_model = CREATE_MODELS[kind]

        async def create(ticket_id: str, body: BaseModel, session: SessionDep, policy: PolicyDep):
            # The item as written (its server-made values included); the request commits in SessionDep.
            item = await service.add_item(session, policy, ticket_id, kind, stored_fields(body), body.internal)
            return item_out(policy, item)

        create.__annotations__["body"] = create_model
        router.post(path, status_code=201, response_model=out_model, summary=f"Add a {noun}")(
            idempotent(status_code=201, response_model=out_model)(create))

    update_model = UPDATE_MODELS[kind]

    async def list_(
        ticket_id: str,
        session: SessionDep,
        policy: PolicyDep,
        limit: Annotated[int, Query(ge=1, le=paging.PAGE_MAX, description="items per page")] = paging.PAGE_DEFAULT,
        cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the page before")] = None,
    ):
        page, more = await service.list_items(session, ticket_id, kind, limit, int(cursor) if cursor else None)
        return {"items": [item_out(policy, item) for item in page], "next_cursor": str(page[-1].seq) if more else None}

    async def update(ticket_id: str, item_id: str, body: BaseModel, session: SessionDep, policy: PolicyDep):
        changes = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        item = await service.update_item(session, policy, ticket_id, kind, item_id, changes)
        await session.flush()  # server-made values for the answer; the request commits in SessionDep
        return item_out(policy, item)

    async def delete(ticket_id: str, item_id: str, session: SessionDep, policy: PolicyDep):
        await service.delete_item(session, policy, ticket_id, kind, item_id)
        await session.flush()  # server-made values for the answer; the request commits in SessionDep
        return Response(status_code=204)

    update.__annotations__["body"] = update_model
    router.get(path, response_model=page_model(out_model), summary=f"List the {noun}s, oldest first, a page at a time")(list_)
    router.patch(f"{path}/{{item_id}}", response_model=out_model, responses=CONFLICT, summary=f"Edit a {noun}")(update)
    router.delete(f"{path}/{{item_id}}", status_code=204, responses=CONFLICT, summary=f"Delete a {noun}")(delete)
