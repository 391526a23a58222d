"""HTTP request and response bodies of the ticket core, with the limits of SPEC section 5."""
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints, create_model

from shared.domain.tickets.rules import ItemKind, TicketStatus

MAX_TITLE = 255
MAX_TEXT = 32_000
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE)]
OptionalTitle = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Body = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
# Amounts are exact decimals inside, plain JSON numbers outside.
Number = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
Hours = Annotated[Decimal, Field(gt=0, le=24, max_digits=6, decimal_places=2)]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=4)]
Price = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TicketCreate(Strict):
    title: Title
    description: Text = ""


class TicketUpdate(Strict):
    title: Title | None = None
    description: Text | None = None
    status: TicketStatus | None = None


class PartnerLinkOut(BaseModel):
    status: str
    link_id: str
    partner_id: str
    partner_ticket_number: str | None


class TicketOut(BaseModel):
    id: str
    number: str
    title: str
    description: str
    status: TicketStatus
    created_at: datetime
    updated_at: datetime


# --- items: what a client sends ----------------------------------------------------------------


class NoteCreate(Strict):
    title: OptionalTitle = ""
    body: Body
    internal: bool = False


class NoteUpdate(Strict):
    title: OptionalTitle | None = None
    body: Body | None = None


class TimeEntryCreate(Strict):
    resource: Title
    date_worked: date
    hours: Hours
    summary: Body
    billable: bool = True
    internal: bool = False


class TimeEntryUpdate(Strict):
    resource: Title | None = None
    date_worked: date | None = None
    hours: Hours | None = None
    summary: Body | None = None
    billable: bool | None = None


class ChargeCreate(Strict):
    name: Title
    description: Text = ""
    quantity: Quantity
    unit_price: Price
    billable: bool = True
    internal: bool = False


class ChargeUpdate(Strict):
    name: Title | None = None
    description: Text | None = None
    quantity: Quantity | None = None
    unit_price: Price | None = None
    billable: bool | None = None


class AttachmentFields(BaseModel):
    """An attachment's description as it travels (its bytes travel in chunks)."""

    filename: Title
    content_type: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    size: int = Field(ge=0, le=MAX_ATTACHMENT_BYTES)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class AttachmentUpdate(Strict):
    filename: Title | None = None


# --- items: what a client reads ------------------------------------------------------------------


class DeliveryOut(BaseModel):
    """On the creator's side of a shared item: has the other partner got its latest version?"""

    status: Literal["pending", "delivered", "refused"]
    at: datetime
    reason: str | None = Field(None, description="why the bridge or the other partner refused it")


class ItemOut(BaseModel):
    id: str
    ticket_id: str
    origin: str
    internal: bool
    shared: bool
    editable: bool
    delivery: DeliveryOut | None = Field(
        description="the delivery receipt of a shared item on its creator's side; null for items never sent"
    )
    created_at: datetime
    updated_at: datetime


class NoteOut(ItemOut):
    title: str
    body: str


class TimeEntryOut(ItemOut):
    resource: str
    date_worked: date
    hours: Number
    summary: str
    billable: bool


class ChargeOut(ItemOut):
    name: str
    description: str
    quantity: Number
    unit_price: Number
    billable: bool


class AttachmentOut(ItemOut):
    filename: str
    content_type: str
    size: int
    sha256: str


# --- paging (SPEC section 5): oldest first, a page at a time ---------------------------------------

PAGE_DEFAULT = 100
PAGE_MAX = 500
# A cursor is opaque to clients: it names the last item of the page before.
CURSOR_PATTERN = r"^[0-9]{1,18}$"


def page_model(out_model: type[ItemOut]) -> type[BaseModel]:
    """`{items, next_cursor}` of one kind: `next_cursor` is null on the last page."""
    return create_model(
        f"{out_model.__name__.removesuffix('Out')}Page",
        items=(list[out_model], ...),
        next_cursor=(str | None, Field(description="pass as `cursor` for the next page; null on the last page")),
    )


CREATE_MODELS: dict[ItemKind, type[Strict]] = {
    ItemKind.NOTE: NoteCreate,
    ItemKind.TIME_ENTRY: TimeEntryCreate,
    ItemKind.CHARGE: ChargeCreate,
}
UPDATE_MODELS: dict[ItemKind, type[Strict]] = {
    ItemKind.NOTE: NoteUpdate,
    ItemKind.TIME_ENTRY: TimeEntryUpdate,
    ItemKind.CHARGE: ChargeUpdate,
    ItemKind.ATTACHMENT: AttachmentUpdate,
}
OUT_MODELS: dict[ItemKind, type[ItemOut]] = {
    ItemKind.NOTE: NoteOut,
    ItemKind.TIME_ENTRY: TimeEntryOut,
    ItemKind.CHARGE: ChargeOut,
    ItemKind.ATTACHMENT: AttachmentOut,
}


def stored_fields(model: BaseModel, *, exclude: set[str] = frozenset({"internal"})) -> dict[str, Any]:
    """The kind-specific fields as they go into the JSONB column (decimals and dates as strings)."""
    return model.model_dump(mode="json", exclude=exclude, exclude_unset=False)
